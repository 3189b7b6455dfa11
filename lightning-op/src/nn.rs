//! A multi-head attention layer on lightning attention, shaped like burn-nn's
//! [`MultiHeadAttention`](burn::nn::attention::MultiHeadAttention) so a Burn model can swap
//! one for the other.
//!
//! Same config style (`new(d_model, n_heads)`, `with_dropout`, `with_initializer`), same
//! q/k/v/output `Linear` projections, same `[batch, seq, d_model]` self-attention input with
//! an optional padding mask. What differs, and why:
//! - it is causal by construction: token `t` only ever sees `0..=t`, so there is no
//!   attention mask to build or pass (and no `n x n` weights to return);
//! - no softmax: each head decays its past by `exp(-slope)` per token (ALiBi slopes by
//!   default, one per head), q and k go through a feature map (SiLU by default, as in
//!   TransNormerLLM), and the merged heads are RMS-normalised, since nothing else bounds the
//!   sum over the past;
//! - cost is linear in the sequence length, and [`MultiHeadLightningAttention::forward_cached`]
//!   continues from a constant-size state (chunked prefill, or decoding one token at a time).
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Distribution, Tensor};
//! use lightning_op::nn::{LightningInput, MultiHeadLightningAttentionConfig};
//!
//! let device = Default::default();
//! let attention = MultiHeadLightningAttentionConfig::new(32, 4)
//!     .with_dropout(0.0)
//!     .init::<NdArray>(&device);
//! let x = Tensor::<NdArray, 3>::random([2, 10, 32], Distribution::Default, &device);
//! let output = attention.forward(LightningInput::self_attn(x));
//! assert_eq!(output.context.dims(), [2, 10, 32]);
//! ```

use burn::config::Config;
use burn::module::{Initializer, Module};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};

use crate::{LightningBackend, Slopes, lightning_attention_with_state};

/// What q and k go through before the op. Linear attention needs no softmax, but the
/// feature map decides what `q . k` can express: SiLU (TNL's choice) keeps it mostly
/// positive, the identity leaves it signed.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum FeatureMap {
    /// `silu(x)`, as in TransNormerLLM.
    Silu,
    /// `x` unchanged.
    Identity,
}

/// Configuration of [`MultiHeadLightningAttention`]; mirrors burn-nn's
/// `MultiHeadAttentionConfig`.
#[derive(Config, Debug)]
pub struct MultiHeadLightningAttentionConfig {
    /// Model width, split evenly over the heads.
    pub d_model: usize,
    /// Number of heads; must divide `d_model`.
    pub n_heads: usize,
    /// Dropout on the merged heads before the output projection (burn's MHA drops attention
    /// scores, which this layer never forms).
    #[config(default = 0.1)]
    pub dropout: f64,
    /// One decay slope per head (`>= 0`, decay `exp(-slope)` per token; 0 keeps everything).
    /// `None`: ALiBi's geometric slopes `2^(-8(h+1)/H)`, so heads range from near to far.
    #[config(default = "None")]
    pub slopes: Option<Vec<f64>>,
    /// Feature map applied to q and k.
    #[config(default = "FeatureMap::Silu")]
    pub feature_map: FeatureMap,
    /// RMS-normalise the merged heads (no learned weight) before the output projection.
    #[config(default = true)]
    pub normalize: bool,
    /// Epsilon of that normalisation.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// Initializer of the four projections (burn's MHA default).
    #[config(
        default = "Initializer::KaimingUniform{gain: 1.0 / 3.0f64.sqrt(), fan_out_only: false}"
    )]
    pub initializer: Initializer,
}

/// Multi-head lightning attention: causal linear attention with a fixed per-head decay.
/// Build it with [`MultiHeadLightningAttentionConfig::init`].
#[derive(Module, Debug)]
pub struct MultiHeadLightningAttention<B: Backend> {
    /// Query projection.
    pub query: Linear<B>,
    /// Key projection.
    pub key: Linear<B>,
    /// Value projection.
    pub value: Linear<B>,
    /// Output projection.
    pub output: Linear<B>,
    /// Dropout before the output projection.
    pub dropout: Dropout,
    /// Decay slopes `[n_heads]`: a constant of the layer, not a trained parameter.
    slopes: Tensor<B, 1>,
    feature_map: FeatureMap,
    /// `Some(eps)` when the merged heads are RMS-normalised.
    norm_eps: Option<f64>,
    /// Model width.
    pub d_model: usize,
    /// Number of heads.
    pub n_heads: usize,
    /// Width of one head.
    pub d_k: usize,
}

/// Input of [`MultiHeadLightningAttention::forward`]; mirrors burn-nn's `MhaInput` minus
/// the attention mask (causality is built in).
#[derive(Debug, Clone)]
pub struct LightningInput<B: Backend> {
    query: Tensor<B, 3>,
    key: Tensor<B, 3>,
    value: Tensor<B, 3>,
    mask_pad: Option<Tensor<B, 2, Bool>>,
}

impl<B: Backend> LightningInput<B> {
    /// Self-attention: `x` `[batch, seq, d_model]` gives query, key and value.
    pub fn self_attn(x: Tensor<B, 3>) -> Self {
        Self {
            query: x.clone(),
            key: x.clone(),
            value: x,
            mask_pad: None,
        }
    }

    /// Separate query, key and value inputs, all `[batch, seq, d_model]` (one timeline:
    /// position `t` of the query sees positions `0..=t` of key and value).
    pub fn new(query: Tensor<B, 3>, key: Tensor<B, 3>, value: Tensor<B, 3>) -> Self {
        Self {
            query,
            key,
            value,
            mask_pad: None,
        }
    }

    /// Padding mask `[batch, seq]`, true at padding (burn's convention): padded positions
    /// get a zero value, so they add nothing to what later tokens see.
    pub fn mask_pad(mut self, mask_pad: Tensor<B, 2, Bool>) -> Self {
        self.mask_pad = Some(mask_pad);
        self
    }
}

/// Output of [`MultiHeadLightningAttention::forward`].
#[derive(Debug, Clone)]
pub struct LightningOutput<B: Backend> {
    /// `[batch, seq, d_model]`, like burn's `MhaOutput::context`.
    pub context: Tensor<B, 3>,
}

impl MultiHeadLightningAttentionConfig {
    /// Builds the layer.
    ///
    /// # Panics
    /// If `n_heads` is 0 or does not divide `d_model`, or `slopes` is not one finite,
    /// non-negative value per head.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MultiHeadLightningAttention<B> {
        let (d, h) = (self.d_model, self.n_heads);
        assert!(
            h > 0 && d % h == 0,
            "MultiHeadLightningAttentionConfig: n_heads ({h}) must divide d_model ({d})"
        );
        let slopes = self.slopes.clone().unwrap_or_else(|| alibi_slopes(h));
        assert_eq!(
            slopes.len(),
            h,
            "MultiHeadLightningAttentionConfig: slopes must hold one value per head (n_heads = {h}), got {}",
            slopes.len()
        );
        assert!(
            slopes.iter().all(|s| s.is_finite() && *s >= 0.0),
            "MultiHeadLightningAttentionConfig: slopes must be finite and >= 0, got {slopes:?}"
        );
        let linear = || {
            LinearConfig::new(d, d)
                .with_initializer(self.initializer.clone())
                .init(device)
        };
        let slopes: Vec<f32> = slopes.iter().map(|&s| s as f32).collect();
        MultiHeadLightningAttention {
            query: linear(),
            key: linear(),
            value: linear(),
            output: linear(),
            dropout: DropoutConfig::new(self.dropout).init(),
            slopes: Tensor::from_data(TensorData::new(slopes, [h]), device),
            feature_map: self.feature_map,
            norm_eps: self.normalize.then_some(self.norm_eps),
            d_model: d,
            n_heads: h,
            d_k: d / h,
        }
    }
}

impl<B: Backend> MultiHeadLightningAttention<B> {
    /// The per-head decay slopes `[n_heads]`.
    pub fn slopes(&self) -> Tensor<B, 1> {
        self.slopes.clone()
    }

    /// `[b, n, d_model]` through `linear`, split into heads `[b, H, n, d_k]`.
    fn heads(&self, x: Tensor<B, 3>, linear: &Linear<B>) -> Tensor<B, 4> {
        let [b, n, _] = x.dims();
        linear
            .forward(x)
            .reshape([b, n, self.n_heads, self.d_k])
            .swap_dims(1, 2)
    }

    fn features(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self.feature_map {
            FeatureMap::Silu => silu(x),
            FeatureMap::Identity => x,
        }
    }

    fn project(&self, input: LightningInput<B>) -> [Tensor<B, 4>; 3] {
        let [b, n, d] = input.query.dims();
        for (name, t) in [("key", &input.key), ("value", &input.value)] {
            assert_eq!(
                t.dims(),
                [b, n, d],
                "MultiHeadLightningAttention: {name} must have the query's shape [batch, seq, d_model] = {:?}",
                [b, n, d]
            );
        }
        assert_eq!(
            d, self.d_model,
            "MultiHeadLightningAttention: input width {d} is not d_model = {}",
            self.d_model
        );
        let q = self.features(self.heads(input.query, &self.query));
        let k = self.features(self.heads(input.key, &self.key));
        let mut v = self.heads(input.value, &self.value);
        if let Some(mask) = input.mask_pad {
            assert_eq!(
                mask.dims(),
                [b, n],
                "MultiHeadLightningAttention: mask_pad must be [batch, seq] = {:?}",
                [b, n]
            );
            let mask = mask
                .reshape([b, 1, n, 1])
                .expand([b, self.n_heads, n, self.d_k]);
            v = v.mask_fill(mask, 0.0);
        }
        [q, k, v]
    }

    /// Heads `[b, H, n, d_k]` back to `[b, n, d_model]`, normalised, dropped, projected.
    fn merge(&self, o: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, h, n, e] = o.dims();
        let mut o = o.swap_dims(1, 2).reshape([b, n, h * e]);
        if let Some(eps) = self.norm_eps {
            let rms = o.clone().square().mean_dim(2).add_scalar(eps).sqrt();
            o = o / rms;
        }
        self.output.forward(self.dropout.forward(o))
    }
}

impl<B: LightningBackend> MultiHeadLightningAttention<B> {
    /// Causal self-attention over the whole sequence, `[batch, seq, d_model]` in and out.
    pub fn forward(&self, input: LightningInput<B>) -> LightningOutput<B> {
        self.forward_cached(input, None).0
    }

    /// [`Self::forward`] continuing from `state` (`[batch, n_heads, d_k, d_k]` fp32, as
    /// returned by an earlier call; zeros when `None`): the output, and the state after the
    /// last token. Calls chained through the state equal one call on the joined sequence, so
    /// a prompt can be prefilled in chunks and then extended one token at a time, at a
    /// constant cost per token.
    pub fn forward_cached(
        &self,
        input: LightningInput<B>,
        state: Option<Tensor<B, 4>>,
    ) -> (LightningOutput<B>, Tensor<B, 4>) {
        let [q, k, v] = self.project(input);
        // Checked at init; moved with the module since.
        let slopes = Slopes::assume_checked(self.slopes.clone());
        let (o, state) = lightning_attention_with_state(q, k, v, slopes, state);
        let context = self.merge(o);
        (LightningOutput { context }, state)
    }
}

/// ALiBi's head slopes `2^(-8(h+1)/H)` for `H` a power of two; otherwise ALiBi's
/// interleaving (the slopes of the nearest lower power of two `p`, then every other slope of
/// `2p`), so any head count gets a near-to-far spread.
pub fn alibi_slopes(n_heads: usize) -> Vec<f64> {
    let power_of_two = |n: usize| (0..n).map(move |h| 2f64.powf(-8.0 * (h + 1) as f64 / n as f64));
    if n_heads == 0 {
        return Vec::new();
    }
    if n_heads.is_power_of_two() {
        return power_of_two(n_heads).collect();
    }
    let p = 1usize << n_heads.ilog2();
    power_of_two(p)
        .chain(power_of_two(2 * p).step_by(2).take(n_heads - p))
        .collect()
}
