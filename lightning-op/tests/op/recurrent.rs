//! The recurrent decode step against the parallel form, and chaining through the state.

use burn::backend::{NdArray, Wgpu};
use burn::tensor::Tensor;
use lightning_op::{LightningBackend, lightning_attention_with_state, lightning_decode_step};

use lightning_op::oracle::{host, problem, rel_err, tensor};

/// Prefill `split` tokens with the parallel op, then decode the rest one by one: every
/// output and the final state equal one parallel call on the whole sequence.
fn prefill_then_decode<B: LightningBackend>(split: usize) {
    let dev = Default::default();
    let p = problem([2, 3, 40, 24, 16], 5 + split as u64, true);
    let [b, h, n, d, e] = [p.b, p.h, p.n, p.d, p.e];
    let q = tensor::<B, 4>(&p.q, [b, h, n, d], &dev);
    let k = tensor::<B, 4>(&p.k, [b, h, n, d], &dev);
    let v = tensor::<B, 4>(&p.v, [b, h, n, e], &dev);
    let slopes = tensor::<B, 1>(&p.slopes, [h], &dev);
    let s0 = tensor::<B, 4>(p.s0.as_ref().unwrap(), [b, h, d, e], &dev);
    let (o_all, s_all) = lightning_attention_with_state(
        q.clone(),
        k.clone(),
        v.clone(),
        slopes.clone(),
        Some(s0.clone()),
    );

    let part = |t: &Tensor<B, 4>, r: std::ops::Range<usize>| t.clone().slice([0..b, 0..h, r]);
    let (o_pre, mut state) = lightning_attention_with_state(
        part(&q, 0..split),
        part(&k, 0..split),
        part(&v, 0..split),
        slopes.clone(),
        Some(s0),
    );
    let mut outputs = vec![o_pre];
    for t in split..n {
        let step = |x: &Tensor<B, 4>| part(x, t..t + 1).squeeze_dim::<3>(2);
        let (o, next) = lightning_decode_step(step(&q), step(&k), step(&v), slopes.clone(), state);
        outputs.push(o.unsqueeze_dim(2));
        state = next;
    }
    let err_o = rel_err(&host(Tensor::cat(outputs, 2)), &host(o_all));
    let err_s = rel_err(&host(state), &host(s_all));
    assert!(err_o < 1e-5, "split {split}: outputs differ by {err_o:.2e}");
    assert!(
        err_s < 1e-5,
        "split {split}: final states differ by {err_s:.2e}"
    );
}

#[test]
fn decode_step_equals_parallel_reference() {
    for split in [0, 1, 17, 39] {
        prefill_then_decode::<NdArray>(split);
    }
}

#[test]
fn decode_step_equals_parallel_fused() {
    for split in [0, 33] {
        prefill_then_decode::<Wgpu>(split);
    }
}

/// Two calls chained through the state equal one call on the whole sequence.
fn chained<B: LightningBackend>(device: &B::Device) {
    for (n, split) in [(130, 64), (130, 65), (200, 1), (100, 99)] {
        let p = problem([1, 2, n, 32, 48], n as u64 + split as u64, false);
        let [b, h, d, e] = [p.b, p.h, p.d, p.e];
        let q = tensor::<B, 4>(&p.q, [b, h, n, d], device);
        let k = tensor::<B, 4>(&p.k, [b, h, n, d], device);
        let v = tensor::<B, 4>(&p.v, [b, h, n, e], device);
        let slopes = tensor::<B, 1>(&p.slopes, [h], device);
        let (o_all, s_all) =
            lightning_attention_with_state(q.clone(), k.clone(), v.clone(), slopes.clone(), None);
        let part = |t: &Tensor<B, 4>, r| t.clone().slice([0..b, 0..h, r]);
        let (o1, s1) = lightning_attention_with_state(
            part(&q, 0..split),
            part(&k, 0..split),
            part(&v, 0..split),
            slopes.clone(),
            None,
        );
        let (o2, s2) = lightning_attention_with_state(
            part(&q, split..n),
            part(&k, split..n),
            part(&v, split..n),
            slopes,
            Some(s1),
        );
        let err_o = rel_err(&host(Tensor::cat(vec![o1, o2], 2)), &host(o_all));
        let err_s = rel_err(&host(s2), &host(s_all));
        assert!(
            err_o < 1e-5 && err_s < 1e-5,
            "n={n} split={split}: {err_o:.2e} {err_s:.2e}"
        );
    }
}

#[test]
fn chained_calls_equal_one_call() {
    chained::<NdArray>(&Default::default());
    chained::<Wgpu>(&Default::default());
}

/// The fused step reads the state through its strides (here a column slice of a wider
/// tensor); the reference step is the oracle.
fn strided_step<B: LightningBackend>() -> (Vec<f64>, Vec<f64>) {
    let dev = Default::default();
    let p = problem([2, 3, 1, 20, 12], 77, true);
    let [b, h, d, e] = [p.b, p.h, p.d, p.e];
    let q = tensor::<B, 3>(&p.q, [b, h, d], &dev);
    let k = tensor::<B, 3>(&p.k, [b, h, d], &dev);
    let v = tensor::<B, 3>(&p.v, [b, h, e], &dev);
    let slopes = tensor::<B, 1>(&p.slopes, [h], &dev);
    let s0 = tensor::<B, 4>(p.s0.as_ref().unwrap(), [b, h, d, e], &dev);
    let wide = Tensor::cat(vec![s0.clone(), s0 * 2.0], 3);
    let state = wide.slice([0..b, 0..h, 0..d, 0..e]);
    let (o, next) = lightning_decode_step(q, k, v, slopes, state);
    (host(o), host(next))
}

#[test]
fn fused_step_reads_a_strided_state() {
    let (o_ref, s_ref) = strided_step::<NdArray>();
    let (o, s) = strided_step::<Wgpu>();
    assert!(rel_err(&o, &o_ref) < 1e-5, "outputs differ");
    assert!(rel_err(&s, &s_ref) < 1e-5, "states differ");
}

/// An empty batch gives empty results.
#[test]
fn fused_step_of_an_empty_batch() {
    let dev = Default::default();
    let t = |shape: [usize; 3]| Tensor::<Wgpu, 3>::zeros(shape, &dev);
    let slopes = Tensor::<Wgpu, 1>::from_floats([0.5, 0.1, 0.0], &dev);
    let state = Tensor::<Wgpu, 4>::zeros([0, 3, 20, 12], &dev);
    let (o, next) =
        lightning_decode_step(t([0, 3, 20]), t([0, 3, 20]), t([0, 3, 12]), slopes, state);
    assert_eq!((o.dims(), next.dims()), ([0, 3, 12], [0, 3, 20, 12]));
}
