//! The models and what they need: where their files come from ([`hub`]), reading weights
//! ([`weights`]), text to ids and back ([`tokenize`]), the CPU compute ([`kernels`]), the device
//! ([`device`]), Marian translation ([`marian`]) and sentence-transformers embedding
//! ([`embed`]). Nothing here knows about articles, stores or HTTP.

pub mod device;
pub mod embed;
pub mod hub;
pub mod kernels;
pub mod marian;
pub mod tokenize;
pub mod weights;
