//! Helpers shared by integration tests (`mod support;`).

pub mod minilm;
pub mod standin_hub;
