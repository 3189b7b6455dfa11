//! The models burn-train's `Learner` trains here: TransNormerLLM, and a softmax Transformer
//! of about the same size to compare it with. Both map `[batch, seq]` token ids to logits
//! `[batch, seq, vocab]` and report their loss through [`LmOutput`] to Burn's own loss
//! metric.

use burn::config::Config;
use burn::module::{Initializer, Module, ModuleVisitor, Param};
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use burn::train::metric::{Adaptor, ItemLazy, LossInput};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use lightning_op::{LightningAutodiffBackend, LightningBackend};
use tnl_model::{Tnl, TnlConfig};

use super::data::LmBatch;

/// Which model a run trains; saved with its checkpoints.
#[derive(Config, Debug)]
pub enum ModelSpec {
    Tnl(TnlConfig),
    Transformer(TransformerLmConfig),
}

impl ModelSpec {
    /// Parameters, from the shapes alone.
    pub fn num_params(&self) -> usize {
        match self {
            Self::Tnl(c) => c.num_params(),
            Self::Transformer(c) => c.num_params(),
        }
    }
}

/// What a step reports to burn-train: the mean next-token loss, nothing else.
///
/// burn-train's `SequenceOutput` also carries the logits, and its `ItemLazy::sync` copies
/// them to the host after every step for the metrics: 2.1 GB per step for TNL-385M's
/// 4 x 2048 x 64000 logits, then a log-softmax over them on the CPU for its perplexity
/// metric. On the H200 that, not the GPU, set the pace of TNL-385M training (a stack sample
/// caught the metric thread in that log-softmax with both GPUs idle), and under DDP the
/// workers queue on it. Our metrics need only the loss; perplexity is its exponential.
pub struct LmOutput<B: Backend> {
    pub loss: Tensor<B, 1>,
}

/// Mean next-token cross-entropy of `logits` `[b, n, vocab]` against `targets` `[b, n]`.
pub fn lm_output<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> LmOutput<B> {
    let [b, n, vocab] = logits.dims();
    let loss = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits.reshape([b * n, vocab]), targets.reshape([b * n]));
    LmOutput { loss }
}

/// The loss stays on its device until the loss metric reads its one value.
impl<B: Backend> ItemLazy for LmOutput<B> {
    type ItemSync = Self;

    fn sync(self) -> Self {
        self
    }
}

impl<B: Backend> Adaptor<LossInput<B>> for LmOutput<B> {
    fn adapt(&self) -> LossInput<B> {
        LossInput::new(self.loss.clone())
    }
}

/// TNL as the `Learner` sees it (burn-train's step traits cannot be implemented on
/// `tnl_model::Tnl` from this crate, hence the wrapper).
#[derive(Module, Debug)]
pub struct TnlLm<B: Backend> {
    pub tnl: Tnl<B>,
}

impl<B: LightningBackend> TnlLm<B> {
    pub fn new(config: &TnlConfig, device: &B::Device) -> Self {
        Self {
            tnl: config.init(device),
        }
    }

    pub fn forward(&self, batch: LmBatch<B>) -> LmOutput<B> {
        lm_output(self.tnl.forward(batch.inputs), batch.targets)
    }
}

impl<B: LightningAutodiffBackend> TrainStep for TnlLm<B> {
    type Input = LmBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> TrainOutput<LmOutput<B>> {
        let output = self.forward(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl<B: LightningBackend> InferenceStep for TnlLm<B> {
    type Input = LmBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> LmOutput<B> {
        self.forward(batch)
    }
}

/// A GPT-style softmax Transformer: token + learned position embeddings, burn-nn's
/// pre-norm `TransformerEncoder` under a causal mask, final LayerNorm, LM head tied to the
/// embedding (as TNL's).
#[derive(Config, Debug)]
pub struct TransformerLmConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub d_ff: usize,
    /// Longest sequence (size of the position table).
    pub max_seq_len: usize,
    #[config(default = 0.02)]
    pub init_std: f64,
}

impl TransformerLmConfig {
    /// The same width, depth and heads as `tnl`, with the feed-forward width chosen so a
    /// layer holds about as many weights as a TNL layer (`4D^2 + 2 D d_ff` against
    /// `5D^2 + 3 D glu`).
    pub fn matching(tnl: &TnlConfig, max_seq_len: usize) -> Self {
        let d_ff = (tnl.d_model + 3 * tnl.glu_dim).div_ceil(2);
        Self::new(
            tnl.vocab_size,
            tnl.d_model,
            tnl.n_layers,
            tnl.n_heads,
            d_ff,
            max_seq_len,
        )
    }

    /// Parameters, from the shapes alone.
    pub fn num_params(&self) -> usize {
        let d = self.d_model;
        let layer = 4 * (d * d + d) + 2 * d * self.d_ff + self.d_ff + d + 2 * 2 * d;
        (self.vocab_size + self.max_seq_len) * d + self.n_layers * layer + 2 * d
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerLm<B> {
        let normal = Initializer::Normal {
            mean: 0.0,
            std: self.init_std,
        };
        TransformerLm {
            embedding: EmbeddingConfig::new(self.vocab_size, self.d_model)
                .with_initializer(normal.clone())
                .init(device),
            positions: EmbeddingConfig::new(self.max_seq_len, self.d_model)
                .with_initializer(normal)
                .init(device),
            encoder: TransformerEncoderConfig::new(
                self.d_model,
                self.d_ff,
                self.n_heads,
                self.n_layers,
            )
            .with_norm_first(true)
            .with_dropout(0.0)
            .init(device),
            norm: LayerNormConfig::new(self.d_model).init(device),
        }
    }
}

/// Token embeddings plus learned absolute position embeddings (positions `0..n`): the
/// softmax models' input, which has no other notion of order.
pub(crate) fn embed_with_positions<B: Backend>(
    tokens_table: &Embedding<B>,
    positions_table: &Embedding<B>,
    tokens: Tensor<B, 2, Int>,
) -> Tensor<B, 3> {
    let [b, n] = tokens.dims();
    let positions = Tensor::<B, 1, Int>::arange(0..n as i64, &tokens.device())
        .reshape([1, n])
        .expand([b, n]);
    tokens_table.forward(tokens) + positions_table.forward(positions)
}

/// See [`TransformerLmConfig`].
#[derive(Module, Debug)]
pub struct TransformerLm<B: Backend> {
    embedding: Embedding<B>,
    positions: Embedding<B>,
    encoder: TransformerEncoder<B>,
    norm: LayerNorm<B>,
}

impl<B: Backend> TransformerLm<B> {
    /// Logits `[batch, seq, vocab]`.
    pub fn logits(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, n] = tokens.dims();
        let device = tokens.device();
        let x = embed_with_positions(&self.embedding, &self.positions, tokens);
        let mask = generate_autoregressive_mask::<B>(b, n, &device);
        let x = self
            .encoder
            .forward(TransformerEncoderInput::new(x).mask_attn(mask));
        let x = self.norm.forward(x);
        let [_, _, d] = x.dims();
        let weight = self.embedding.weight.val(); // [vocab, d]
        let vocab = weight.dims()[0];
        x.reshape([b * n, d])
            .matmul(weight.transpose())
            .reshape([b, n, vocab])
    }

    pub fn forward(&self, batch: LmBatch<B>) -> LmOutput<B> {
        lm_output(self.logits(batch.inputs), batch.targets)
    }
}

impl<B: AutodiffBackend> TrainStep for TransformerLm<B> {
    type Input = LmBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> TrainOutput<LmOutput<B>> {
        let output = self.forward(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl<B: Backend> InferenceStep for TransformerLm<B> {
    type Input = LmBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> LmOutput<B> {
        self.forward(batch)
    }
}

/// Reads every float parameter, which draws the ones still lazy in place (their id and
/// trainability untouched; a `map` such as `to_device` would make them non-leaf tensors).
struct DrawWeights;

impl<B: Backend> ModuleVisitor<B> for DrawWeights {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        param.val();
    }
}

/// The model a run trains, as one type: one `Learner` instantiation per backend covers both
/// architectures (compile time), and the checkpoint records which one it holds.
#[derive(Module, Debug)]
pub enum LanguageModel<B: Backend> {
    Tnl(TnlLm<B>),
    Transformer(TransformerLm<B>),
}

impl<B: LightningBackend> LanguageModel<B> {
    /// A freshly initialised model of `spec`, every weight drawn now from the backend's RNG.
    ///
    /// Burn draws a parameter lazily, on first use, and a clone of a parameter not yet drawn
    /// draws its own values. burn-train's DDP clones the model once per GPU, so lazily drawn
    /// weights would differ between GPUs from the first step on.
    pub fn new(spec: &ModelSpec, device: &B::Device) -> Self {
        let model = match spec {
            ModelSpec::Tnl(config) => Self::Tnl(TnlLm::new(config, device)),
            ModelSpec::Transformer(config) => Self::Transformer(config.init(device)),
        };
        model.visit(&mut DrawWeights);
        model
    }

    pub fn forward(&self, batch: LmBatch<B>) -> LmOutput<B> {
        match self {
            Self::Tnl(model) => model.forward(batch),
            Self::Transformer(model) => model.forward(batch),
        }
    }

    /// Logits `[batch, seq, vocab]`.
    pub fn logits(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        match self {
            Self::Tnl(model) => model.tnl.forward(tokens),
            Self::Transformer(model) => model.logits(tokens),
        }
    }

    /// The TNL inside, for recurrent generation.
    pub fn tnl(&self) -> Option<&Tnl<B>> {
        match self {
            Self::Tnl(model) => Some(&model.tnl),
            Self::Transformer(_) => None,
        }
    }
}

impl<B: LightningAutodiffBackend> TrainStep for LanguageModel<B>
where
    B::InnerBackend: LightningBackend,
{
    type Input = LmBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> TrainOutput<LmOutput<B>> {
        let output = self.forward(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl<B: LightningBackend> InferenceStep for LanguageModel<B> {
    type Input = LmBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> LmOutput<B> {
        self.forward(batch)
    }
}
