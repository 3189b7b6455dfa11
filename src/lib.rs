//! Lightning attention and TransNormerLLM for Burn: the workspace's crates, plus what the
//! examples, benches and binaries share.

pub use lightning_op;
pub use tnl_model;

pub mod bench;
pub mod plot;
pub mod train;
