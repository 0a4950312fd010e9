//! Grouping articles into events: similarity, batch and online grouping and explanations
//! ([`cluster`]), and the scores that evaluate a grouping against a gold one ([`eval`]). Works on
//! vectors and English text only: no models, no store.

pub mod cluster;
pub mod eval;
