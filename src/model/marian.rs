//! Translation with Marian / OPUS-MT models: configuration, the model, and generation.

pub mod config;
pub mod generate;
pub mod model;
pub mod random;
pub mod translator;

use std::path::PathBuf;

pub use crate::model::kernels::layers::WeightFormat;
pub use config::{EarlyStopping, GenerationConfig, MarianConfig};
pub use model::MarianModel;
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
