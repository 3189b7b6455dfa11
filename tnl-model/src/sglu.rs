//! SGLU, the channel mixer: `l3(l1(x) * l2(x))`.
//!
//! TNL found the gate alone non-linear enough: no activation and no bias, which saves
//! compute and keeps the block simple.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};

use crate::init::{as_rows, linear};

/// Configuration of [`Sglu`].
#[derive(Config, Debug)]
pub struct SgluConfig {
    /// Model width `D`.
    pub d_model: usize,
    /// Hidden width.
    pub glu_dim: usize,
    /// Standard deviation of the N(0, std) weight init.
    #[config(default = 0.02)]
    pub init_std: f64,
}

impl SgluConfig {
    /// Builds the three bias-free projections.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Sglu<B> {
        Sglu {
            l1: linear(self.d_model, self.glu_dim, self.init_std, device),
            l2: linear(self.d_model, self.glu_dim, self.init_std, device),
            l3: linear(self.glu_dim, self.d_model, self.init_std, device),
        }
    }
}

/// Simple gated linear unit.
#[derive(Module, Debug)]
pub struct Sglu<B: Backend> {
    l1: Linear<B>,
    l2: Linear<B>,
    l3: Linear<B>,
}

impl<B: Backend> Sglu<B> {
    /// `[..., D] -> [..., D]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let shape = x.shape();
        let x = as_rows(x);
        self.l3
            .forward(self.l1.forward(x.clone()) * self.l2.forward(x))
            .reshape(shape)
    }
}
