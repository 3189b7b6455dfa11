//! The fused CubeCL kernels (WGPU; lavapipe in CI) against the reference.

use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
use burn::backend::{Autodiff, NdArray, Wgpu};
use burn::tensor::{DType, Tensor};
use lightning_op::{LightningBackend, lightning_attention, lightning_attention_with_state};
use proptest::prelude::*;

use lightning_op::oracle::{Problem, host, problem, rel_err, run_stateless, solve, tensor};

use crate::support::{Fused, Reference, assert_close, run_f32};

fn check(p: &Problem, what: &str) {
    let want = run_f32::<Reference>(p);
    let got = run_f32::<Fused>(p);
    assert_close(&got, &want, 1e-4, what);
}

#[test]
fn fused_matches_reference_over_lengths_and_dims() {
    let mut seed = 100;
    for n in [1, 7, 63, 64, 65, 200, 1000] {
        for (d, e) in [(16, 16), (48, 48), (64, 64), (128, 128), (256, 128)] {
            seed += 1;
            let bh = [[1, 2], [2, 3], [3, 2]][seed as usize % 3];
            let with_state = seed % 2 == 0;
            let p = problem([bh[0], bh[1], n, d, e], seed, with_state);
            check(
                &p,
                &format!("fused n={n} d={d} e={e} bh={bh:?} state={with_state}"),
            );
        }
    }
}

#[test]
fn fused_matches_reference_on_odd_dims() {
    for (i, (d, e)) in [(80, 96), (96, 80), (192, 48), (1, 1), (3, 256), (256, 256)]
        .into_iter()
        .enumerate()
    {
        let p = problem([1, 2, 70, d, e], 300 + i as u64, i % 2 == 0);
        check(&p, &format!("fused d={d} e={e}"));
    }
}

/// Head dims whose tiles on lavapipe's 32 KB (blocks of 32, 128 units, a value slice of 64)
/// take 4-wide shared loads, the path CUDA's f32 kernel runs: unsegmented with a partial
/// last block, and segmented (n = 1000 over two rows).
#[test]
fn fused_matches_reference_with_vector_loads() {
    for (i, n) in [70, 1000].into_iter().enumerate() {
        let p = problem([1, 2, n, 16, 64], 400 + i as u64, i == 0);
        check(&p, &format!("fused n={n} d=16 e=64"));
    }
}

/// The plain `CubeBackend` (no fusion, no autodiff) runs the same kernels.
#[test]
fn cube_backend_without_fusion_matches_reference() {
    type Cube = CubeBackend<WgpuRuntime, f32, i32, u32>;
    let p = problem([2, 2, 130, 32, 24], 7, true);
    let (cube_o, cube_s) = forward::<Cube>(&p);
    let (ref_o, ref_s) = forward::<NdArray>(&p);
    assert!(rel_err(&cube_o, &ref_o) < 1e-4);
    assert!(rel_err(&cube_s, &ref_s) < 1e-4);
}

/// `Autodiff` over the plain `CubeBackend` (the DDP training backend), on a sequence long
/// enough to run in segments: the forward keeps the states entering them, which the
/// backward's dq sweep reads instead of its own scan, and the gradients still match.
#[test]
fn unfused_backward_reuses_the_forwards_segment_states() {
    type Cube = CubeBackend<WgpuRuntime, f32, i32, u32>;
    let [b, h, n, d] = [1, 2, 1000, 32];
    let p = problem([b, h, n, d, d], 11, true);
    let dev = Default::default();
    let kept = Cube::lightning_kept_shape(&dev, DType::F32, [b, h, n, d, d])
        .expect("few cubes over a long sequence: segmented");
    let (_, _, got) = Cube::lightning_forward_kept(
        tensor::<Cube, 4>(&p.q, [b, h, n, d], &dev)
            .into_primitive()
            .tensor(),
        tensor::<Cube, 4>(&p.k, [b, h, n, d], &dev)
            .into_primitive()
            .tensor(),
        tensor::<Cube, 4>(&p.v, [b, h, n, d], &dev)
            .into_primitive()
            .tensor(),
        tensor::<Cube, 1>(&p.slopes, [h], &dev)
            .into_primitive()
            .tensor(),
        None,
    );
    let got = got.expect("the forward keeps its segment states");
    assert_eq!(got.meta.shape(), &kept);
    let dims = kept.as_slice();
    assert!(dims[0] > 1 && dims[1..] == [b, h, d, d], "kept {kept:?}");
    assert_close(
        &run_f32::<Autodiff<Cube>>(&p),
        &run_f32::<Reference>(&p),
        1e-4,
        "unfused autodiff, segmented",
    );
}

/// Without an initial state the backward's dv sweep wants no final state, so it skips the
/// last segment's local states, and the dk sweep enters its segments with the states that
/// leaves (the last of them written by the scan where the final state would go): on a
/// sequence long enough to run in segments, the gradients still match.
#[test]
fn segmented_backward_without_initial_state_matches_reference() {
    let [b, h, n, d] = [1, 2, 1000, 32];
    let segmented = <Wgpu as LightningBackend>::lightning_kept_shape(
        &Default::default(),
        DType::F32,
        [b, h, n, d, d],
    );
    assert!(
        segmented.is_some(),
        "few cubes over a long sequence: segmented"
    );
    check(
        &problem([b, h, n, d, d], 12, false),
        "segmented, no initial state",
    );
}

/// A stateless call skips the last segment's local states in its forward too
/// (`lightning_output`, through Autodiff and Fusion or straight on `CubeBackend`), and its
/// backward reuses the forward's segment states: output and gradients still match.
#[test]
fn segmented_call_without_final_state_matches_reference() {
    type Cube = CubeBackend<WgpuRuntime, f32, i32, u32>;
    let p = problem([1, 2, 1000, 32, 32], 13, false);
    let want = solve(&p.without_state_loss());
    let dev = Default::default();
    assert_close(
        &run_stateless::<Fused>(&p, DType::F32, &dev),
        &want,
        1e-4,
        "fusion",
    );
    let got = run_stateless::<Autodiff<Cube>>(&p, DType::F32, &dev);
    assert_close(&got, &want, 1e-4, "cube, stateless");
}

fn forward<B: lightning_op::LightningBackend>(p: &Problem) -> (Vec<f64>, Vec<f64>) {
    let [b, h, n, d, e] = [p.b, p.h, p.n, p.d, p.e];
    let dev = Default::default();
    let (o, s) = lightning_attention_with_state(
        tensor::<B, 4>(&p.q, [b, h, n, d], &dev),
        tensor(&p.k, [b, h, n, d], &dev),
        tensor(&p.v, [b, h, n, e], &dev),
        tensor(&p.slopes, [h], &dev),
        p.s0.as_ref().map(|s| tensor(s, [b, h, d, e], &dev)),
    );
    (host(o), host(s))
}

/// n = 0: an empty output and the initial state unchanged.
#[test]
fn empty_sequence_returns_initial_state() {
    let dev = Default::default();
    let s0 = Tensor::<Wgpu, 4>::ones([1, 2, 4, 3], &dev);
    let (o, s) = lightning_attention_with_state(
        Tensor::zeros([1, 2, 0, 4], &dev),
        Tensor::zeros([1, 2, 0, 4], &dev),
        Tensor::zeros([1, 2, 0, 3], &dev),
        Tensor::from_floats([0.5, 0.0], &dev),
        Some(s0.clone()),
    );
    assert_eq!(o.dims(), [1, 2, 0, 3]);
    assert_eq!(host(s), host(s0));
    let o = lightning_attention(
        Tensor::<Wgpu, 4>::zeros([1, 2, 0, 4], &dev),
        Tensor::zeros([1, 2, 0, 4], &dev),
        Tensor::zeros([1, 2, 0, 3], &dev),
        Tensor::from_floats([0.5, 0.0], &dev),
    );
    assert_eq!(o.dims(), [1, 2, 0, 3]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 50, ..ProptestConfig::default() })]

    /// Random shapes, slopes and states: fused == reference, every output and gradient.
    #[test]
    fn fused_matches_reference_on_random_shapes(
        b in 1usize..3, h in 1usize..4, n in 1usize..150,
        d in 1usize..=96, e in 1usize..=96, with_state: bool, seed: u64,
    ) {
        let p = problem([b, h, n, d, e], seed, with_state);
        check(&p, &format!("proptest b={b} h={h} n={n} d={d} e={e} state={with_state}"));
    }
}
