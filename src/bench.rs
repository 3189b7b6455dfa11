//! What the benches compare: the same causal attention computed four ways, forward and
//! forward+backward, on any backend. Shared by `benches/attention.rs` (criterion) and the
//! `sweep` binary.

use burn::tensor::{
    DType, Distribution, Tensor, TensorData,
    backend::{AutodiffBackend, Backend},
    module::attention,
    ops::AttentionModuleOptions,
};
use lightning_op::{LightningBackend, Slopes, lightning_attention, reference};

/// A storage dtype as the binaries take it (`--dtype f32|f16|bf16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        }
    }
}

/// `N` positive numbers separated by commas, as a command-line value: `flag` and `form`
/// (e.g. `"--shape"`, `"B,H,N such as 4,32,1024"`) name it in the error.
pub fn parse_sizes<const N: usize>(
    text: &str,
    flag: &str,
    form: &str,
) -> Result<[usize; N], String> {
    let parts: Vec<usize> = text
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{flag} {text}: {e}; expected {form}"))?;
    match <[usize; N]>::try_from(parts) {
        Ok(sizes) if sizes.iter().all(|&x| x > 0) => Ok(sizes),
        _ => Err(format!(
            "{flag} {text}: expected {N} positive numbers {form}"
        )),
    }
}

/// An implementation of causal attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    /// The fused lightning kernels (the reference on backends without them).
    Lightning,
    /// The blockwise reference from ordinary tensor ops on the same backend.
    Reference,
    /// Burn's softmax attention, causal (`burn::tensor::module::attention`).
    Softmax,
    /// Linear attention with decay the naive way: the full `n x n` decay-masked score matrix.
    Quadratic,
}

impl Impl {
    pub const ALL: [Impl; 4] = [
        Impl::Lightning,
        Impl::Reference,
        Impl::Softmax,
        Impl::Quadratic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Impl::Lightning => "lightning",
            Impl::Reference => "reference",
            Impl::Softmax => "softmax",
            Impl::Quadratic => "quadratic",
        }
    }

    /// Bytes of the largest intermediate, to skip shapes that cannot fit.
    pub fn scratch_bytes(self, [b, h, n, _, e]: [usize; 5], elem: usize) -> usize {
        match self {
            Impl::Lightning | Impl::Reference => b * h * n * e * 4,
            // Score matrix (and its gradient) in fp32 plus masks.
            Impl::Softmax | Impl::Quadratic => 3 * b * h * n * n * 4.max(elem),
        }
    }
}

/// One problem's inputs, stored in `dtype`.
#[derive(Clone, Debug)]
pub struct Inputs<B: Backend> {
    pub q: Tensor<B, 4>,
    pub k: Tensor<B, 4>,
    pub v: Tensor<B, 4>,
    pub slopes: Tensor<B, 1>,
    /// The output's gradient in the fwd+bwd timings (that of `sum(o * grad)`).
    pub grad: Tensor<B, 4>,
}

impl<B: Backend> Inputs<B> {
    /// Random inputs `[b, h, n, d]` / `[b, h, n, e]`, scaled like a normalised model's
    /// (entries ~ N(0, 1/d)) so long sums stay in range for f16; TNL's decay slopes.
    pub fn random([b, h, n, d, e]: [usize; 5], dtype: DType, device: &B::Device) -> Self {
        let std = (1.0 / d as f64).sqrt();
        let rand = |shape: [usize; 4]| {
            Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, std), device).cast(dtype)
        };
        let slopes: Vec<f64> = (0..h)
            .map(|i| 2f64.powf(-8.0 * (i + 1) as f64 / h as f64))
            .collect();
        Inputs {
            q: rand([b, h, n, d]),
            k: rand([b, h, n, d]),
            v: rand([b, h, n, e]),
            slopes: Slopes::from_values(&slopes, device).into_tensor(),
            grad: rand([b, h, n, e]),
        }
    }

    /// The same tensors as leaves of an autodiff graph on `B`.
    pub fn autodiff<A: AutodiffBackend<InnerBackend = B>>(&self) -> Inputs<A> {
        Inputs {
            q: Tensor::from_inner(self.q.clone()),
            k: Tensor::from_inner(self.k.clone()),
            v: Tensor::from_inner(self.v.clone()),
            slopes: Tensor::from_inner(self.slopes.clone()),
            grad: Tensor::from_inner(self.grad.clone()),
        }
    }
}

/// The forward of `imp`.
pub fn forward<B: LightningBackend>(imp: Impl, x: &Inputs<B>) -> Tensor<B, 4> {
    let (q, k, v, s) = (x.q.clone(), x.k.clone(), x.v.clone(), x.slopes.clone());
    match imp {
        // As a model calls it: slopes checked once (in `random`), not read back per call.
        Impl::Lightning => lightning_attention(q, k, v, Slopes::assume_checked(s)),
        Impl::Reference => reference::forward(q, k, v, s, None).0,
        Impl::Softmax => {
            let options = AttentionModuleOptions {
                is_causal: true,
                ..Default::default()
            };
            attention(q, k, v, None, None, options)
        }
        Impl::Quadratic => quadratic(q, k, v, s),
    }
}

/// Forward, then backward with `grad` as the output's gradient, the gradient of the peers'
/// `sum(o * grad)`; returns the gradients so nothing is skipped.
///
/// Burn seeds `backward` with ones of the root's shape, so the root is `o * grad` itself and
/// the multiply's backward hands the op `grad`. A `.sum()` on top would time Burn's full
/// reduce, which depends on the shape where the op's work does not: 0.37 ms over
/// `[1, 16, 65536, 128]` against 0.13 over `[8, 16, 8192, 128]`, bf16 on the H200 (NOTES
/// v19c), where one read of those 268 MB takes 0.06 at the memory roofline.
pub fn forward_backward<B: LightningBackend + AutodiffBackend>(
    imp: Impl,
    x: &Inputs<B>,
) -> [Tensor<B::InnerBackend, 4>; 3] {
    let tracked = Inputs {
        q: x.q.clone().require_grad(),
        k: x.k.clone().require_grad(),
        v: x.v.clone().require_grad(),
        ..x.clone()
    };
    let grads = (forward(imp, &tracked) * tracked.grad.clone()).backward();
    [&tracked.q, &tracked.k, &tracked.v].map(|t| t.grad(&grads).expect("gradient"))
}

/// `o = ((Q K^T) * D) V` with `D_ts = lambda^(t-s)` for `s <= t`: O(n^2) time and memory.
pub fn quadratic<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    slopes: Tensor<B, 1>,
) -> Tensor<B, 4> {
    let [_, h, n, _] = q.dims();
    let device = q.device();
    let dtype = q.dtype();
    let distance = (0..n * n).map(|x| (x / n).saturating_sub(x % n) as f32);
    let causal = (0..n * n).map(|x| if x % n <= x / n { 1.0f32 } else { 0.0 });
    let host = |values: Vec<f32>| {
        Tensor::<B, 4>::from_data(TensorData::new(values, [1, 1, n, n]), (&device, DType::F32))
    };
    let decay = (slopes.cast(DType::F32).reshape([1, h, 1, 1]).neg() * host(distance.collect()))
        .exp()
        * host(causal.collect());
    (q.matmul(k.swap_dims(2, 3)) * decay.cast(dtype)).matmul(v)
}
