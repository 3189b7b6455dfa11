//! Shared helpers: a temporary folder, a text fixture, short-run arguments, and a lock.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use clap::Parser;
use lightning_attention::train::cli::TrainArgs;

/// Burn's NdArray RNG is global: tests that build models hold this lock, so a seeded run
/// draws the same weights whatever runs alongside it.
static RNG: Mutex<()> = Mutex::new(());

pub fn rng_lock() -> MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh, empty folder under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "lightning-attention-test-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// About 40 KB of simple English sentences, deterministic.
pub fn fixture_text() -> String {
    let subjects = [
        "the cat",
        "a dog",
        "my friend",
        "the old king",
        "her brother",
        "we",
    ];
    let verbs = [
        "sat on",
        "looked at",
        "walked to",
        "spoke of",
        "dreamed of",
        "sang to",
    ];
    let objects = [
        "the mat",
        "the river",
        "a small house",
        "the queen",
        "the garden",
        "the sea",
    ];
    let mut state = 12345u64;
    let mut next = |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % n as u64) as usize
    };
    let mut text = String::new();
    while text.len() < 40_000 {
        let s = subjects[next(subjects.len())];
        let v = verbs[next(verbs.len())];
        let o = objects[next(objects.len())];
        text.push_str(&format!("{s} {v} {o}.\n"));
    }
    text
}

/// Writes the fixture into `dir/corpus.txt`.
pub fn write_corpus(dir: &Path) -> PathBuf {
    let path = dir.join("corpus.txt");
    std::fs::write(&path, fixture_text()).expect("write fixture");
    path
}

/// A short, quiet CPU run on `data` in `run_dir`: 10-step checkpoints, tiny model.
pub fn short_args(data: &Path, run_dir: &Path, steps: usize, extra: &[&str]) -> TrainArgs {
    let steps = steps.to_string();
    let mut argv: Vec<String> = [
        "train_tnl",
        "--backend",
        "ndarray",
        "--steps",
        &steps,
        "--checkpoint-every",
        "10",
        "--batch-size",
        "8",
        "--seq-len",
        "32",
        "--warmup",
        "5",
        "--lr",
        "0.01",
        "--valid-batches",
        "4",
        "--valid-fraction",
        "0.1",
        "--log-every",
        "0",
        "--sample-tokens",
        "0",
        "--seed",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(["--data".into(), data.display().to_string()]);
    argv.extend(["--run-dir".into(), run_dir.display().to_string()]);
    argv.extend(extra.iter().map(|s| s.to_string()));
    TrainArgs::parse_from(argv)
}
