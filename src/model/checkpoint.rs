//! A checkpoint's tensors by name, the one weights loader of the translation and the embedding
//! models: it finds each tensor under the checkpoint's prefix, checks its shape against what the
//! config implies, and hands it over as a contiguous tensor of the model's type (f32 unless
//! [`Checkpoint::with_dtype`] says otherwise; cast before it moves, so a half-precision model
//! sends half the bytes to its device) on the model's device. The models then build their
//! layers (candle tensors, or packed for the CPU kernels) from it.
//!
//! Reading the files is [`crate::model::weights`]'s job; this only looks names up.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{LayerNorm, Linear};

/// A tensor the model needs is absent or has the wrong shape.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("tensor `{0}` is missing from the weights")]
    Missing(String),
    #[error("tensor `{name}` has shape {got:?}, the config implies {want:?}")]
    Shape {
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("tensor `{name}`: {source}")]
    Tensor {
        name: String,
        #[source]
        source: candle_core::Error,
    },
}

type Result<T> = std::result::Result<T, CheckpointError>;

/// Tensors by name, as a state dict names them, with the names a model asks for looked up under
/// `prefix` (`model.` for MarianMTModel, `bert.` for a task model's encoder, ...).
pub struct Checkpoint {
    tensors: HashMap<String, Tensor>,
    prefix: String,
    device: Device,
    dtype: DType,
}

/// Fails when `t` does not have `shape`.
pub fn check_shape(t: &Tensor, name: &str, shape: &[usize]) -> Result<()> {
    if t.dims() != shape {
        return Err(CheckpointError::Shape {
            name: name.to_string(),
            got: t.dims().to_vec(),
            want: shape.to_vec(),
        });
    }
    Ok(())
}

impl Checkpoint {
    pub fn new(
        tensors: HashMap<String, Tensor>,
        prefix: impl Into<String>,
        device: &Device,
    ) -> Self {
        Self {
            tensors,
            prefix: prefix.into(),
            device: device.clone(),
            dtype: DType::F32,
        }
    }

    /// Hands tensors over as `dtype` (f16 or bf16 for a half-precision model).
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// The type tensors are handed over as.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shortest prefix under which `anchor` is a name, if any (`""` counts).
    pub fn prefix_of(tensors: &HashMap<String, Tensor>, anchor: &str) -> Option<String> {
        tensors
            .keys()
            .filter_map(|k| k.strip_suffix(anchor))
            .filter(|p| p.is_empty() || p.ends_with('.'))
            .min_by_key(|p| p.len())
            .map(str::to_string)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether `name` (under the prefix) is in the checkpoint.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(&format!("{}{name}", self.prefix))
    }

    /// The tensor called exactly `full_name` (no prefix), if present.
    pub fn exact_opt(&self, full_name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        self.exact_opt_as(full_name, shape, self.dtype)
    }

    /// [`Checkpoint::exact_opt`] as `dtype`, whatever the model's type (e.g. a bias added in
    /// f32).
    pub fn exact_opt_as(
        &self,
        full_name: &str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Option<Tensor>> {
        let Some(t) = self.tensors.get(full_name) else {
            return Ok(None);
        };
        check_shape(t, full_name, shape)?;
        let converted = || -> candle_core::Result<Tensor> {
            // Contiguous, so that the CPU kernels can read weights as plain slices.
            t.to_dtype(dtype)?.to_device(&self.device)?.contiguous()
        };
        converted()
            .map(Some)
            .map_err(|source| CheckpointError::Tensor {
                name: full_name.to_string(),
                source,
            })
    }

    /// The tensor called exactly `full_name` (no prefix).
    pub fn exact(&self, full_name: &str, shape: &[usize]) -> Result<Tensor> {
        self.exact_opt(full_name, shape)?
            .ok_or_else(|| CheckpointError::Missing(full_name.to_string()))
    }

    /// `name` under the prefix, if present.
    pub fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        self.exact_opt(&format!("{}{name}", self.prefix), shape)
    }

    /// `name` under the prefix.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.exact(&format!("{}{name}", self.prefix), shape)
    }

    /// `{name}.weight` (out_dim, in_dim) and `{name}.bias` (out_dim).
    pub fn linear(&self, name: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
        let w = self.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let b = self.get(&format!("{name}.bias"), &[out_dim])?;
        Ok(Linear::new(w, Some(b)))
    }

    /// `{name}.weight` and `{name}.bias`, or the `gamma` / `beta` of TensorFlow-era conversions.
    pub fn layer_norm(&self, name: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
        let (w, b) = if self.has(&format!("{name}.weight")) || !self.has(&format!("{name}.gamma")) {
            ("weight", "bias")
        } else {
            ("gamma", "beta")
        };
        let w = self.get(&format!("{name}.{w}"), &[dim])?;
        let b = self.get(&format!("{name}.{b}"), &[dim])?;
        Ok(LayerNorm::new(w, b, eps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors(names: &[(&str, &[usize])]) -> HashMap<String, Tensor> {
        names
            .iter()
            .map(|(n, s)| {
                let t = Tensor::zeros(*s, DType::F32, &Device::Cpu).unwrap();
                (n.to_string(), t)
            })
            .collect()
    }

    #[test]
    fn looks_names_up_under_the_prefix_and_checks_shapes() {
        let t = tensors(&[
            ("bert.embeddings.word_embeddings.weight", &[4, 2]),
            ("bert.norm.gamma", &[2]),
            ("bert.norm.beta", &[2]),
            ("head.weight", &[3]),
        ]);
        let prefix = Checkpoint::prefix_of(&t, "embeddings.word_embeddings.weight").unwrap();
        assert_eq!(prefix, "bert.");
        let c = Checkpoint::new(t, prefix, &Device::Cpu);
        assert!(c.get("embeddings.word_embeddings.weight", &[4, 2]).is_ok());
        assert!(c.layer_norm("norm", 2, 1e-5).is_ok());
        assert!(c.exact("head.weight", &[3]).is_ok());
        let missing = c.get("nope", &[1]).unwrap_err().to_string();
        assert_eq!(missing, "tensor `bert.nope` is missing from the weights");
        let shape = c.exact("head.weight", &[4]).unwrap_err().to_string();
        assert!(shape.contains("[3]") && shape.contains("[4]"), "{shape}");
        assert!(c.get_opt("nope", &[1]).unwrap().is_none());
    }
}
