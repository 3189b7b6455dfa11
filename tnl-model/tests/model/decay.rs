//! Decay slopes against the formulas: H = 8, L = 24, H not a power of two, both schedules,
//! and the slopes the model actually hands to the op.

use tnl_model::decay::{alibi_slopes, layer_slopes};
use tnl_model::{DecaySchedule, TnlConfig};

use crate::support::{B, to_vec};

fn assert_all_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (h, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-12 * w.abs().max(1.0),
            "{what} head {h}: {g} vs {w}"
        );
    }
}

#[test]
fn released_schedule_h8_l24() {
    let (h, l) = (8usize, 24usize);
    for layer in 0..l {
        let want: Vec<f64> = (0..h)
            .map(|i| {
                2f64.powf(-8.0 * (i + 1) as f64 / h as f64)
                    * (1.0 - layer as f64 / (l - 1) as f64 + 1e-5)
            })
            .collect();
        let got = layer_slopes(DecaySchedule::Released, h, layer, l);
        assert_all_close(&got, &want, &format!("layer {layer}"));
    }
    // Layer 0: plain ALiBi (1/2, 1/4, ..., 1/256) times 1 + 1e-5; last layer almost no decay.
    assert_all_close(
        &layer_slopes(DecaySchedule::Released, 8, 0, 24),
        &[
            0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625,
        ]
        .map(|s| s * (1.0 + 1e-5)),
        "layer 0",
    );
    assert!(
        layer_slopes(DecaySchedule::Released, 8, 23, 24)
            .iter()
            .all(|&s| s <= 0.5e-5 + 1e-12)
    );
}

#[test]
fn alibi_interleaves_when_heads_are_not_a_power_of_two() {
    let p = |e: f64| 2f64.powf(e);
    // H = 6: p = 4 gives 2^-2, 2^-4, 2^-6, 2^-8; then alibi(8)[0::2][:2] = 2^-1, 2^-3.
    assert_all_close(
        &alibi_slopes(6),
        &[p(-2.0), p(-4.0), p(-6.0), p(-8.0), p(-1.0), p(-3.0)],
        "H = 6",
    );
    // H = 12: alibi(8) = 2^-1..2^-8; then alibi(16)[0::2][:4] = 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
    let mut want: Vec<f64> = (1..=8).map(|i| p(-(i as f64))).collect();
    want.extend([p(-0.5), p(-1.5), p(-2.5), p(-3.5)]);
    assert_all_close(&alibi_slopes(12), &want, "H = 12");
    // H = 3: alibi(2) = 2^-4, 2^-8; then alibi(4)[0] = 2^-2.
    assert_all_close(&alibi_slopes(3), &[p(-4.0), p(-8.0), p(-2.0)], "H = 3");
    // The released schedule scales them per layer like any other H.
    let got = layer_slopes(DecaySchedule::Released, 6, 2, 5);
    let want: Vec<f64> = alibi_slopes(6)
        .iter()
        .map(|s| s * (1.0 - 2.0 / 4.0 + 1e-5))
        .collect();
    assert_all_close(&got, &want, "H = 6, layer 2 of 5");
}

#[test]
fn paper_schedule_and_single_layer() {
    for (h, l) in [(8usize, 24usize), (6, 5)] {
        for layer in 0..l {
            let want: Vec<f64> = (1..=h)
                .map(|i| 8.0 * i as f64 / h as f64 * (1.0 - layer as f64 / l as f64))
                .collect();
            let got = layer_slopes(DecaySchedule::Paper, h, layer, l);
            assert_all_close(&got, &want, &format!("paper H {h} layer {layer}"));
        }
    }
    let want: Vec<f64> = alibi_slopes(4).iter().map(|s| s * (1.0 + 1e-5)).collect();
    assert_all_close(
        &layer_slopes(DecaySchedule::Released, 4, 0, 1),
        &want,
        "L = 1",
    );
    for schedule in [DecaySchedule::Released, DecaySchedule::Paper] {
        for layer in 0..30 {
            assert!(
                layer_slopes(schedule, 32, layer, 30)
                    .iter()
                    .all(|&s| s.is_finite() && s > 0.0),
                "{schedule:?} layer {layer}"
            );
        }
    }
}

#[test]
fn model_layers_carry_their_schedules_slopes() {
    let device = Default::default();
    // H = 8, L = 24 at a toy width, and H = 6 with the paper's schedule.
    for config in [
        TnlConfig::new(8, 16, 24, 8, 8),
        TnlConfig::new(8, 12, 3, 6, 8).with_decay(DecaySchedule::Paper),
    ] {
        let model = config.init::<B>(&device);
        for (layer, block) in model.blocks().iter().enumerate() {
            let got = to_vec(block.token_mixer().slopes());
            let want = config.layer_slopes(layer);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    ((*g as f64) - w).abs() <= 1e-6 * w.max(1e-3),
                    "layer {layer}: {g} vs {w}"
                );
            }
        }
    }
}
