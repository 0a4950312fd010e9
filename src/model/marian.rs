//! Translation with Marian / OPUS-MT models: configuration ([`config`]), what a backend does
//! ([`backend`]) and the two that do it ([`cpu`]: the CPU kernels, [`tensors`]: candle tensors on
//! any device, f32 or half precision, with its decoder state in [`tensor_state`]), the model with its backend chosen at load ([`model`]),
//! generation written once for every backend ([`generate`]), the search over each step's logits
//! on the host ([`search`]) or where the tensors are ([`device_search`]), the project's own GPU
//! kernels with their CPU references ([`fused`]), the profiler
//! ([`profile`]), random-weight models of real shapes ([`random`]) and the tokenizer + model +
//! batching a caller uses ([`translator`]).

pub mod backend;
pub mod config;
pub mod cpu;
pub mod device_search;
pub mod fused;
pub mod generate;
pub mod model;
pub mod profile;
pub mod random;
pub mod search;
pub mod tensor_state;
pub mod tensors;
pub mod translator;

use std::path::PathBuf;

pub use crate::model::compute::ComputeType;
pub use backend::{BackendKind, DecoderState, EncodedBatch, MarianBackend};
pub use config::{EarlyStopping, GenerationConfig, MarianConfig};
pub use cpu::CpuMarian;
pub use fused::FusedKernels;
pub use model::MarianModel;
pub use tensors::TensorMarian;
pub use translator::{TranslateOptions, Translation, Translator};

/// Everything that can go wrong between a model folder and a translation.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("invalid model configuration: {0}")]
    Config(String),
    #[error("invalid model weights: {0}")]
    Weights(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {reason}")]
    CorruptFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Hub(#[from] crate::model::hub::HubError),
    #[error(transparent)]
    Tokenize(#[from] crate::model::tokenize::TokenizeError),
    #[error(transparent)]
    WeightsFile(#[from] crate::model::weights::WeightsError),
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl From<crate::model::checkpoint::CheckpointError> for TranslateError {
    fn from(e: crate::model::checkpoint::CheckpointError) -> Self {
        TranslateError::Weights(e.to_string())
    }
}
