//! Choosing the backend and the devices at run time.
//!
//! Each backend is compiled in by its cargo feature (`cuda`, `wgpu`, `ndarray`; all three by
//! default). The generic training code is instantiated once per backend inside this crate
//! (see [`super::cli`]), so the examples stay thin and cheap to build.

use std::fmt;

/// `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// NVIDIA GPUs through CubeCL's CUDA runtime (fused lightning kernels).
    Cuda,
    /// Any GPU through wgpu (Vulkan, Metal, DX12; fused lightning kernels).
    Wgpu,
    /// The CPU (reference lightning attention, multi-threaded ndarray).
    Ndarray,
}

impl BackendChoice {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cuda => "cuda",
            Self::Wgpu => "wgpu",
            Self::Ndarray => "ndarray",
        }
    }

    /// Whether this build has the backend's feature on.
    pub fn compiled(self) -> bool {
        match self {
            Self::Cuda => cfg!(feature = "cuda"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Ndarray => cfg!(feature = "ndarray"),
        }
    }

    /// The error for a backend left out of this build.
    pub fn not_compiled(self) -> String {
        format!(
            "--backend {0}: this build was made without the `{0}` feature; rebuild with --features {0}",
            self.name()
        )
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `--devices 0,1,3`: device indices, at least one, no repeats.
pub fn parse_devices(text: &str) -> Result<Vec<usize>, String> {
    let mut devices = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let index: usize = part
            .parse()
            .map_err(|_| format!("--devices {text}: `{part}` is not a device index"))?;
        if devices.contains(&index) {
            return Err(format!("--devices {text}: device {index} is listed twice"));
        }
        devices.push(index);
    }
    if devices.is_empty() {
        return Err(format!(
            "--devices {text}: give at least one device index, e.g. 0 or 0,1"
        ));
    }
    Ok(devices)
}
