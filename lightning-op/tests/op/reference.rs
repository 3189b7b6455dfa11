//! The reference (ordinary tensor ops, NdArray) against the float64 naive definition.

use lightning_op::oracle::{self, loss, problem, rel_err, solve};

use crate::support::{Reference, assert_close, run_f32};

#[test]
fn naive_gradients_match_finite_differences() {
    let base = problem([1, 2, 5, 3, 2], 11, true);
    let want = solve(&base);
    let eps = 1e-6;
    let fields: [(&str, fn(&mut oracle::Problem) -> &mut Vec<f64>, &Vec<f64>); 4] = [
        ("q", |p| &mut p.q, &want.dq),
        ("k", |p| &mut p.k, &want.dk),
        ("v", |p| &mut p.v, &want.dv),
        ("s0", |p| p.s0.as_mut().unwrap(), &want.ds0),
    ];
    for (name, field, grad) in fields {
        let numeric: Vec<f64> = (0..grad.len())
            .map(|i| {
                let (mut plus, mut minus) = (base.clone(), base.clone());
                field(&mut plus)[i] += eps;
                field(&mut minus)[i] -= eps;
                (loss(&plus) - loss(&minus)) / (2.0 * eps)
            })
            .collect();
        let err = rel_err(grad, &numeric);
        assert!(
            err < 1e-7,
            "{name}: analytic vs finite-difference error {err:.2e}"
        );
    }
}

#[test]
fn reference_matches_naive() {
    let mut seed = 0;
    for n in [1, 7, 63, 64, 65, 200] {
        for (d, e) in [(16, 16), (48, 80), (64, 32)] {
            for with_state in [false, true] {
                seed += 1;
                let p = problem([2, 3, n, d, e], seed, with_state);
                let got = run_f32::<Reference>(&p);
                let what = format!("reference n={n} d={d} e={e} state={with_state}");
                assert_close(&got, &solve(&p), 1e-4, &what);
            }
        }
    }
}
