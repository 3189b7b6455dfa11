//! Backends and assertions shared by the tests; problems and the f64 oracle are
//! `lightning_op::oracle`.

use burn::backend::{Autodiff, NdArray, Wgpu};
use burn::tensor::DType;
use lightning_op::LightningAutodiffBackend;
use lightning_op::oracle::{Problem, Solution, run, worst};

pub type Reference = Autodiff<NdArray<f32>>;
pub type Fused = Autodiff<Wgpu>;

/// Every output and gradient of `got` within `tol` (relative) of `want`.
pub fn assert_close(got: &Solution, want: &Solution, tol: f64, what: &str) {
    let (field, err) = worst(got, want);
    assert!(
        err <= tol,
        "{what}: {field} relative error {err:.3e} > {tol:.0e}"
    );
}

/// Runs the problem in f32 on backend `B`'s default device.
pub fn run_f32<B: LightningAutodiffBackend>(p: &Problem) -> Solution {
    run::<B>(p, DType::F32, &Default::default())
}
