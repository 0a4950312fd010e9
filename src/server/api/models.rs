//! Body of `GET /v1/models`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A translation model and the source languages it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelInfo {
    /// Hub repository (`org/name`) or local folder.
    pub id: String,
    /// ISO 639-1 codes; `["*"]` for the fallback model.
    pub languages: Vec<String>,
    /// From the manifest, when it says.
    #[schema(required = true)]
    pub license: Option<String>,
    /// Whether it is in memory now.
    pub loaded: bool,
    /// Hub revision; `null` for a local folder.
    #[schema(required = true)]
    pub revision: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingModel {
    pub id: String,
    pub loaded: bool,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelsResponse {
    /// The sentence-embedding model (`/v1/embed`, `/v1/align`, `/v1/articles`).
    pub embedding_model: EmbeddingModel,
    /// The model for languages without one of their own; `null` when `--languages` is set.
    #[schema(required = true)]
    pub fallback: Option<ModelInfo>,
    /// One entry per model serving a language of its own.
    pub models: Vec<ModelInfo>,
}
