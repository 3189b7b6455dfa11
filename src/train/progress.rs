//! Progress lines for a terminal or a log file, and the loss history a run leaves behind.
//!
//! burn-train's own renderers are a full-screen TUI (needs a terminal, and a feature this
//! workspace leaves off) or a `Debug` dump of every item; a training run that prints one
//! readable line every few steps is what a README and a CI log want. The renderer also
//! records every step's loss, the validation points and the step timings, which the
//! examples plot and the tests compare.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::train::LearnerSummary;
use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

/// One validation pass.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidPoint {
    /// Training steps done when it ran.
    pub step: usize,
    /// Mean cross-entropy (nats/token) over the validation batches.
    pub loss: f64,
    /// `exp(loss)`: the perplexity over the same batches.
    pub perplexity: f64,
}

/// What a run recorded, step by step.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// `(step, loss)` of every training step (1-based steps over the whole run).
    pub train: Vec<(usize, f64)>,
    pub valid: Vec<ValidPoint>,
    /// Seconds spent in training steps (validation and checkpointing excluded), and the
    /// tokens they processed: the throughput.
    pub train_seconds: f64,
    pub train_tokens: usize,
}

impl History {
    /// Training tokens per second.
    pub fn tokens_per_second(&self) -> f64 {
        self.train_tokens as f64 / self.train_seconds.max(1e-9)
    }

    /// The loss of training step `step`, if it ran in this process.
    pub fn train_loss(&self, step: usize) -> Option<f64> {
        self.train.iter().find(|(s, _)| *s == step).map(|&(_, l)| l)
    }
}

/// Prints progress and fills a shared [`History`].
pub struct ProgressRenderer {
    history: Arc<Mutex<History>>,
    names: HashMap<MetricId, String>,
    steps_per_epoch: usize,
    total_steps: usize,
    tokens_per_batch: usize,
    /// Print a training line every this many steps; 0 prints nothing at all.
    log_every: usize,
    /// Shown next to validation losses.
    baseline: Option<f64>,
    started: Instant,
    last_step_at: Option<(usize, Instant)>,
    window: Vec<f64>,
    /// Training seconds and tokens since the last progress line: the line shows the
    /// current throughput, not one diluted by the first steps' kernel compilation.
    window_seconds: f64,
    window_tokens: usize,
    lr: f64,
    valid_losses: Vec<f64>,
}

impl ProgressRenderer {
    pub fn new(
        history: Arc<Mutex<History>>,
        steps_per_epoch: usize,
        total_steps: usize,
        tokens_per_batch: usize,
        log_every: usize,
        baseline: Option<f64>,
    ) -> Self {
        Self {
            history,
            names: HashMap::new(),
            steps_per_epoch,
            total_steps,
            tokens_per_batch,
            log_every,
            baseline,
            started: Instant::now(),
            last_step_at: None,
            window: Vec::new(),
            window_seconds: 0.0,
            window_tokens: 0,
            lr: f64::NAN,
            valid_losses: Vec::new(),
        }
    }

    fn step_of(&self, item: &TrainingProgress) -> usize {
        let epoch = item.global_progress.items_processed.max(1);
        (epoch - 1) * self.steps_per_epoch + item.iteration.unwrap_or(0)
    }

    /// Metric name and current value of a numeric update.
    fn numeric(&self, state: &MetricState) -> Option<(&str, f64)> {
        match state {
            MetricState::Numeric(entry, value) => self
                .names
                .get(&entry.metric_id)
                .map(|name| (name.as_str(), value.current())),
            MetricState::Generic(_) => None,
        }
    }
}

fn clock(seconds: f64) -> String {
    let s = seconds as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

impl MetricsRendererTraining for ProgressRenderer {
    fn update_train(&mut self, state: MetricState) {
        match self.numeric(&state) {
            Some(("Loss", loss)) => self.window.push(loss),
            Some(("Learning Rate", lr)) => self.lr = lr,
            _ => {}
        }
    }

    fn update_valid(&mut self, state: MetricState) {
        if let Some(("Loss", loss)) = self.numeric(&state) {
            self.valid_losses.push(loss);
        }
    }

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        let step = self.step_of(&item);
        let now = Instant::now();
        // Steps count batches over all devices. Under DDP every worker reports its batch with
        // the same step number, so a step already seen is another device's copy of it.
        if self.last_step_at.is_some_and(|(prev, _)| step <= prev) {
            return;
        }
        {
            let mut history = self.history.lock().unwrap();
            if let Some(&loss) = self.window.last() {
                history.train.push((step, loss));
            }
            // Time between steps of one epoch only: validation and checkpoints, which run
            // between epochs, stay out of the throughput. The previous step is in this epoch
            // when this step's place in the epoch is past the jump since it.
            if let Some((prev, at)) = self.last_step_at
                && item.iteration.unwrap_or(0) > step - prev
            {
                let (seconds, tokens) = (
                    (now - at).as_secs_f64(),
                    self.tokens_per_batch * (step - prev),
                );
                history.train_seconds += seconds;
                history.train_tokens += tokens;
                self.window_seconds += seconds;
                self.window_tokens += tokens;
            }
        }
        self.last_step_at = Some((step, now));
        let due = self.log_every > 0 && (step % self.log_every == 0 || step == self.total_steps);
        if due && !self.window.is_empty() {
            let loss = self.window.iter().sum::<f64>() / self.window.len() as f64;
            let tps = self.window_tokens as f64 / self.window_seconds.max(1e-9);
            (self.window_seconds, self.window_tokens) = (0.0, 0);
            println!(
                "step {step:>6}/{} | train loss {loss:.3} | ppl {:>7.2} | lr {:.2e} | {:>7.0} tok/s | {}",
                self.total_steps,
                loss.exp(),
                self.lr,
                tps,
                clock(self.started.elapsed().as_secs_f64()),
            );
            self.window.clear();
        } else if self.log_every == 0 {
            self.window.clear();
        }
    }

    fn render_valid(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        let done = item
            .progress
            .as_ref()
            .is_some_and(|p| p.items_processed >= p.items_total);
        if !done || self.valid_losses.is_empty() {
            return;
        }
        let epoch = item.global_progress.items_processed.max(1);
        let step = (epoch * self.steps_per_epoch).min(self.total_steps);
        let loss = self.valid_losses.iter().sum::<f64>() / self.valid_losses.len() as f64;
        let point = ValidPoint {
            step,
            loss,
            perplexity: loss.exp(),
        };
        self.valid_losses.clear();
        if self.log_every > 0 {
            let baseline = self
                .baseline
                .map(|b| format!(" (unigram baseline {b:.3})"))
                .unwrap_or_default();
            println!(
                "valid @ step {step:>4} | loss {:.3} | ppl {:.2}{baseline} | checkpoint {epoch}",
                point.loss, point.perplexity
            );
        }
        self.history.lock().unwrap().valid.push(point);
    }

    fn on_train_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        Ok(())
    }
}

impl MetricsRendererEvaluation for ProgressRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}

    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRenderer for ProgressRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }
}
