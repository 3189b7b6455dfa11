//! Lightning (fused) vs the reference vs Burn's softmax attention vs naive quadratic linear
//! attention, forward and forward+backward, on every compiled-in backend. Small shapes, so
//! it runs on a CPU-only machine (WGPU on lavapipe, NdArray); `cargo bench` for the numbers,
//! and the `sweep` binary for the GPU-sized tables.

use burn::backend::Autodiff;
use burn::tensor::DType;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lightning_attention::bench::{Impl, Inputs, forward, forward_backward};
use lightning_op::LightningBackend;

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

fn benches(c: &mut Criterion) {
    #[cfg(feature = "ndarray")]
    bench_backend::<burn::backend::NdArray>(c, "ndarray");
    #[cfg(feature = "wgpu")]
    bench_backend::<burn::backend::Wgpu>(c, "wgpu");
    #[cfg(feature = "cuda")]
    if std::env::var("LIGHTNING_BENCH_CUDA").is_ok() {
        bench_backend::<burn::backend::Cuda>(c, "cuda");
    }
}

criterion_group!(attention, benches);
criterion_main!(attention);
