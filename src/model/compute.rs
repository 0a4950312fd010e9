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
///
/// `F16` and `BF16` belong here once the GPU backend computes in them; until then a value that
/// no backend runs is never offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeType {
    /// f32 weights and activations: the same results as transformers.
    #[default]
    F32,
    /// 8-bit weights per output feature and activations quantised per row on every product
    /// (CTranslate2's int8): faster and smaller, CPU only, not bit-equal to f32.
    Int8,
}

impl ComputeType {
    pub fn name(self) -> &'static str {
        match self {
            ComputeType::F32 => "f32",
            ComputeType::Int8 => "int8",
        }
    }
}

impl FromStr for ComputeType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(ComputeType::F32),
            "int8" | "i8" => Ok(ComputeType::Int8),
            // The CLI shows this message as is (tests/cli.rs checks its wording).
            other => Err(format!(
                "unknown weight format `{other}` (expected f32 or int8)"
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
        for c in [ComputeType::F32, ComputeType::Int8] {
            assert_eq!(c.to_string().parse::<ComputeType>(), Ok(c));
        }
        assert_eq!("FLOAT32".parse::<ComputeType>(), Ok(ComputeType::F32));
        let err = "int4".parse::<ComputeType>().unwrap_err();
        assert!(
            err.contains("int4") && err.contains("expected f32 or int8"),
            "{err}"
        );
        assert_eq!(
            serde_json::to_string(&ComputeType::Int8).unwrap(),
            "\"int8\""
        );
    }
}
