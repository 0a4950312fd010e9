//! The product's compute type: what `--compute-type` (and `TIDINGS_COMPUTE_TYPE`) choose, what
//! stores key translations by, and what a translation model is loaded with.
//!
//! It says what numbers a model computes with, not how a backend stores them: the CPU kernels
//! map it to their own storage format ([`crate::model::kernels::layers::WeightFormat`]) and the
//! candle-tensor backend to a tensor dtype, so either side can change without the other.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a translation model computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeType {
    /// f32 weights and activations: the same results as transformers.
    #[default]
    F32,
    /// 8-bit weights per output feature and activations quantised per row on every product
    /// (CTranslate2's int8): faster and smaller, CPU only, not bit-equal to f32.
    Int8,
    /// IEEE half precision weights and matrix products on a GPU; softmax, layer norm and scores
    /// accumulate in f32. Not bit-equal to f32.
    F16,
    /// bfloat16 weights and matrix products on a GPU (f32's range, fewer digits than f16);
    /// softmax, layer norm and scores accumulate in f32. Not bit-equal to f32.
    #[serde(rename = "bf16")]
    BF16,
}

impl ComputeType {
    pub fn name(self) -> &'static str {
        match self {
            ComputeType::F32 => "f32",
            ComputeType::Int8 => "int8",
            ComputeType::F16 => "f16",
            ComputeType::BF16 => "bf16",
        }
    }

    /// What an embedding model computes in: int8 applies to translation models only, so
    /// embeddings compute in f32 then.
    pub fn for_embeddings(self) -> ComputeType {
        match self {
            ComputeType::Int8 => ComputeType::F32,
            other => other,
        }
    }
}

/// What `--compute-type` asks for: one type, or `auto`, which picks by device once it is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComputeChoice {
    /// f32 on the CPU; on a GPU bf16 where it computes in bf16 (compute capability 8.0 and
    /// later), else f16.
    Auto,
    #[default]
    F32,
    Fixed(ComputeType),
}

impl ComputeChoice {
    /// The compute type on `device`.
    pub fn resolve(self, device: &candle_core::Device) -> ComputeType {
        match self {
            ComputeChoice::F32 => ComputeType::F32,
            ComputeChoice::Fixed(t) => t,
            ComputeChoice::Auto if device.is_cpu() => ComputeType::F32,
            ComputeChoice::Auto if crate::model::device::has_bf16(device) => ComputeType::BF16,
            ComputeChoice::Auto => ComputeType::F16,
        }
    }
}

impl FromStr for ComputeChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(ComputeChoice::Auto);
        }
        match s.parse::<ComputeType>()? {
            ComputeType::F32 => Ok(ComputeChoice::F32),
            t => Ok(ComputeChoice::Fixed(t)),
        }
    }
}

impl FromStr for ComputeType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(ComputeType::F32),
            "int8" | "i8" => Ok(ComputeType::Int8),
            "f16" | "float16" | "half" => Ok(ComputeType::F16),
            "bf16" | "bfloat16" => Ok(ComputeType::BF16),
            // The CLI shows this message as is (tests/cli.rs checks its wording).
            other => Err(format!(
                "unknown weight format `{other}` (expected f32, int8, f16, bf16 or auto)"
            )),
        }
    }
}

impl fmt::Display for ComputeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_prints_and_refuses_the_rest() {
        for c in [
            ComputeType::F32,
            ComputeType::Int8,
            ComputeType::F16,
            ComputeType::BF16,
        ] {
            assert_eq!(c.to_string().parse::<ComputeType>(), Ok(c));
        }
        assert_eq!("FLOAT32".parse::<ComputeType>(), Ok(ComputeType::F32));
        let err = "int4".parse::<ComputeType>().unwrap_err();
        assert!(
            err.contains("int4") && err.contains("expected f32, int8, f16, bf16 or auto"),
            "{err}"
        );
        assert_eq!(
            serde_json::to_string(&ComputeType::BF16).unwrap(),
            "\"bf16\""
        );
        let cpu = candle_core::Device::Cpu;
        assert_eq!(
            "auto".parse::<ComputeChoice>().unwrap().resolve(&cpu),
            ComputeType::F32
        );
        assert_eq!(
            "bf16".parse::<ComputeChoice>().unwrap().resolve(&cpu),
            ComputeType::BF16
        );
        assert_eq!(ComputeChoice::default().resolve(&cpu), ComputeType::F32);
        assert_eq!(
            serde_json::to_string(&ComputeType::Int8).unwrap(),
            "\"int8\""
        );
    }
}
