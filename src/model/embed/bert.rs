//! A BERT-family encoder (transformers' `BertModel`, `XLMRobertaModel`, `RobertaModel`) on
//! candle: word + position + token-type embeddings and LayerNorm, then post-norm layers of
//! masked self-attention and a feed-forward block. Returns the last hidden states; the pooler
//! head is not used (sentence-transformers pools the token vectors itself).
//!
//! On the CPU the layers run on plain buffers ([`crate::model::kernels::layers`], the same code as
//! Marian's encoder): sentences packed without padding, q/k/v as one product, fused attention,
//! add & norm and GELU. Other devices run candle tensor operations.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::config::{EncoderConfig, HiddenAct, PositionScheme};
use super::EmbedError;
use crate::model::kernels::layers::{self as cpu, Activation, PackedLinear, WeightFormat};
use crate::model::kernels::KernelError;

impl From<KernelError> for EmbedError {
    fn from(e: KernelError) -> Self {
        EmbedError::Input(e.to_string())
    }
}

type Result<T> = std::result::Result<T, EmbedError>;

/// Added to attention scores of padding keys. Finite (as transformers does) so that a row with
/// no real token at all still softmaxes to numbers rather than NaN.
const MASKED: f32 = f32::MIN;

/// Tensors by name under the checkpoint's prefix (`""`, `bert.`, `roberta.`, ...).
pub(crate) struct Weights {
    tensors: HashMap<String, Tensor>,
    prefix: String,
    device: Device,
}

impl Weights {
    /// Finds the prefix from the word embedding table's name, so that checkpoints of the bare
    /// model and of task models (`bert.embeddings...`) both load.
    pub(crate) fn new(tensors: HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        const ANCHOR: &str = "embeddings.word_embeddings.weight";
        let prefix = tensors
            .keys()
            .filter_map(|k| k.strip_suffix(ANCHOR))
            .filter(|p| p.is_empty() || p.ends_with('.'))
            .min_by_key(|p| p.len())
            .map(str::to_string)
            .ok_or_else(|| EmbedError::Weights(format!("the weights have no `{ANCHOR}` tensor")))?;
        Ok(Self {
            tensors,
            prefix,
            device: device.clone(),
        })
    }

    fn lookup(&self, name: &str) -> Option<(&Tensor, String)> {
        let full = format!("{}{name}", self.prefix);
        self.tensors.get(&full).map(|t| (t, full))
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (t, full) = self.lookup(name).ok_or_else(|| {
            EmbedError::Weights(format!(
                "tensor `{}{name}` is missing from the weights",
                self.prefix
            ))
        })?;
        check_shape(t, &full, shape)?;
        Ok(t.to_device(&self.device)?.to_dtype(DType::F32)?)
    }

    fn linear(&self, name: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
        let w = self.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let b = self.get(&format!("{name}.bias"), &[out_dim])?;
        Ok(Linear::new(w, Some(b)))
    }

    fn layer_norm(&self, name: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
        // Checkpoints from TensorFlow-era conversions call the parameters gamma / beta.
        let (w, b) = if self.lookup(&format!("{name}.weight")).is_some() {
            (
                self.get(&format!("{name}.weight"), &[dim])?,
                self.get(&format!("{name}.bias"), &[dim])?,
            )
        } else {
            (
                self.get(&format!("{name}.gamma"), &[dim])?,
                self.get(&format!("{name}.beta"), &[dim])?,
            )
        };
        Ok(LayerNorm::new(w, b, eps))
    }
}

pub(crate) fn check_shape(t: &Tensor, name: &str, shape: &[usize]) -> Result<()> {
    if t.dims() != shape {
        return Err(EmbedError::Weights(format!(
            "tensor `{name}` has shape {:?}, the config implies {shape:?}",
            t.dims()
        )));
    }
    Ok(())
}

fn activate(act: HiddenAct, xs: &Tensor) -> Result<Tensor> {
    Ok(match act {
        HiddenAct::Gelu => xs.gelu_erf()?,
        HiddenAct::GeluTanh => xs.gelu()?,
        HiddenAct::Relu => xs.relu()?,
        HiddenAct::Silu => candle_nn::ops::silu(xs)?,
    })
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// The weights copied into plain buffers and packed for the CPU kernels.
struct CpuWeights {
    /// (vocab, d), (positions, d), and token type 0's row (d).
    word: Vec<f32>,
    position: Vec<f32>,
    type0: Vec<f32>,
    embed_norm: cpu::Norm,
    layers: Vec<cpu::EncoderLayer>,
    activation: Activation,
}

struct TensorWeights {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
}

enum Backend {
    Cpu(Box<CpuWeights>),
    Tensors(Box<TensorWeights>),
}

impl TensorWeights {
    fn new(cfg: &EncoderConfig, tensors: HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        let w = Weights::new(tensors, device)?;
        let d = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let word = w.get("embeddings.word_embeddings.weight", &[cfg.vocab_size, d])?;
        let position = w.get(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, d],
        )?;
        let token_type = w.get(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, d],
        )?;
        let embed_norm = w.layer_norm("embeddings.LayerNorm", d, eps)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let ff = cfg.intermediate_size;
            layers.push(Layer {
                query: w.linear(&format!("{p}.attention.self.query"), d, d)?,
                key: w.linear(&format!("{p}.attention.self.key"), d, d)?,
                value: w.linear(&format!("{p}.attention.self.value"), d, d)?,
                attn_out: w.linear(&format!("{p}.attention.output.dense"), d, d)?,
                attn_norm: w.layer_norm(&format!("{p}.attention.output.LayerNorm"), d, eps)?,
                intermediate: w.linear(&format!("{p}.intermediate.dense"), d, ff)?,
                output: w.linear(&format!("{p}.output.dense"), ff, d)?,
                out_norm: w.layer_norm(&format!("{p}.output.LayerNorm"), d, eps)?,
            });
        }
        Ok(Self {
            word,
            position,
            token_type,
            embed_norm,
            layers,
        })
    }
}

pub struct BertEncoder {
    cfg: EncoderConfig,
    backend: Backend,
    head_dim: usize,
    device: Device,
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

fn linear_vecs(l: &Linear) -> Result<(Vec<f32>, Vec<f32>)> {
    let b = l
        .bias()
        .ok_or_else(|| EmbedError::Weights("a linear layer has no bias".into()))?;
    Ok((to_vec(l.weight())?, to_vec(b)?))
}

fn pack(l: &Linear) -> Result<PackedLinear> {
    let (w, b) = linear_vecs(l)?;
    let (out, inp) = l.weight().dims2()?;
    Ok(PackedLinear::new(&w, &b, out, inp, WeightFormat::F32)?)
}

fn cpu_norm(n: &LayerNorm, eps: f32) -> Result<cpu::Norm> {
    let b = n
        .bias()
        .ok_or_else(|| EmbedError::Weights("a layer norm has no bias".into()))?;
    Ok(cpu::Norm {
        w: to_vec(n.weight())?,
        b: to_vec(b)?,
        eps,
    })
}

impl CpuWeights {
    fn new(cfg: &EncoderConfig, t: &TensorWeights) -> Result<Self> {
        let eps = cfg.layer_norm_eps as f32;
        let layers = t
            .layers
            .iter()
            .map(|l| {
                let (q, k, v) = (
                    linear_vecs(&l.query)?,
                    linear_vecs(&l.key)?,
                    linear_vecs(&l.value)?,
                );
                let d = q.1.len();
                let (w, b) = ([q.0, k.0, v.0].concat(), [q.1, k.1, v.1].concat());
                Ok(cpu::EncoderLayer {
                    qkv: PackedLinear::new(&w, &b, 3 * d, d, WeightFormat::F32)?,
                    out: pack(&l.attn_out)?,
                    self_norm: cpu_norm(&l.attn_norm, eps)?,
                    fc1: pack(&l.intermediate)?,
                    fc2: pack(&l.output)?,
                    final_norm: cpu_norm(&l.out_norm, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word: to_vec(&t.word)?,
            position: to_vec(&t.position)?,
            type0: to_vec(&t.token_type.get(0)?)?,
            embed_norm: cpu_norm(&t.embed_norm, eps)?,
            layers,
            activation: match cfg.hidden_act {
                HiddenAct::Gelu => Activation::Gelu,
                HiddenAct::GeluTanh => Activation::GeluTanh,
                HiddenAct::Relu => Activation::Relu,
                HiddenAct::Silu => Activation::Swish,
            },
        })
    }
}

impl BertEncoder {
    /// Loads the encoder; on the CPU its weights are copied into plain buffers (and the tensors
    /// dropped) for the faster CPU path.
    pub fn new(
        cfg: &EncoderConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let tensor_weights = TensorWeights::new(cfg, tensors, device)?;
        let backend = if device.is_cpu() {
            Backend::Cpu(Box::new(CpuWeights::new(cfg, &tensor_weights)?))
        } else {
            Backend::Tensors(Box::new(tensor_weights))
        };
        Ok(Self {
            cfg: cfg.clone(),
            backend,
            head_dim: cfg.hidden_size / cfg.num_attention_heads,
            device: device.clone(),
        })
    }

    /// The encoder on candle tensor operations even on the CPU (to check one path against
    /// the other).
    #[cfg(test)]
    fn with_tensor_ops(
        cfg: &EncoderConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            cfg: cfg.clone(),
            backend: Backend::Tensors(Box::new(TensorWeights::new(cfg, tensors, device)?)),
            head_dim: cfg.hidden_size / cfg.num_attention_heads,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Position ids of one row of `s` slots whose first `len` hold `ids` (the rest padding).
    fn positions(&self, ids: &[u32], s: usize) -> Vec<u32> {
        match self.cfg.positions {
            PositionScheme::FromZero => (0..s as u32).collect(),
            PositionScheme::AfterPadding => {
                // transformers: cumsum(id != pad) * (id != pad) + pad, padding slots included.
                let pad = self.cfg.pad_token_id;
                let mut count = 0u32;
                (0..s)
                    .map(|i| match ids.get(i) {
                        Some(&id) if id != pad => {
                            count += 1;
                            pad + count
                        }
                        _ => pad,
                    })
                    .collect()
            }
        }
    }

    /// Last hidden states (n, s, hidden) of a batch of token id rows, right-padded to the
    /// longest row, with the (n, s) f32 attention mask (1 for tokens, 0 for padding).
    /// Every token type is 0, as for a single text.
    pub fn forward(&self, rows: &[&[u32]]) -> Result<(Tensor, Tensor)> {
        let n = rows.len();
        let s = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        if n == 0 || s == 0 {
            return Err(EmbedError::Input("cannot encode an empty batch".into()));
        }
        if s > self.cfg.usable_positions() {
            return Err(EmbedError::Input(format!(
                "a sequence has {s} tokens, more than the model's {} positions",
                self.cfg.usable_positions()
            )));
        }
        let vocab = self.cfg.vocab_size as u32;
        if let Some(bad) = rows.iter().flat_map(|r| r.iter()).find(|&&id| id >= vocab) {
            return Err(EmbedError::Input(format!(
                "token id {bad} is outside the model's vocabulary of {vocab}"
            )));
        }
        let mut mask = Vec::with_capacity(n * s);
        for row in rows {
            mask.extend(std::iter::repeat_n(1f32, row.len()));
            mask.extend(std::iter::repeat_n(0f32, s - row.len()));
        }
        let mask = Tensor::from_vec(mask, (n, s), &self.device)?;
        let hidden = match &self.backend {
            Backend::Cpu(w) => self.forward_cpu(w, rows, s)?,
            Backend::Tensors(w) => self.forward_tensors(w, rows, s, &mask)?,
        };
        Ok((hidden, mask))
    }

    /// The CPU path: real tokens only, packed row after row, then laid out padded (n, s, d)
    /// with zeros for the padding (which pooling masks out).
    fn forward_cpu(&self, w: &CpuWeights, rows: &[&[u32]], s: usize) -> Result<Tensor> {
        let d = self.cfg.hidden_size;
        let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        let total: usize = lengths.iter().sum();
        let mut x = Vec::with_capacity(total * d);
        for row in rows {
            for (&id, pos) in row.iter().zip(self.positions(row, row.len())) {
                let (id, pos) = (id as usize, pos as usize);
                let word = &w.word[id * d..(id + 1) * d];
                let position = w.position.get(pos * d..(pos + 1) * d).ok_or_else(|| {
                    EmbedError::Input(format!("position {pos} is outside the model's table"))
                })?;
                x.extend(
                    word.iter()
                        .zip(position)
                        .zip(&w.type0)
                        .map(|((a, b), c)| a + b + c),
                );
            }
        }
        cpu::norm_rows(&mut x, d, &w.embed_norm);
        let heads = self.cfg.num_attention_heads;
        cpu::encode_layers(&w.layers, &mut x, &lengths, d, heads, w.activation)?;
        let mut padded = vec![0f32; rows.len() * s * d];
        let mut at = 0;
        for (i, &len) in lengths.iter().enumerate() {
            padded[i * s * d..(i * s + len) * d].copy_from_slice(&x[at..at + len * d]);
            at += len * d;
        }
        Ok(Tensor::from_vec(padded, (rows.len(), s, d), &self.device)?)
    }

    fn forward_tensors(
        &self,
        w: &TensorWeights,
        rows: &[&[u32]],
        s: usize,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let n = rows.len();
        let mut ids = Vec::with_capacity(n * s);
        let mut pos = Vec::with_capacity(n * s);
        for row in rows {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.cfg.pad_token_id, s - row.len()));
            pos.extend(self.positions(row, s));
        }
        let d = self.cfg.hidden_size;
        let ids = Tensor::from_vec(ids, n * s, &self.device)?;
        let pos = Tensor::from_vec(pos, n * s, &self.device)?;
        // (n, 1, 1, s): 0 where the key is a token, MASKED where it is padding.
        let bias = ((1.0 - mask)? * f64::from(MASKED))?.reshape((n, 1, 1, s))?;

        let type0 = w.token_type.get(0)?;
        let embedded = w
            .word
            .index_select(&ids, 0)?
            .add(&w.position.index_select(&pos, 0)?)?
            .broadcast_add(&type0)?
            .reshape((n, s, d))?;
        let mut xs = w.embed_norm.forward(&embedded)?;
        for layer in &w.layers {
            let attn = self.attention(layer, &xs, &bias)?;
            xs = layer.attn_norm.forward(&(attn + &xs)?)?;
            let ff = activate(self.cfg.hidden_act, &layer.intermediate.forward(&xs)?)?;
            let ff = layer.output.forward(&ff)?;
            xs = layer.out_norm.forward(&(ff + &xs)?)?;
        }
        Ok(xs)
    }

    fn attention(&self, layer: &Layer, xs: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (n, s, d) = xs.dims3()?;
        let heads = self.cfg.num_attention_heads;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((n, s, heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(layer.query.forward(xs)?)?;
        let k = split(layer.key.forward(xs)?)?;
        let v = split(layer.value.forward(xs)?)?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((n, s, d))?;
        Ok(layer.attn_out.forward(&ctx)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(positions: PositionScheme, hidden_act: HiddenAct) -> EncoderConfig {
        EncoderConfig {
            model_type: "bert".into(),
            vocab_size: 53,
            hidden_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 40,
            hidden_act,
            layer_norm_eps: 1e-12,
            max_position_embeddings: 40,
            type_vocab_size: 2,
            pad_token_id: 1,
            positions,
        }
    }

    /// Every tensor the encoder reads, with deterministic pseudo-random values.
    fn random_tensors(cfg: &EncoderConfig) -> HashMap<String, Tensor> {
        let mut seed = 0x2545_f491_u64;
        let mut tensor = |shape: &[usize], around: f32| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    around + ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.5
                })
                .collect();
            Tensor::from_vec(values, shape, &Device::Cpu).expect("tensor")
        };
        let (d, ff) = (cfg.hidden_size, cfg.intermediate_size);
        let mut t = HashMap::new();
        let mut put = |name: String, shape: &[usize], around: f32| {
            t.insert(name, tensor(shape, around));
        };
        put(
            "embeddings.word_embeddings.weight".into(),
            &[cfg.vocab_size, d],
            0.0,
        );
        put(
            "embeddings.position_embeddings.weight".into(),
            &[cfg.max_position_embeddings, d],
            0.0,
        );
        put(
            "embeddings.token_type_embeddings.weight".into(),
            &[cfg.type_vocab_size, d],
            0.0,
        );
        let norm = |put: &mut dyn FnMut(String, &[usize], f32), p: &str| {
            put(format!("{p}.weight"), &[d], 1.0);
            put(format!("{p}.bias"), &[d], 0.0);
        };
        norm(&mut put, "embeddings.LayerNorm");
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            for (name, inp, out) in [
                ("attention.self.query", d, d),
                ("attention.self.key", d, d),
                ("attention.self.value", d, d),
                ("attention.output.dense", d, d),
                ("intermediate.dense", d, ff),
                ("output.dense", ff, d),
            ] {
                put(format!("{p}.{name}.weight"), &[out, inp], 0.0);
                put(format!("{p}.{name}.bias"), &[out], 0.0);
            }
            norm(&mut put, &format!("{p}.attention.output.LayerNorm"));
            norm(&mut put, &format!("{p}.output.LayerNorm"));
        }
        t
    }

    #[test]
    fn cpu_path_matches_tensor_ops() {
        let rows: Vec<Vec<u32>> = vec![
            vec![0, 5, 9, 2],
            vec![0, 7, 3, 3, 11, 40, 52, 8, 2],
            vec![0, 2],
            vec![0, 17, 1, 23, 2],
        ];
        let rows: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        for (positions, act) in [
            (PositionScheme::FromZero, HiddenAct::Gelu),
            (PositionScheme::AfterPadding, HiddenAct::GeluTanh),
            (PositionScheme::FromZero, HiddenAct::Relu),
        ] {
            let cfg = config(positions, act);
            let fast = BertEncoder::new(&cfg, random_tensors(&cfg), &Device::Cpu).expect("cpu");
            let slow = BertEncoder::with_tensor_ops(&cfg, random_tensors(&cfg), &Device::Cpu)
                .expect("tensors");
            assert!(matches!(fast.backend, Backend::Cpu(_)));
            let (a, mask_a) = fast.forward(&rows).expect("cpu forward");
            let (b, mask_b) = slow.forward(&rows).expect("tensor forward");
            assert_eq!(a.dims(), b.dims());
            let mask = mask_a.to_vec2::<f32>().expect("mask");
            assert_eq!(mask, mask_b.to_vec2::<f32>().expect("mask"));
            let (a, b) = (
                a.to_vec3::<f32>().expect("a"),
                b.to_vec3::<f32>().expect("b"),
            );
            let mut worst = 0f32;
            for (i, row) in rows.iter().enumerate() {
                for p in 0..row.len() {
                    assert_eq!(mask[i][p], 1.0);
                    for (x, y) in a[i][p].iter().zip(&b[i][p]) {
                        worst = worst.max((x - y).abs());
                    }
                }
            }
            assert!(
                worst < 2e-5,
                "{positions:?} {act:?}: largest difference {worst}"
            );
            // A row alone gives what it gives in the batch.
            let (alone, _) = fast.forward(&rows[1..2]).expect("alone");
            let alone = alone.to_vec3::<f32>().expect("alone");
            for (x, y) in alone[0][..rows[1].len()].iter().zip(&a[1][..rows[1].len()]) {
                let worst = x
                    .iter()
                    .zip(y)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 1e-5, "alone vs in the batch: {worst}");
            }
        }
    }

    #[test]
    fn bad_rows_are_errors() {
        let cfg = config(PositionScheme::FromZero, HiddenAct::Gelu);
        let enc = BertEncoder::new(&cfg, random_tensors(&cfg), &Device::Cpu).expect("cpu");
        assert!(matches!(enc.forward(&[]), Err(EmbedError::Input(_))));
        assert!(matches!(
            enc.forward(&[&[0, 53]]),
            Err(EmbedError::Input(_))
        ));
        let long = vec![3u32; 41];
        assert!(matches!(enc.forward(&[&long]), Err(EmbedError::Input(_))));
    }
}
