//! Bodies of the align jobs (`POST /v1/align/jobs`, `GET /v1/align/jobs/{id}`) and of
//! `POST /v1/inspect`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::articles::AlignResponse;
use super::ErrorBody;

/// An align job: where it is, and its result once done.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlignJob {
    pub id: String,
    /// `queued`, `running`, `done` or `failed`.
    pub status: String,
    /// The stage running (`preparing`, `translating`, `embedding`); `null` before the first.
    #[schema(required = true)]
    pub stage: Option<String>,
    /// Units of the stage done (articles, or sentences while translating) and their total.
    pub done: usize,
    pub total: usize,
    /// Notes for people (a language going to the fallback model).
    pub notices: Vec<String>,
    /// What `POST /v1/align` answers, once `status` is `done`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result: Option<AlignResponse>,
    /// The event map and the similarity heatmap (SVG), once done.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub plot_svg: Option<String>,
    /// Why it failed, once `status` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<ErrorBody>,
}

/// A line removed from a page, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RemovedLine {
    /// 1-based line of the text as given (the title not counted).
    pub line: usize,
    pub text: String,
    /// `placeholder`, `counter`, `source`, `credit`, `dateline`, `agency_prefix`,
    /// `glued_duplicate`, `duplicate`, `related_links`, `short_fragment` or `no_letters`.
    pub reason: String,
}

/// A kept paragraph: its language and sentences (UTF-8 byte offsets into `text`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InspectedParagraph {
    pub text: String,
    #[schema(required = true)]
    pub lang: Option<String>,
    pub confidence: f64,
    pub sentences: Vec<InspectedSentence>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InspectedSentence {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// `POST /v1/inspect`: what cleaning, detection and splitting make of one article.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InspectResponse {
    pub id: String,
    pub title: String,
    #[schema(required = true)]
    pub lang: Option<String>,
    pub confidence: f64,
    pub paragraphs: Vec<InspectedParagraph>,
    pub removed: Vec<RemovedLine>,
}
