//! Bodies of the LibreTranslate-compatible endpoints (`POST /translate`, `POST /detect`,
//! `GET /languages`), in LibreTranslate's own shapes and names. Requests may also come as
//! forms; unknown fields are ignored, as LibreTranslate does.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn default_auto() -> String {
    "auto".into()
}

/// `q`: one text or a list.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The texts, and whether one text was given (not a list).
    pub fn into_texts(self) -> (Vec<String>, bool) {
        match self {
            OneOrMany::One(s) => (vec![s], true),
            OneOrMany::Many(v) => (v, false),
        }
    }
}

/// `POST /translate`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct LibreTranslateRequest {
    pub q: OneOrMany,
    /// ISO 639-1, or `auto` to detect.
    #[serde(default = "default_auto")]
    #[schema(default = "auto")]
    pub source: String,
    /// Only `en`.
    pub target: String,
    /// Only `text`.
    #[serde(default)]
    pub format: Option<String>,
    /// The API key, for clients that cannot send headers.
    #[serde(default)]
    pub api_key: Option<String>,
}

/// A detected language; confidence from 0 to 100, as LibreTranslate reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LibreDetection {
    pub confidence: f64,
    pub language: String,
}

/// `POST /translate`: a text for a text, a list for a list. `detectedLanguage` only with
/// `source: auto`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum LibreTranslateResponse {
    One {
        #[serde(rename = "detectedLanguage", skip_serializing_if = "Option::is_none")]
        detected_language: Option<LibreDetection>,
        #[serde(rename = "translatedText")]
        translated_text: String,
    },
    Many {
        #[serde(rename = "detectedLanguage", skip_serializing_if = "Option::is_none")]
        detected_language: Option<Vec<LibreDetection>>,
        #[serde(rename = "translatedText")]
        translated_text: Vec<String>,
    },
}

/// `POST /detect`: the answer is a list of [`LibreDetection`] (empty when undetectable).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct LibreDetectRequest {
    pub q: String,
    #[serde(default)]
    pub api_key: Option<String>,
}

/// One entry of `GET /languages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LibreLanguage {
    pub code: String,
    pub name: String,
    /// Always `["en"]`.
    pub targets: Vec<String>,
}

/// LibreTranslate's error body, for a missing or wrong API key (403).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LibreError {
    pub error: String,
}
