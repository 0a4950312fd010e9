//! tidings: translate news articles into English and group them into events.
//!
//! The modules follow the data, and dependencies point one way:
//! `text` ← `model` ← `engine` ← `app` ← `server` / the CLI; `group` and `store` depend on
//! neither the models nor the server.
//!
//! - [`text`]: articles as read, page-furniture removal, language detection, sentences.
//! - [`model`]: everything that turns ids into numbers: model sources on the Hub, weight files,
//!   tokenizers, the CPU kernels, devices, Marian translation and sentence-transformers embedding.
//! - [`engine`]: owns the loaded models of a process: which model serves which language, one
//!   worker per model, batching across callers, the loaded-model bound.
//! - [`group`]: similarity, batch and online grouping into events, explanations, and the scores
//!   that evaluate a grouping.
//! - [`store`]: the cache and the finished work (translations, embeddings, articles, events).
//! - [`app`]: the article workflow (align), its outputs, the plot, speed measurement.
//! - [`server`]: the HTTP service.

pub mod app;
pub mod engine;
pub mod group;
pub mod model;
pub mod server;
pub mod store;
pub mod text;
