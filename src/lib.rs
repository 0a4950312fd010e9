//! tidings: translate news articles into English and group them into events.
pub mod tokenize;
