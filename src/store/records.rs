//! The records a store keeps, as typed values: finished articles ([`ArticleResult`] with its
//! [`SentenceMap`]s), the events and themes of a batch grouping run ([`Event`], [`Member`], [`Theme`]), and the events
//! of the online grouping ([`EventInfo`], [`EventSummary`], [`EventRecord`], [`EventMember`]).
//!
//! They are plain serde data and depend on nothing else in the crate, so every backend and
//! every layer above the store can share them. How a backend lays them out (JSON text, columns)
//! is its own business; the JSON shape of [`ArticleResult`] and [`Event`] is also the shape of
//! `tidings align`'s output.

use serde::{Deserialize, Serialize};

/// One translated sentence and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SentenceMap {
    pub paragraph: usize,
    /// Byte span of the source sentence in its (cleaned) paragraph.
    pub start: usize,
    pub end: usize,
    pub source: String,
    pub lang: String,
    pub translation: String,
}

/// Everything the pipeline knows about one article once it is done.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArticleResult {
    pub id: String,
    pub lang: String,
    pub confidence: f32,
    pub title: String,
    pub title_en: String,
    /// English text, paragraph by paragraph (blank line between paragraphs).
    pub translation: String,
    pub sentences: Vec<SentenceMap>,
    /// Models used, as `lang=model@revision`.
    pub models: Vec<String>,
    pub published_day: Option<i64>,
    pub removed_lines: usize,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub embedding: Vec<f32>,
}

/// One article of a batch grouping [`Event`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub id: String,
    /// Cosine similarity of the article to its event's centroid.
    pub similarity: f32,
}

/// One event of a batch grouping run, with its explanation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub id: String,
    pub title: String,
    pub keywords: Vec<String>,
    pub shared_names: Vec<String>,
    pub shared_numbers: Vec<String>,
    /// Id of the [`Theme`] the event belongs to (empty in results made before themes).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub theme: String,
    pub members: Vec<Member>,
}

/// Similar events of a batch grouping run (same kind of happening, same actors or campaign),
/// with what they share.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Theme {
    pub id: String,
    /// Title of the event closest to the theme's centroid.
    pub title: String,
    /// Highest TF-IDF terms over the theme's articles.
    pub keywords: Vec<String>,
    /// Names that appear in at least two of the theme's events.
    pub shared_names: Vec<String>,
    /// Ids of its events, in the order of the run's events.
    pub events: Vec<String>,
    /// Cosine similarity of each event's centroid to the theme's centroid, as `events`.
    pub similarities: Vec<f32>,
}

/// What is known about an event of the online grouping beyond its members. The HTTP service
/// shows it as the event's `info` object; a field that is not set is left out of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInfo {
    /// English title of the article that started the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Id of the article that started the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_article: Option<String>,
}

/// Summary of one event of the online grouping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventSummary {
    pub id: i64,
    pub size: usize,
    /// Set with `Store::set_event_info`, if it was.
    pub info: Option<EventInfo>,
    /// Unix seconds.
    pub created_at: i64,
}

/// One article of an online grouping event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMember {
    pub article_id: String,
    pub similarity: f32,
    /// Unix seconds.
    pub added_at: i64,
}

/// One event of the online grouping with its members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: i64,
    pub info: Option<EventInfo>,
    pub created_at: i64,
    /// In the order they joined.
    pub members: Vec<EventMember>,
}
