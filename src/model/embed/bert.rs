//! A BERT-family encoder (transformers' `BertModel`, `XLMRobertaModel`, `RobertaModel`): word +
//! position + token-type embeddings and LayerNorm, then post-norm layers of masked
//! self-attention and a feed-forward block. Returns the last hidden states; the pooler head is
//! not used (sentence-transformers pools the token vectors itself).
//!
//! [`BertEncoder`] checks the input and holds one [`BertBackend`], chosen once at load: the CPU
//! kernels ([`cpu`]) on the CPU, candle tensor operations ([`tensors`]) on any other device.

mod cpu;
mod tensors;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::config::{EncoderConfig, PositionScheme};
use super::EmbedError;
use crate::model::compute::ComputeType;
use crate::model::kernels::KernelError;
use cpu::CpuBert;
use tensors::TensorBert;

impl From<KernelError> for EmbedError {
    fn from(e: KernelError) -> Self {
        EmbedError::Input(e.to_string())
    }
}

impl From<crate::model::checkpoint::CheckpointError> for EmbedError {
    fn from(e: crate::model::checkpoint::CheckpointError) -> Self {
        EmbedError::Weights(e.to_string())
    }
}

type Result<T> = std::result::Result<T, EmbedError>;

/// One implementation of the encoder's forward pass.
trait BertBackend: Send + Sync {
    /// Last hidden states (n, s, hidden) of rows checked by [`BertEncoder::forward`],
    /// right-padded to `s`, given their (n, s) f32 attention mask (1 for tokens, 0 for
    /// padding). Padding positions may hold anything: pooling masks them out.
    fn hidden_states(&self, rows: &[&[u32]], s: usize, mask: &Tensor) -> Result<Tensor>;

    /// Which implementation this is, for logs and tests.
    fn name(&self) -> &'static str;
}

/// Position ids of one row of `s` slots whose first `len` hold `ids` (the rest padding).
fn positions(cfg: &EncoderConfig, ids: &[u32], s: usize) -> Vec<u32> {
    match cfg.positions {
        PositionScheme::FromZero => (0..s as u32).collect(),
        PositionScheme::AfterPadding => {
            // transformers: cumsum(id != pad) * (id != pad) + pad, padding slots included.
            let pad = cfg.pad_token_id;
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

pub struct BertEncoder {
    cfg: EncoderConfig,
    backend: Box<dyn BertBackend>,
    device: Device,
}

impl BertEncoder {
    #[cfg(test)]
    /// Loads the encoder; on the CPU its weights are copied into plain buffers (and the tensors
    /// dropped) for the CPU kernels.
    pub fn new(
        cfg: &EncoderConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        Self::with_backend(cfg, tensors, device, device.is_cpu(), None)
    }

    /// [`Self::new`] computing in `compute`: f32 (and int8, which applies to translation only)
    /// on any device; f16 and bf16 on a GPU only.
    pub fn with_compute_type(
        cfg: &EncoderConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        compute: ComputeType,
    ) -> Result<Self> {
        // int8 is for translation models: embeddings compute in f32 then.
        let half = match compute.for_embeddings() {
            ComputeType::F16 => Some(DType::F16),
            ComputeType::BF16 => Some(DType::BF16),
            _ => None,
        };
        if half.is_some() && device.is_cpu() {
            return Err(EmbedError::Input(format!(
                "{compute} runs on a GPU only; on the CPU embeddings compute in f32"
            )));
        }
        Self::with_backend(cfg, tensors, device, device.is_cpu(), half)
    }

    /// The encoder on the CPU kernels (`cpu_kernels`, CPU only, f32) or on candle tensor
    /// operations, in `half` precision when given.
    fn with_backend(
        cfg: &EncoderConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        cpu_kernels: bool,
        half: Option<DType>,
    ) -> Result<Self> {
        let tensor_model = TensorBert::new(cfg, tensors, device, half.unwrap_or(DType::F32))?;
        let backend: Box<dyn BertBackend> = if half.is_some() {
            Box::new(tensor_model)
        } else if cpu_kernels && device.is_cpu() && cfg.relative_buckets.is_none() {
            // (MPNet's relative-position bias is not in the kernels: it runs on tensors.)
            Box::new(CpuBert::pack(cfg, &tensor_model)?)
        } else {
            Box::new(tensor_model)
        };
        tracing::debug!(backend = backend.name(), "loaded the encoder");
        Ok(Self {
            cfg: cfg.clone(),
            backend,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
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
        let hidden = self.backend.hidden_states(rows, s, &mask)?;
        Ok((hidden, mask))
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::HiddenAct;
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
            relative_buckets: None,
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
            let slow =
                BertEncoder::with_backend(&cfg, random_tensors(&cfg), &Device::Cpu, false, None)
                    .expect("tensors");
            assert_eq!(
                (fast.backend.name(), slow.backend.name()),
                ("cpu kernels", "tensors")
            );
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

    /// f16 and bf16 through the tensor backend (on candle's CPU device here; the product offers
    /// them on GPUs only): hidden states close to f32's, f32 out.
    #[test]
    fn half_precision_stays_close_to_f32() {
        let rows: Vec<Vec<u32>> = vec![vec![0, 5, 9, 2], vec![0, 7, 3, 3, 11, 40, 52, 8, 2]];
        let rows: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let cfg = config(PositionScheme::FromZero, HiddenAct::Gelu);
        let exact = BertEncoder::new(&cfg, random_tensors(&cfg), &Device::Cpu).expect("f32");
        let (want, _) = exact.forward(&rows).expect("f32 forward");
        let want = want.to_vec3::<f32>().expect("f32");
        for (dtype, bound) in [(DType::F16, 0.02f32), (DType::BF16, 0.1)] {
            let half = BertEncoder::with_backend(
                &cfg,
                random_tensors(&cfg),
                &Device::Cpu,
                false,
                Some(dtype),
            )
            .expect("half");
            let (got, _) = half.forward(&rows).expect("half forward");
            assert_eq!(got.dtype(), DType::F32);
            let got = got.to_vec3::<f32>().expect("half");
            let mut worst = 0f32;
            for (i, row) in rows.iter().enumerate() {
                for p in 0..row.len() {
                    for (x, y) in got[i][p].iter().zip(&want[i][p]) {
                        worst = worst.max((x - y).abs());
                    }
                }
            }
            // Layer-normed states are of order 1.
            assert!(worst < bound, "{dtype:?}: largest difference {worst}");
        }
        let refused = BertEncoder::with_compute_type(
            &cfg,
            random_tensors(&cfg),
            &Device::Cpu,
            ComputeType::BF16,
        );
        assert!(refused
            .err()
            .unwrap()
            .to_string()
            .contains("runs on a GPU only"));
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
