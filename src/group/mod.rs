//! Grouping articles into events. Works on vectors and English text only: no models, no store.
//!
//! Vectors are sentence embeddings (all-MiniLM-L6-v2: 384 dimensions, L2-normalised), so the
//! cosine similarity of two articles is their dot product. The files:
//!
//! * `options.rs`: [`ClusterOptions`] for both modes, the tuned [`DEFAULT_THRESHOLD`], and
//!   [`ClusterError`].
//! * `similarity.rs`: [`cosine`], [`normalize`] and the fixed-order dot products both modes use.
//! * `batch.rs`: [`group`] and [`group_texts`], batch agglomerative clustering (complete or
//!   average linkage) stopped at a similarity threshold, with "cannot-link" constraints between
//!   articles published too far apart.
//! * `keywords.rs`: the TF-IDF cosine of two articles' words, the evidence [`group_texts`] adds
//!   to the embedding cosine.
//! * `online.rs`: [`OnlineGrouper`], one article at a time against event centroids, for a
//!   running service and for inputs too large to compare every pair; its events leave its
//!   working set once the time window has passed them.
//! * `candidates.rs`: the online grouper's candidate events: per block of days, an HNSW index
//!   of event centroids, used once many events are inside the window.
//! * `themes.rs`: [`themes`], the second level: events gathered into themes (similar
//!   happenings) by clustering their centroids at a lower threshold.
//! * `explain.rs`: [`explain`] says what an event is about: a representative title, keywords
//!   against a [`Corpus`], shared names and shared numbers.
//! * [`eval`]: the scores that evaluate a grouping against a gold one.
//!
//! Everything but [`eval`] is used through this module: `tidings::group::OnlineGrouper`.

mod batch;
mod candidates;
pub mod eval;
mod explain;
mod keywords;
mod online;
mod options;
mod similarity;
mod themes;

pub use batch::{group, group_texts};
pub use explain::{explain, Corpus, Explanation, KEYWORDS};
pub use online::{Assignment, OnlineEvent, OnlineGrouper};
pub use options::{
    ClusterError, ClusterOptions, Linkage, Search, APPROXIMATE_FROM, DEFAULT_KEYWORD_WEIGHT,
    DEFAULT_THEME_THRESHOLD, DEFAULT_THRESHOLD,
};
pub use similarity::{cosine, normalize};
pub use themes::{centroid, themes, themes_texts};
