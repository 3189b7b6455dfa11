//! The O(n^2) definition in float64 on the host: the oracle for the reference.

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
/// `loss = sum(o * grad_o) + sum(S_n * grad_state)`.
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
                s.dk[(bh * n + j) * d + r] +=
                    w * (0..e).map(|c| p.v[(bh * n + j) * e + c] * gs(r, c)).sum::<f64>();
            }
            for c in 0..e {
                s.dv[(bh * n + j) * e + c] +=
                    w * (0..d).map(|r| p.k[(bh * n + j) * d + r] * gs(r, c)).sum::<f64>();
            }
        }
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
