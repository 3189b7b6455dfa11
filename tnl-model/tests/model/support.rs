//! Backends, token batches and comparisons shared by the tests.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

pub type B = NdArray<f32>;
pub type AB = Autodiff<NdArray<f32>>;

/// Deterministic pseudo-random token rows in `0..vocab` (an LCG, no RNG crate needed).
pub fn token_rows(batch: usize, seq: usize, vocab: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..batch)
        .map(|_| {
            (0..seq)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 33) % vocab as u64) as usize
                })
                .collect()
        })
        .collect()
}

/// Equal-length rows as a `[batch, seq]` Int tensor.
pub fn tokens<Bk: Backend>(rows: &[Vec<usize>], device: &Bk::Device) -> Tensor<Bk, 2, Int> {
    let seq = rows[0].len();
    let flat: Vec<i64> = rows.iter().flatten().map(|&t| t as i64).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), seq]), device)
}

pub fn to_vec<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Largest absolute difference; panics on a shape mismatch.
pub fn max_abs_diff<Bk: Backend, Bk2: Backend, const D: usize>(
    a: Tensor<Bk, D>,
    b: Tensor<Bk2, D>,
) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    to_vec(a)
        .iter()
        .zip(to_vec(b))
        .map(|(x, y)| {
            assert!(x.is_finite() && y.is_finite(), "non-finite value");
            (x - y).abs()
        })
        .fold(0.0, f32::max)
}

pub fn assert_close<Bk: Backend, Bk2: Backend, const D: usize>(
    got: Tensor<Bk, D>,
    want: Tensor<Bk2, D>,
    tol: f32,
    what: &str,
) {
    let err = max_abs_diff(got, want);
    assert!(err <= tol, "{what}: max |diff| {err:.3e} > {tol:.0e}");
}

/// The panic message of `f`, which must panic.
pub fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let err = std::panic::catch_unwind(f).expect_err("expected a panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}
