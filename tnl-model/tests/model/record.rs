//! Save and load through Burn's recorders.

use burn::module::Module;
use burn::record::{BinFileRecorder, FullPrecisionSettings, NamedMpkFileRecorder};
use tnl_model::TnlConfig;

use crate::support::{B, max_abs_diff, to_vec, token_rows, tokens};

#[test]
fn save_and_load_round_trip() {
    let device = Default::default();
    let config = TnlConfig::tiny().with_tie_embeddings(false);
    let model = config.init::<B>(&device);
    let input = tokens::<B>(&token_rows(2, 7, 128, 30), &device);
    let want = model.forward(input.clone());
    let dir = std::env::temp_dir().join(format!("tnl-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let bin = BinFileRecorder::<FullPrecisionSettings>::new();
    model.clone().save_file(dir.join("bin"), &bin).unwrap();
    let loaded = config
        .init::<B>(&device)
        .load_file(dir.join("bin"), &bin, &device)
        .unwrap();
    assert_eq!(
        max_abs_diff(loaded.forward(input.clone()), want.clone()),
        0.0
    );
    let theta =
        |m: &tnl_model::Tnl<B>| to_vec(m.blocks()[0].token_mixer().lrpe().unwrap().theta.val());
    assert_eq!(theta(&loaded), theta(&model));

    let mpk = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    model.save_file(dir.join("mpk"), &mpk).unwrap();
    let loaded = config
        .init::<B>(&device)
        .load_file(dir.join("mpk"), &mpk, &device)
        .unwrap();
    assert_eq!(max_abs_diff(loaded.forward(input), want), 0.0);
    std::fs::remove_dir_all(&dir).ok();
}
