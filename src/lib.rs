//! tidings: translate news articles into English and group them into events.

pub mod device;
pub mod manifest;
pub mod translate;
