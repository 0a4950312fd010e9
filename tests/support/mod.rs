//! Helpers shared by integration tests (`mod support;`).

pub mod cli_run;
pub mod minilm;
pub mod standin_hub;
