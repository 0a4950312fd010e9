//! The modules after the encoder: Pooling (token vectors to one vector), Dense (a linear layer
//! with an activation) and Normalize (unit L2 norm), as sentence-transformers computes them for
//! right-padded batches.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::Linear;

use super::config::{DenseAct, DenseConfig, PoolingConfig, PoolingMode};
use super::EmbedError;
use crate::model::checkpoint::check_shape;

type Result<T> = std::result::Result<T, EmbedError>;

/// Pools (n, s, d) hidden states under an (n, s) 0/1 mask into (n, modes * d).
pub fn pool(cfg: &PoolingConfig, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (n, s, _) = hidden.dims3()?;
    let device = hidden.device();
    let lengths: Vec<f32> = mask.sum(1)?.to_vec1()?;
    let mut parts = Vec::with_capacity(cfg.modes.len());
    for &mode in &cfg.modes {
        let pooled = match mode {
            PoolingMode::Max => {
                // Padding positions never win; a row without tokens gives -inf, as in torch.
                let keep = mask.unsqueeze(2)?.broadcast_as(hidden.shape())?.ne(0f32)?;
                let floor = Tensor::full(f32::NEG_INFINITY, hidden.shape(), device)?;
                keep.where_cond(hidden, &floor)?.max(1)?
            }
            // The other modes are weighted sums over positions: one (n, 1, s) x (n, s, d) matmul.
            _ => {
                let weights = position_weights(mode, &lengths, mask, s, device)?;
                weights.reshape((n, 1, s))?.matmul(hidden)?.squeeze(1)?
            }
        };
        parts.push(pooled);
    }
    Ok(Tensor::cat(&parts, D::Minus1)?)
}

/// Per-position weights (n, s) of a weighted-sum pooling mode.
fn position_weights(
    mode: PoolingMode,
    lengths: &[f32],
    mask: &Tensor,
    s: usize,
    device: &Device,
) -> Result<Tensor> {
    let n = lengths.len();
    let one_hot = |pick: &dyn Fn(usize) -> usize| -> Result<Tensor> {
        let mut w = vec![0f32; n * s];
        for (row, &len) in lengths.iter().enumerate() {
            w[row * s + pick(len as usize)] = 1.0;
        }
        Ok(Tensor::from_vec(w, (n, s), device)?)
    };
    // sentence-transformers clamps token counts at 1e-9 so rows without tokens give 0, not NaN.
    let denominators = |f: &dyn Fn(f32) -> f32| -> Result<Tensor> {
        let v: Vec<f32> = lengths.iter().map(|&l| f(l.max(1e-9))).collect();
        Ok(Tensor::from_vec(v, (n, 1), device)?)
    };
    Ok(match mode {
        // Right padding: the first token is at 0 (also where torch's argmax lands for an
        // empty row), the last one at len - 1.
        PoolingMode::Cls => one_hot(&|_| 0)?,
        PoolingMode::LastToken => {
            let last = one_hot(&|len| len.saturating_sub(1))?;
            // torch multiplies by the mask, so an empty row pools to zeros.
            (last * mask)?
        }
        PoolingMode::Mean => mask.broadcast_div(&denominators(&|l| l)?)?,
        PoolingMode::MeanSqrtLen => mask.broadcast_div(&denominators(&|l| l.sqrt())?)?,
        PoolingMode::WeightedMean => {
            // Weights 1, 2, 3, ... on the tokens, divided by their sum.
            let ramp: Vec<f32> = (1..=s).map(|i| i as f32).collect();
            let ramp = Tensor::from_vec(ramp, (1, s), device)?;
            let w = mask.broadcast_mul(&ramp)?;
            let sums: Vec<f32> = w.sum(1)?.to_vec1()?;
            let sums: Vec<f32> = sums.into_iter().map(|v| v.max(1e-9)).collect();
            w.broadcast_div(&Tensor::from_vec(sums, (n, 1), device)?)?
        }
        PoolingMode::Max => {
            return Err(EmbedError::Input(
                "max pooling has no position weights".into(),
            ))
        }
    })
}

/// A Dense module: `activation(x W^T + b)`.
pub struct Dense {
    linear: Linear,
    activation: DenseAct,
    pub out_features: usize,
}

impl Dense {
    /// Builds the layer from the module's weights file, whose tensors are `linear.weight` and
    /// `linear.bias`.
    pub fn new(
        cfg: &DenseConfig,
        tensors: &HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = tensors.get(name).ok_or_else(|| {
                EmbedError::Weights(format!(
                    "the Dense module next to {} has no `{name}` tensor",
                    cfg.path.display()
                ))
            })?;
            check_shape(t, name, shape)?;
            Ok(t.to_device(device)?.to_dtype(DType::F32)?)
        };
        let w = get("linear.weight", &[cfg.out_features, cfg.in_features])?;
        let b = if cfg.bias {
            Some(get("linear.bias", &[cfg.out_features])?)
        } else {
            None
        };
        Ok(Self {
            linear: Linear::new(w, b),
            activation: cfg.activation,
            out_features: cfg.out_features,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = self.linear.forward(xs)?;
        Ok(match self.activation {
            DenseAct::Identity => ys,
            DenseAct::Tanh => ys.tanh()?,
            DenseAct::Relu => ys.relu()?,
            DenseAct::Gelu => ys.gelu_erf()?,
            DenseAct::Sigmoid => candle_nn::ops::sigmoid(&ys)?,
        })
    }
}

/// Rows divided by their L2 norm, floored at 1e-12 like torch's `F.normalize`.
pub fn normalize(xs: &Tensor) -> Result<Tensor> {
    let norms = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(xs.broadcast_div(&norms)?)
}

/// L2-normalises one vector in place (same floor as [`normalize`]).
pub fn normalize_vec(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    let norm = norm.max(1e-12);
    for x in v.iter_mut() {
        *x = (f64::from(*x) / norm) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(modes: Vec<PoolingMode>) -> PoolingConfig {
        PoolingConfig {
            embedding_dimension: 2,
            modes,
        }
    }

    /// Two rows: [a, b, c] and [d, pad, pad].
    fn batch() -> (Tensor, Tensor) {
        let dev = Device::Cpu;
        let h = Tensor::from_vec(
            vec![
                1f32, 2., 3., -4., 5., 6., //
                7., 8., 100., 100., 100., 100.,
            ],
            (2, 3, 2),
            &dev,
        )
        .unwrap();
        let m = Tensor::from_vec(vec![1f32, 1., 1., 1., 0., 0.], (2, 3), &dev).unwrap();
        (h, m)
    }

    fn pooled(modes: Vec<PoolingMode>) -> Vec<Vec<f32>> {
        let (h, m) = batch();
        pool(&cfg(modes), &h, &m).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn each_mode_ignores_padding() {
        assert_eq!(
            pooled(vec![PoolingMode::Cls]),
            vec![vec![1., 2.], vec![7., 8.]]
        );
        assert_eq!(
            pooled(vec![PoolingMode::Max]),
            vec![vec![5., 6.], vec![7., 8.]]
        );
        assert_eq!(
            pooled(vec![PoolingMode::Mean]),
            vec![vec![3., 4. / 3.], vec![7., 8.]]
        );
        assert_eq!(
            pooled(vec![PoolingMode::LastToken]),
            vec![vec![5., 6.], vec![7., 8.]]
        );
        let w = pooled(vec![PoolingMode::WeightedMean]);
        // (1*1 + 2*3 + 3*5) / 6, (1*2 - 2*4 + 3*6) / 6
        assert!((w[0][0] - 22. / 6.).abs() < 1e-6 && (w[0][1] - 2.).abs() < 1e-6);
        assert_eq!(w[1], vec![7., 8.]);
        let q = pooled(vec![PoolingMode::MeanSqrtLen]);
        assert!((q[0][0] - 9. / 3f32.sqrt()).abs() < 1e-5);
    }

    #[test]
    fn modes_concatenate_in_order() {
        let v = pooled(vec![PoolingMode::Max, PoolingMode::Cls]);
        assert_eq!(v[0], vec![5., 6., 1., 2.]);
    }

    #[test]
    fn normalize_gives_unit_rows_and_keeps_zero_rows() {
        let t = Tensor::from_vec(vec![3f32, 4., 0., 0.], (2, 2), &Device::Cpu).unwrap();
        let n: Vec<Vec<f32>> = normalize(&t).unwrap().to_vec2().unwrap();
        assert_eq!(n, vec![vec![0.6, 0.8], vec![0., 0.]]);
    }
}
