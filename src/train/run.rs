//! One training run through burn-train's `Learner`: AdamW with gradient clipping, linear
//! warmup then cosine decay, loss and perplexity for training and validation, a checkpoint
//! (model, optimizer, scheduler) and a validation pass every `checkpoint_every` steps, and
//! `--resume` from the latest checkpoint.
//!
//! burn-train counts in epochs; here an epoch is `checkpoint_every` steps, because
//! burn-train validates and checkpoints at the end of each epoch. The batches are a pure
//! function of `(seed, step)` ([`super::data`]), so a resumed run sees exactly the batches the
//! uninterrupted one would have.
//!
//! Devices: [`fit`] hands the devices to burn-train through the backend's
//! [`DataParallel`] strategy: DDP on CUDA built with `--features ddp` (gradients all-reduced,
//! every device steps its own optimizer copy), the multi-device strategy elsewhere (gradients
//! gathered on the first device). `--steps` and `--checkpoint-every` count batches over all
//! devices: N devices take N batches per optimizer step, so the run makes `steps / N`
//! optimizer steps and the warmup and cosine are counted in those.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::config::Config;
use burn::grad_clipping::GradientClippingConfig;
use burn::lr_scheduler::LrScheduler;
use burn::module::Module;
use burn::optim::{AdamW, AdamWConfig, Optimizer, adaptor::OptimizerAdaptor};
use burn::tensor::backend::Backend;
use burn::train::checkpoint::KeepLastNCheckpoints;
use burn::train::metric::{LearningRateMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining, TrainingStrategy};
use lightning_op::{LightningAutodiffBackend, LightningBackend};

use super::backend::DataParallel;
use super::checkpoint::{
    CheckpointError, CheckpointRecorder, RunMeta, check_meta, checkpoint_file, latest_checkpoint,
    load_model, load_record, read_meta, start_fresh,
};
use super::corpus::CorpusError;
use super::data::{TokenData, WindowLoader};
use super::model::{LanguageModel, ModelSpec};
use super::progress::{History, ProgressRenderer};
use super::tokenizer::{TextTokenizer, TokenizerError};

/// Training hyper-parameters; saved in `run.json`, and a resume must use the same.
#[derive(Config, Debug)]
pub struct TrainingConfig {
    /// Tokens per training window.
    #[config(default = 128)]
    pub seq_len: usize,
    /// Windows per step (per device).
    #[config(default = 16)]
    pub batch_size: usize,
    /// Optimizer steps of the whole run.
    #[config(default = 600)]
    pub steps: usize,
    /// Validate and checkpoint every this many steps (burn-train's epoch).
    #[config(default = 100)]
    pub checkpoint_every: usize,
    /// Peak learning rate, reached at the end of the warmup.
    #[config(default = 3e-3)]
    pub lr: f64,
    /// The cosine decays to `lr * min_lr_ratio` at the last step.
    #[config(default = 0.1)]
    pub min_lr_ratio: f64,
    /// Linear warmup from 0 over this many steps.
    #[config(default = 50)]
    pub warmup_steps: usize,
    /// AdamW's decoupled weight decay.
    #[config(default = 0.01)]
    pub weight_decay: f64,
    /// Clip the gradient to this global L2 norm (0 disables).
    #[config(default = 1.0)]
    pub grad_clip: f64,
    /// Seed of the weights and of the batch order.
    #[config(default = 42)]
    pub seed: u64,
    /// Validation batches per validation pass (evenly spaced over the validation split).
    #[config(default = 8)]
    pub valid_batches: usize,
    /// Share of each document held out for validation (its end).
    #[config(default = 0.05)]
    pub valid_fraction: f64,
}

impl TrainingConfig {
    /// Validation and checkpoint passes of the whole run.
    pub fn num_checkpoints(&self) -> usize {
        self.steps.div_ceil(self.checkpoint_every.max(1))
    }

    /// Says which value is unusable.
    pub fn check(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        for (name, v) in [
            ("--seq-len", self.seq_len),
            ("--batch-size", self.batch_size),
            ("--steps", self.steps),
            ("--checkpoint-every", self.checkpoint_every),
            ("--valid-batches", self.valid_batches),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if self.seq_len < 2 {
            return bad("--seq-len must be at least 2".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be > 0, got {}", self.lr));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(format!(
                "--min-lr-ratio must be in [0, 1], got {}",
                self.min_lr_ratio
            ));
        }
        if !(self.valid_fraction > 0.0 && self.valid_fraction < 1.0) {
            return bad(format!(
                "--valid-fraction must be in (0, 1), got {}",
                self.valid_fraction
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return bad(format!("--grad-clip must be >= 0, got {}", self.grad_clip));
        }
        Ok(())
    }
}

/// Linear warmup to the peak, then a half cosine down to `min_lr_ratio * peak` at the last
/// step. Its record is the step count, so a resumed run continues the same curve.
#[derive(Clone, Debug)]
pub struct WarmupCosine {
    peak: f64,
    min: f64,
    warmup: usize,
    total: usize,
    step: usize,
}

impl WarmupCosine {
    /// The schedule of `config` over `devices` devices. N devices take N batches per
    /// optimizer step, so the warmup and the cosine span `steps / N` optimizer steps; the
    /// scheduler itself is stepped `lr_steps_per_optimizer_step` times per optimizer step
    /// (1 for burn-train's multi-device strategy, N for its DDP, whose every worker steps it
    /// once per device), and the schedule is stretched to match.
    pub fn new(
        config: &TrainingConfig,
        devices: usize,
        lr_steps_per_optimizer_step: usize,
    ) -> Self {
        let n = devices.max(1);
        let k = lr_steps_per_optimizer_step.max(1);
        Self {
            peak: config.lr,
            min: config.lr * config.min_lr_ratio,
            warmup: config.warmup_steps.div_ceil(n) * k,
            total: config.steps.div_ceil(n) * k,
            step: 0,
        }
    }

    /// The learning rate of step `step` (1-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step <= self.warmup {
            return self.peak * step as f64 / self.warmup.max(1) as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        self.min + 0.5 * (self.peak - self.min) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

impl LrScheduler for WarmupCosine {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> f64 {
        self.step += 1;
        self.lr_at(self.step)
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.step
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.step = record;
        self
    }
}

/// Why a run could not start or continue.
#[derive(Debug)]
pub enum TrainError {
    Corpus(CorpusError),
    Tokenizer(TokenizerError),
    Checkpoint(CheckpointError),
    /// A bad flag or a corpus too small for the settings.
    Config(String),
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corpus(e) => write!(f, "{e}"),
            Self::Tokenizer(e) => write!(f, "{e}"),
            Self::Checkpoint(e) => write!(f, "{e}"),
            Self::Config(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TrainError {}

impl From<CorpusError> for TrainError {
    fn from(e: CorpusError) -> Self {
        Self::Corpus(e)
    }
}

impl From<TokenizerError> for TrainError {
    fn from(e: TokenizerError) -> Self {
        Self::Tokenizer(e)
    }
}

impl From<CheckpointError> for TrainError {
    fn from(e: CheckpointError) -> Self {
        Self::Checkpoint(e)
    }
}

/// How to run (not saved: may change between a run and its resume).
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// The run folder (checkpoints, `run.json`, burn-train's logs).
    pub run_dir: PathBuf,
    /// Continue from the latest checkpoint in `run_dir` instead of starting afresh.
    pub resume: bool,
    /// Stop after this checkpoint (1-based), as if interrupted there; `None` runs to the end.
    pub stop_after_checkpoint: Option<usize>,
    /// Print a progress line every this many steps (0: silent).
    pub log_every: usize,
    /// Checkpoints kept on disk (the latest ones).
    pub keep_checkpoints: usize,
}

impl FitOptions {
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self {
            run_dir: run_dir.into(),
            resume: false,
            stop_after_checkpoint: None,
            log_every: 10,
            keep_checkpoints: 2,
        }
    }
}

/// What a run produced.
pub struct FitReport<B: Backend> {
    /// The trained model, on the inference backend.
    pub model: LanguageModel<B>,
    pub history: History,
    pub meta: RunMeta,
    /// The checkpoint the run resumed from.
    pub resumed_from: Option<usize>,
    /// Cross-entropy of the validation split's own byte/token frequencies.
    pub unigram_baseline: f64,
    pub num_params: usize,
    /// Wall time of the `Learner` (training, validation, checkpoints).
    pub seconds: f64,
}

impl<B: Backend> FitReport<B> {
    /// The last validation loss.
    pub fn final_valid_loss(&self) -> Option<f64> {
        self.history.valid.last().map(|v| v.loss)
    }
}

type Optim<B> = OptimizerAdaptor<AdamW, LanguageModel<B>, B>;
type OptimRecord<B> = <Optim<B> as Optimizer<LanguageModel<B>, B>>::Record;

/// Trains `spec` on `data` with burn-train's `Learner` on `devices` (the first one holds the
/// validation and the optimizer; see the module docs).
pub fn fit<B>(
    spec: &ModelSpec,
    tokenizer: &TextTokenizer,
    data: &TokenData,
    corpus: &str,
    training: &TrainingConfig,
    options: &FitOptions,
    devices: &[B::Device],
) -> Result<FitReport<B::InnerBackend>, TrainError>
where
    B: LightningAutodiffBackend + DataParallel,
    B::InnerBackend: LightningBackend,
{
    training.check()?;
    let device = devices
        .first()
        .cloned()
        .ok_or_else(|| TrainError::Config("no device to train on".into()))?;
    let window = training.seq_len + 1;
    if data.train.len() <= window || data.valid.len() <= window {
        return Err(TrainError::Config(format!(
            "the text is too short for --seq-len {}: {} training and {} validation tokens, \
             each split needs more than {window}; give more text or a shorter --seq-len",
            training.seq_len,
            data.train.len(),
            data.valid.len()
        )));
    }
    let vocab = match spec {
        ModelSpec::Tnl(c) => c.vocab_size,
        ModelSpec::Transformer(c) => c.vocab_size,
    };
    if vocab < data.vocab_size {
        return Err(TrainError::Config(format!(
            "the model's vocabulary ({vocab}) is smaller than the tokenizer's ({})",
            data.vocab_size
        )));
    }
    let meta = RunMeta::new(
        spec.clone(),
        tokenizer.spec(),
        training.clone(),
        corpus.to_string(),
    );
    let run_dir = &options.run_dir;
    let total = training.num_checkpoints();

    let resumed_from = if options.resume {
        let saved = read_meta(run_dir)?;
        check_meta(&saved, &meta)?;
        let n = latest_checkpoint(run_dir).ok_or_else(|| {
            CheckpointError::Missing(format!(
                "{} holds no complete checkpoint (model, optim and scheduler files)",
                run_dir.join("checkpoint").display()
            ))
        })?;
        if n >= total {
            return Err(TrainError::Config(format!(
                "the run in {} is already complete ({n} of {total} checkpoints); \
                 raise --steps for a new run, or use another --run-dir",
                run_dir.display()
            )));
        }
        // burn-train panics on a file it cannot read: open each one here first.
        load_model::<B, _>(run_dir, n, LanguageModel::<B>::new(spec, &device), &device)?;
        load_record::<B, OptimRecord<B>>(&checkpoint_file(run_dir, "optim", n), &device)?;
        load_record::<B, usize>(&checkpoint_file(run_dir, "scheduler", n), &device)?;
        Some(n)
    } else {
        start_fresh(run_dir, &meta)?;
        None
    };
    let stop = options
        .stop_after_checkpoint
        .map_or(total, |k| k.min(total));

    B::seed(&device, training.seed);
    let model = LanguageModel::<B>::new(spec, &device);
    let num_params = model.num_params();
    let clip =
        (training.grad_clip > 0.0).then(|| GradientClippingConfig::Norm(training.grad_clip as f32));
    let optim: Optim<B> = AdamWConfig::new()
        .with_weight_decay(training.weight_decay as f32)
        .with_grad_clipping(clip)
        .init();
    let lr_steps = if B::DDP { devices.len() } else { 1 };
    let schedule = WarmupCosine::new(training, devices.len(), lr_steps);
    let learner = Learner::new(model, optim, schedule);

    let baseline = data.unigram_baseline();
    let history = Arc::new(Mutex::new(History::default()));
    // Steps as the renderer sees them: batches, over all devices.
    let renderer = ProgressRenderer::new(
        history.clone(),
        training.checkpoint_every,
        training.steps,
        training.batch_size * training.seq_len,
        options.log_every,
        Some(baseline),
    );
    let train_loader = WindowLoader::<B>::train(
        data.train.clone(),
        training.seq_len,
        training.batch_size,
        training.seed,
        training.checkpoint_every,
        training.steps,
        resumed_from.unwrap_or(0),
        &device,
    );
    let valid_loader = WindowLoader::<B::InnerBackend>::fixed(
        data.valid.clone(),
        training.seq_len,
        training.batch_size,
        training.valid_batches,
        &device,
    );
    let strategy = B::execution(devices.to_vec());
    let mut training_run =
        SupervisedTraining::new(run_dir, Arc::new(train_loader), Arc::new(valid_loader))
            .metric_train_numeric(LossMetric::new())
            .metric_valid_numeric(LossMetric::new())
            .metric_train_numeric(LearningRateMetric::new())
            .with_file_checkpointer(CheckpointRecorder::new())
            .with_checkpointing_strategy(KeepLastNCheckpoints::new(options.keep_checkpoints.max(1)))
            .with_training_strategy(TrainingStrategy::Default(strategy))
            .renderer(renderer)
            .num_epochs(stop);
    if let Some(n) = resumed_from {
        training_run = training_run.checkpoint(n);
    }

    let started = Instant::now();
    let guard = B::collective_guard(devices);
    let result = training_run.launch(learner);
    drop(guard);
    let seconds = started.elapsed().as_secs_f64();
    let history = history.lock().map(|h| h.clone()).unwrap_or_default();
    Ok(FitReport {
        model: result.model,
        history,
        meta,
        resumed_from,
        unigram_baseline: baseline,
        num_params,
        seconds,
    })
}
