//! LRPE, linearized relative positional encoding.
//!
//! `x -> [x cos(theta t), x sin(theta t)]` makes `q_t . k_s` depend on `t - s` only
//! (`cos a cos b + sin a sin b = cos(a - b)`), which linear attention can carry in its
//! state, unlike RoPE's rotation of a softmax score. The price: q and k double in width.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{DType, Int, Tensor, TensorData, backend::Backend};

/// Configuration of [`Lrpe`].
#[derive(Config, Debug)]
pub struct LrpeConfig {
    /// Number of heads `H`.
    pub n_heads: usize,
    /// Head dim `d` before the encoding (it comes out as `2d`).
    pub head_dim: usize,
}

impl LrpeConfig {
    /// `theta[h, 0, j] = 10000^(-2 (h d + j) / (H d))`: one geometric ladder of frequencies
    /// across all heads, as in the released code.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Lrpe<B> {
        let (h, d) = (self.n_heads, self.head_dim);
        let width = (h * d) as f64;
        let theta: Vec<f32> = (0..h * d)
            .map(|i| 10000f64.powf(-2.0 * i as f64 / width) as f32)
            .collect();
        Lrpe {
            theta: Param::from_data(TensorData::new(theta, [h, 1, d]), device),
        }
    }
}

/// Learnable-frequency LRPE for one layer's q and k.
#[derive(Module, Debug)]
pub struct Lrpe<B: Backend> {
    /// Frequencies `[H, 1, d]` (trained).
    pub theta: Param<Tensor<B, 3>>,
}

impl<B: Backend> Lrpe<B> {
    /// `x` `[batch, H, seq, d]` at absolute positions `start..start + seq` ->
    /// `[batch, H, seq, 2d]`.
    ///
    /// The recurrent step passes its cached absolute position as `start`, so the angle is
    /// computed exactly as in the parallel pass.
    pub fn forward(&self, x: Tensor<B, 4>, start: usize) -> Tensor<B, 4> {
        let [_, _, n, _] = x.dims();
        let dtype = x.dtype();
        // Angles in fp32 whatever the model's dtype: bf16 cannot hold `t * theta` for t in
        // the thousands.
        let positions = Tensor::<B, 1, Int>::arange(start as i64..(start + n) as i64, &x.device())
            .float()
            .cast(DType::F32)
            .reshape([1, 1, n, 1]);
        let angle = self.theta.val().cast(DType::F32).unsqueeze::<4>() * positions; // [1, H, n, d]
        let (cos, sin) = (angle.clone().cos().cast(dtype), angle.sin().cast(dtype));
        Tensor::cat(vec![x.clone() * cos, x * sin], 3)
    }
}
