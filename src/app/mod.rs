//! What a user runs: the article workflow from pages to events ([`align`]), its plot
//! ([`plot`]), and speed measurement ([`bench`]).

pub mod align;
pub mod bench;
pub mod plot;
pub mod workflow;
