//! Tokens as training batches: random windows for training, fixed windows for validation,
//! and the unigram baseline a model has to beat.
//!
//! Batches are a pure function of `(seed, step)`, not of a running RNG, so a run resumed
//! from a checkpoint sees exactly the batches the uninterrupted run would have seen.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use super::corpus::Corpus;
use super::tokenizer::{TextTokenizer, TokenizerError};

/// One batch: `inputs` `[batch, seq]` and the next tokens `targets` `[batch, seq]`.
#[derive(Clone, Debug)]
pub struct LmBatch<B: Backend> {
    pub inputs: Tensor<B, 2, Int>,
    pub targets: Tensor<B, 2, Int>,
}

/// A tokenized corpus split into training and validation tokens.
#[derive(Clone, Debug)]
pub struct TokenData {
    pub train: Arc<Vec<u32>>,
    pub valid: Arc<Vec<u32>>,
    pub vocab_size: usize,
}

impl TokenData {
    /// Tokenizes each document and holds out its last `valid_fraction` for validation, so
    /// every document (every play) is represented on both sides.
    pub fn from_corpus(
        corpus: &Corpus,
        tokenizer: &TextTokenizer,
        valid_fraction: f64,
    ) -> Result<Self, TokenizerError> {
        let mut train = Vec::new();
        let mut valid = Vec::new();
        for doc in &corpus.documents {
            let mut ids = tokenizer.encode(&doc.text)?;
            ids.extend(tokenizer.encode("\n\n")?);
            let cut = ids.len() - (ids.len() as f64 * valid_fraction).round() as usize;
            valid.extend_from_slice(&ids[cut..]);
            ids.truncate(cut);
            train.extend(ids);
        }
        Ok(Self {
            train: Arc::new(train),
            valid: Arc::new(valid),
            vocab_size: tokenizer.vocab_size(),
        })
    }

    /// Cross-entropy (nats/token) on the validation tokens of the best unigram model, the
    /// validation split's own token frequencies: what a model that ignores context can reach
    /// at most. A model that learned anything from context lands below it.
    pub fn unigram_baseline(&self) -> f64 {
        entropy(&self.valid, self.vocab_size)
    }

    /// Cross-entropy on the validation tokens of the training split's frequencies
    /// (add-one smoothed): the unigram model one could actually fit.
    pub fn unigram_train_estimate(&self) -> f64 {
        let mut counts = vec![1.0f64; self.vocab_size];
        for &t in self.train.iter() {
            counts[t as usize] += 1.0;
        }
        let total: f64 = counts.iter().sum();
        let nll: f64 = self
            .valid
            .iter()
            .map(|&t| -(counts[t as usize] / total).ln())
            .sum();
        nll / self.valid.len().max(1) as f64
    }
}

fn entropy(tokens: &[u32], vocab: usize) -> f64 {
    let mut counts = vec![0usize; vocab];
    for &t in tokens {
        counts[t as usize] += 1;
    }
    let n = tokens.len().max(1) as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

/// SplitMix64: a tiny, versionless RNG, so batches never change with a dependency bump.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[derive(Clone, Debug)]
enum Plan {
    /// Random windows; step `g` (0-based over the whole run) draws from `seed` and `g`.
    /// `epoch` counts `iter()` calls and is shared by every copy of the loader, so the
    /// learner's copies agree on where the run is.
    Random {
        seed: u64,
        steps_per_epoch: usize,
        total_steps: usize,
        epoch: Arc<AtomicUsize>,
    },
    /// The same evenly spaced windows every time.
    Fixed { batches: usize },
}

/// A [`DataLoader`] of [`LmBatch`]es cut from a token sequence. Progress counts batches.
#[derive(Clone, Debug)]
pub struct WindowLoader<B: Backend> {
    tokens: Arc<Vec<u32>>,
    seq_len: usize,
    batch_size: usize,
    plan: Plan,
    /// Batches `range.0..range.1` of each epoch (all unless sliced).
    range: Option<(usize, usize)>,
    device: B::Device,
}

impl<B: Backend> WindowLoader<B> {
    /// Training batches: epochs of `steps_per_epoch` steps (the last one shorter) over
    /// `total_steps`, starting after epoch `start_epoch` (0 for a fresh run, the checkpoint's
    /// epoch when resuming).
    ///
    /// # Panics
    /// If the tokens are too few for one window of `seq_len + 1`.
    pub fn train(
        tokens: Arc<Vec<u32>>,
        seq_len: usize,
        batch_size: usize,
        seed: u64,
        steps_per_epoch: usize,
        total_steps: usize,
        start_epoch: usize,
        device: &B::Device,
    ) -> Self {
        let plan = Plan::Random {
            seed,
            steps_per_epoch,
            total_steps,
            epoch: Arc::new(AtomicUsize::new(start_epoch)),
        };
        Self::with_plan(tokens, seq_len, batch_size, plan, device)
    }

    /// `batches` validation batches of evenly spaced windows, the same at every epoch.
    ///
    /// # Panics
    /// If the tokens are too few for one window of `seq_len + 1`.
    pub fn fixed(
        tokens: Arc<Vec<u32>>,
        seq_len: usize,
        batch_size: usize,
        batches: usize,
        device: &B::Device,
    ) -> Self {
        Self::with_plan(tokens, seq_len, batch_size, Plan::Fixed { batches }, device)
    }

    fn with_plan(
        tokens: Arc<Vec<u32>>,
        seq_len: usize,
        batch_size: usize,
        plan: Plan,
        device: &B::Device,
    ) -> Self {
        assert!(
            tokens.len() > seq_len + 1,
            "WindowLoader: {} tokens are too few for one window of seq_len + 1 = {}",
            tokens.len(),
            seq_len + 1
        );
        Self {
            tokens,
            seq_len,
            batch_size,
            plan,
            range: None,
            device: device.clone(),
        }
    }

    /// The window starts of batch `index` of the epoch `epoch` (1-based).
    fn offsets(&self, epoch: usize, index: usize) -> Vec<usize> {
        let span = self.tokens.len() - self.seq_len - 1;
        match &self.plan {
            Plan::Random {
                seed,
                steps_per_epoch,
                ..
            } => {
                let step = ((epoch - 1) * steps_per_epoch + index) as u64;
                let base = splitmix(seed ^ splitmix(step));
                (0..self.batch_size as u64)
                    .map(|row| (splitmix(base.wrapping_add(row)) % (span as u64 + 1)) as usize)
                    .collect()
            }
            Plan::Fixed { batches } => {
                let count = (batches * self.batch_size).max(2) - 1;
                (0..self.batch_size)
                    .map(|row| (index * self.batch_size + row) * span / count)
                    .collect()
            }
        }
    }

    /// Batches in epoch `epoch` (1-based), before slicing.
    fn epoch_len(&self, epoch: usize) -> usize {
        match &self.plan {
            Plan::Random {
                steps_per_epoch,
                total_steps,
                ..
            } => total_steps
                .saturating_sub((epoch - 1) * steps_per_epoch)
                .min(*steps_per_epoch),
            Plan::Fixed { batches } => *batches,
        }
    }

    /// The batch of the given window starts.
    pub fn batch(&self, offsets: &[usize]) -> LmBatch<B> {
        let n = self.seq_len;
        let mut inputs = Vec::with_capacity(offsets.len() * n);
        let mut targets = Vec::with_capacity(offsets.len() * n);
        for &o in offsets {
            let window = &self.tokens[o..o + n + 1];
            inputs.extend(window[..n].iter().map(|&t| t as i64));
            targets.extend(window[1..].iter().map(|&t| t as i64));
        }
        let shape = [offsets.len(), n];
        LmBatch {
            inputs: Tensor::from_data(TensorData::new(inputs, shape), &self.device),
            targets: Tensor::from_data(TensorData::new(targets, shape), &self.device),
        }
    }
}

struct WindowIter<'a, B: Backend> {
    loader: &'a WindowLoader<B>,
    epoch: usize,
    next: usize,
    end: usize,
    start: usize,
}

impl<B: Backend> Iterator for WindowIter<'_, B> {
    type Item = LmBatch<B>;

    fn next(&mut self) -> Option<LmBatch<B>> {
        if self.next >= self.end {
            return None;
        }
        let offsets = self.loader.offsets(self.epoch, self.next);
        self.next += 1;
        Some(self.loader.batch(&offsets))
    }
}

impl<B: Backend> DataLoaderIterator<LmBatch<B>> for WindowIter<'_, B> {
    fn progress(&self) -> Progress {
        Progress::new(self.next - self.start, self.end - self.start)
    }
}

impl<B: Backend> DataLoader<B, LmBatch<B>> for WindowLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<LmBatch<B>> + 'a> {
        let epoch = match &self.plan {
            Plan::Random { epoch, .. } => epoch.fetch_add(1, Ordering::SeqCst) + 1,
            Plan::Fixed { .. } => 1,
        };
        let len = self.epoch_len(epoch);
        let (start, end) = self
            .range
            .map_or((0, len), |(s, e)| (s.min(len), e.min(len)));
        Box::new(WindowIter {
            loader: self,
            epoch,
            next: start,
            end,
            start,
        })
    }

    fn num_items(&self) -> usize {
        let batches = match &self.plan {
            Plan::Random {
                steps_per_epoch, ..
            } => *steps_per_epoch,
            Plan::Fixed { batches } => *batches,
        };
        let batches = self
            .range
            .map_or(batches, |(s, e)| e.min(batches) - s.min(batches));
        batches * self.batch_size
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, LmBatch<B>>> {
        let mut loader = self.clone();
        loader.device = device.clone();
        Arc::new(loader)
    }

    /// `start..end` are items (windows), as burn-train's `split_dataloader` counts them
    /// (`num_items` split evenly over the devices); they are rounded to whole batches.
    ///
    /// Each slice gets its own epoch counter, starting where this loader is: burn-train
    /// splits once, then calls `iter()` on every slice once per epoch, so a shared counter
    /// would advance once per device.
    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, LmBatch<B>>> {
        let mut loader = self.clone();
        let (s0, _) = self.range.unwrap_or((0, usize::MAX));
        let (start, end) = (start / self.batch_size, end / self.batch_size);
        loader.range = Some((s0 + start, s0 + end));
        if let Plan::Random { epoch, .. } = &mut loader.plan {
            *epoch = Arc::new(AtomicUsize::new(epoch.load(Ordering::SeqCst)));
        }
        Arc::new(loader)
    }
}
