//! Picking the next token from logits on the host: temperature, top-k, top-p, seeded.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The distribution a sampler draws from: `(token, probability)` by decreasing probability,
/// renormalised after the filters.
///
/// `temperature == 0` is greedy (the first maximum). Otherwise the logits are divided by
/// the temperature, cut to the `top_k` most likely, then to the smallest prefix whose mass
/// reaches `top_p` (computed on the top-k renormalised distribution, as Hugging Face does).
/// NaN logits count as `-inf`.
///
/// # Panics
/// On empty logits, a negative or non-finite temperature, `top_k == 0`, or `top_p` outside
/// `(0, 1]`.
pub fn candidates(
    logits: &[f32],
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
) -> Vec<(usize, f64)> {
    check(logits.len(), temperature, top_k, top_p);
    let key = |&i: &usize| {
        let l = logits[i];
        if l.is_nan() { f32::NEG_INFINITY } else { l }
    };
    if temperature == 0.0 {
        let best = (0..logits.len())
            .reduce(|a, b| if key(&b) > key(&a) { b } else { a })
            .expect("non-empty");
        return vec![(best, 1.0)];
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.cmp(b)));
    order.truncate(top_k.unwrap_or(order.len()));

    let max = key(&order[0]) as f64;
    let mut probs: Vec<(usize, f64)> = order
        .iter()
        .map(|&i| (i, ((key(&i) as f64 - max) / temperature).exp()))
        .collect();
    normalise(&mut probs);
    if let Some(p) = top_p {
        let mut mass = 0.0;
        let keep = probs
            .iter()
            .position(|&(_, q)| {
                mass += q;
                mass >= p
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
        normalise(&mut probs);
    }
    probs
}

fn normalise(probs: &mut [(usize, f64)]) {
    let total: f64 = probs.iter().map(|&(_, q)| q).sum();
    if total > 0.0 && total.is_finite() {
        probs.iter_mut().for_each(|(_, q)| *q /= total);
    } else {
        // Every logit was -inf: fall back to the first candidate.
        probs
            .iter_mut()
            .enumerate()
            .for_each(|(i, (_, q))| *q = (i == 0) as u8 as f64);
    }
}

fn check(vocab: usize, temperature: f64, top_k: Option<usize>, top_p: Option<f64>) {
    assert!(vocab > 0, "sampling: empty logits");
    assert!(
        temperature.is_finite() && temperature >= 0.0,
        "sampling: temperature must be finite and >= 0 (0 = greedy), got {temperature}"
    );
    if let Some(k) = top_k {
        assert!(k >= 1, "sampling: top_k must be at least 1, got {k}");
    }
    if let Some(p) = top_p {
        assert!(
            p > 0.0 && p <= 1.0,
            "sampling: top_p must be in (0, 1], got {p}"
        );
    }
}

/// Seeded sampler: the same seed and logits give the same tokens.
#[derive(Debug)]
pub struct Sampler {
    rng: StdRng,
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
}

impl Sampler {
    /// See [`candidates`] for the parameters.
    pub fn new(seed: u64, temperature: f64, top_k: Option<usize>, top_p: Option<f64>) -> Self {
        check(1, temperature, top_k, top_p);
        Self {
            rng: StdRng::seed_from_u64(seed),
            temperature,
            top_k,
            top_p,
        }
    }

    /// Draws one token from one row of logits (one random number per call, greedy too, so
    /// the stream stays aligned across rows).
    pub fn sample(&mut self, logits: &[f32]) -> usize {
        let u: f64 = self.rng.random();
        let probs = candidates(logits, self.temperature, self.top_k, self.top_p);
        let mut mass = 0.0;
        for &(token, q) in &probs {
            mass += q;
            if u < mass {
                return token;
            }
        }
        probs.last().expect("at least one candidate").0
    }
}
