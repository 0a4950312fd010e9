//! What a user runs, built on the engine, the store and the grouping:
//!
//! - [`workflow`]: the article workflow as stages (prepare, route, translate through the
//!   sentence cache, assemble, embed), shared by every caller;
//! - [`align`]: a batch of articles to events, resumable from the store;
//! - [`events`]: finished articles grouped into explained events and themes;
//! - [`claims`]: splitting one input between processes on a shared store, by leases;
//! - [`online`]: articles one at a time into a stored, growing grouping (the server's ingest);
//! - [`limits`]: the one range of every numeric option, for the CLI and the server alike;
//! - [`output`]: writing result files (atomically, or through links, devices and pipes);
//! - [`plot`]: the SVG of a grouping; [`bench`]: speed measurement; [`bench_store`]: the
//!   store's own cost per article.

pub mod align;
pub mod bench;
pub mod bench_store;
pub mod claims;
pub mod events;
pub mod limits;
pub mod online;
pub mod output;
pub mod plot;
pub mod workflow;
