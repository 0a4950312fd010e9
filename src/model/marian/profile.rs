//! Opt-in wall-clock accounting of the translation hot path, for profiling without a profiler:
//! set `TIDINGS_PROFILE=1`, run, then read [`report`] (`tidings bench` prints it). Off, it costs
//! one relaxed load per timed section. Both Marian backends and generation time the same
//! [`Phase`]s; PROFILE.md has the numbers.
//!
//! A GPU runs kernels after the host has queued them, so with `TIDINGS_PROFILE=1` a GPU's
//! sections measure the host's time to launch their kernels. `TIDINGS_PROFILE=sync` waits for
//! the device at both ends of every section, so they measure the kernels' time instead (and the
//! run is slower). Set both ways, the two tables tell a launch-bound decoder from a
//! compute-bound one.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Instant;

use candle_core::Device;

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
/// 0 = not read yet, 1 = off, 2 = on, 3 = on, waiting for the device.
static STATE: AtomicU8 = AtomicU8::new(0);

fn state() -> u8 {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let state = match std::env::var("TIDINGS_PROFILE").as_deref() {
                Err(_) | Ok("0") | Ok("") => 1,
                Ok("sync") => 3,
                Ok(_) => 2,
            };
            STATE.store(state, Ordering::Relaxed);
            state
        }
        s => s,
    }
}

pub fn enabled() -> bool {
    state() >= 2
}

/// Adds the time until it is dropped to `phase`.
pub struct Timer {
    phase: Phase,
    start: Option<Instant>,
    /// The device to wait for at the end (`TIDINGS_PROFILE=sync` only).
    sync: Option<Device>,
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(device) = &self.sync {
            // A failed wait shows up again on the next real operation; timing goes on.
            let _ = device.synchronize();
        }
        if let Some(start) = self.start {
            let i = self.phase as usize;
            NANOS[i].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            CALLS[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Time host work (or, on a GPU, the launching of kernels) from now until the timer drops.
pub fn time(phase: Phase) -> Timer {
    Timer {
        phase,
        start: enabled().then(Instant::now),
        sync: None,
    }
}

/// [`time`] for work on `device`: with `TIDINGS_PROFILE=sync`, the device's queued work is
/// waited for at both ends, so the section is charged for its own kernels.
pub fn time_on(phase: Phase, device: &Device) -> Timer {
    let sync = (state() == 3 && !device.is_cpu()).then(|| device.clone());
    if let Some(device) = &sync {
        let _ = device.synchronize();
    }
    Timer {
        phase,
        start: enabled().then(Instant::now),
        sync,
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
