//! Grouping articles into events. Works on vectors and English text only: no models, no store.
//!
//! Vectors are sentence embeddings (all-MiniLM-L6-v2: 384 dimensions, L2-normalised), so the
//! cosine similarity of two articles is their dot product. The files:
//!
//! * `options.rs`: [`ClusterOptions`] for both modes, the tuned [`DEFAULT_THRESHOLD`], and
//!   [`ClusterError`].
//! * `similarity.rs`: [`cosine`], [`normalize`] and the fixed-order dot products both modes use.
//! * `batch.rs`: [`group`], batch agglomerative clustering with average linkage, stopped at a
//!   similarity threshold, with "cannot-link" constraints between articles published too far
//!   apart.
//! * `online.rs`: [`OnlineGrouper`], one article at a time against event centroids, for a
//!   running service.
//! * `themes.rs`: [`themes`], the second level: events gathered into themes (similar
//!   happenings) by clustering their centroids at a lower threshold.
//! * `explain.rs`: [`explain`] says what an event is about: a representative title, keywords
//!   against a [`Corpus`], shared names and shared numbers.
//! * [`eval`]: the scores that evaluate a grouping against a gold one.
//!
//! Everything but [`eval`] is used through this module: `tidings::group::OnlineGrouper`.

mod batch;
pub mod eval;
mod explain;
mod online;
mod options;
mod similarity;
mod themes;

pub use batch::group;
pub use explain::{explain, Corpus, Explanation, KEYWORDS};
pub use online::{Assignment, OnlineEvent, OnlineGrouper};
pub use options::{ClusterError, ClusterOptions, DEFAULT_THEME_THRESHOLD, DEFAULT_THRESHOLD};
pub use similarity::{cosine, normalize};
pub use themes::{centroid, themes};
