//! Choosing the compute device at run time among the backends compiled in.

use std::fmt;
use std::str::FromStr;

use anyhow::Result;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// A backend the user can ask for with `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// burn's pure-Rust `flex` backend (always compiled in).
    Cpu,
    /// CUDA (cargo feature `cuda`; its build needs network access).
    Cuda,
    /// wgpu: Vulkan, Metal or DirectX (cargo feature `wgpu`).
    Wgpu,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 3] = [DeviceKind::Cpu, DeviceKind::Cuda, DeviceKind::Wgpu];

    /// Whether this binary was built with the backend.
    pub fn compiled_in(self) -> bool {
        match self {
            DeviceKind::Cpu => true,
            DeviceKind::Cuda => cfg!(feature = "cuda"),
            DeviceKind::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// The burn device, or a one-line error saying how to get the backend.
    pub fn device(self) -> Result<Device> {
        if !self.compiled_in() {
            let compiled: Vec<String> = Self::ALL
                .iter()
                .filter(|d| d.compiled_in())
                .map(|d| d.to_string())
                .collect();
            crate::usage_bail!(
                "--device {self}: this genlab was built without the {self} backend (compiled in: {}); rebuild with `cargo install --path crates/genlab-cli --features {self}`",
                compiled.join(", ")
            );
        }
        Ok(self.device_unchecked())
    }

    #[allow(unreachable_code)]
    fn device_unchecked(self) -> Device {
        match self {
            DeviceKind::Cpu => Device::flex(),
            DeviceKind::Cuda => {
                #[cfg(feature = "cuda")]
                return Device::cuda(0);
                unreachable!("checked by compiled_in")
            }
            DeviceKind::Wgpu => {
                #[cfg(feature = "wgpu")]
                return Device::wgpu(Default::default());
                unreachable!("checked by compiled_in")
            }
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Wgpu => "wgpu",
        })
    }
}

impl FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda),
            "wgpu" => Ok(DeviceKind::Wgpu),
            _ => Err(format!("unknown device '{s}': expected cpu, cuda or wgpu")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_there_and_missing_backends_say_how_to_get_them() {
        assert!(DeviceKind::Cpu.device().is_ok());
        if !cfg!(feature = "wgpu") {
            let e = DeviceKind::Wgpu.device().unwrap_err().to_string();
            assert!(e.contains("--features wgpu"), "{e}");
            assert!(!e.contains('\n'));
        }
        assert!(
            "tpu"
                .parse::<DeviceKind>()
                .unwrap_err()
                .contains("cpu, cuda or wgpu")
        );
    }
}
