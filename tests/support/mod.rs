//! Helpers shared by integration tests (`mod support;`).

pub mod standin_hub;
