//! What a user runs: the article workflow from pages to events ([`align`]), its plot
//! ([`plot`]), output files ([`output`]), and speed measurement ([`bench`]).

pub mod align;
pub mod bench;
pub mod limits;
pub mod online;
pub mod output;
pub mod plot;
pub mod workflow;
