//! The one initialisation TNL uses: N(0, 0.02) everywhere, no biases.

use burn::module::Initializer;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

pub(crate) fn normal(std: f64) -> Initializer {
    Initializer::Normal { mean: 0.0, std }
}

/// A bias-free `Linear` with N(0, std) weights.
pub(crate) fn linear<B: Backend>(
    d_input: usize,
    d_output: usize,
    std: f64,
    device: &B::Device,
) -> Linear<B> {
    LinearConfig::new(d_input, d_output)
        .with_bias(false)
        .with_initializer(normal(std))
        .init(device)
}

/// `[..., D]` as rows `[tokens, D]`, the shape every Linear of the model is applied to.
///
/// Not only tidy: burn 0.21's fusion (`Wgpu`, `Cuda`) miscomputes two matmuls of a
/// `[b > 1, 1, D]` input that fuses an SRMSNorm (a broadcast reduction), multiplied
/// together, as in SGLU after the pre-norm at decode time (seen on WGPU: errors ~1e-2 in
/// the logits). On rows the same graph is exact.
pub(crate) fn as_rows<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 2> {
    let width = x.dims()[D - 1];
    let rows = x.shape().num_elements() / width.max(1);
    x.reshape([rows, width])
}
