//! Training language models on real text with burn-train's `Learner`: what the examples
//! (`train_tnl`, `generate`, `compare_transformer`, `swap_attention`) share, kept here so the
//! tests can drive it too.
//!
//! - [`corpus`]: the default Shakespeare corpus (fetched once into a cache) or any UTF-8
//!   file or folder, with errors that say what is wrong with the path;
//! - [`tokenizer`]: bytes by default, or a `tokenizer.json` through the `tokenizers` crate;
//! - [`data`]: token windows as batches, a validation split, the unigram baseline;
//! - [`model`]: the models the `Learner` trains (TNL, and a softmax Transformer of the same
//!   size for comparison);
//! - [`run`]: one training run (AdamW, warmup + cosine, clipping, checkpoints, resume);
//! - [`checkpoint`]: the run folder, and the checks that refuse a corrupt or mismatched
//!   checkpoint before Burn would panic on it;
//! - [`progress`]: the progress lines and the loss history a run leaves behind;
//! - [`backend`]: choosing the backend at run time;
//! - [`cli`]: the examples' command lines and their non-generic entry points (each backend
//!   is instantiated once, here);
//! - [`swap`]: burn-nn's softmax attention swapped for lightning attention in a small model.

pub mod backend;
pub mod checkpoint;
pub mod cli;
pub mod corpus;
pub mod data;
pub mod model;
pub mod progress;
pub mod run;
pub mod swap;
pub mod tokenizer;

pub use backend::BackendChoice;
pub use checkpoint::{CheckpointError, RunMeta};
pub use corpus::{Corpus, CorpusError};
pub use data::{LmBatch, TokenData, WindowLoader};
pub use model::{LanguageModel, ModelSpec, TnlLm, TransformerLm, TransformerLmConfig};
pub use progress::{History, ValidPoint};
pub use run::{FitOptions, FitReport, TrainError, TrainingConfig, WarmupCosine, fit};
pub use tokenizer::{TextTokenizer, TokenizerSpec};
