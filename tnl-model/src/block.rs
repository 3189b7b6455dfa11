//! One TNL layer: pre-norm residual GLA, then pre-norm residual SGLU.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Bool, Tensor, backend::Backend};
use lightning_op::LightningBackend;

use crate::attention::{GatedLinearAttention, GlaConfig};
use crate::norm::{SrmsNorm, SrmsNormConfig};
use crate::sglu::{Sglu, SgluConfig};

/// Configuration of [`TnlBlock`].
#[derive(Config, Debug)]
pub struct TnlBlockConfig {
    /// The token mixer.
    pub token_mixer: GlaConfig,
    /// The channel mixer.
    pub channel_mixer: SgluConfig,
    /// Epsilon of the two pre-norms.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
}

impl TnlBlockConfig {
    /// Builds the block.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TnlBlock<B> {
        let norm = SrmsNormConfig::new().with_eps(self.norm_eps);
        TnlBlock {
            token_norm: norm.init(),
            token_mixer: self.token_mixer.init(device),
            channel_norm: norm.init(),
            channel_mixer: self.channel_mixer.init(device),
        }
    }
}

/// `x = x + GLA(SRMSNorm(x)); x = x + SGLU(SRMSNorm(x))`.
#[derive(Module, Debug)]
pub struct TnlBlock<B: Backend> {
    token_norm: SrmsNorm,
    token_mixer: GatedLinearAttention<B>,
    channel_norm: SrmsNorm,
    channel_mixer: Sglu<B>,
}

impl<B: Backend> TnlBlock<B> {
    /// The GLA token mixer.
    pub fn token_mixer(&self) -> &GatedLinearAttention<B> {
        &self.token_mixer
    }
}

impl<B: LightningBackend> TnlBlock<B> {
    /// Training form, `[b, n, D] -> [b, n, D]`.
    pub fn forward(&self, x: Tensor<B, 3>, mask_pad: Option<&Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        let x = x.clone()
            + self
                .token_mixer
                .forward(self.token_norm.forward(x), mask_pad);
        x.clone() + self.channel_mixer.forward(self.channel_norm.forward(x))
    }

    /// Prefill form, continuing from this layer's `state` at absolute position `start`.
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        mask_pad: Option<&Tensor<B, 2, Bool>>,
        state: Option<Tensor<B, 4>>,
        start: usize,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let (mixed, state) = self.token_mixer.forward_cached(
            self.token_norm.forward(x.clone()),
            mask_pad,
            state,
            start,
        );
        let x = x + mixed;
        let x = x.clone() + self.channel_mixer.forward(self.channel_norm.forward(x));
        (x, state)
    }

    /// Recurrent form, one token per row: `x` `[b, 1, D]`.
    pub fn step(
        &self,
        x: Tensor<B, 3>,
        state: Tensor<B, 4>,
        position: usize,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let (mixed, state) =
            self.token_mixer
                .step(self.token_norm.forward(x.clone()), state, position);
        let x = x + mixed;
        let x = x.clone() + self.channel_mixer.forward(self.channel_norm.forward(x));
        (x, state)
    }
}
