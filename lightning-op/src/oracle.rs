//! The O(n^2) definition in float64 on the host, and the harness that runs a problem on any
//! backend: the oracle of the tests (CI) and of the device checks (`check` binary, H200).

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};

use crate::{LightningAutodiffBackend, lightning_attention, lightning_attention_with_state};

/// Host tensors of one problem, row-major `[b, h, n, d]`, `[b, h, n, e]`, `[b, h, d, e]`.
#[derive(Clone, Debug)]
pub struct Problem {
    pub b: usize,
    pub h: usize,
    pub n: usize,
    pub d: usize,
    pub e: usize,
    pub q: Vec<f64>,
    pub k: Vec<f64>,
    pub v: Vec<f64>,
    pub slopes: Vec<f64>,
    pub s0: Option<Vec<f64>>,
    /// Gradient of the loss with respect to the output and the final state.
    pub grad_o: Vec<f64>,
    pub grad_state: Vec<f64>,
}

/// Output, final state and gradients (q, k, v, initial state) of
/// `loss = sum(o * grad_o) + sum(S_n * grad_state)`; `ds0` is empty without an initial state.
#[derive(Clone, Debug)]
pub struct Solution {
    pub o: Vec<f64>,
    pub state: Vec<f64>,
    pub dq: Vec<f64>,
    pub dk: Vec<f64>,
    pub dv: Vec<f64>,
    pub ds0: Vec<f64>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn solve(p: &Problem) -> Solution {
    let Problem { b, h, n, d, e, .. } = *p;
    let mut s = Solution {
        o: vec![0.0; b * h * n * e],
        state: vec![0.0; b * h * d * e],
        dq: vec![0.0; b * h * n * d],
        dk: vec![0.0; b * h * n * d],
        dv: vec![0.0; b * h * n * e],
        ds0: vec![0.0; b * h * d * e],
    };
    for bh in 0..b * h {
        let lambda = (-p.slopes[bh % h]).exp();
        let pw = |x: usize| lambda.powi(x as i32);
        let row = |i: usize, w: usize| (bh * n + i) * w..(bh * n + i + 1) * w;
        let s0 = |r: usize, c: usize| p.s0.as_ref().map_or(0.0, |s| s[(bh * d + r) * e + c]);
        let gs = |r: usize, c: usize| p.grad_state[(bh * d + r) * e + c];
        for t in 0..n {
            let qt = &p.q[row(t, d)];
            let dot_t = &p.grad_o[row(t, e)];
            for j in 0..=t {
                let w = pw(t - j);
                let kj = &p.k[row(j, d)];
                let vj = &p.v[row(j, e)];
                let qk = dot(qt, kj) * w;
                let dov = dot(dot_t, vj) * w;
                for c in 0..e {
                    s.o[(bh * n + t) * e + c] += qk * vj[c];
                    s.dv[(bh * n + j) * e + c] += qk * dot_t[c];
                }
                for r in 0..d {
                    s.dq[(bh * n + t) * d + r] += dov * kj[r];
                    s.dk[(bh * n + j) * d + r] += dov * qt[r];
                }
            }
            // Initial-state terms: o_t += lambda^(t+1) q_t S0.
            let w = pw(t + 1);
            for c in 0..e {
                s.o[(bh * n + t) * e + c] += w * (0..d).map(|r| qt[r] * s0(r, c)).sum::<f64>();
            }
            for r in 0..d {
                s.dq[(bh * n + t) * d + r] += w * (0..e).map(|c| dot_t[c] * s0(r, c)).sum::<f64>();
                for c in 0..e {
                    s.ds0[(bh * d + r) * e + c] += w * qt[r] * dot_t[c];
                }
            }
        }
        // Final state S_n = lambda^n S0 + sum_j lambda^(n-1-j) k_j^T v_j, and its gradient.
        for r in 0..d {
            for c in 0..e {
                let mut acc = pw(n) * s0(r, c);
                for j in 0..n {
                    acc += pw(n - 1 - j) * p.k[(bh * n + j) * d + r] * p.v[(bh * n + j) * e + c];
                }
                s.state[(bh * d + r) * e + c] = acc;
                s.ds0[(bh * d + r) * e + c] += pw(n) * gs(r, c);
            }
        }
        for j in 0..n {
            let w = pw(n - 1 - j);
            for r in 0..d {
                s.dk[(bh * n + j) * d + r] += w
                    * (0..e)
                        .map(|c| p.v[(bh * n + j) * e + c] * gs(r, c))
                        .sum::<f64>();
            }
            for c in 0..e {
                s.dv[(bh * n + j) * e + c] += w
                    * (0..d)
                        .map(|r| p.k[(bh * n + j) * d + r] * gs(r, c))
                        .sum::<f64>();
            }
        }
    }
    if p.s0.is_none() {
        s.ds0.clear();
    }
    s
}

/// The loss whose gradients [`solve`] returns, for finite differences.
pub fn loss(p: &Problem) -> f64 {
    let s = solve(p);
    dot(&s.o, &p.grad_o) + dot(&s.state, &p.grad_state)
}

/// ||a - b|| / ||b||, with NaN never passing.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    let err = (num / den.max(1e-300)).sqrt();
    if err.is_nan() { f64::INFINITY } else { err }
}

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

/// Output, final state and all gradients of the problem's loss, computed by backend `B` with
/// q, k, v (and the loss weights) stored in `dtype`.
pub fn run<B: LightningAutodiffBackend>(p: &Problem, dtype: DType, device: &B::Device) -> Solution {
    run_with::<B>(p, dtype, device, lightning_attention_with_state)
}

/// [`run`] through [`lightning_attention`], which computes no final state (on a segmented
/// sequence `CubeBackend` then skips the last segment's local-state pass), for a problem
/// without an initial state. The loss has no state term, so compare with [`solve`] of
/// [`Problem::without_state_loss`]; `state` comes from a separate, detached
/// [`lightning_attention_with_state`] call.
pub fn run_stateless<B: LightningAutodiffBackend>(
    p: &Problem,
    dtype: DType,
    device: &B::Device,
) -> Solution {
    assert!(
        p.s0.is_none(),
        "run_stateless: the problem has an initial state"
    );
    run_with::<B>(
        &p.without_state_loss(),
        dtype,
        device,
        |q, k, v, slopes, _| {
            let state = lightning_attention_with_state(
                q.clone().detach(),
                k.clone().detach(),
                v.clone().detach(),
                slopes.clone(),
                None,
            )
            .1;
            (lightning_attention(q, k, v, slopes), state)
        },
    )
}

impl Problem {
    /// The same problem with no weight on the final state in the loss.
    pub fn without_state_loss(&self) -> Problem {
        let mut p = self.clone();
        p.grad_state.fill(0.0);
        p
    }
}

/// [`run`] through any function with the signature of [`lightning_attention_with_state`]
/// (another way of computing the same op).
pub fn run_with<B: LightningAutodiffBackend>(
    p: &Problem,
    dtype: DType,
    device: &B::Device,
    attention: impl Fn(
        Tensor<B, 4>,
        Tensor<B, 4>,
        Tensor<B, 4>,
        Tensor<B, 1>,
        Option<Tensor<B, 4>>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>),
) -> Solution {
    let Problem { b, h, n, d, e, .. } = *p;
    let input = |x: &[f64], shape| tensor::<B, 4>(x, shape, device).cast(dtype).require_grad();
    let q = input(&p.q, [b, h, n, d]);
    let k = input(&p.k, [b, h, n, d]);
    let v = input(&p.v, [b, h, n, e]);
    let slopes = tensor::<B, 1>(&p.slopes, [h], device);
    let s0 =
        p.s0.as_ref()
            .map(|s| tensor::<B, 4>(s, [b, h, d, e], device).require_grad());
    let (o, state) = attention(q.clone(), k.clone(), v.clone(), slopes, s0.clone());
    let grad_o = tensor::<B, 4>(&p.grad_o, [b, h, n, e], device).cast(dtype);
    let loss = (o.clone() * grad_o).cast(DType::F32).sum()
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

/// The field of `got` furthest from `want`, and its relative error.
pub fn worst(got: &Solution, want: &Solution) -> (&'static str, f64) {
    let fields: [(&'static str, &Vec<f64>, &Vec<f64>); 6] = [
        ("output", &got.o, &want.o),
        ("final state", &got.state, &want.state),
        ("dq", &got.dq, &want.dq),
        ("dk", &got.dk, &want.dk),
        ("dv", &got.dv, &want.dv),
        ("d initial state", &got.ds0, &want.ds0),
    ];
    fields
        .into_iter()
        .map(|(name, a, b)| (name, rel_err(a, b)))
        .fold(("output", 0.0), |w, f| if f.1 > w.1 { f } else { w })
}
