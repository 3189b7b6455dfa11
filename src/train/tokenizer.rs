//! Text to token ids and back: raw bytes by default (vocabulary 256, nothing to train or
//! ship, any UTF-8 text round-trips), or a Hugging Face `tokenizer.json`.

use std::fmt;
use std::path::Path;
#[cfg(feature = "tokenizers")]
use std::path::PathBuf;

use burn::config::Config;

/// Which tokenizer a run used; saved with the checkpoints so `generate` decodes the same way.
#[derive(Config, Debug, PartialEq)]
pub enum TokenizerSpec {
    /// One token per byte.
    Bytes,
    /// A `tokenizer.json` at this path.
    File(String),
}

/// A tokenizer that failed to load or to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerError(pub String);

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenizerError {}

/// Bytes or a `tokenizers` tokenizer behind one interface. The `tokenizer.json` support is
/// compiled in by the `tokenizers` cargo feature (off by default: see the root Cargo.toml).
#[derive(Clone)]
pub enum TextTokenizer {
    Bytes,
    #[cfg(feature = "tokenizers")]
    HuggingFace {
        path: PathBuf,
        inner: Box<tokenizers::Tokenizer>,
    },
}

impl fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bytes => f.write_str("Bytes"),
            #[cfg(feature = "tokenizers")]
            Self::HuggingFace { path, .. } => write!(f, "HuggingFace({})", path.display()),
        }
    }
}

impl TextTokenizer {
    /// Loads a `tokenizer.json`.
    #[cfg(not(feature = "tokenizers"))]
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        Err(TokenizerError(format!(
            "--tokenizer {}: this build has no tokenizer.json support; rebuild with `--features tokenizers` \
             (e.g. cargo run --release --features tokenizers --example train_tnl -- --tokenizer ...)",
            path.display()
        )))
    }

    /// Loads a `tokenizer.json`.
    #[cfg(feature = "tokenizers")]
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        if !path.is_file() {
            return Err(TokenizerError(format!(
                "--tokenizer {}: no such file",
                path.display()
            )));
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| {
            TokenizerError(format!(
                "--tokenizer {}: not a usable tokenizer.json ({e})",
                path.display()
            ))
        })?;
        Ok(Self::HuggingFace {
            path: path.to_path_buf(),
            inner: Box::new(inner),
        })
    }

    /// The tokenizer a saved run names.
    pub fn from_spec(spec: &TokenizerSpec) -> Result<Self, TokenizerError> {
        match spec {
            TokenizerSpec::Bytes => Ok(Self::Bytes),
            TokenizerSpec::File(path) => Self::from_file(Path::new(path)),
        }
    }

    /// What to save with a run to rebuild this tokenizer.
    pub fn spec(&self) -> TokenizerSpec {
        match self {
            Self::Bytes => TokenizerSpec::Bytes,
            #[cfg(feature = "tokenizers")]
            Self::HuggingFace { path, .. } => {
                let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                TokenizerSpec::File(path.to_string_lossy().into_owned())
            }
        }
    }

    /// Number of distinct ids (added tokens included): the model's vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Bytes => 256,
            #[cfg(feature = "tokenizers")]
            Self::HuggingFace { inner, .. } => inner.get_vocab_size(true),
        }
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        match self {
            Self::Bytes => Ok(text.bytes().map(u32::from).collect()),
            #[cfg(feature = "tokenizers")]
            Self::HuggingFace { inner, .. } => inner
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| TokenizerError(format!("tokenizer failed to encode: {e}"))),
        }
    }

    /// Text of `ids`; bytes that do not form valid UTF-8 (a sample cut mid-character)
    /// become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            Self::Bytes => {
                let bytes: Vec<u8> = ids.iter().map(|&t| t.min(255) as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            #[cfg(feature = "tokenizers")]
            Self::HuggingFace { inner, .. } => inner
                .decode(ids, false)
                .unwrap_or_else(|e| format!("<decode error: {e}>")),
        }
    }
}
