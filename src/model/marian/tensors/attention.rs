//! The attention blocks of [`super::TensorMarian`]: self-attention with stacked q/k/v
//! projections, cross-attention with stacked k/v, the 1/√head_dim scale (folded into the query
//! projection where exact), and scaled dot-product attention on candle operations.

use candle_core::{DType, Module, Tensor};
use candle_nn::Linear;

use super::Result;
use crate::model::checkpoint::Checkpoint;
use crate::model::marian::TranslateError;

/// (n, t, d) -> (n, heads, t, head_dim), contiguous.
fn split_heads(xs: &Tensor, heads: usize) -> Result<Tensor> {
    let (n, t, d) = xs.dims3()?;
    Ok(xs
        .reshape((n, t, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// Scaled dot-product attention of per-head queries over keys/values, with an additive bias
/// broadcastable to (n, heads, t_q, t_k); returns (n, t_q, d).
pub(in crate::model::marian) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let (n, heads, t, hd) = q.dims4()?;
    let mut scores = q.matmul(&k.t()?)?;
    if scale != 1.0 {
        scores = (scores * scale)?;
    }
    if let Some(bias) = bias {
        scores = scores.broadcast_add(bias)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    Ok(probs
        .matmul(v)?
        .transpose(1, 2)?
        .reshape((n, t, heads * hd))?)
}

/// Self-attention with the q, k and v projections stacked into one (3·d, d) matrix, so one
/// matrix product serves all three.
pub(in crate::model::marian) struct SelfAttention {
    pub qkv: Linear,
    pub out: Linear,
    pub(super) heads: usize,
    pub(super) scale: QueryScale,
}

/// Cross-attention: q from the decoder, k and v (stacked, (2·d, d)) from the encoder output.
pub(in crate::model::marian) struct CrossAttention {
    pub q: Linear,
    pub kv: Linear,
    pub out: Linear,
    pub(super) heads: usize,
    pub(super) scale: QueryScale,
}

/// An attention's 1/√head_dim: applied to the scores, or folded into the query projection.
///
/// Folding saves a pass over the scores every step. It is done only where it is exact: a power
/// of two (head_dim 4, 16, 64, …) scales every product and sum without rounding, so the scores
/// are bit for bit the scaled ones; and only in f32 or bf16, whose exponent range keeps small
/// weights normal (scaled f16 weights could lose bits as subnormals).
#[derive(Debug, Clone, Copy)]
pub(super) struct QueryScale {
    scale: f64,
    folded: bool,
}

impl QueryScale {
    fn new(d_model: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            scale: heads_scale(d_model, heads)?,
            folded: false,
        })
    }

    /// What the scores are multiplied by.
    pub(super) fn on_scores(self) -> f64 {
        if self.folded {
            1.0
        } else {
            self.scale
        }
    }

    /// Fold into the first `rows` outputs of `query` (or undo it, `fold` false) where exact.
    fn set_folded(&mut self, fold: bool, query: &mut Linear, rows: usize) -> Result<()> {
        let dtype = query.weight().dtype();
        let power_of_two = self.scale == 2f64.powi(self.scale.log2().round() as i32);
        let exact = power_of_two && matches!(dtype, DType::F32 | DType::BF16);
        if fold == self.folded || (fold && !exact) {
            return Ok(());
        }
        let factor = if fold { self.scale } else { self.scale.recip() };
        let total = query.weight().dim(0)?;
        let scale_head = |t: &Tensor| -> Result<Tensor> {
            let head = (t.narrow(0, 0, rows)? * factor)?;
            Ok(if rows == total {
                head
            } else {
                Tensor::cat(&[&head, &t.narrow(0, rows, total - rows)?], 0)?
            })
        };
        *query = Linear::new(
            scale_head(query.weight())?,
            query.bias().map(scale_head).transpose()?,
        );
        self.folded = fold;
        Ok(())
    }
}

/// Load `names` (each `{name}.weight` (d, d) and `{name}.bias` (d)) as one stacked projection.
fn stacked_linear(w: &Checkpoint, names: &[String], d: usize) -> Result<Linear> {
    let mut weights = Vec::with_capacity(names.len());
    let mut biases = Vec::with_capacity(names.len());
    for name in names {
        weights.push(w.get(&format!("{name}.weight"), &[d, d])?);
        biases.push(w.get(&format!("{name}.bias"), &[d])?);
    }
    Ok(Linear::new(
        Tensor::cat(&weights, 0)?,
        Some(Tensor::cat(&biases, 0)?),
    ))
}

fn heads_scale(d_model: usize, heads: usize) -> Result<f64> {
    if heads == 0 || !d_model.is_multiple_of(heads) {
        return Err(TranslateError::Config(format!(
            "d_model {d_model} is not divisible into {heads} attention heads"
        )));
    }
    Ok(((d_model / heads) as f64).powf(-0.5))
}

impl SelfAttention {
    pub(super) fn load(w: &Checkpoint, name: &str, d: usize, heads: usize) -> Result<Self> {
        let names: Vec<String> = ["q_proj", "k_proj", "v_proj"]
            .iter()
            .map(|p| format!("{name}.{p}"))
            .collect();
        Ok(Self {
            qkv: stacked_linear(w, &names, d)?,
            out: w.linear(&format!("{name}.out_proj"), d, d)?,
            heads,
            scale: QueryScale::new(d, heads)?,
        })
    }

    pub(super) fn fold_scale(&mut self, fold: bool) -> Result<()> {
        let d = self.out.weight().dim(0)?;
        self.scale.set_folded(fold, &mut self.qkv, d)
    }

    /// Per-head q, k and v of `xs` (n, t, d).
    pub(super) fn project(&self, xs: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let d = xs.dim(2)?;
        let qkv = self.qkv.forward(xs)?;
        let part = |i: usize| split_heads(&qkv.narrow(2, i * d, d)?, self.heads);
        Ok((part(0)?, part(1)?, part(2)?))
    }
}

impl CrossAttention {
    pub(super) fn load(w: &Checkpoint, name: &str, d: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q: w.linear(&format!("{name}.q_proj"), d, d)?,
            kv: stacked_linear(w, &[format!("{name}.k_proj"), format!("{name}.v_proj")], d)?,
            out: w.linear(&format!("{name}.out_proj"), d, d)?,
            heads,
            scale: QueryScale::new(d, heads)?,
        })
    }

    pub(super) fn fold_scale(&mut self, fold: bool) -> Result<()> {
        let d = self.out.weight().dim(0)?;
        self.scale.set_folded(fold, &mut self.q, d)
    }

    /// Per-head keys and values of the encoder output (n, s, d).
    pub(super) fn project_kv(&self, hidden: &Tensor) -> Result<(Tensor, Tensor)> {
        let d = hidden.dim(2)?;
        let kv = self.kv.forward(hidden)?;
        Ok((
            split_heads(&kv.narrow(2, 0, d)?, self.heads)?,
            split_heads(&kv.narrow(2, d, d)?, self.heads)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn linear(rows: usize, cols: usize, dtype: DType) -> Linear {
        let w: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.37 - 3.0).collect();
        let b: Vec<f32> = (0..rows).map(|i| i as f32 * 0.11).collect();
        let w = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(b, rows, &Device::Cpu).unwrap();
        Linear::new(w.to_dtype(dtype).unwrap(), Some(b.to_dtype(dtype).unwrap()))
    }

    fn values(l: &Linear) -> Vec<f32> {
        let w = l
            .weight()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap();
        let b = l.bias().unwrap().to_dtype(DType::F32).unwrap();
        [w.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap()].concat()
    }

    #[test]
    fn the_query_scale_is_folded_only_where_exact_and_unfolds_bit_for_bit() {
        // head_dim 16: 1/4, folded into the first 8 rows (the queries) of a stacked (24, 8).
        for dtype in [DType::F32, DType::BF16] {
            let mut qkv = linear(24, 8, dtype);
            let before = values(&qkv);
            let mut scale = QueryScale::new(64, 4).unwrap();
            scale.set_folded(true, &mut qkv, 8).unwrap();
            assert_eq!(scale.on_scores(), 1.0);
            let folded = values(&qkv);
            // Weights: rows 0..8 scaled, 8..24 untouched; bias likewise.
            for (i, (a, b)) in before.iter().zip(&folded).enumerate() {
                let query = if i < 24 * 8 {
                    i / 8 < 8
                } else {
                    i - 24 * 8 < 8
                };
                let want = if query { a * 0.25 } else { *a };
                assert_eq!(*b, want, "{dtype:?} entry {i}");
            }
            scale.set_folded(false, &mut qkv, 8).unwrap();
            assert_eq!(scale.on_scores(), 0.25);
            assert_eq!(values(&qkv), before, "{dtype:?}");
        }
        // head_dim 12 is not a power of two, and f16 could lose small weights: both left alone.
        for (d, dtype) in [(48, DType::F32), (64, DType::F16)] {
            let mut q = linear(8, 8, dtype);
            let before = values(&q);
            let mut scale = QueryScale::new(d, 4).unwrap();
            scale.set_folded(true, &mut q, 8).unwrap();
            assert_eq!(scale.on_scores(), scale.scale, "{d} {dtype:?}");
            assert_eq!(values(&q), before);
        }
    }
}
