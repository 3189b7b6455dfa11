//! Per-head, per-layer decay slopes: each head of each layer forgets at its own fixed rate.
//!
//! The op decays the state by `lambda = exp(-slope)` per token. TNL spreads the heads
//! geometrically (ALiBi) so some heads see far and others near, and shrinks the decay with
//! depth so the top layers see (almost) the whole context. The slopes are constants, not
//! parameters.

use burn::config::Config;

/// Which formula gives the decay slopes.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum DecaySchedule {
    /// The released TNL code: `s_{h,l} = alibi_h * (1 - l/(L-1) + 1e-5)` (and
    /// `alibi_h * (1 + 1e-5)` when `L = 1`), so the last layer keeps almost no decay.
    Released,
    /// The paper's formula `lambda = exp(-(8h/H)(1 - l/L))`, i.e. `s_{h,l} = (8h/H)(1 - l/L)`
    /// with the head `h` counted from 1 (as in ALiBi, so no head is left without decay) and
    /// the layer `l` from 0.
    Paper,
}

/// ALiBi's head slopes `2^(-8(h+1)/H)` for `H` a power of two; otherwise ALiBi's own
/// interleaving: the slopes of the nearest lower power of two `p`, then every other slope of
/// `2p` until there are `H`.
pub fn alibi_slopes(n_heads: usize) -> Vec<f64> {
    fn power_of_two(n: usize) -> Vec<f64> {
        (0..n)
            .map(|h| 2f64.powf(-8.0 * (h + 1) as f64 / n as f64))
            .collect()
    }
    if n_heads == 0 {
        return Vec::new();
    }
    if n_heads.is_power_of_two() {
        return power_of_two(n_heads);
    }
    let p = 1usize << n_heads.ilog2();
    let mut slopes = power_of_two(p);
    slopes.extend(alibi_slopes(2 * p).into_iter().step_by(2).take(n_heads - p));
    slopes
}

/// The `n_heads` decay slopes of layer `layer` (0-based) in a stack of `n_layers`.
pub fn layer_slopes(
    schedule: DecaySchedule,
    n_heads: usize,
    layer: usize,
    n_layers: usize,
) -> Vec<f64> {
    match schedule {
        DecaySchedule::Released => {
            let depth_factor = if n_layers > 1 {
                1.0 - layer as f64 / (n_layers - 1) as f64 + 1e-5
            } else {
                1.0 + 1e-5
            };
            alibi_slopes(n_heads)
                .into_iter()
                .map(|s| s * depth_factor)
                .collect()
        }
        DecaySchedule::Paper => (0..n_heads)
            .map(|h| 8.0 * (h + 1) as f64 / n_heads as f64 * (1.0 - layer as f64 / n_layers as f64))
            .collect(),
    }
}
