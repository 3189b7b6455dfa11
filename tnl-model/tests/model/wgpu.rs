//! The WGPU backend with burn's defaults (fusion on; lavapipe in CI): same weights, same
//! logits as NdArray, and parallel == recurrent.

use burn::backend::Wgpu;
use burn::module::Module;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use tnl_model::{Tnl, TnlConfig};

use crate::support::{B, assert_close, token_rows, tokens};

#[test]
fn wgpu_matches_ndarray_and_recurrent_matches_parallel() {
    let cpu = Default::default();
    let gpu = Default::default();
    let config = TnlConfig::tiny();
    let reference = config.init::<B>(&cpu);
    let rows = token_rows(2, 10, 128, 40);
    // Forward first: it initialises the lazy weights, which a clone would otherwise draw anew.
    let want = reference.forward(tokens::<B>(&rows, &cpu));
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::new();
    let bytes = recorder
        .record(reference.clone().into_record(), ())
        .unwrap();
    let model: Tnl<Wgpu> = config
        .init::<Wgpu>(&gpu)
        .load_record(recorder.load(bytes, &gpu).unwrap());

    let all = tokens::<Wgpu>(&rows, &gpu);
    let logits = model.forward(all.clone());
    assert_close(logits.clone(), want, 1e-4, "wgpu vs ndarray");

    // Prefill of 1 token (seq = 1 through the parallel op) and of 4, then steps.
    for prompt_len in [1, 4] {
        let (prefill, mut cache) = model.prefill(all.clone().slice([0..2, 0..prompt_len]), None);
        let want_prefill = logits.clone().slice([0..2, 0..prompt_len]);
        assert_close(prefill, want_prefill, 1e-4, "wgpu prefill");
        for t in prompt_len..10 {
            let token = all.clone().slice([0..2, t..t + 1]).reshape([2]);
            let (step, next) = model.step(token, cache);
            cache = next;
            let want_t = logits.clone().slice([0..2, t..t + 1]).reshape([2, 128]);
            assert_close(step, want_t, 1e-4, &format!("wgpu step at position {t}"));
        }
    }
}
