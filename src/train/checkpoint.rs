//! The run folder and its checkpoints, and the checks made before resuming from one.
//!
//! Layout of a run folder (burn-train's own, plus `run.json`):
//! - `run.json`: model, tokenizer and training settings ([`RunMeta`]);
//! - `checkpoint/{model,optim,scheduler}-<n>.mpk`: the state after checkpoint `n`, i.e.
//!   after `n * checkpoint_every` steps;
//! - `train/`, `valid/`: burn-train's metric logs; `experiment.log`: its log.
//!
//! burn-train itself panics ("Can load model checkpoint.") on a file it cannot read and
//! loads a tensor of the wrong shape without a word, so every file is opened and every
//! shape compared here first, and a refusal says which file and why.

use std::fmt;
use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::{Module, ModuleVisitor, Param};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Record, Recorder};
use burn::tensor::{Tensor, backend::Backend};

use super::model::ModelSpec;
use super::run::TrainingConfig;
use super::tokenizer::TokenizerSpec;

/// Full precision, so a resumed run continues from exactly the saved weights.
pub type CheckpointRecorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// Settings file of a run folder.
pub const META_FILE: &str = "run.json";

/// The three files of a checkpoint.
pub const PARTS: [&str; 3] = ["model", "optim", "scheduler"];

/// Everything a checkpoint depends on; a run resumes only under the same settings.
#[derive(Config, Debug)]
pub struct RunMeta {
    pub model: ModelSpec,
    pub tokenizer: TokenizerSpec,
    pub training: TrainingConfig,
    /// Where the text came from (informative: a changed corpus does not block a resume).
    pub corpus: String,
}

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointError {
    /// Nothing to resume from.
    Missing(String),
    /// Made under other settings, or holds tensors of other shapes.
    Mismatch(String),
    /// A file that does not parse.
    Corrupt(String),
    /// The folder cannot be read or written.
    Io(String),
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(m) => write!(f, "no checkpoint to resume from: {m}"),
            Self::Mismatch(m) => write!(f, "checkpoint does not match this run: {m}"),
            Self::Corrupt(m) => write!(f, "checkpoint is corrupt: {m}"),
            Self::Io(m) => write!(f, "run folder: {m}"),
        }
    }
}

impl std::error::Error for CheckpointError {}

/// `<run_dir>/checkpoint/<part>-<n>.mpk`.
pub fn checkpoint_file(run_dir: &Path, part: &str, n: usize) -> PathBuf {
    run_dir.join("checkpoint").join(format!("{part}-{n}.mpk"))
}

/// The highest checkpoint number with all three files present.
pub fn latest_checkpoint(run_dir: &Path) -> Option<usize> {
    let entries = std::fs::read_dir(run_dir.join("checkpoint")).ok()?;
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_prefix("model-")?
                .strip_suffix(".mpk")?
                .parse()
                .ok()
        })
        .filter(|&n| {
            PARTS
                .iter()
                .all(|p| checkpoint_file(run_dir, p, n).is_file())
        })
        .max()
}

/// Clears what an earlier run left in `run_dir` (checkpoints, metric logs) and writes
/// `meta`: a fresh run never mixes with an old one.
pub fn start_fresh(run_dir: &Path, meta: &RunMeta) -> Result<usize, CheckpointError> {
    let io = |e: std::io::Error| CheckpointError::Io(format!("{}: {e}", run_dir.display()));
    let old = std::fs::read_dir(run_dir.join("checkpoint"))
        .map(|d| d.count())
        .unwrap_or(0);
    for sub in ["checkpoint", "train", "valid"] {
        let path = run_dir.join(sub);
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(io)?;
        }
    }
    std::fs::create_dir_all(run_dir).map_err(io)?;
    meta.save(run_dir.join(META_FILE)).map_err(io)?;
    Ok(old)
}

/// The settings saved in `run_dir`.
pub fn read_meta(run_dir: &Path) -> Result<RunMeta, CheckpointError> {
    let path = run_dir.join(META_FILE);
    if !path.is_file() {
        return Err(CheckpointError::Missing(format!(
            "{} does not exist (is {} a run folder?)",
            path.display(),
            run_dir.display()
        )));
    }
    RunMeta::load(&path)
        .map_err(|e| CheckpointError::Corrupt(format!("{} does not parse: {e}", path.display())))
}

/// Refuses to resume under settings other than the saved ones, listing what differs.
pub fn check_meta(saved: &RunMeta, current: &RunMeta) -> Result<(), CheckpointError> {
    let mut diffs = Vec::new();
    let sections = [
        ("model", saved.model.to_string(), current.model.to_string()),
        (
            "tokenizer",
            saved.tokenizer.to_string(),
            current.tokenizer.to_string(),
        ),
        (
            "training",
            saved.training.to_string(),
            current.training.to_string(),
        ),
    ];
    for (name, old, new) in sections {
        if old != new {
            let old_lines: Vec<&str> = old.lines().map(str::trim).collect();
            let new_lines: Vec<&str> = new.lines().map(str::trim).collect();
            let changed: Vec<String> = old_lines
                .iter()
                .zip(&new_lines)
                .filter(|(a, b)| a != b)
                .map(|(a, b)| format!("{a} -> {b}"))
                .collect();
            let detail = if changed.is_empty() || old_lines.len() != new_lines.len() {
                format!("saved {old} vs now {new}")
            } else {
                changed.join(", ")
            };
            diffs.push(format!("{name}: {detail}"));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(CheckpointError::Mismatch(format!(
            "it was made with other settings ({}); resume with the same flags, or start a new --run-dir",
            diffs.join("; ")
        )))
    }
}

/// Opens a checkpoint file as record type `R`.
pub fn load_record<B: Backend, R: Record<B>>(
    path: &Path,
    device: &B::Device,
) -> Result<R, CheckpointError> {
    if !path.is_file() {
        return Err(CheckpointError::Missing(format!(
            "{} does not exist",
            path.display()
        )));
    }
    CheckpointRecorder::new()
        .load::<R>(path.to_path_buf(), device)
        .map_err(|e| {
            let e = e.to_string();
            let e = e.lines().last().unwrap_or_default().to_string();
            CheckpointError::Corrupt(format!("{} cannot be read: {e}", path.display()))
        })
}

/// `template` with the weights of checkpoint `n`, after checking that every parameter has
/// the template's shape.
pub fn load_model<B: Backend, M: Module<B>>(
    run_dir: &Path,
    n: usize,
    template: M,
    device: &B::Device,
) -> Result<M, CheckpointError> {
    let path = checkpoint_file(run_dir, "model", n);
    let record = load_record::<B, M::Record>(&path, device)?;
    let expected = param_shapes(&template);
    let loaded = template.load_record(record);
    let found = param_shapes(&loaded);
    if expected.len() != found.len() {
        return Err(CheckpointError::Mismatch(format!(
            "{} holds {} parameter tensors, the model has {}",
            path.display(),
            found.len(),
            expected.len()
        )));
    }
    for ((name, want), (_, got)) in expected.iter().zip(&found) {
        if want != got {
            return Err(CheckpointError::Mismatch(format!(
                "{}: parameter {name} has shape {got:?}, the model expects {want:?}",
                path.display()
            )));
        }
    }
    Ok(loaded)
}

/// `(path, shape)` of every float parameter, in visiting order.
pub fn param_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Vec<usize>)> {
    struct Shapes {
        path: Vec<String>,
        found: Vec<(String, Vec<usize>)>,
    }
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let shape = param.lazy_shape().to_vec();
            self.found.push((self.path.join("."), shape));
        }
    }
    let mut visitor = Shapes {
        path: Vec::new(),
        found: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.found
}
