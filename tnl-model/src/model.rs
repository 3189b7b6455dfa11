//! The TransNormerLLM language model: embedding, TNL blocks, final norm, LM head.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear};
use burn::tensor::module::linear as linear_op;
use burn::tensor::{Bool, Int, Tensor, backend::Backend};
use lightning_op::LightningBackend;

use crate::attention::GlaConfig;
use crate::block::{TnlBlock, TnlBlockConfig};
use crate::config::TnlConfig;
use crate::init::{as_rows, linear, normal};
use crate::loss::{TnlTrainOutput, shifted_cross_entropy, shifted_targets};
use crate::norm::{SrmsNorm, SrmsNormConfig};
use crate::sglu::SgluConfig;

/// TransNormerLLM. Build it with [`TnlConfig::init`].
///
/// Burn initialises weights lazily, on first use: clone a freshly built model only after a
/// forward pass (or save/load it), otherwise each clone draws its own random weights.
#[derive(Module, Debug)]
pub struct Tnl<B: Backend> {
    embedding: Embedding<B>,
    blocks: Vec<TnlBlock<B>>,
    final_norm: SrmsNorm,
    /// `None` when tied: the embedding matrix doubles as the LM head.
    lm_head: Option<Linear<B>>,
    /// `sqrt(D)` with a scaled embedding, else 1.
    embed_scale: f64,
}

/// Each layer's recurrent state after the tokens seen so far, and where the next token sits.
///
/// The states are `[batch, H, d, e]` in fp32 (`d` doubled on LRPE layers): constant size,
/// whatever the context length. The position feeds LRPE, so the next token's angle is the
/// one the parallel pass would give it.
#[derive(Clone, Debug)]
pub struct TnlCache<B: Backend> {
    states: Vec<Tensor<B, 4>>,
    position: usize,
}

impl<B: Backend> TnlCache<B> {
    /// One state per layer, `[batch, H, d, e]` fp32.
    pub fn states(&self) -> &[Tensor<B, 4>] {
        &self.states
    }

    /// Absolute position of the next token (the number of tokens seen, padding included).
    pub fn position(&self) -> usize {
        self.position
    }

    /// Rows of the batch.
    pub fn batch_size(&self) -> usize {
        self.states[0].dims()[0]
    }
}

impl<B: Backend> Tnl<B> {
    /// Builds the model from a validated config.
    pub(crate) fn new(config: &TnlConfig, device: &B::Device) -> Self {
        let d = config.d_model;
        let blocks = (0..config.n_layers)
            .map(|layer| {
                let token_mixer = GlaConfig::new(d, config.n_heads, config.layer_slopes(layer))
                    .with_lrpe(config.lrpe_layers.contains(&layer))
                    .with_norm_eps(config.norm_eps)
                    .with_init_std(config.init_std);
                let channel_mixer =
                    SgluConfig::new(d, config.glu_dim).with_init_std(config.init_std);
                TnlBlockConfig::new(token_mixer, channel_mixer)
                    .with_norm_eps(config.norm_eps)
                    .init(device)
            })
            .collect();
        Self {
            embedding: EmbeddingConfig::new(config.vocab_size, d)
                .with_initializer(normal(config.init_std))
                .init(device),
            blocks,
            final_norm: SrmsNormConfig::new().with_eps(config.norm_eps).init(),
            lm_head: (!config.tie_embeddings)
                .then(|| linear(d, config.vocab_size, config.init_std, device)),
            embed_scale: if config.scale_embedding {
                (d as f64).sqrt()
            } else {
                1.0
            },
        }
    }

    /// The TNL blocks, bottom first.
    pub fn blocks(&self) -> &[TnlBlock<B>] {
        &self.blocks
    }

    /// The token embedding (also the LM head when tied).
    pub fn embedding(&self) -> &Embedding<B> {
        &self.embedding
    }

    /// Vocabulary size (the logits' last dim).
    pub fn vocab_size(&self) -> usize {
        self.embedding.weight.shape().dims::<2>()[0]
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.embedding.weight.lazy_device()
    }

    fn embed(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let x = self.embedding.forward(tokens);
        if self.embed_scale == 1.0 {
            x
        } else {
            x * self.embed_scale
        }
    }

    fn head(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, _] = x.dims();
        let x = as_rows(self.final_norm.forward(x));
        let logits = match &self.lm_head {
            Some(lm_head) => lm_head.forward(x),
            None => linear_op(x, self.embedding.weight.val().transpose(), None),
        };
        logits.reshape([b, n, self.vocab_size()])
    }
}

impl<B: LightningBackend> Tnl<B> {
    /// Logits `[batch, seq, vocab]` for `tokens` `[batch, seq]`: the parallel (training) form.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_masked(tokens, None)
    }

    /// [`Self::forward`] for a batch of different lengths: `mask_pad` `[batch, seq]` is true
    /// at padding (Burn's convention, as `generate_padding_mask` builds it).
    ///
    /// Padding never enters a state (its v is zeroed), so with left padding each row's logits
    /// equal those of the row alone; with right padding the real tokens are untouched anyway
    /// (causality) and the mask only matters to the loss.
    pub fn forward_masked(
        &self,
        tokens: Tensor<B, 2, Int>,
        mask_pad: Option<Tensor<B, 2, Bool>>,
    ) -> Tensor<B, 3> {
        check_mask(&tokens, mask_pad.as_ref());
        let mut x = self.embed(tokens);
        for block in &self.blocks {
            x = block.forward(x, mask_pad.as_ref());
        }
        self.head(x)
    }

    /// Mean next-token cross-entropy of `tokens` (padding targets excluded).
    pub fn loss(
        &self,
        tokens: Tensor<B, 2, Int>,
        mask_pad: Option<Tensor<B, 2, Bool>>,
    ) -> Tensor<B, 1> {
        let logits = self.forward_masked(tokens.clone(), mask_pad.clone());
        shifted_cross_entropy(logits, tokens, mask_pad)
    }

    /// Loss plus the per-token logits and targets, flattened for a trainer's metrics.
    pub fn forward_train(
        &self,
        tokens: Tensor<B, 2, Int>,
        mask_pad: Option<Tensor<B, 2, Bool>>,
    ) -> TnlTrainOutput<B> {
        let logits = self.forward_masked(tokens.clone(), mask_pad.clone());
        let loss = shifted_cross_entropy(logits.clone(), tokens.clone(), mask_pad.clone());
        let (logits, targets, mask_pad) = shifted_targets(logits, tokens, mask_pad);
        TnlTrainOutput {
            loss,
            logits,
            targets,
            mask_pad,
        }
    }

    /// Parallel pass that also returns the recurrent cache: the prompt's logits
    /// `[batch, seq, vocab]` and every layer's state after it. Continue with [`Self::step`].
    pub fn prefill(
        &self,
        tokens: Tensor<B, 2, Int>,
        mask_pad: Option<Tensor<B, 2, Bool>>,
    ) -> (Tensor<B, 3>, TnlCache<B>) {
        self.forward_cached(tokens, mask_pad, None)
    }

    /// [`Self::prefill`] continuing from `cache` (chunked prefill): equals one pass over the
    /// cached tokens followed by these.
    pub fn forward_cached(
        &self,
        tokens: Tensor<B, 2, Int>,
        mask_pad: Option<Tensor<B, 2, Bool>>,
        cache: Option<TnlCache<B>>,
    ) -> (Tensor<B, 3>, TnlCache<B>) {
        check_mask(&tokens, mask_pad.as_ref());
        let [batch, n] = tokens.dims();
        let (states, start) = match cache {
            Some(cache) => {
                self.check_cache(&cache, batch);
                (cache.states.into_iter().map(Some).collect(), cache.position)
            }
            None => (vec![None; self.blocks.len()], 0),
        };
        let mut x = self.embed(tokens);
        let mut next_states = Vec::with_capacity(self.blocks.len());
        for (block, state) in self.blocks.iter().zip(states) {
            let (y, state) = block.forward_cached(x, mask_pad.as_ref(), state, start);
            x = y;
            next_states.push(state);
        }
        let cache = TnlCache {
            states: next_states,
            position: start + n,
        };
        (self.head(x), cache)
    }

    /// One token per row (`tokens` `[batch]`) through the recurrent form: logits
    /// `[batch, vocab]` and the advanced cache. Constant time and memory per token.
    pub fn step(
        &self,
        tokens: Tensor<B, 1, Int>,
        cache: TnlCache<B>,
    ) -> (Tensor<B, 2>, TnlCache<B>) {
        let [batch] = tokens.dims();
        self.check_cache(&cache, batch);
        let position = cache.position;
        let mut x = self.embed(tokens.reshape([batch, 1]));
        let mut next_states = Vec::with_capacity(self.blocks.len());
        for (block, state) in self.blocks.iter().zip(cache.states) {
            let (y, state) = block.step(x, state, position);
            x = y;
            next_states.push(state);
        }
        let logits = self.head(x).reshape([batch, self.vocab_size()]);
        let cache = TnlCache {
            states: next_states,
            position: position + 1,
        };
        (logits, cache)
    }

    fn check_cache(&self, cache: &TnlCache<B>, batch: usize) {
        assert_eq!(
            cache.states.len(),
            self.blocks.len(),
            "TnlCache: holds {} layer states but the model has {} layers",
            cache.states.len(),
            self.blocks.len()
        );
        assert_eq!(
            cache.batch_size(),
            batch,
            "TnlCache: built for a batch of {} rows, got tokens for {batch}",
            cache.batch_size()
        );
    }
}

fn check_mask<B: Backend>(tokens: &Tensor<B, 2, Int>, mask_pad: Option<&Tensor<B, 2, Bool>>) {
    if let Some(mask) = mask_pad {
        assert_eq!(
            mask.dims(),
            tokens.dims(),
            "Tnl: mask_pad must have the shape of tokens [batch, seq]"
        );
    }
}
