//! Sequence parallelism (LASP): a sequence split into segments chained through the state
//! equals one pass, outputs and every gradient, on one machine (the devices repeat).

use burn::tensor::DType;
use lightning_op::LightningAutodiffBackend;
use lightning_op::lasp::lasp_attention;
use lightning_op::oracle::{problem, run, run_with, worst};

use crate::support::{Fused, Reference};

fn segmented_equals_one_pass<B: LightningAutodiffBackend>() {
    let device = B::Device::default();
    // Uneven splits, a split inside a block, more segments than blocks, and n = 1.
    for (n, segments, with_state) in [
        (130, 2, true),
        (130, 3, false),
        (200, 4, true),
        (70, 8, false),
        (1, 3, true),
    ] {
        let p = problem(
            [2, 3, n, 24, 40],
            900 + n as u64 + segments as u64,
            with_state,
        );
        let devices = vec![device.clone(); segments];
        let want = run::<B>(&p, DType::F32, &device);
        let got = run_with::<B>(&p, DType::F32, &device, |q, k, v, s, s0| {
            lasp_attention(q, k, v, s, s0, &devices)
        });
        let (field, err) = worst(&got, &want);
        assert!(
            err < 1e-5,
            "n={n} segments={segments}: {field} differs by {err:.2e}"
        );
    }
}

#[test]
fn lasp_segments_equal_one_pass_reference() {
    segmented_equals_one_pass::<Reference>();
}

#[test]
fn lasp_segments_equal_one_pass_fused() {
    segmented_equals_one_pass::<Fused>();
}

#[test]
#[should_panic(expected = "lasp_attention: `devices` is empty")]
fn lasp_without_devices() {
    let p = problem([1, 1, 4, 2, 2], 1, false);
    run_with::<Reference>(&p, DType::F32, &Default::default(), |q, k, v, s, s0| {
        lasp_attention(q, k, v, s, s0, &[])
    });
}
