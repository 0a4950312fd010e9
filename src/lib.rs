//! tidings: translate news articles into English and group them into events.
//!
//! One module per responsibility. The engine: `hub` finds model files, `weights` reads tensors,
//! `tokenize` turns text into ids and back, `translate` runs Marian models, `embed` runs
//! sentence-transformers models, `kernels` is their CPU compute (packed f32 and int8 matrix
//! products, transformer layers on plain buffers), `manifest` says which model serves which
//! language, `device` picks CPU or GPU. The articles: `article` reads input, `clean` removes page furniture,
//! `detect` finds languages, `segment` splits sentences, `prepare` does all three; `cluster`
//! groups and explains, `metrics` scores groupings, `store` caches and resumes, `pipeline` runs
//! the whole chain, `plot` draws it, `bench` measures speed.

pub mod article;
pub mod bench;
pub mod clean;
pub mod cluster;
pub mod detect;
pub mod device;
pub mod embed;
pub mod hub;
pub mod kernels;
pub mod manifest;
pub mod metrics;
pub mod pipeline;
pub mod plot;
pub mod prepare;
pub mod segment;
pub mod server;
pub mod store;
pub mod tokenize;
pub mod translate;
pub mod weights;
