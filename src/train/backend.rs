//! Choosing the backend, the devices and the data-parallel strategy at run time.
//!
//! Each backend is compiled in by its cargo feature (`cuda`, `wgpu`, `ndarray`; all three by
//! default). The generic training code is instantiated once per backend inside this crate
//! (see [`super::cli`]), so the examples stay thin and cheap to build.

use std::fmt;

use burn::tensor::backend::AutodiffBackend;
use burn::train::{ExecutionStrategy, MultiDeviceOptim};

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

/// How burn-train spreads one run over the devices of a backend.
///
/// CUDA built with the `ddp` feature uses burn-train's distributed data parallel strategy:
/// one worker thread and one model copy per GPU, each parameter's gradient all-reduced
/// (mean, NCCL through CubeCL) as soon as the backward pass has produced it on every GPU,
/// then every copy takes the same optimizer step. Burn 0.21 implements that all-reduce
/// only for CUDA (CubeCL's WGPU server has no collective, NdArray no `DistributedBackend`),
/// so every other backend runs burn-train's multi-device strategy: gradients gathered on
/// the first device, which alone runs the optimizer. With one device both are one plain
/// training loop.
pub trait DataParallel: AutodiffBackend {
    /// Whether [`Self::execution`] is DDP. DDP advances the learning-rate schedule once
    /// per batch (each worker steps it once for every device), the multi-device strategy
    /// once per optimizer step (one batch per device).
    const DDP: bool;

    fn execution(devices: Vec<Self::Device>) -> ExecutionStrategy<Self>;

    /// Whatever must run beside the training for [`Self::execution`] to make progress,
    /// stopped when the returned value is dropped. Nothing for most backends.
    fn collective_guard(_devices: &[Self::Device]) -> Box<dyn std::any::Any> {
        Box::new(())
    }
}

fn multi_device<B: AutodiffBackend>(devices: Vec<B::Device>) -> ExecutionStrategy<B> {
    ExecutionStrategy::multi(devices, MultiDeviceOptim::OptimMainDevice)
}

#[cfg(feature = "ndarray")]
impl DataParallel for burn::backend::Autodiff<burn::backend::NdArray> {
    const DDP: bool = false;

    fn execution(devices: Vec<Self::Device>) -> ExecutionStrategy<Self> {
        multi_device(devices)
    }
}

#[cfg(feature = "wgpu")]
impl DataParallel for burn::backend::Autodiff<burn::backend::Wgpu> {
    const DDP: bool = false;

    fn execution(devices: Vec<Self::Device>) -> ExecutionStrategy<Self> {
        multi_device(devices)
    }
}

/// The CUDA training backend.
///
/// Burn's fused CUDA backend by default. The `ddp` build trains on CubeCL's CUDA backend
/// without Fusion: with Fusion every DDP run on two H200s hung in its first step (Fusion
/// queues each device's operations, the gradient all-reduces among them, until something
/// reads them, and one device's thread was left spinning); unfused, each all-reduce is
/// issued to its GPU when the gradient-sync thread asks for it. The queue flushing of
/// `QueuePump` (below), found later, may be what the fused runs lacked too; not retried.
#[cfg(all(feature = "cuda", not(feature = "ddp")))]
pub type CudaTrain = burn::backend::Autodiff<burn::backend::Cuda>;
#[cfg(feature = "ddp")]
pub type CudaTrain =
    burn::backend::Autodiff<burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>>;

#[cfg(feature = "cuda")]
impl DataParallel for CudaTrain {
    const DDP: bool = cfg!(feature = "ddp");

    #[cfg(feature = "ddp")]
    fn execution(devices: Vec<Self::Device>) -> ExecutionStrategy<Self> {
        use burn::tensor::backend::distributed::{DistributedConfig, ReduceOperation};
        let config = DistributedConfig {
            all_reduce_op: ReduceOperation::Mean,
        };
        ExecutionStrategy::ddp(devices, config)
    }

    #[cfg(feature = "ddp")]
    fn collective_guard(devices: &[Self::Device]) -> Box<dyn std::any::Any> {
        Box::new(QueuePump::start(devices))
    }

    #[cfg(not(feature = "ddp"))]
    fn execution(devices: Vec<Self::Device>) -> ExecutionStrategy<Self> {
        multi_device(devices)
    }
}

/// Keeps every GPU's CubeCL task queue moving while DDP trains.
///
/// CubeCL 0.10 hands work to a device's thread in batches of 32 tasks, run when a batch
/// fills or a caller flushes it. Burn 0.21's gradient-sync thread issues each all-reduce
/// with a plain `submit`, which queues it without a flush. A GPU whose worker has finished
/// its backward pass submits nothing more while it waits for the reduced gradients, so its
/// last all-reduces stay queued, while the other GPU's matching all-reduces run and wait
/// on NCCL for them. TNL-385M on two H200s hung in its first step that way: NCCL's log
/// showed one all-reduce call on rank 1 and none on rank 0, whose device thread sat idle
/// (eu-stack). One thread per device flushes its queue every few milliseconds.
#[cfg(feature = "ddp")]
struct QueuePump {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

#[cfg(feature = "ddp")]
impl QueuePump {
    /// Flushing is a blocking call on the device's thread, so each device gets its own
    /// pump: a device busy with a long task must not hold up another's flushes.
    fn start(devices: &[cubecl::cuda::CudaDevice]) -> Self {
        use cubecl::Runtime;
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = devices
            .iter()
            .map(|device| {
                let client = cubecl::cuda::CudaRuntime::client(device);
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        // An error here is the training's own, which it reports itself.
                        let _ = client.flush();
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

#[cfg(feature = "ddp")]
impl Drop for QueuePump {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
