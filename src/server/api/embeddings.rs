//! Bodies of the embedding endpoints other tools' clients speak: text-embeddings-inference's
//! `POST /embed` and OpenAI's `POST /v1/embeddings`, in their own shapes and names.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::libre::OneOrMany;

fn yes() -> bool {
    true
}

/// `POST /embed` (text-embeddings-inference).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeiEmbedRequest {
    /// One text or a list.
    pub inputs: OneOrMany,
    /// Cut texts longer than the model reads (otherwise they are refused with a 413).
    #[serde(default)]
    pub truncate: bool,
    /// Unit-length vectors. A model with its own Normalize module (all-MiniLM-L6-v2) gives
    /// them either way.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub normalize: bool,
}

/// `POST /v1/embeddings` (OpenAI).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct OpenAiEmbeddingsRequest {
    /// One text or a list (token arrays are not taken).
    pub input: OneOrMany,
    /// Echoed in the answer's `model` only if it names the served model; any value is taken,
    /// and the answer says which model made the vectors.
    pub model: Option<String>,
    /// Only `float`.
    pub encoding_format: Option<String>,
    /// Not supported: the model's own dimension is returned.
    pub dimensions: Option<usize>,
    /// Taken and ignored, as OpenAI does.
    pub user: Option<String>,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OpenAiEmbeddingsResponse {
    /// `list`.
    pub object: String,
    pub data: Vec<OpenAiEmbedding>,
    pub model: String,
    pub usage: OpenAiUsage,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OpenAiEmbedding {
    /// `embedding`.
    pub object: String,
    pub index: usize,
    pub embedding: Vec<f64>,
}

/// Tokens the model read (special tokens included).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OpenAiUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}
