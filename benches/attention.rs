//! Lightning (fused) vs the reference vs Burn's softmax attention vs naive quadratic linear
//! attention, forward and forward+backward, on every compiled-in backend. Small shapes, so
//! it runs on a CPU-only machine (WGPU on lavapipe, NdArray); `cargo bench` for the numbers,
//! and the `sweep` binary for the GPU-sized tables. `decode/*`: one token through a
//! 16-layer stack of decode steps, slopes as a plain tensor vs a checked-once `Slopes`.

use burn::backend::Autodiff;
use burn::tensor::{DType, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lightning_attention::bench::{Impl, Inputs, forward, forward_backward};
use lightning_op::{IntoSlopes, LightningBackend, Slopes, lightning_decode_step};

/// (b, h, n, d, e): small enough for lavapipe and NdArray.
const SHAPES: [[usize; 5]; 2] = [[1, 4, 256, 32, 32], [1, 4, 1024, 32, 32]];

fn bench_backend<B: LightningBackend>(c: &mut Criterion, name: &str)
where
    Autodiff<B>: LightningBackend,
{
    let device = B::Device::default();
    let mut group = c.benchmark_group(format!("attention/{name}"));
    group.sample_size(10);
    for shape in SHAPES {
        let x = Inputs::<B>::random(shape, DType::F32, &device);
        let ad: Inputs<Autodiff<B>> = x.autodiff();
        for imp in Impl::ALL {
            let id = |pass: &str| BenchmarkId::new(format!("{}/{pass}", imp.name()), shape[2]);
            group.bench_function(id("forward"), |bench| {
                bench.iter(|| {
                    let _ = forward(imp, &x);
                    B::sync(&device).expect("sync");
                })
            });
            group.bench_function(id("forward+backward"), |bench| {
                bench.iter(|| {
                    let _ = forward_backward(imp, &ad);
                    B::sync(&device).expect("sync");
                })
            });
        }
    }
    group.finish();
}

/// Decode steps per token in [`bench_decode`]: one per layer of a 16-layer model.
const LAYERS: usize = 16;

/// One token through [`LAYERS`] decode steps, then a sync.
fn decode_token<B: LightningBackend, S: IntoSlopes<B> + Clone>(
    qkv: &[Tensor<B, 3>; 3],
    state: &Tensor<B, 4>,
    slopes: &S,
    device: &B::Device,
) {
    let mut s = state.clone();
    for _ in 0..LAYERS {
        let [q, k, v] = qkv.clone();
        s = lightning_decode_step(q, k, v, slopes.clone(), s).1;
    }
    B::sync(device).expect("sync");
}

/// Slopes as a plain tensor (read back to check them on every step) vs a [`Slopes`]
/// checked once.
fn bench_decode<B: LightningBackend>(c: &mut Criterion, name: &str) {
    let device = B::Device::default();
    let [h, d] = [8, 64];
    let x = Inputs::<B>::random([1, h, 1, d, d], DType::F32, &device);
    let qkv = [&x.q, &x.k, &x.v].map(|t| t.clone().squeeze_dim::<3>(2));
    let state = Tensor::<B, 4>::zeros([1, h, d, d], &device);
    // `Inputs::random` made the slopes from checked values.
    let checked = Slopes::assume_checked(x.slopes.clone());
    let mut group = c.benchmark_group(format!("decode/{name}"));
    group.sample_size(20);
    group.bench_function(format!("{LAYERS} steps, slopes tensor"), |bench| {
        bench.iter(|| decode_token(&qkv, &state, &x.slopes, &device))
    });
    group.bench_function(format!("{LAYERS} steps, Slopes"), |bench| {
        bench.iter(|| decode_token(&qkv, &state, &checked, &device))
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    #[cfg(feature = "ndarray")]
    {
        bench_backend::<burn::backend::NdArray>(c, "ndarray");
        bench_decode::<burn::backend::NdArray>(c, "ndarray");
    }
    #[cfg(feature = "wgpu")]
    {
        bench_backend::<burn::backend::Wgpu>(c, "wgpu");
        bench_decode::<burn::backend::Wgpu>(c, "wgpu");
    }
    #[cfg(feature = "cuda")]
    if std::env::var("LIGHTNING_BENCH_CUDA").is_ok() {
        bench_backend::<burn::backend::Cuda>(c, "cuda");
        bench_decode::<burn::backend::Cuda>(c, "cuda");
    }
}

criterion_group!(attention, benches);
criterion_main!(attention);
