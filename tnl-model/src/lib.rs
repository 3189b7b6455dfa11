//! TransNormerLLM (TNL, arXiv 2307.14995) in Burn, on `lightning-op`'s lightning attention.
//!
//! A decoder-only language model whose token mixer is linear attention with a fixed
//! per-head decay: training runs the parallel blockwise op, generation carries a constant
//! `d x e` state per head and layer, so every new token costs the same at any context
//! length.
//!
//! - [`TnlConfig`] / [`Tnl`]: the model, its presets (`tnl_385m`, `tnl_1b`, `tnl_7b`,
//!   `tiny`) and [`TnlConfig::num_params`] from the shapes alone;
//! - [`Tnl::forward`] / [`Tnl::forward_masked`] / [`Tnl::loss`] / [`Tnl::forward_train`]:
//!   training;
//! - [`Tnl::prefill`] + [`Tnl::step`] with a [`TnlCache`], and [`Tnl::generate`]: inference.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Int, Tensor};
//! use tnl_model::{GenerateConfig, TnlConfig};
//!
//! let device = Default::default();
//! let model = TnlConfig::tiny().init::<NdArray>(&device);
//! let tokens = Tensor::<NdArray, 2, Int>::from_ints([[1, 2, 3, 4]], &device);
//! assert_eq!(model.forward(tokens).dims(), [1, 4, 128]);
//!
//! let config = GenerateConfig::new(5).with_top_k(Some(10)).with_seed(7);
//! let out = model.generate(&[vec![1, 2, 3], vec![4]], &config);
//! assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5]);
//! ```

mod attention;
mod block;
mod config;
pub mod decay;
mod generate;
mod init;
mod loss;
mod lrpe;
mod model;
mod norm;
pub mod sampling;
mod sglu;

pub use attention::{GatedLinearAttention, GlaConfig};
pub use block::{TnlBlock, TnlBlockConfig};
pub use config::{TnlConfig, TnlConfigError};
pub use decay::DecaySchedule;
pub use generate::GenerateConfig;
pub use loss::{NextTokens, TnlTrainOutput, shifted_cross_entropy, shifted_targets};
pub use lrpe::{Lrpe, LrpeConfig};
pub use model::{Tnl, TnlCache};
pub use norm::{SrmsNorm, SrmsNormConfig};
pub use sglu::{Sglu, SgluConfig};
