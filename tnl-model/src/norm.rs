//! SRMSNorm: RMS normalisation with no learnable weight.
//!
//! TNL drops the softmax's normaliser, so the attention output's scale drifts with the
//! context; normalising it (and every block input) in fp32 keeps bf16 training stable.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{DType, Tensor, backend::Backend};

/// Configuration of [`SrmsNorm`].
#[derive(Config, Debug)]
pub struct SrmsNormConfig {
    /// Added to the mean square before the square root.
    #[config(default = 1e-6)]
    pub eps: f64,
}

impl SrmsNormConfig {
    /// Builds the norm (it has no parameters).
    pub fn init(&self) -> SrmsNorm {
        SrmsNorm { eps: self.eps }
    }
}

/// `x / sqrt(mean(x^2) + eps)` over the last dim, computed in fp32, returned in `x`'s dtype.
#[derive(Module, Clone, Debug)]
pub struct SrmsNorm {
    eps: f64,
}

impl SrmsNorm {
    /// Normalises over the last dimension.
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let x = x.cast(DType::F32);
        let rms = x
            .clone()
            .square()
            .mean_dim(D - 1)
            .add_scalar(self.eps)
            .sqrt();
        (x / rms).cast(dtype)
    }
}
