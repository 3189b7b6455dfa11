//! Speed sweep: "various lengths, constant speed", measured.
//!
//! `cargo run --release --features cuda,vulkan --bin sweep -- --backend cuda --backend wgpu`
//! (`vulkan`: WGPU through SPIR-V, whose cooperative matrices run the tensor-core kernel)
//!
//! Tables (forward and forward+backward; ms, tokens/s, % of the memory roofline, peak
//! memory): a fixed batch (b=4, h=32, n = 1K..32K) and fixed total tokens (64K, h=16,
//! n = 2K..64K), per implementation; then the decode step's time against context length.
//! Writes `sweep.csv` and `sweep.png` (tokens/s against n) into `--out`.

use std::{path::PathBuf, time::Instant};

use burn::backend::Autodiff;
use burn::tensor::{DType, Tensor, backend::Backend};
use clap::{Parser, ValueEnum};
use lightning_attention::bench::{Impl, Inputs, Precision, forward, forward_backward, parse_sizes};
use lightning_attention::plot::{Series, plot_lines};
use lightning_op::{AutodiffInner, Slopes, lightning_attention_with_state, lightning_decode_step};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Which {
    #[cfg(feature = "cuda")]
    Cuda,
    #[cfg(feature = "wgpu")]
    Wgpu,
    #[cfg(feature = "ndarray")]
    Ndarray,
}

#[derive(Parser)]
struct Args {
    #[arg(long, value_enum, required_unless_present = "plot")]
    backend: Vec<Which>,
    /// Only plot these CSVs (from earlier runs) into `--out`; measure nothing.
    #[arg(long)]
    plot: Vec<PathBuf>,
    /// Storage dtype; on a backend without it, the sweep falls back to f32.
    #[arg(long, value_enum, default_value = "bf16")]
    dtype: Precision,
    /// Implementations to time (the quadratic and softmax forms skip shapes that do not fit).
    #[arg(long, value_delimiter = ',', default_value = "lightning,softmax")]
    impls: Vec<String>,
    /// Largest n for the fixed-batch table.
    #[arg(long, default_value_t = 32768)]
    max_n: usize,
    /// Time only these shapes, `B,H,N` each (repeatable), instead of the two tables and
    /// the decode steps: one shape under a profiler, or a shape of one's own model.
    #[arg(long, value_parser = parse_shape)]
    shape: Vec<[usize; 3]>,
    /// Head dims d = e.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Skip implementations slower than this per call (ms) at larger n.
    #[arg(long, default_value_t = 2000.0)]
    budget_ms: f64,
    /// Device memory bandwidth for the roofline column (bytes/s), H200 measured.
    #[arg(long, default_value_t = 4.3e12)]
    bandwidth: f64,
    #[arg(long, default_value = "sweep-out")]
    out: PathBuf,
}

#[derive(Clone, Debug)]
struct Row {
    backend: &'static str,
    dtype: DType,
    imp: &'static str,
    table: &'static str,
    shape: [usize; 5],
    fwd_ms: Option<f64>,
    fwd_bwd_ms: Option<f64>,
    peak_mb: Option<f64>,
}

/// Median per-call milliseconds of `f`, which must enqueue one call on the device.
/// Calls run back to back between syncs, as a training loop runs them, each sample lasting
/// >= `SAMPLE_MS`; inputs rotate so repeated calls do not run from L2. A batch between
/// syncs takes a fixed 0.2-0.6 ms more than its calls (H200, bf16 forward: 0.372 ms per
/// call in batches of 10 against 0.311 in batches of 100 at (4,32,4K), 0.139 against 0.089
/// at (4,32,1K); the cause is not pinned down), which short samples charge to every call.
fn time<B: Backend>(device: &B::Device, mut f: impl FnMut(usize)) -> f64 {
    const SAMPLE_MS: f64 = 25.0;
    let sync = || B::sync(device).expect("device sync");
    f(0);
    sync();
    let start = Instant::now();
    f(1);
    sync();
    let once = start.elapsed().as_secs_f64() * 1e3;
    let per_sample = (SAMPLE_MS / once.max(1e-3)).ceil().clamp(1.0, 2000.0) as usize;
    let samples = if once > 500.0 { 3 } else { 11 };
    let mut times: Vec<f64> = (0..samples)
        .map(|s| {
            let start = Instant::now();
            for i in 0..per_sample {
                f(s * per_sample + i);
            }
            sync();
            start.elapsed().as_secs_f64() * 1e3 / per_sample as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[samples / 2]
}

struct Bench<'a, B: Backend> {
    name: &'static str,
    device: B::Device,
    dtype: DType,
    /// Bytes reserved on the device, for peak memory (None where unknown).
    reserved: &'a dyn Fn(&B::Device) -> Option<u64>,
    /// Largest buffer the device binds (WGPU on Vulkan: 2 GiB); larger shapes are skipped.
    max_buffer: u64,
}

impl<B: AutodiffInner> Bench<'_, B> {
    fn measure(&self, args: &Args, imp: Impl, table: &'static str, shape: [usize; 5]) -> Row {
        let sets: Vec<Inputs<B>> = (0..3)
            .map(|_| Inputs::random(shape, self.dtype, &self.device))
            .collect();
        B::memory_cleanup(&self.device);
        let fwd_ms = time::<B>(&self.device, |i| {
            let _ = forward(imp, &sets[i % sets.len()]);
        });
        let ad_sets: Vec<Inputs<Autodiff<B>>> = sets.iter().map(Inputs::autodiff).collect();
        let fwd_bwd_ms = (fwd_ms * 4.0 < args.budget_ms).then(|| {
            time::<B>(&self.device, |i| {
                let _ = forward_backward(imp, &ad_sets[i % ad_sets.len()]);
            })
        });
        let peak_mb = (self.reserved)(&self.device).map(|b| b as f64 / 1e6);
        Row {
            backend: self.name,
            dtype: self.dtype,
            imp: imp.name(),
            table,
            shape,
            fwd_ms: Some(fwd_ms),
            fwd_bwd_ms,
            peak_mb,
        }
    }

    fn run(&self, args: &Args, rows: &mut Vec<Row>) {
        let d = args.dim;
        let mut shapes: Vec<(&'static str, [usize; 5])> = Vec::new();
        for &[b, h, n] in &args.shape {
            shapes.push(("chosen", [b, h, n, d, d]));
        }
        let mut n = 1024;
        while args.shape.is_empty() && n <= args.max_n {
            shapes.push(("fixed batch b=4 h=32", [4, 32, n, d, d]));
            n *= 2;
        }
        for n in [2048, 8192, 32768, 65536]
            .into_iter()
            .filter(|_| args.shape.is_empty())
        {
            shapes.push(("fixed 64K tokens h=16", [65536 / n, 16, n, d, d]));
        }
        let elem = self.dtype.size();
        let impls = args
            .impls
            .iter()
            .filter_map(|s| Impl::ALL.into_iter().find(|i| i.name() == s));
        for imp in impls {
            let mut too_slow = false;
            for &(table, shape) in &shapes {
                let [b, h, n, d, e] = shape;
                let largest = (b * h * n * d.max(e) * elem.max(4)) as u64;
                let fits =
                    imp.scratch_bytes(shape, elem) < 40_000_000_000 && largest <= self.max_buffer;
                if largest > self.max_buffer {
                    println!(
                        "{} {}: n={n} skipped, a {largest}-byte tensor exceeds the device's {}-byte buffers",
                        self.name,
                        imp.name(),
                        self.max_buffer
                    );
                }
                if too_slow || !fits {
                    continue;
                }
                let row = self.measure(args, imp, table, shape);
                too_slow = row.fwd_ms.unwrap_or(0.0) * 2.0 > args.budget_ms;
                print_row(&row, args.bandwidth);
                rows.push(row);
            }
        }
    }

    /// Decode: one recurrent step after prefilling `context` tokens (b=1, h=32, d=e=dim).
    fn decode(&self, args: &Args) -> Vec<(usize, f64)> {
        let (h, d) = (32, args.dim);
        [1024, 4096, 16384, 65536]
            .into_iter()
            .filter(|_| args.shape.is_empty())
            .map(|context| {
                let x = Inputs::<B>::random([1, h, context, d, d], self.dtype, &self.device);
                // Checked once, as a model holds them: no read-back per step.
                let slopes = Slopes::new(x.slopes.clone());
                let (_, state) = lightning_attention_with_state(
                    x.q.clone(),
                    x.k.clone(),
                    x.v.clone(),
                    slopes.clone(),
                    None,
                );
                let step =
                    |t: &Tensor<B, 4>| t.clone().slice([0..1, 0..h, 0..1]).squeeze_dim::<3>(2);
                let (q, k, v) = (step(&x.q), step(&x.k), step(&x.v));
                let ms = time::<B>(&self.device, |_| {
                    let _ = lightning_decode_step(
                        q.clone(),
                        k.clone(),
                        v.clone(),
                        slopes.clone(),
                        state.clone(),
                    );
                });
                println!(
                    "{:<6} decode step after {context:>6} tokens: {ms:.4} ms",
                    self.name
                );
                (context, ms)
            })
            .collect()
    }
}

fn parse_shape(text: &str) -> Result<[usize; 3], String> {
    parse_sizes(text, "--shape", "B,H,N such as 4,32,1024")
}

/// Minimum bytes a forward must move: read q, k, v, write o (storage dtype).
fn roofline_ms([b, h, n, d, e]: [usize; 5], elem: usize, bandwidth: f64) -> f64 {
    (b * h * n * (2 * d + 2 * e) * elem) as f64 / bandwidth * 1e3
}

fn print_row(r: &Row, bandwidth: f64) {
    let [b, h, n, ..] = r.shape;
    let tokens = (b * n) as f64;
    let fmt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
    let roof = roofline_ms(r.shape, r.dtype.size(), bandwidth);
    println!(
        "{:<6} {:?} {:<10} b={b:<2} h={h:<2} n={n:<6} fwd {:>9} ms ({:>5.1}% roofline, {:>8.2} Mtok/s)  fwd+bwd {:>9} ms ({:>8} Mtok/s)  peak {} MB",
        r.backend,
        r.dtype,
        r.imp,
        fmt(r.fwd_ms),
        r.fwd_ms.map_or(0.0, |t| 100.0 * roof / t),
        r.fwd_ms.map_or(0.0, |t| tokens / t / 1e3),
        fmt(r.fwd_bwd_ms),
        fmt(r.fwd_bwd_ms.map(|t| tokens / t / 1e3)),
        fmt(r.peak_mb),
    );
}

fn dtype_on<B: Backend>(device: &B::Device, wanted: Precision) -> DType {
    let dtype = wanted.dtype();
    if B::supports_dtype(device, dtype) {
        dtype
    } else {
        DType::F32
    }
}

fn main() {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out).expect("create the output folder");
    if !args.plot.is_empty() {
        return plot(&args.plot, &args.out);
    }
    let mut rows = Vec::new();
    let mut decode = Vec::new();
    for which in args.backend.clone() {
        match which {
            #[cfg(feature = "cuda")]
            Which::Cuda => {
                use burn::backend::cuda::CudaDevice;
                use cubecl::{Runtime, cuda::CudaRuntime};
                let device = CudaDevice::default();
                let reserved = |d: &CudaDevice| {
                    CudaRuntime::client(d)
                        .memory_usage()
                        .ok()
                        .map(|m| m.bytes_reserved)
                };
                let bench = Bench::<burn::backend::Cuda> {
                    name: "cuda",
                    max_buffer: CudaRuntime::client(&device)
                        .properties()
                        .memory
                        .max_page_size,
                    dtype: dtype_on::<burn::backend::Cuda>(&device, args.dtype),
                    device,
                    reserved: &reserved,
                };
                bench.run(&args, &mut rows);
                decode.push(("cuda", bench.decode(&args)));
            }
            #[cfg(feature = "wgpu")]
            Which::Wgpu => {
                use burn::backend::wgpu::WgpuDevice;
                use cubecl::{Runtime, wgpu::WgpuRuntime};
                let device = WgpuDevice::default();
                let reserved = |d: &WgpuDevice| {
                    WgpuRuntime::client(d)
                        .memory_usage()
                        .ok()
                        .map(|m| m.bytes_reserved)
                };
                let bench = Bench::<burn::backend::Wgpu> {
                    name: "wgpu",
                    max_buffer: WgpuRuntime::client(&device)
                        .properties()
                        .memory
                        .max_page_size,
                    dtype: dtype_on::<burn::backend::Wgpu>(&device, args.dtype),
                    device,
                    reserved: &reserved,
                };
                bench.run(&args, &mut rows);
                decode.push(("wgpu", bench.decode(&args)));
            }
            #[cfg(feature = "ndarray")]
            Which::Ndarray => {
                let bench = Bench::<burn::backend::NdArray> {
                    name: "ndarray",
                    dtype: DType::F32,
                    device: Default::default(),
                    reserved: &|_| None,
                    max_buffer: u64::MAX,
                };
                bench.run(&args, &mut rows);
                decode.push(("ndarray", bench.decode(&args)));
            }
        }
    }
    write_csv(&args, &rows, &decode);
    summary(&rows, args.bandwidth);
}

fn write_csv(args: &Args, rows: &[Row], decode: &[(&str, Vec<(usize, f64)>)]) {
    let mut csv = String::from("backend,dtype,impl,table,b,h,n,d,e,fwd_ms,fwd_bwd_ms,peak_mb\n");
    let opt = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.4}"));
    for r in rows {
        let [b, h, n, d, e] = r.shape;
        csv += &format!(
            "{},{:?},{},{},{b},{h},{n},{d},{e},{},{},{}\n",
            r.backend,
            r.dtype,
            r.imp,
            r.table,
            opt(r.fwd_ms),
            opt(r.fwd_bwd_ms),
            opt(r.peak_mb)
        );
    }
    for (backend, points) in decode {
        for (context, ms) in points {
            csv += &format!(
                "{backend},,decode,decode b=1 h=32,1,32,{context},{},{},{ms:.5},,\n",
                args.dim, args.dim
            );
        }
    }
    let path = args.out.join("sweep.csv");
    std::fs::write(&path, csv).expect("write sweep.csv");
    plot(&[path], &args.out);
}

/// Training throughput against n (the fixed-batch table) from sweep CSVs, one line per
/// backend, dtype and implementation. Separate from measuring so that runs on machines
/// without fonts (the lent GPU) are plotted afterwards: `sweep --plot a.csv --plot b.csv`.
fn plot(csvs: &[PathBuf], out: &std::path::Path) {
    let mut series = Vec::<Series>::new();
    for path in csvs {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let (Some(b), Some(n), Some(ms)) = (
                f[4].parse::<f64>().ok(),
                f[6].parse::<f64>().ok(),
                f[10].parse::<f64>().ok(),
            ) else {
                continue;
            };
            if !f[3].starts_with("fixed batch") {
                continue;
            }
            let label = format!("{} {} {}", f[0], f[1].to_lowercase(), f[2]);
            let point = (n, b * n / ms / 1e3);
            match series.iter_mut().find(|s| s.label == label) {
                Some(s) => s.points.push(point),
                None => series.push(Series {
                    label,
                    points: vec![point],
                }),
            }
        }
    }
    let png = out.join("sweep.png");
    match plot_lines(
        &png,
        "b=4, h=32, d=e=128: training throughput (fwd+bwd)",
        "sequence length n",
        "Mtokens/s",
        &series,
    ) {
        Ok(()) => println!("wrote {}", png.display()),
        Err(e) => println!("no plot: {e}"),
    }
}

/// The constant-speed check: slowest over fastest forward+backward at fixed total tokens.
fn summary(rows: &[Row], bandwidth: f64) {
    println!("\nsummary (median ms):");
    for r in rows {
        print_row(r, bandwidth);
    }
    let mut keys: Vec<(&str, &str)> = rows.iter().map(|r| (r.backend, r.imp)).collect();
    keys.dedup();
    for (backend, imp) in keys {
        let times: Vec<f64> = rows
            .iter()
            .filter(|r| r.backend == backend && r.imp == imp && r.table.starts_with("fixed 64K"))
            .filter_map(|r| r.fwd_bwd_ms)
            .collect();
        if times.len() > 1 {
            let (lo, hi) = times
                .iter()
                .fold((f64::MAX, 0f64), |(l, h), &t| (l.min(t), h.max(t)));
            println!(
                "{backend} {imp}: fixed 64K tokens, slowest / fastest fwd+bwd = {:.2}",
                hi / lo
            );
        }
    }
}
