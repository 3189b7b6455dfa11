//! lightning-op's tests: the f64 naive definition, the reference, the fused kernels
//! (WGPU, on lavapipe in CI), the recurrent step, and every bad input.

mod errors;
mod fused;
mod recurrent;
mod reference;
mod support;
