//! GPU backends with burn's defaults (fusion on): WGPU (lavapipe in CI) and, with the
//! `cuda` feature, CUDA. Same weights, same logits and gradients as NdArray, and
//! parallel == recurrent.

use burn::backend::{Autodiff, Wgpu};
use burn::module::Module;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use lightning_op::LightningBackend;
use tnl_model::{Tnl, TnlConfig};

use crate::support::{AB, B, assert_close, token_rows, tokens};
use crate::train::grads_by_path;

#[test]
fn wgpu_matches_ndarray_and_recurrent_matches_parallel() {
    matches_ndarray_and_recurrent_matches_parallel::<Wgpu>();
}

#[test]
fn wgpu_autodiff_gradients_match_ndarray() {
    autodiff_gradients_match_ndarray::<Wgpu>();
}

#[cfg(feature = "cuda")]
mod cuda {
    use burn::backend::Cuda;

    #[test]
    fn cuda_matches_ndarray_and_recurrent_matches_parallel() {
        super::matches_ndarray_and_recurrent_matches_parallel::<Cuda>();
    }

    #[test]
    fn cuda_autodiff_gradients_match_ndarray() {
        super::autodiff_gradients_match_ndarray::<Cuda>();
    }
}

fn matches_ndarray_and_recurrent_matches_parallel<G: LightningBackend>() {
    let cpu = Default::default();
    let gpu: G::Device = Default::default();
    let config = TnlConfig::tiny();
    let reference = config.init::<B>(&cpu);
    let rows = token_rows(2, 10, 128, 40);
    // Forward first: it initialises the lazy weights, which a clone would otherwise draw anew.
    let want = reference.forward(tokens::<B>(&rows, &cpu));
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::new();
    let bytes = recorder
        .record(reference.clone().into_record(), ())
        .unwrap();
    let model: Tnl<G> = config
        .init::<G>(&gpu)
        .load_record(recorder.load(bytes, &gpu).unwrap());

    let all = tokens::<G>(&rows, &gpu);
    let logits = model.forward(all.clone());
    assert_close(logits.clone(), want, 1e-4, "gpu vs ndarray");

    // Prefill of 1 token (seq = 1 through the parallel op) and of 4, then steps.
    for prompt_len in [1, 4] {
        let (prefill, mut cache) = model.prefill(all.clone().slice([0..2, 0..prompt_len]), None);
        let want_prefill = logits.clone().slice([0..2, 0..prompt_len]);
        assert_close(prefill, want_prefill, 1e-4, "gpu prefill");
        for t in prompt_len..10 {
            let token = all.clone().slice([0..2, t..t + 1]).reshape([2]);
            let (step, next) = model.step(token, cache);
            cache = next;
            let want_t = logits.clone().slice([0..2, t..t + 1]).reshape([2, 128]);
            assert_close(step, want_t, 1e-4, &format!("gpu step at position {t}"));
        }
    }
}

fn autodiff_gradients_match_ndarray<G: LightningBackend>() {
    let cpu = Default::default();
    let gpu: G::Device = Default::default();
    let config = TnlConfig::tiny();
    let rows = token_rows(2, 12, 128, 41);
    let reference = config.init::<AB>(&cpu);
    let loss_cpu = reference.loss(tokens::<AB>(&rows, &cpu), None);
    let grads_cpu = grads_by_path(&reference, &loss_cpu.backward());

    let recorder = BinBytesRecorder::<FullPrecisionSettings>::new();
    let bytes = recorder.record(reference.into_record(), ()).unwrap();
    let model: Tnl<Autodiff<G>> = config
        .init::<Autodiff<G>>(&gpu)
        .load_record(recorder.load(bytes, &gpu).unwrap());
    let loss_gpu = model.loss(tokens::<Autodiff<G>>(&rows, &gpu), None);
    assert_close(loss_gpu.clone(), loss_cpu, 1e-5, "loss");
    let grads_gpu = grads_by_path(&model, &loss_gpu.backward());

    assert_eq!(grads_gpu.len(), grads_cpu.len());
    for ((path, got), (_, want)) in grads_gpu.iter().zip(&grads_cpu) {
        let (got, want) = (got.as_ref().unwrap(), want.as_ref().unwrap());
        let scale = want.iter().fold(0f32, |m, g| m.max(g.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= 1e-3 * scale,
            "{path}: max |diff| {err:.3e}, max |grad| {scale:.3e}"
        );
    }
}
