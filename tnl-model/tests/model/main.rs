//! tnl-model's tests, one binary: configs and parameter counts, decay schedules, shapes and
//! LRPE, parallel == recurrent, padding, generation, gradients and training, recorders, and
//! the WGPU backend (fusion on, lavapipe in CI).

mod config;
mod decay;
mod generate;
mod gpu;
mod padding;
mod record;
mod recurrent;
mod shapes;
mod support;
mod train;
