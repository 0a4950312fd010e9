//! The project's own CUDA kernels for the tensor backend, each an operation with a reference on
//! the CPU: a beam step's candidates ([`beam_candidates`]) and a decode step's attention
//! ([`decode_attention`]). Their sources are in `cuda/`, compiled to PTX at build time
//! (build.rs). On a GPU each is held to its reference there before its first use, and candle's
//! operations are kept if it fails; without a GPU the tests run them on the CPU, one thread per
//! CUDA thread (tests/cuda_kernels.rs).

pub mod beam_candidates;
pub mod decode_attention;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use candle_core::Device;

/// A kernel of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    BeamCandidates,
    DecodeAttention,
}

impl Kernel {
    pub const ALL: [Kernel; 2] = [Kernel::BeamCandidates, Kernel::DecodeAttention];

    /// The kernel's place in [`Kernel::ALL`].
    pub(super) fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::BeamCandidates => "beam candidates",
            Kernel::DecodeAttention => "decode attention",
        }
    }

    /// The first difference between the kernel on `device` and its reference.
    fn check(self, device: &Device) -> Result<(), String> {
        match self {
            Kernel::BeamCandidates => beam_candidates::check(device),
            Kernel::DecodeAttention => decode_attention::check(device),
        }
    }
}

/// Whether a tensor model runs the fused kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FusedKernels {
    /// On a GPU, each kernel whose check passed there (`TIDINGS_FUSED_KERNELS=off`: none);
    /// candle's operations elsewhere.
    #[default]
    Auto,
    /// candle's operations.
    Off,
    /// Every kernel, on any device (on the CPU: their references; for tests).
    On,
}

impl FusedKernels {
    /// Whether `kernel` runs on `device`.
    pub fn uses(self, kernel: Kernel, device: &Device) -> bool {
        match self {
            FusedKernels::Off => false,
            FusedKernels::On => true,
            FusedKernels::Auto => {
                let off = std::env::var("TIDINGS_FUSED_KERNELS")
                    .is_ok_and(|v| matches!(v.as_str(), "0" | "off" | "no" | "false"));
                device.is_cuda() && !off && works_on(kernel, device)
            }
        }
    }

    /// The kernels that run on `device`.
    pub fn in_use(self, device: &Device) -> Vec<&'static str> {
        Kernel::ALL
            .into_iter()
            .filter(|k| self.uses(*k, device))
            .map(Kernel::name)
            .collect()
    }
}

/// The first case of `cases` on which an operation on `device` differs from its reference on
/// the host, as `differ` names it; case n runs on the inputs of seed n + 1 (the tests take other
/// seeds).
fn check_cases<C: std::fmt::Display, O>(
    cases: &[C],
    device: &Device,
    run: impl Fn(&C, u32, &Device) -> candle_core::Result<O>,
    differ: impl Fn(&C, &O, &O) -> Option<String>,
) -> Result<(), String> {
    for (n, case) in cases.iter().enumerate() {
        let seed = n as u32 + 1;
        let on = |d: &Device| run(case, seed, d).map_err(|e| format!("{case}: {e}"));
        let (got, expected) = (on(device)?, on(&Device::Cpu)?);
        if let Some(diff) = differ(case, &got, &expected) {
            return Err(format!("{case}: {diff}"));
        }
    }
    Ok(())
}

thread_local! {
    static RUNS: Cell<[u64; 2]> = const { Cell::new([0; 2]) };
}

/// How often each kernel's operation has run on this thread, on any device (kernel or CPU
/// reference), in the order of [`Kernel::ALL`]: a test can see which path a decode took.
pub fn runs() -> [u64; 2] {
    RUNS.with(Cell::get)
}

/// Count one run of `kernel`'s operation.
fn count_run(kernel: Kernel) {
    RUNS.with(|r| {
        let mut v = r.get();
        v[kernel.index()] += 1;
        r.set(v);
    });
}

/// Whether `kernel` gives its reference's results on `device`, checked once per device and
/// process; a failure is logged and candle's operations are kept.
fn works_on(kernel: Kernel, device: &Device) -> bool {
    static CHECKED: LazyLock<Mutex<HashMap<(Kernel, String), bool>>> =
        LazyLock::new(Mutex::default);
    let place = format!("{:?}", device.location());
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    *checked
        .entry((kernel, place.clone()))
        .or_insert_with(|| match kernel.check(device) {
            Ok(()) => {
                tracing::info!(device = %place, "fused {} kernel agrees with its reference; in use", kernel.name());
                true
            }
            Err(e) => {
                tracing::warn!(device = %place, "fused {} kernel not used: {e}", kernel.name());
                false
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_keeps_candle_operations_unless_asked() {
        for kernel in Kernel::ALL {
            assert!(!FusedKernels::Auto.uses(kernel, &Device::Cpu));
            assert!(!FusedKernels::Off.uses(kernel, &Device::Cpu));
            assert!(FusedKernels::On.uses(kernel, &Device::Cpu));
        }
        assert!(FusedKernels::Auto.in_use(&Device::Cpu).is_empty());
        assert_eq!(
            FusedKernels::On.in_use(&Device::Cpu),
            ["beam candidates", "decode attention"]
        );
    }

    #[test]
    fn a_check_names_the_first_case_that_differs_or_fails() {
        let cases = ["a", "b", "c"];
        let differ = |_: &&str, g: &u32, e: &u32| (g != e).then(|| format!("{g}, not {e}"));
        // Each case runs on the device first, then on the host; "b" is off by one there.
        let calls = Cell::new(0);
        let run = |case: &&str, seed: u32, _: &Device| {
            calls.set(calls.get() + 1);
            let on_device = calls.get() % 2 == 1;
            Ok(seed + u32::from(*case == "b" && on_device))
        };
        assert_eq!(
            check_cases(&cases, &Device::Cpu, run, differ),
            Err("b: 3, not 2".to_string())
        );
        let fails = |case: &&str, seed: u32, _: &Device| match *case {
            "c" => Err(candle_core::Error::Msg("no such shape".into())),
            _ => Ok(seed),
        };
        assert_eq!(
            check_cases(&cases, &Device::Cpu, fails, differ),
            Err("c: no such shape".to_string())
        );
        let same = |_: &&str, seed: u32, _: &Device| Ok(seed);
        assert_eq!(check_cases(&cases, &Device::Cpu, same, differ), Ok(()));
    }
}
