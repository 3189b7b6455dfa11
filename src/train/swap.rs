//! Swapping burn-nn's softmax `MultiHeadAttention` for lightning attention in a small Burn
//! model: the layer is built from a config of the same shape and called with an input of
//! the same shape, so the swap is the one line that builds the layer (plus dropping the
//! causal mask, which lightning attention has built in).
//!
//! ```text
//! - MultiHeadAttentionConfig::new(D_MODEL, HEADS).with_dropout(0.0).init(device)
//! + MultiHeadLightningAttentionConfig::new(D_MODEL, HEADS).with_dropout(0.0).init(device)
//! ```
//!
//! The task: random tokens `x`, target `y_t = (x_t + x_{t-1}) mod V`. The residual stream
//! carries `x_t`; only attention can bring `x_{t-1}`, so a model that learns it has learned
//! to attend.

use burn::module::Module;
use burn::nn::attention::{
    MhaInput, MultiHeadAttention, MultiHeadAttentionConfig, generate_autoregressive_mask,
};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::transformer::{PositionWiseFeedForward, PositionWiseFeedForwardConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use lightning_op::nn::{
    LightningInput, MultiHeadLightningAttention, MultiHeadLightningAttentionConfig,
};
use lightning_op::{LightningAutodiffBackend, LightningBackend};

use super::model::embed_with_positions;

/// Vocabulary of the task.
pub const VOCAB: usize = 16;
/// Sequence length of the task.
pub const SEQ: usize = 32;
const BATCH: usize = 32;
const D_MODEL: usize = 64;
const HEADS: usize = 4;

/// Which attention the model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKind {
    Softmax,
    Lightning,
}

/// The attention layer: burn-nn's, or lightning-op's drop-in.
#[derive(Module, Debug)]
pub enum Attention<B: Backend> {
    Softmax(MultiHeadAttention<B>),
    Lightning(MultiHeadLightningAttention<B>),
}

/// Embedding + position embedding, one pre-norm block (attention, feed-forward), a head.
#[derive(Module, Debug)]
pub struct SwapModel<B: Backend> {
    embedding: Embedding<B>,
    positions: Embedding<B>,
    norm_1: LayerNorm<B>,
    attention: Attention<B>,
    norm_2: LayerNorm<B>,
    ffn: PositionWiseFeedForward<B>,
    head: Linear<B>,
}

impl<B: LightningBackend> SwapModel<B> {
    pub fn new(kind: AttentionKind, device: &B::Device) -> Self {
        let attention = match kind {
            AttentionKind::Softmax => Attention::Softmax(
                MultiHeadAttentionConfig::new(D_MODEL, HEADS)
                    .with_dropout(0.0)
                    .init(device),
            ),
            // The swap: same arguments, same call.
            AttentionKind::Lightning => Attention::Lightning(
                MultiHeadLightningAttentionConfig::new(D_MODEL, HEADS)
                    .with_dropout(0.0)
                    .init(device),
            ),
        };
        Self {
            embedding: EmbeddingConfig::new(VOCAB, D_MODEL).init(device),
            positions: EmbeddingConfig::new(SEQ, D_MODEL).init(device),
            norm_1: LayerNormConfig::new(D_MODEL).init(device),
            attention,
            norm_2: LayerNormConfig::new(D_MODEL).init(device),
            ffn: PositionWiseFeedForwardConfig::new(D_MODEL, 4 * D_MODEL)
                .with_dropout(0.0)
                .init(device),
            head: LinearConfig::new(D_MODEL, VOCAB).init(device),
        }
    }

    /// Logits `[batch, seq, VOCAB]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, n] = tokens.dims();
        let device = tokens.device();
        let x = embed_with_positions(&self.embedding, &self.positions, tokens);
        let h = self.norm_1.forward(x.clone());
        let h = match &self.attention {
            Attention::Softmax(mha) => {
                let mask = generate_autoregressive_mask::<B>(b, n, &device);
                mha.forward(MhaInput::self_attn(h).mask_attn(mask)).context
            }
            Attention::Lightning(lightning) => {
                lightning.forward(LightningInput::self_attn(h)).context
            }
        };
        let x = x + h;
        let x = x.clone() + self.ffn.forward(self.norm_2.forward(x));
        self.head.forward(x)
    }
}

/// Settings of [`swap_demo`].
#[derive(Clone, Debug)]
pub struct SwapConfig {
    pub steps: usize,
    pub lr: f64,
    pub seed: u64,
    /// Print a loss line every this many steps (0: quiet).
    pub log_every: usize,
}

/// One variant's outcome.
#[derive(Clone, Debug)]
pub struct SwapReport {
    pub kind: AttentionKind,
    pub params: usize,
    /// Loss of every step.
    pub losses: Vec<f64>,
    /// Loss and accuracy on held-out batches after training.
    pub eval_loss: f64,
    pub eval_accuracy: f64,
    pub seconds: f64,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Batch `index` of the task: inputs and targets `[BATCH, SEQ]`.
pub fn task_batch<B: Backend>(
    seed: u64,
    index: u64,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let mut x = Vec::with_capacity(BATCH * SEQ);
    let mut y = Vec::with_capacity(BATCH * SEQ);
    for row in 0..BATCH as u64 {
        let base = splitmix(seed ^ splitmix(index.wrapping_mul(1_000_003).wrapping_add(row)));
        let mut prev = 0i64;
        for t in 0..SEQ as u64 {
            let token = (splitmix(base.wrapping_add(t)) % VOCAB as u64) as i64;
            x.push(token);
            y.push((token + prev) % VOCAB as i64);
            prev = token;
        }
    }
    (
        Tensor::from_data(TensorData::new(x, [BATCH, SEQ]), device),
        Tensor::from_data(TensorData::new(y, [BATCH, SEQ]), device),
    )
}

fn loss_of<B: LightningBackend>(
    model: &SwapModel<B>,
    x: Tensor<B, 2, Int>,
    y: Tensor<B, 2, Int>,
) -> (Tensor<B, 1>, f64) {
    let logits = model.forward(x).reshape([BATCH * SEQ, VOCAB]);
    let y = y.reshape([BATCH * SEQ]);
    let correct = logits
        .clone()
        .argmax(1)
        .reshape([BATCH * SEQ])
        .equal(y.clone())
        .int()
        .sum()
        .into_scalar()
        .elem::<f64>();
    let loss = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits, y);
    (loss, correct / (BATCH * SEQ) as f64)
}

/// Trains the model with each attention in turn, same seed, same batches, same steps.
pub fn swap_demo<B>(config: &SwapConfig, device: &B::Device) -> Vec<SwapReport>
where
    B: LightningAutodiffBackend,
    B::InnerBackend: LightningBackend,
{
    [AttentionKind::Softmax, AttentionKind::Lightning]
        .into_iter()
        .map(|kind| {
            B::seed(device, config.seed);
            let mut model = SwapModel::<B>::new(kind, device);
            let params = model.num_params();
            println!(
                "\n== {kind:?} attention: {params} parameters, task y_t = (x_t + x_(t-1)) mod {VOCAB}, chance loss {:.3} ==",
                (VOCAB as f64).ln()
            );
            let mut optim = AdamWConfig::new().init::<B, SwapModel<B>>();
            let started = std::time::Instant::now();
            let mut losses = Vec::with_capacity(config.steps);
            for step in 1..=config.steps {
                let (x, y) = task_batch::<B>(config.seed, step as u64, device);
                let (loss, accuracy) = loss_of(&model, x, y);
                let value = loss.clone().into_scalar().elem::<f64>();
                losses.push(value);
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(config.lr, model, grads);
                if config.log_every > 0 && (step % config.log_every == 0 || step == 1) {
                    println!(
                        "{kind:?} step {step:>4}: loss {value:.4}, accuracy {:.1}%",
                        100.0 * accuracy
                    );
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            let (mut eval_loss, mut eval_accuracy) = (0.0, 0.0);
            let eval_batches = 4;
            for i in 0..eval_batches {
                let (x, y) = task_batch::<B>(config.seed ^ 0xE7A1, i, device);
                let (loss, accuracy) = loss_of(&model, x, y);
                eval_loss += loss.into_scalar().elem::<f64>() / eval_batches as f64;
                eval_accuracy += accuracy / eval_batches as f64;
            }
            println!(
                "{kind:?}: held-out loss {eval_loss:.4}, accuracy {:.1}% after {} steps ({seconds:.1} s)",
                100.0 * eval_accuracy,
                config.steps
            );
            SwapReport {
                kind,
                params,
                losses,
                eval_loss,
                eval_accuracy,
                seconds,
            }
        })
        .collect()
}
