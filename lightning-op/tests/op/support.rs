//! Problems, backends and comparisons shared by the tests.

use burn::backend::{Autodiff, NdArray, Wgpu};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use lightning_op::{LightningAutodiffBackend, lightning_attention_with_state};

use crate::naive::{Problem, Solution, rel_err};

pub type Reference = Autodiff<NdArray<f32>>;
pub type Fused = Autodiff<Wgpu>;

/// xorshift64*: reproducible inputs without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [-1, 1).
    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        bits as f64 / (1u64 << 52) as f64 - 1.0
    }
    pub fn vec(&mut self, len: usize) -> Vec<f64> {
        (0..len).map(|_| self.next()).collect()
    }
}

/// A random problem; head 0 has no decay, head 1 the largest decay (8.0), the others
/// random slopes in [0, 2).
pub fn problem([b, h, n, d, e]: [usize; 5], seed: u64, with_state: bool) -> Problem {
    let mut rng = Rng::new(seed);
    let slopes = (0..h)
        .map(|i| match i {
            0 => 0.0,
            1 => 8.0,
            _ => rng.next() + 1.0,
        })
        .collect();
    Problem {
        b,
        h,
        n,
        d,
        e,
        q: rng.vec(b * h * n * d),
        k: rng.vec(b * h * n * d),
        v: rng.vec(b * h * n * e),
        slopes,
        s0: with_state.then(|| rng.vec(b * h * d * e)),
        grad_o: rng.vec(b * h * n * e),
        grad_state: rng.vec(b * h * d * e),
    }
}

pub fn tensor<B: Backend, const D: usize>(
    values: &[f64],
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    let values: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

pub fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .into_vec::<f64>()
        .expect("f64 data")
}

/// Output, final state and all gradients of the problem's loss, computed by backend `B`.
pub fn run<B: LightningAutodiffBackend>(p: &Problem, device: &B::Device) -> Solution {
    let Problem { b, h, n, d, e, .. } = *p;
    let q = tensor::<B, 4>(&p.q, [b, h, n, d], device).require_grad();
    let k = tensor::<B, 4>(&p.k, [b, h, n, d], device).require_grad();
    let v = tensor::<B, 4>(&p.v, [b, h, n, e], device).require_grad();
    let slopes = tensor::<B, 1>(&p.slopes, [h], device);
    let s0 = p
        .s0
        .as_ref()
        .map(|s| tensor::<B, 4>(s, [b, h, d, e], device).require_grad());
    let (o, state) =
        lightning_attention_with_state(q.clone(), k.clone(), v.clone(), slopes, s0.clone());
    let loss = (o.clone() * tensor::<B, 4>(&p.grad_o, [b, h, n, e], device)).sum()
        + (state.clone() * tensor::<B, 4>(&p.grad_state, [b, h, d, e], device)).sum();
    let grads = loss.backward();
    let grad = |t: &Tensor<B, 4>| host(t.grad(&grads).expect("a gradient"));
    Solution {
        o: host(o.inner()),
        state: host(state.inner()),
        dq: grad(&q),
        dk: grad(&k),
        dv: grad(&v),
        ds0: s0.as_ref().map(grad).unwrap_or_default(),
    }
}

/// Every field of `got` within `tol` (relative) of `want`; the message names the field.
pub fn assert_close(got: &Solution, want: &Solution, tol: f64, what: &str) {
    let fields: [(&str, &Vec<f64>, &Vec<f64>); 6] = [
        ("output", &got.o, &want.o),
        ("final state", &got.state, &want.state),
        ("dq", &got.dq, &want.dq),
        ("dk", &got.dk, &want.dk),
        ("dv", &got.dv, &want.dv),
        ("d initial state", &got.ds0, &want.ds0),
    ];
    for (name, a, b) in fields {
        if b.is_empty() {
            continue;
        }
        let err = rel_err(a, b);
        assert!(err <= tol, "{what}: {name} relative error {err:.3e} > {tol:.0e}");
    }
}

/// The naive solution without the initial-state gradient when the problem has no state.
pub fn naive(p: &Problem) -> Solution {
    let mut s = crate::naive::solve(p);
    if p.s0.is_none() {
        s.ds0.clear();
    }
    s
}
