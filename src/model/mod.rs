//! The models and what they need: where their files come from ([`hub`]), reading weights
//! ([`weights`]) and looking tensors up by name ([`checkpoint`]), the product's compute type
//! ([`compute`]), text to ids and back ([`tokenize`]), the CPU compute ([`kernels`]), the device
//! ([`device`]), Marian translation ([`marian`]) and sentence-transformers embedding
//! ([`embed`]). Nothing here knows about articles, stores or HTTP.

pub mod checkpoint;
pub mod compute;
pub mod device;
pub mod embed;
pub mod hub;
pub mod kernels;
pub mod marian;
pub mod tokenize;
pub mod weights;

pub use compute::{ComputeChoice, ComputeType};
