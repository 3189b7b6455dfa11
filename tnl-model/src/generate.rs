//! Text generation: prefill the prompts once with the parallel op, then one recurrent step
//! per new token.

use burn::config::Config;
use burn::tensor::{Bool, DType, Int, Tensor, TensorData};
use lightning_op::LightningBackend;

use crate::model::Tnl;
use crate::sampling::Sampler;

/// How [`Tnl::generate`] picks tokens.
#[derive(Config, Debug, PartialEq)]
pub struct GenerateConfig {
    /// Tokens to generate per prompt (fewer when `eos_token` comes first).
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 is greedy.
    #[config(default = 1.0)]
    pub temperature: f64,
    /// Keep only the k most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose mass reaches p.
    pub top_p: Option<f64>,
    /// Seed of the host RNG: same seed, same prompts, same weights, same tokens.
    #[config(default = 0)]
    pub seed: u64,
    /// Stop a row once it produced this token (it is kept in the output).
    pub eos_token: Option<usize>,
    /// Token placed left of shorter prompts; masked, so its value never matters.
    #[config(default = 0)]
    pub pad_token: usize,
}

impl<B: LightningBackend> Tnl<B> {
    /// Continues each prompt; returns the new tokens only, one `Vec` per prompt.
    ///
    /// Prompts of different lengths are left-padded and masked: padding never enters a
    /// state and LRPE only sees relative positions, so each row matches its prompt run
    /// alone. The prompt costs one parallel pass; each new token one recurrent step, with
    /// one `[batch, vocab]` read back to the host for sampling.
    ///
    /// # Panics
    /// On an empty prompt or a bad sampling parameter.
    pub fn generate<P: AsRef<[usize]>>(
        &self,
        prompts: &[P],
        config: &GenerateConfig,
    ) -> Vec<Vec<usize>> {
        let mut sampler = Sampler::new(config.seed, config.temperature, config.top_k, config.top_p);
        let batch = prompts.len();
        let mut generated = vec![Vec::new(); batch];
        if batch == 0 || config.max_new_tokens == 0 {
            return generated;
        }
        let device = self.device();
        let vocab = self.vocab_size();
        let (tokens, mask_pad) = left_pad::<B, P>(prompts, config.pad_token, &device);
        let seq = tokens.dims()[1];

        let (logits, mut cache) = self.prefill(tokens, mask_pad);
        let mut last = logits
            .slice([0..batch, seq - 1..seq])
            .reshape([batch, vocab]);
        let mut done = vec![false; batch];
        for i in 0..config.max_new_tokens {
            let rows = last
                .cast(DType::F32)
                .into_data()
                .to_vec::<f32>()
                .expect("f32 logits");
            let next: Vec<usize> = rows.chunks(vocab).map(|row| sampler.sample(row)).collect();
            for (row, &token) in next.iter().enumerate() {
                if !done[row] {
                    generated[row].push(token);
                    done[row] = config.eos_token == Some(token);
                }
            }
            if done.iter().all(|&d| d) || i + 1 == config.max_new_tokens {
                break;
            }
            let next: Vec<i64> = next.iter().map(|&t| t as i64).collect();
            let (logits, next_cache) = self.step(
                Tensor::from_data(TensorData::new(next, [batch]), &device),
                cache,
            );
            last = logits;
            cache = next_cache;
        }
        generated
    }
}

/// Prompts as one left-padded `[batch, max_len]` batch, and the padding mask when any row
/// is padded.
fn left_pad<B: LightningBackend, P: AsRef<[usize]>>(
    prompts: &[P],
    pad_token: usize,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Option<Tensor<B, 2, Bool>>) {
    let batch = prompts.len();
    let seq = prompts.iter().map(|p| p.as_ref().len()).max().unwrap_or(0);
    let mut tokens = Vec::with_capacity(batch * seq);
    let mut mask = Vec::with_capacity(batch * seq);
    for (row, prompt) in prompts.iter().enumerate() {
        let prompt = prompt.as_ref();
        assert!(!prompt.is_empty(), "generate: prompt {row} is empty");
        let pad = seq - prompt.len();
        tokens.extend(std::iter::repeat_n(pad_token as i64, pad));
        tokens.extend(prompt.iter().map(|&t| t as i64));
        mask.extend((0..seq).map(|i| i < pad));
    }
    let padded = mask.iter().any(|&m| m);
    let tokens = Tensor::from_data(TensorData::new(tokens, [batch, seq]), device);
    let mask = padded.then(|| Tensor::from_data(TensorData::new(mask, [batch, seq]), device));
    (tokens, mask)
}
