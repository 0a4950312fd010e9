//! The HTTP contract: the typed request and response bodies of every endpoint, from which the
//! OpenAPI document ([`super::openapi`]) is generated.
//!
//! These types know nothing of models or tensors; handlers fill them from what the engine, the
//! align workflow and the store answer. Two rules keep the answers byte-for-byte what the
//! service has always sent:
//!
//! - response fields are declared in alphabetical order, the order in which the service has
//!   always written them (its answers used to be built as sorted JSON maps); the align answer
//!   ([`articles::AlignResponse`]) is the exception and keeps the align output's own order;
//! - scores measured as `f32` inside are sent as their `f64` widening (`f64::from`), as before;
//!   again except in the align answer, which sends them as `f32`.

pub mod articles;
pub mod embeddings;
pub mod jobs;
pub mod libre;
pub mod models;
pub mod translate;

use serde::{Deserialize, Serialize};
use utoipa::{IntoResponses, ToSchema};

/// The one error body of the service, with every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// Machine-readable kind: `malformed_request`, `invalid_request`, `unsupported_language`,
    /// `unauthorized`, `request_timeout`, `payload_too_large`, `unsupported_media_type`, `not_found`,
    /// `too_long`, `method_not_allowed`, `conflict`, `overloaded`, `model_unavailable`,
    /// `shutting_down`, `not_ready`, `no_models`, `store_unavailable` or `internal`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// `GET /health` (`"ok"`) and `GET /ready` (`"ready"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    pub status: String,
}

impl Status {
    pub fn new(status: &str) -> Self {
        Self {
            status: status.to_string(),
        }
    }
}

/// `GET /ready`: ready, and the configured models that cannot be loaded (whose requests will
/// fail until they are fetched or fixed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready`.
    pub status: String,
    pub unavailable: Vec<UnavailableModel>,
    /// The store, as configured (a database URL without its password).
    pub store: String,
}

/// A configured model that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnavailableModel {
    /// `org/name@revision`, or the folder.
    pub model: String,
    /// The languages it serves; empty for the embedding model.
    pub languages: Vec<String>,
    /// `translation` or `embedding`.
    pub role: String,
    /// Why, with what to do about it.
    pub reason: String,
}

impl From<&crate::engine::UnavailableModel> for UnavailableModel {
    fn from(m: &crate::engine::UnavailableModel) -> Self {
        Self {
            model: m.model.clone(),
            languages: m.languages.clone(),
            role: m.role.clone(),
            reason: m.reason.clone(),
        }
    }
}

/// The errors an endpoint that reads a request body can answer (documentation only).
#[derive(IntoResponses)]
pub enum BodyErrors {
    /// Not JSON (or, for LibreTranslate clients, not a form), or unreadable.
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// Missing or wrong API key.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The body did not arrive within `--read-timeout` (the connection is then closed).
    #[response(status = 408)]
    Timeout(ErrorBody),
    /// The body is larger than `--max-body-bytes`.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// No `Content-Type`, or one the endpoint does not read (JSON; forms for LibreTranslate).
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// Valid JSON with values that cannot be accepted (shape, limits, unsupported language).
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// Too many requests in flight.
    #[response(status = 429, headers(("Retry-After" = u64, description = "seconds")))]
    Overloaded(ErrorBody),
    /// A model is not available (named in the error), or the server is shutting down.
    #[response(status = 503, headers(("Retry-After" = u64, description = "seconds")))]
    Unavailable(ErrorBody),
}

/// The errors an endpoint without a request body can answer (documentation only).
#[derive(IntoResponses)]
pub enum QueryErrors {
    /// Missing or wrong API key.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Too many requests in flight.
    #[response(status = 429, headers(("Retry-After" = u64, description = "seconds")))]
    Overloaded(ErrorBody),
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde_json::json;

    use super::articles::{EventDetail, EventList, EventMember, EventSummary, IngestResponse};
    use super::libre::{LibreDetection, LibreLanguage, LibreTranslateResponse};
    use super::models::{EmbeddingModel, ModelInfo, ModelsResponse};
    use super::translate::*;
    use super::*;

    /// The body as sent, and as the sorted JSON map the service used to build: the same bytes.
    fn assert_sorted_wire<T: Serialize>(body: &T) {
        let sent = serde_json::to_string(body).unwrap();
        let sorted = serde_json::to_string(&serde_json::to_value(body).unwrap()).unwrap();
        assert_eq!(sent, sorted);
    }

    fn item(sentences: bool) -> TranslatedText {
        TranslatedText {
            detected_language: Some(DetectedLanguage {
                code: "de".into(),
                confidence: f64::from(0.7f32),
                reliable: true,
            }),
            model: None,
            sentences: sentences.then(|| {
                vec![TranslatedSentence {
                    end: 5,
                    paragraph: 0,
                    source: "Hallo".into(),
                    start: 0,
                    translation: "Hello".into(),
                }]
            }),
            source_language: "de".into(),
            text: "Hello".into(),
        }
    }

    #[test]
    fn answers_keep_the_sorted_field_order() {
        assert_sorted_wire(&item(true));
        assert_sorted_wire(&TranslateResponse::Many {
            results: vec![item(false)],
        });
        assert_sorted_wire(&DetectResponse::Many {
            results: vec![Detection {
                code: None,
                confidence: 0.0,
                reliable: false,
            }],
        });
        assert_sorted_wire(&EmbedResponse {
            dim: 1,
            embeddings: vec![vec![f64::from(0.1f32)]],
            model: "m".into(),
        });
        let info = ModelInfo {
            id: "org/m".into(),
            languages: vec!["de".into()],
            license: None,
            loaded: true,
            revision: Some("main".into()),
        };
        assert_sorted_wire(&ModelsResponse {
            embedding_model: EmbeddingModel {
                id: "e".into(),
                loaded: false,
            },
            fallback: Some(info.clone()),
            models: vec![info],
        });
        let event = EventDetail {
            created_at: 1,
            id: 2,
            info: Some(json!({"title": "t", "first_article": "a"})),
            members: vec![EventMember {
                added_at: 1,
                article_id: "a".into(),
                similarity: 1.0,
            }],
            size: 1,
            title: Some("t".into()),
        };
        assert_sorted_wire(&IngestResponse {
            article: super::articles::IngestedArticle {
                confidence: 1.0,
                id: "a".into(),
                lang: "en".into(),
                models: vec![],
                title_en: "t".into(),
                translation: "x".into(),
            },
            created: true,
            event: Some(event),
            similarity: 1.0,
            warnings: vec!["w".into()],
        });
        assert_sorted_wire(&EventList {
            events: vec![EventSummary {
                created_at: 1,
                id: 2,
                size: 3,
                title: None,
            }],
            total: 1,
        });
        assert_sorted_wire(&LibreTranslateResponse::One {
            detected_language: Some(LibreDetection {
                confidence: 90.0,
                language: "de".into(),
            }),
            translated_text: "x".into(),
        });
        assert_sorted_wire(&vec![LibreLanguage {
            code: "en".into(),
            name: "English".into(),
            targets: vec!["en".into()],
        }]);
        assert_sorted_wire(&ErrorBody {
            error: "e".into(),
            kind: "internal".into(),
        });
    }

    #[test]
    fn single_and_many_shapes() {
        let one = serde_json::to_value(TranslateResponse::One(item(false))).unwrap();
        assert_eq!(one["text"], "Hello");
        assert!(one.get("sentences").is_none());
        assert_eq!(one["model"], serde_json::Value::Null);
        let many = serde_json::to_value(LibreTranslateResponse::Many {
            detected_language: None,
            translated_text: vec!["a".into()],
        })
        .unwrap();
        assert_eq!(many, json!({"translatedText": ["a"]}));
    }
}
