//! The model's hyper-parameters, the released sizes, and the checks that catch a bad
//! configuration before any tensor is allocated.

use std::fmt;

use burn::config::Config;
use lightning_op::{LightningBackend, MAX_HEAD_DIM};

use crate::decay::{DecaySchedule, layer_slopes};
use crate::model::Tnl;

/// TransNormerLLM hyper-parameters (paper names: `D = d_model`, `H = n_heads`,
/// `L = n_layers`). The head dim is `d_model / n_heads`.
#[derive(Config, Debug, PartialEq)]
pub struct TnlConfig {
    /// Vocabulary size (64000 in the released models).
    pub vocab_size: usize,
    /// Model width `D`, also the width of the merged attention heads.
    pub d_model: usize,
    /// Number of TNL blocks `L`.
    pub n_layers: usize,
    /// Number of attention heads `H`; must divide `d_model`.
    pub n_heads: usize,
    /// Hidden width of the SGLU channel mixer.
    pub glu_dim: usize,
    /// Layers (0-based) whose q and k get LRPE; the released models use layer 0 only.
    #[config(default = "vec![0]")]
    pub lrpe_layers: Vec<usize>,
    /// Multiply the embeddings by `sqrt(d_model)` (TNL v1 configs do).
    #[config(default = true)]
    pub scale_embedding: bool,
    /// Share the LM head's weight with the embedding (the released models do).
    #[config(default = true)]
    pub tie_embeddings: bool,
    /// The decay-slope formula: the released code's (default) or the paper's.
    #[config(default = "DecaySchedule::Released")]
    pub decay: DecaySchedule,
    /// Epsilon of every SRMSNorm.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// Standard deviation of the N(0, std) init of every Linear and of the embedding.
    #[config(default = 0.02)]
    pub init_std: f64,
}

/// A configuration that cannot build a model; the message names the field and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TnlConfigError {
    message: String,
}

impl TnlConfigError {
    fn new(message: String) -> Self {
        Self {
            message: format!("TnlConfig: {message}"),
        }
    }
}

impl fmt::Display for TnlConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TnlConfigError {}

impl TnlConfig {
    /// TNL-385M: 0.399 B parameters.
    pub fn tnl_385m() -> Self {
        Self::new(64000, 1024, 24, 8, 2816)
    }

    /// TNL-1B: 1.02 B parameters.
    pub fn tnl_1b() -> Self {
        Self::new(64000, 2048, 16, 16, 5632)
    }

    /// TNL-7B: 6.8 B parameters.
    pub fn tnl_7b() -> Self {
        Self::new(64000, 4096, 30, 32, 11008)
    }

    /// A few thousand parameters with every feature of the big ones (LRPE on layer 0, tied
    /// head, scaled embedding, three layers of decays): for tests and CPU examples.
    pub fn tiny() -> Self {
        Self::new(128, 32, 3, 4, 64)
    }

    /// Width of one head in v and u (and in q, k before LRPE).
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    /// The decay slopes `[n_heads]` of layer `layer`, from [`Self::decay`].
    pub fn layer_slopes(&self, layer: usize) -> Vec<f64> {
        layer_slopes(self.decay, self.n_heads, layer, self.n_layers)
    }

    /// The parameter count from the shapes alone (no allocation); equals
    /// `Module::num_params` of the initialised model.
    pub fn num_params(&self) -> usize {
        let d = self.d_model;
        let embedding = self.vocab_size * d;
        let lm_head = if self.tie_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        let token_mixer = d * 4 * d + d * d; // fused q/k/v/u projection + out projection
        let channel_mixer = 3 * d * self.glu_dim; // l1, l2, l3
        let lrpe_theta = self.n_heads * self.head_dim(); // [H, 1, head_dim]
        embedding
            + lm_head
            + self.n_layers * (token_mixer + channel_mixer)
            + self.lrpe_layers.len() * lrpe_theta
    }

    /// Checks everything [`Self::init`] relies on.
    pub fn validate(&self) -> Result<(), TnlConfigError> {
        let err = |m: String| Err(TnlConfigError::new(m));
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("glu_dim", self.glu_dim),
        ] {
            if value == 0 {
                return err(format!("{name} must be at least 1, got 0"));
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return err(format!(
                "n_heads ({}) must divide d_model ({})",
                self.n_heads, self.d_model
            ));
        }
        let head_dim = self.head_dim();
        if head_dim > MAX_HEAD_DIM {
            return err(format!(
                "head dim d_model / n_heads = {} / {} = {head_dim} is above lightning-op's maximum {MAX_HEAD_DIM}",
                self.d_model, self.n_heads
            ));
        }
        for (i, &layer) in self.lrpe_layers.iter().enumerate() {
            if layer >= self.n_layers {
                return err(format!(
                    "lrpe_layers[{i}] = {layer} is beyond the depth: n_layers is {} (layers 0..={})",
                    self.n_layers,
                    self.n_layers - 1
                ));
            }
            if self.lrpe_layers[..i].contains(&layer) {
                return err(format!("lrpe_layers lists layer {layer} twice"));
            }
        }
        if !self.lrpe_layers.is_empty() && 2 * head_dim > MAX_HEAD_DIM {
            return err(format!(
                "LRPE doubles the q/k head dim to 2 x {head_dim} = {}, above lightning-op's maximum {MAX_HEAD_DIM}; \
                 use more heads or an empty lrpe_layers",
                2 * head_dim
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return err(format!(
                "norm_eps must be finite and > 0, got {}",
                self.norm_eps
            ));
        }
        if !(self.init_std.is_finite() && self.init_std >= 0.0) {
            return err(format!(
                "init_std must be finite and >= 0, got {}",
                self.init_std
            ));
        }
        Ok(())
    }

    /// Builds the model, or says which field is wrong.
    pub fn try_init<B: LightningBackend>(
        &self,
        device: &B::Device,
    ) -> Result<Tnl<B>, TnlConfigError> {
        self.validate()?;
        Ok(Tnl::new(self, device))
    }

    /// Builds the model with N(0, `init_std`) weights.
    ///
    /// # Panics
    /// On an invalid configuration, with [`Self::validate`]'s message.
    pub fn init<B: LightningBackend>(&self, device: &B::Device) -> Tnl<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}
