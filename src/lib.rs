//! Lightning attention and TransNormerLLM for Burn: the workspace's crates, plus what the
//! examples, benches and binaries share.

#[cfg(all(feature = "ddp", feature = "ndarray"))]
compile_error!(
    "the `ddp` feature cannot be combined with `ndarray`: Burn's distributed Autodiff needs a \
     DistributedBackend, which NdArray is not. Build with `--no-default-features --features ddp` \
     (add `wgpu` for the WGPU backend)."
);

pub use lightning_op;
pub use tnl_model;

pub mod bench;
pub mod plot;
pub mod train;
