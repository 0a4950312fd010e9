//! Bodies of `POST /v1/translate`, `POST /v1/detect` and `POST /v1/embed`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn default_auto() -> String {
    "auto".into()
}

fn default_en() -> String {
    "en".into()
}

/// `POST /v1/translate`: one text (`text`) or several (`texts`), exactly one of the two.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TranslateRequest {
    /// One text; the answer is one result.
    pub text: Option<String>,
    /// Several texts; the answer is `{"results": [...]}` in the same order.
    pub texts: Option<Vec<String>>,
    /// ISO 639-1 code of the texts, or `auto` to detect each text's language.
    #[serde(default = "default_auto")]
    #[schema(default = "auto")]
    pub source: String,
    /// Only `en`: tidings translates into English.
    #[serde(default = "default_en")]
    #[schema(default = "en")]
    pub target: String,
    /// Beam width (1 is greedy), at most the server's `--max-beam`; absent: the model's own.
    #[schema(minimum = 1)]
    pub beam: Option<usize>,
    /// Add each text's sentence map (`sentences`) to its result.
    #[serde(default)]
    pub return_sentences: bool,
}

/// A language detection of a translated text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DetectedLanguage {
    /// ISO 639-1.
    pub code: String,
    /// 0 to 1.
    pub confidence: f64,
    /// Whether `confidence` reaches the floor (0.5) below which a detection is only a guess.
    pub reliable: bool,
}

/// One sentence of an input text and its translation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TranslatedSentence {
    /// End of the sentence in the input text: a UTF-8 byte offset (exclusive).
    pub end: usize,
    /// The line (`\n`-separated, from 0) of the input text the sentence is on.
    pub paragraph: usize,
    /// The sentence as it is in the input text: `text[start..end]`.
    pub source: String,
    /// Start of the sentence in the input text: a UTF-8 byte offset, not a character index.
    pub start: usize,
    pub translation: String,
}

/// One translated text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TranslatedText {
    /// What detection said about the text; `null` when it could not tell (only possible with
    /// an explicit `source`).
    #[schema(required = true)]
    pub detected_language: Option<DetectedLanguage>,
    /// The model used (`org/name@revision` or a folder); `null` when none was needed (English).
    #[schema(required = true)]
    pub model: Option<String>,
    /// With `return_sentences` only: the sentences, in order.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sentences: Option<Vec<TranslatedSentence>>,
    /// The language it was translated from.
    pub source_language: String,
    /// The English text: sentences joined by a space, the input's line breaks kept.
    pub text: String,
}

/// `POST /v1/translate`: one result for `text`, `results` for `texts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TranslateResponse {
    Many { results: Vec<TranslatedText> },
    One(TranslatedText),
}

/// `POST /v1/detect` and `POST /v1/embed`: one text (`text`) or several (`texts`), exactly one
/// of the two.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextsRequest {
    pub text: Option<String>,
    pub texts: Option<Vec<String>>,
}

/// The language of one text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Detection {
    /// ISO 639-1; `null` when the language cannot be told (e.g. only digits).
    #[schema(required = true)]
    pub code: Option<String>,
    /// 0 to 1; 0 when `code` is `null`.
    pub confidence: f64,
    /// Whether `confidence` reaches the floor (0.5) below which `code` is only a guess.
    pub reliable: bool,
}

/// `POST /v1/detect`: one detection for `text`, `results` for `texts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DetectResponse {
    Many { results: Vec<Detection> },
    One(Detection),
}

/// `POST /v1/embed`: sentence embeddings of English texts, in the order given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbedResponse {
    /// Length of each vector.
    pub dim: usize,
    /// One unit-length vector per text.
    pub embeddings: Vec<Vec<f64>>,
    /// The embedding model.
    pub model: String,
}
