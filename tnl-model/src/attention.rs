//! Gated Linear Attention (GLA), TNL's token mixer.
//!
//! Linear attention with a per-head decay instead of softmax: no `n x n` matrix, and the
//! whole past fits in a `d x e` state per head, so decoding costs the same at any length.
//! The output is normalised (SRMSNorm over the merged heads) because nothing else bounds
//! it, then gated by `u`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::{Bool, Tensor, backend::Backend};
use lightning_op::{
    LightningBackend, Slopes, lightning_attention, lightning_attention_with_state,
    lightning_decode_step,
};

use crate::init::{as_rows, linear};
use crate::lrpe::{Lrpe, LrpeConfig};
use crate::norm::{SrmsNorm, SrmsNormConfig};

/// Configuration of [`GatedLinearAttention`].
#[derive(Config, Debug)]
pub struct GlaConfig {
    /// Model width `D` (also the merged width of the heads).
    pub d_model: usize,
    /// Number of heads `H`; must divide `d_model`.
    pub n_heads: usize,
    /// This layer's decay slopes, one per head (`lambda = exp(-slope)`).
    pub slopes: Vec<f64>,
    /// Apply LRPE to q and k (doubles their head dim).
    #[config(default = false)]
    pub lrpe: bool,
    /// Epsilon of the output SRMSNorm.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// Standard deviation of the N(0, std) weight init.
    #[config(default = 0.02)]
    pub init_std: f64,
}

impl GlaConfig {
    /// Builds the layer.
    ///
    /// # Panics
    /// If `n_heads` does not divide `d_model`, or `slopes` is not `n_heads` long or holds a
    /// negative or non-finite value.
    pub fn init<B: Backend>(&self, device: &B::Device) -> GatedLinearAttention<B> {
        let (d, h) = (self.d_model, self.n_heads);
        assert!(
            h > 0 && d % h == 0,
            "GlaConfig: n_heads ({h}) must divide d_model ({d})"
        );
        assert_eq!(
            self.slopes.len(),
            h,
            "GlaConfig: slopes must hold one value per head (n_heads = {h}), got {}",
            self.slopes.len()
        );
        GatedLinearAttention {
            qkvu_proj: linear(d, 4 * d, self.init_std, device),
            lrpe: self.lrpe.then(|| LrpeConfig::new(h, d / h).init(device)),
            norm: SrmsNormConfig::new().with_eps(self.norm_eps).init(),
            out_proj: linear(d, d, self.init_std, device),
            slopes: Slopes::from_values(&self.slopes, device).into_tensor(),
            n_heads: h,
        }
    }
}

/// The GLA token mixer of one TNL layer.
#[derive(Module, Debug)]
pub struct GatedLinearAttention<B: Backend> {
    /// One fused projection `D -> 4D`, split into q, k, v, u.
    qkvu_proj: Linear<B>,
    /// Present on the layers listed in `TnlConfig::lrpe_layers`.
    lrpe: Option<Lrpe<B>>,
    norm: SrmsNorm,
    out_proj: Linear<B>,
    /// Fixed decay slopes `[H]`: a constant of the layer, not a parameter (not saved either;
    /// the config rebuilds it).
    slopes: Tensor<B, 1>,
    n_heads: usize,
}

impl<B: Backend> GatedLinearAttention<B> {
    /// This layer's decay slopes `[H]`.
    pub fn slopes(&self) -> Tensor<B, 1> {
        self.slopes.clone()
    }

    /// The slopes as the op takes them without a read-back: checked when the layer was
    /// built, moved with it since.
    fn checked_slopes(&self) -> Slopes<B> {
        Slopes::assume_checked(self.slopes.clone())
    }

    /// The LRPE of this layer, if it has one.
    pub fn lrpe(&self) -> Option<&Lrpe<B>> {
        self.lrpe.as_ref()
    }

    /// What the op receives for `x` `[b, n, D]` at absolute positions `start..start + n`:
    /// q, k `[b, H, n, d]` (`2d` with LRPE) and v `[b, H, n, d]`, zero at padding.
    pub fn project(
        &self,
        x: Tensor<B, 3>,
        mask_pad: Option<&Tensor<B, 2, Bool>>,
        start: usize,
    ) -> [Tensor<B, 4>; 3] {
        self.project_with_gate(x, mask_pad, start).0
    }

    fn project_with_gate(
        &self,
        x: Tensor<B, 3>,
        mask_pad: Option<&Tensor<B, 2, Bool>>,
        start: usize,
    ) -> ([Tensor<B, 4>; 3], Tensor<B, 2>) {
        let [b, n, d] = x.dims();
        let h = self.n_heads;
        let split_heads = |t: Tensor<B, 2>| t.reshape([b, n, h, d / h]).swap_dims(1, 2);

        let mut qkvu = self.qkvu_proj.forward(as_rows(x)).chunk(4, 1).into_iter();
        let mut next = || qkvu.next().expect("qkvu_proj gives 4 chunks");
        let (q, k, v, u) = (next(), next(), next(), next());

        let q = silu(split_heads(q));
        let k = silu(split_heads(k));
        let mut v = split_heads(v);
        let (q, k) = match &self.lrpe {
            Some(lrpe) => (lrpe.forward(q, start), lrpe.forward(k, start)),
            None => (q, k),
        };
        // Zero v at padding: k^T v then adds nothing to the state, whatever k is.
        if let Some(mask) = mask_pad {
            let mask = mask.clone().reshape([b, 1, n, 1]).expand([b, h, n, d / h]);
            v = v.mask_fill(mask, 0.0);
        }
        ([q, k, v], u)
    }

    /// Heads `[b, H, n, e]` back to `[b, n, D]`, normalised, gated (u as rows), projected.
    fn merge(&self, o: Tensor<B, 4>, u: Tensor<B, 2>) -> Tensor<B, 3> {
        let [b, h, n, e] = o.dims();
        let o = o.swap_dims(1, 2).reshape([b * n, h * e]);
        self.out_proj
            .forward(self.norm.forward(o) * u)
            .reshape([b, n, h * e])
    }
}

impl<B: LightningBackend> GatedLinearAttention<B> {
    /// Training form: `[b, n, D] -> [b, n, D]`, one parallel lightning attention call.
    pub fn forward(&self, x: Tensor<B, 3>, mask_pad: Option<&Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        let ([q, k, v], u) = self.project_with_gate(x, mask_pad, 0);
        let o = lightning_attention(q, k, v, self.checked_slopes());
        self.merge(o, u)
    }

    /// Prefill form: continues from `state` (`[b, H, d, e]` fp32, zeros when `None`) at
    /// absolute position `start`; returns the output and the state after the last token.
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        mask_pad: Option<&Tensor<B, 2, Bool>>,
        state: Option<Tensor<B, 4>>,
        start: usize,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let ([q, k, v], u) = self.project_with_gate(x, mask_pad, start);
        let (o, state) = lightning_attention_with_state(q, k, v, self.checked_slopes(), state);
        (self.merge(o, u), state)
    }

    /// Recurrent form for one token per row: `x` `[b, 1, D]` at absolute position
    /// `position`; `O(d e)` per head whatever the context length.
    pub fn step(
        &self,
        x: Tensor<B, 3>,
        state: Tensor<B, 4>,
        position: usize,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let ([q, k, v], u) = self.project_with_gate(x, None, position);
        let [q, k, v] = [q, k, v].map(|t| t.squeeze_dim::<3>(2));
        let (o, state) = lightning_decode_step(q, k, v, self.checked_slopes(), state);
        (self.merge(o.unsqueeze_dim(2), u), state)
    }
}
