//! The BERT encoder on the CPU kernels ([`CpuBert`]): the weights copied into plain buffers and
//! packed once, then sentences packed without padding, q/k/v as one product, fused attention,
//! add & norm and GELU ([`crate::model::kernels::layers`], the same code as Marian's encoder).

use candle_core::{Device, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::super::config::{EncoderConfig, HiddenAct};
use super::super::EmbedError;
use super::tensors::TensorBert;
use super::{positions, BertBackend};
use crate::model::kernels::layers::{self as cpu, Activation, PackedLinear, WeightFormat};

type Result<T> = std::result::Result<T, EmbedError>;

/// A BERT-family encoder on the CPU kernels, in f32.
pub(super) struct CpuBert {
    cfg: EncoderConfig,
    /// (vocab, d), (positions, d), and token type 0's row (d).
    word: Vec<f32>,
    position: Vec<f32>,
    type0: Vec<f32>,
    embed_norm: cpu::Norm,
    layers: Vec<cpu::EncoderLayer>,
    activation: Activation,
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

impl CpuBert {
    /// Packs the tensor model's weights (which the caller then drops).
    pub fn pack(cfg: &EncoderConfig, t: &TensorBert) -> Result<Self> {
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
            cfg: cfg.clone(),
            word: to_vec(&t.word)?,
            position: to_vec(&t.position)?,
            type0: match &t.token_type {
                Some(types) => to_vec(&types.get(0)?)?,
                None => {
                    return Err(EmbedError::Weights(
                        "the CPU kernels need a token-type table".into(),
                    ))
                }
            },
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

impl BertBackend for CpuBert {
    /// Real tokens only, packed row after row, then laid out padded (n, s, d) with zeros for
    /// the padding (which pooling masks out).
    fn name(&self) -> &'static str {
        "cpu kernels"
    }

    fn hidden_states(&self, rows: &[&[u32]], s: usize, _mask: &Tensor) -> Result<Tensor> {
        let d = self.cfg.hidden_size;
        let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        let total: usize = lengths.iter().sum();
        let mut x = Vec::with_capacity(total * d);
        for row in rows {
            for (&id, pos) in row.iter().zip(positions(&self.cfg, row, row.len())) {
                let (id, pos) = (id as usize, pos as usize);
                let word = &self.word[id * d..(id + 1) * d];
                let position = self.position.get(pos * d..(pos + 1) * d).ok_or_else(|| {
                    EmbedError::Input(format!("position {pos} is outside the model's table"))
                })?;
                x.extend(
                    word.iter()
                        .zip(position)
                        .zip(&self.type0)
                        .map(|((a, b), c)| a + b + c),
                );
            }
        }
        cpu::norm_rows(&mut x, d, &self.embed_norm);
        let heads = self.cfg.num_attention_heads;
        cpu::encode_layers(&self.layers, &mut x, &lengths, d, heads, self.activation)?;
        let mut padded = vec![0f32; rows.len() * s * d];
        let mut at = 0;
        for (i, &len) in lengths.iter().enumerate() {
            padded[i * s * d..(i * s + len) * d].copy_from_slice(&x[at..at + len * d]);
            at += len * d;
        }
        Ok(Tensor::from_vec(padded, (rows.len(), s, d), &Device::Cpu)?)
    }
}
