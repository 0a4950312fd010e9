//! The engine owns every loaded model of a process: which model serves which language
//! ([`manifest`]), and one worker per model fed by a queue that merges work from all callers into
//! batches ([`queue`]). It knows nothing of HTTP.

pub mod manifest;
pub mod queue;
