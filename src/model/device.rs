//! Choosing where tensors live: CPU, or CUDA / Metal when built with those features.

use std::str::FromStr;

use candle_core::Device;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    Metal,
    /// The best accelerator this build supports and this machine has, else the CPU.
    #[default]
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            "metal" => Ok(Self::Metal),
            "auto" => Ok(Self::Auto),
            other => Err(DeviceError::Unknown(other.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device \"{0}\": use cpu, cuda, metal or auto")]
    Unknown(String),
    #[error("this build of tidings has no {0} support: rebuild with `cargo build --release --features {0}`")]
    NotCompiled(&'static str),
    #[error("cannot open the {kind} device: {source}")]
    Open {
        kind: &'static str,
        #[source]
        source: candle_core::Error,
    },
}

/// Open the chosen device. `Auto` never fails: it falls back to the CPU with a warning.
pub fn open(choice: DeviceChoice) -> Result<Device, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => open_cuda(),
        DeviceChoice::Metal => open_metal(),
        DeviceChoice::Auto => {
            if cfg!(feature = "cuda") {
                match open_cuda() {
                    Ok(d) => return Ok(d),
                    Err(e) => tracing::warn!("{e}; using the CPU"),
                }
            }
            if cfg!(feature = "metal") {
                match open_metal() {
                    Ok(d) => return Ok(d),
                    Err(e) => tracing::warn!("{e}; using the CPU"),
                }
            }
            if !cfg!(any(feature = "cuda", feature = "metal")) {
                tracing::debug!("built without cuda/metal features; using the CPU");
            }
            Ok(Device::Cpu)
        }
    }
}

/// Whether `device` computes in bfloat16 natively: CUDA compute capability 8.0 (Ampere) and
/// later. Other devices answer no.
pub fn has_bf16(device: &Device) -> bool {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        let capability = cuda.cuda_stream().context().compute_capability();
        return capability.is_ok_and(|(major, _)| major >= 8);
    }
    let _ = device;
    false
}

/// Device memory in use on `device`'s GPU (by every process), in bytes; `None` on the CPU.
pub fn gpu_memory_used(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
        return Some(total.saturating_sub(free) as u64);
    }
    let _ = device;
    None
}

fn open_cuda() -> Result<Device, DeviceError> {
    if !cfg!(feature = "cuda") {
        return Err(DeviceError::NotCompiled("cuda"));
    }
    Device::new_cuda(0).map_err(|source| DeviceError::Open {
        kind: "cuda",
        source,
    })
}

fn open_metal() -> Result<Device, DeviceError> {
    if !cfg!(feature = "metal") {
        return Err(DeviceError::NotCompiled("metal"));
    }
    Device::new_metal(0).map_err(|source| DeviceError::Open {
        kind: "metal",
        source,
    })
}

/// A short name for logs and JSON output.
pub fn describe(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_choices() {
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn auto_always_yields_a_device() {
        assert!(open(DeviceChoice::Auto).is_ok());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        let err = open(DeviceChoice::Cuda).unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
