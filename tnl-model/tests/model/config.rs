//! Presets' parameter counts, count-from-config == Module::num_params, bad configs.

use burn::module::Module;
use tnl_model::{DecaySchedule, GlaConfig, TnlConfig};

use crate::support::{B, panic_message};

fn within(count: usize, paper: f64, rel: f64) -> bool {
    ((count as f64 - paper) / paper).abs() <= rel
}

#[test]
fn presets_match_the_papers_parameter_counts() {
    // D^2 terms: 4D (q/k/v/u) + D (out) per layer; 3 D glu per layer; tied 64000 x D
    // embedding; LRPE theta [H, 1, D/H] on layer 0.
    let c385 = TnlConfig::tnl_385m();
    assert_eq!(c385.num_params(), 398_984_192);
    assert!(within(c385.num_params(), 0.399e9, 0.01));

    let c1b = TnlConfig::tnl_1b();
    assert_eq!(c1b.num_params(), 1_020_266_496);
    assert!(within(c1b.num_params(), 1.02e9, 0.01));

    let c7b = TnlConfig::tnl_7b();
    assert_eq!(c7b.num_params(), 6_836_719_616);
    assert!(within(c7b.num_params(), 6.8e9, 0.02));

    for c in [&c385, &c1b, &c7b] {
        c.validate().unwrap();
        assert_eq!(c.vocab_size, 64000);
        assert!(c.tie_embeddings && c.scale_embedding);
        assert_eq!(c.lrpe_layers, vec![0]);
    }
}

#[test]
fn count_from_config_equals_module_num_params() {
    let device = Default::default();
    let variants = [
        TnlConfig::tiny(),
        TnlConfig::tiny().with_tie_embeddings(false),
        TnlConfig::tiny().with_lrpe_layers(vec![]),
        TnlConfig::tiny().with_lrpe_layers(vec![0, 1, 2]),
        // H not a power of two, paper decay, no embedding scale.
        TnlConfig::new(50, 48, 2, 6, 40)
            .with_decay(DecaySchedule::Paper)
            .with_scale_embedding(false),
    ];
    for config in variants {
        let model = config.init::<B>(&device);
        assert_eq!(
            model.num_params(),
            config.num_params(),
            "num_params of {config}"
        );
    }
}

#[test]
fn bad_configs_name_the_field_and_values() {
    let cases = [
        (
            TnlConfig::new(100, 512, 4, 6, 64),
            "TnlConfig: n_heads (6) must divide d_model (512)",
        ),
        (
            TnlConfig::tiny().with_lrpe_layers(vec![0, 3]),
            "TnlConfig: lrpe_layers[1] = 3 is beyond the depth: n_layers is 3 (layers 0..=2)",
        ),
        (
            TnlConfig::tiny().with_lrpe_layers(vec![1, 1]),
            "TnlConfig: lrpe_layers lists layer 1 twice",
        ),
        (
            TnlConfig::new(100, 512, 4, 1, 64).with_lrpe_layers(vec![]),
            "TnlConfig: head dim d_model / n_heads = 512 / 1 = 512 is above lightning-op's maximum 256",
        ),
        (
            TnlConfig::new(100, 256, 4, 1, 64),
            "TnlConfig: LRPE doubles the q/k head dim to 2 x 256 = 512",
        ),
        (
            TnlConfig::new(100, 64, 0, 4, 64),
            "TnlConfig: n_layers must be at least 1, got 0",
        ),
        (
            TnlConfig::new(100, 64, 2, 0, 64),
            "TnlConfig: n_heads must be at least 1, got 0",
        ),
        (
            TnlConfig::tiny().with_norm_eps(0.0),
            "TnlConfig: norm_eps must be finite and > 0, got 0",
        ),
    ];
    for (config, expected) in cases {
        let err = config.validate().expect_err(expected).to_string();
        assert!(
            err.starts_with(expected),
            "got {err:?}, expected {expected:?}"
        );
        let panic = panic_message(|| {
            config.init::<B>(&Default::default());
        });
        assert!(
            panic.starts_with(expected),
            "init panicked with {panic:?}, expected {expected:?}"
        );
    }
}

#[test]
fn config_file_round_trip() {
    use burn::config::Config;
    let config = TnlConfig::tnl_1b()
        .with_decay(DecaySchedule::Paper)
        .with_lrpe_layers(vec![0, 5]);
    let path = std::env::temp_dir().join(format!("tnl-config-{}.json", std::process::id()));
    config.save(&path).unwrap();
    let loaded = TnlConfig::load(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(loaded, config);
}

/// The layer checks its slopes' values once, when built (its forward skips the read-back
/// that checking a plain tensor on every call would cost).
#[test]
fn gla_refuses_a_negative_slope_when_built() {
    let panic = panic_message(|| {
        GlaConfig::new(16, 2, vec![0.5, -0.1]).init::<B>(&Default::default());
    });
    assert_eq!(
        panic,
        "Slopes::from_values: slopes must be finite and >= 0 (decay lambda = exp(-slope)); got -0.1 for head 1"
    );
}
