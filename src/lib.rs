//! tidings: translate news articles into English and group them into events.
//!
//! One module per responsibility: `hub` finds model files, `weights` reads tensors, `tokenize`
//! turns text into ids and back, `translate` runs Marian models, `manifest` says which model
//! serves which language, `device` picks CPU or GPU.

pub mod article;
pub mod bench;
pub mod clean;
pub mod cluster;
pub mod detect;
pub mod device;
pub mod embed;
pub mod hub;
pub mod manifest;
pub mod metrics;
pub mod prepare;
pub mod segment;
pub mod store;
pub mod tokenize;
pub mod translate;
pub mod weights;
