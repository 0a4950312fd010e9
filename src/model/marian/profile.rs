//! Opt-in wall-clock accounting of the translation hot path, for profiling without a profiler:
//! set `TIDINGS_PROFILE=1`, run, then read [`report`]. Off, it costs one relaxed load per timed
//! section. Both Marian backends and generation time the same [`Phase`]s; PROFILE.md has the
//! numbers.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Instant;

/// The timed sections, in the order a batch goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Encode,
    CrossKv,
    Embed,
    SelfQkv,
    SelfAttend,
    SelfOut,
    CrossQ,
    CrossAttend,
    CrossOut,
    AddNorm,
    Ffn,
    LmHead,
    ReadLogits,
    Search,
    Reorder,
}

const PHASES: [Phase; 15] = [
    Phase::Encode,
    Phase::CrossKv,
    Phase::Embed,
    Phase::SelfQkv,
    Phase::SelfAttend,
    Phase::SelfOut,
    Phase::CrossQ,
    Phase::CrossAttend,
    Phase::CrossOut,
    Phase::AddNorm,
    Phase::Ffn,
    Phase::LmHead,
    Phase::ReadLogits,
    Phase::Search,
    Phase::Reorder,
];

static NANOS: [AtomicU64; 15] = [const { AtomicU64::new(0) }; 15];
static CALLS: [AtomicU64; 15] = [const { AtomicU64::new(0) }; 15];
/// 0 = not read yet, 1 = off, 2 = on.
static STATE: AtomicU8 = AtomicU8::new(0);

pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var_os("TIDINGS_PROFILE").is_some_and(|v| v != "0");
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        s => s == 2,
    }
}

/// Adds the time until it is dropped to `phase`.
pub struct Timer {
    phase: Phase,
    start: Option<Instant>,
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            let i = self.phase as usize;
            NANOS[i].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            CALLS[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub fn time(phase: Phase) -> Timer {
    Timer {
        phase,
        start: enabled().then(Instant::now),
    }
}

/// Forget everything timed so far.
pub fn reset() {
    for (n, c) in NANOS.iter().zip(&CALLS) {
        n.store(0, Ordering::Relaxed);
        c.store(0, Ordering::Relaxed);
    }
}

/// A table of the time per section since the last [`reset`], or `None` when profiling is
/// off.
pub fn report() -> Option<String> {
    if !enabled() {
        return None;
    }
    let total: u64 = NANOS.iter().map(|n| n.load(Ordering::Relaxed)).sum();
    let mut out = String::from("| section | calls | ms | share |\n|---|---:|---:|---:|\n");
    for phase in PHASES {
        let ns = NANOS[phase as usize].load(Ordering::Relaxed);
        let calls = CALLS[phase as usize].load(Ordering::Relaxed);
        out.push_str(&format!(
            "| {phase:?} | {calls} | {:.1} | {:.1}% |\n",
            ns as f64 / 1e6,
            100.0 * ns as f64 / total.max(1) as f64
        ));
    }
    out.push_str(&format!("| total | | {:.1} | |\n", total as f64 / 1e6));
    Some(out)
}
