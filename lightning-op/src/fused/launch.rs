//! Host side of the sweep: tile and segment choice from the device's limits, allocation,
//! launches.
//!
//! Sequence parallelism: one cube per (batch x head, value slice) leaves most of a large GPU
//! idle when batch x heads is small (b=1, h=16: 32 cubes for 132 SMs). Then the sequence is
//! cut into segments: pass 1 computes each segment's local state from zero, a scan chains
//! them (`S_in(s+1) = lambda^len S_in(s) + local(s)`), and pass 2 computes every segment's
//! outputs from the state entering it. k and v are read twice; in exchange every SM works.

use burn::tensor::{DType, Shape};
use burn_cubecl::{
    CubeRuntime, kernel::into_contiguous, ops::numeric::empty_device_contiguous_dtype,
    tensor::CubeTensor,
};
use burn_std::{Metadata, Strides};
use cubecl::calculate_cube_count_elemwise;
use cubecl::ir::features::MmaConfig;
use cubecl::prelude::*;

use super::cmma::{self, Geometry, sweep_cmma_kernel};
use super::kernel::{Grid, Mode, Tiles, scan_kernel, state_grad_kernel, sweep_kernel};
use crate::reference::Direction;

/// One sweep: `q`, `k` `[b, h, n, dqk]`, `v` `[b, h, n, dv]` in one dtype, `slopes` and
/// `state` fp32 (`state` `[b, h, dqk, dv]`, any strides).
pub(crate) struct Sweep<R: CubeRuntime> {
    pub q: CubeTensor<R>,
    pub k: CubeTensor<R>,
    pub v: CubeTensor<R>,
    pub slopes: CubeTensor<R>,
    pub state: Option<CubeTensor<R>>,
    pub direction: Direction,
    pub write_state: bool,
    /// States an earlier sweep scanned that this one can use instead of its own local pass
    /// and scan: taken when they were cut at this sweep's segments and it writes no final
    /// state, ignored otherwise.
    pub entering: Option<Entering<R>>,
}

/// What a sweep returns: its output, its final state when asked for, and the states
/// entering its output segments when it ran segmented.
pub(crate) struct Swept<R: CubeRuntime> {
    pub out: CubeTensor<R>,
    pub state: Option<CubeTensor<R>>,
    pub entering: Option<Entering<R>>,
}

/// The states entering each output segment of a segmented sweep, `[segments, b, h, dqk,
/// dv]` fp32, and the segment length they were cut at.
///
/// The state is `sum lambda^.. k^T v`, so a sweep whose k and v are another's v and k
/// (same slopes, direction and initial state, transposed) enters its segments with the
/// transposed states. The backward's dk and dv sweeps are such a pair: one local pass and
/// one scan serve both.
pub(crate) struct Entering<R: CubeRuntime> {
    states: CubeTensor<R>,
    seg_len: usize,
}

impl<R: CubeRuntime> Entering<R> {
    /// The states a forward over `[b, h, n, d]`, `[b, h, n, e]` (`dims`) in `dtype`
    /// returned, seen by a sweep with k and v exchanged (the backward's dq sweep).
    pub fn of_forward(states: CubeTensor<R>, dtype: DType, dims: [usize; 5]) -> Self {
        let plan = Plan::new(&states.client, dtype, dims);
        Entering {
            states,
            seg_len: plan.seg_len,
        }
        .transposed()
    }

    /// The states alone, as the forward hands them to its backward (`kept`).
    pub fn into_states(self) -> CubeTensor<R> {
        self.states
    }

    /// The states of the sweep with k and v exchanged: a strided view, no copy.
    pub fn transposed(self) -> Self {
        let Entering {
            mut states,
            seg_len,
        } = self;
        let mut dims = states.meta.shape().to_vec();
        let mut steps = states.meta.strides().to_vec();
        dims.swap(3, 4);
        steps.swap(3, 4);
        states.meta = Box::new(Metadata::new(Shape::from(dims), Strides::new(&steps)));
        Entering { states, seg_len }
    }
}

/// Units per cube of the scalar kernel. Half as many, each with a register tile twice as
/// large, where the `[blk, ev]` output gives each of 128 units 16 to 32 elements: fewer
/// shared loads per FMA (H200, f32: -8 to -12 % with CUDA's 64 x 64 blocks), where WGPU's
/// 16 x 64 blocks lost 7-9 % with them (NOTES v24). A 64 x 128 output keeps 256 units, 32
/// elements each, the largest tile measured without spills.
fn scalar_units(blk: usize, ev: usize, max_units: usize) -> usize {
    let units = if (128 * 16..=128 * 32).contains(&(blk * ev)) {
        128
    } else {
        256
    };
    prev_power_of_two(units.min(max_units))
}

/// The local-state pass's tiles: slices of at most 64, then the widest qk chunk (up to the
/// whole qk dim), then the longest block that fit.
///
/// It makes no scores, so a wider slice saves it nothing, and at one 132 KB cube per SM its
/// cubes (then twice the output pass's, see [`Kernel::local_split`]) took 1.45 waves:
/// (2,16,32K) f32, 2.97 ms against 2.07 with slices of 64 at three cubes per SM (ncu, NOTES
/// v25). With 4-wide loads the trade-off stands: slices of 128 took fwd+bwd at (2,16,32K)
/// from 20.7 to 21.6 ms and at (1,16,64K) from 22.3 to 21.6 (NOTES v28). Without Q and the scores its shared
/// memory holds wider chunks and longer blocks than the output pass's, so the barriers and
/// the state's read-modify-write come less often per token. H200, f32, d = e = 128, forward
/// at (1,16,64K) (NOTES v29): Vulkan's 48 KB, the output pass's 16 x 32 -> 32 x 32 -11 %,
/// -> 16 x 128 -7 % more; CUDA 64 x 32 -> 64 x 64 -4 %, -> 64 x 128 -11 % more (two cubes
/// per SM instead of three, +3 % at (2,16,32K)). Units: as many as the state update's grid
/// keeps busy.
fn local_tiles(tiles: Tiles, dqk: usize, max_shared: usize, max_units: usize) -> Tiles {
    let ev = tiles.ev.min(64);
    let local = |blk: usize, dk: usize| {
        let busy = Grid::cells(dk, ev, tiles.vec, tiles.vec);
        Tiles {
            blk,
            dk,
            ev,
            dcap: dqk.next_power_of_two().max(dk),
            units: scalar_units(blk, ev, max_units).min(prev_power_of_two(busy)),
            ..tiles
        }
    };
    [128, 64, 32, 16, 8]
        .into_iter()
        .filter(|&dk| dk >= tiles.dk && dk <= dqk.max(32))
        .flat_map(|dk| {
            [64, 32, 16]
                .into_iter()
                .filter(|&blk| blk >= tiles.blk)
                .map(move |blk| local(blk, dk))
        })
        .find(|local| local.shared_bytes(Mode::State) <= max_shared)
        .expect("the output pass's own block and chunk are searched, and fit in less memory")
}

/// The widest shared-memory access the scalar kernel may take for these head dims: global
/// rows are read in the same vectors, so it divides both, and the device must have it.
fn scalar_vec_max(dqk: usize, dv: usize, max_vector_size: usize) -> usize {
    [4, 2, 1]
        .into_iter()
        .find(|&w| w <= max_vector_size && dqk.is_multiple_of(w) && dv.is_multiple_of(w))
        .unwrap_or(1)
}

/// The largest power of two not above `x` (`x >= 1`).
fn prev_power_of_two(x: usize) -> usize {
    1 << x.ilog2()
}

/// Picks the tiles: the widest value slice first (fewer cubes recompute the intra scores),
/// then the widest qk chunk (each chunk of a block costs a load, two barriers and a pass
/// over its state rows), then the longest block that fit in shared memory. Chunks of 64
/// only where the qk dim fills them. A slice of 128 (151 KB, one cube per SM) only with
/// blocks of 64, for `dqk <= 128`: H200, f32, against slices of 64 (with the local pass kept
/// at 64, see [`local_tiles`]), -2 to -5 % forward and fwd+bwd at every measured shape, b x
/// h from 16 to 512 (NOTES v25); its chunks of 64 against 32, -13 to -15 % (NOTES v29). On
/// Vulkan's 48 KB at d = e = 128 the choice is a block of 16 with chunks of 64: f32 forward
/// at (4,32,1K) on the H200 0.99 ms against 1.21 with chunks of 32 (NOTES v29), which had
/// beaten blocks of 32 with chunks of 8 (NOTES v24). The state's row capacity is the qk dim
/// rounded up to a power of two, so a handful of kernel variants serve every head dim.
pub(crate) fn choose_tiles(
    dqk: usize,
    dv: usize,
    max_shared: usize,
    max_units: usize,
    vec_max: usize,
) -> Tiles {
    let tiles = |blk, dk, ev| {
        Tiles {
            blk,
            dk,
            ev,
            dcap: dqk.next_power_of_two().max(dk),
            units: scalar_units(blk, ev, max_units),
            vec: 1,
        }
        .vectorized(vec_max)
    };
    let chunks = || [64, 32, 16, 8].into_iter().filter(|&dk| dk <= dqk.max(32));
    let wide = tiles(64, chunks().next().expect("32 is always a chunk"), 128);
    if dv > 64 && dqk <= 128 && wide.units == 256 && wide.shared_bytes(Mode::Output) <= max_shared {
        return wide;
    }
    let ev_cap = dv.next_multiple_of(8).min(64);
    for ev in [64, 32, 16, 8].into_iter().filter(|&ev| ev <= ev_cap) {
        for dk in chunks() {
            for blk in [64, 32, 16] {
                let tiles = tiles(blk, dk, ev);
                if tiles.shared_bytes(Mode::Output) <= max_shared {
                    return tiles;
                }
            }
        }
    }
    panic!(
        "lightning_attention: no tiling of d = {dqk}, e = {dv} fits in {max_shared} bytes of shared memory"
    );
}

/// Which sweep kernel runs, with its compile-time shape.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    /// Shared memory and fp32 FMAs: every runtime and dtype. The output pass's tiles and
    /// the local-state pass's.
    Scalar { tiles: Tiles, local: Tiles },
    /// Tensor cores, qk dim padded to `dcap`: f16/bf16 on devices with 16x16x16 cmma;
    /// `ptx` where the device also has manual MMA (`mma.sync` m16n8k16 and `ldmatrix`);
    /// the widest geometry that fits the device's shared memory.
    Cmma {
        dcap: usize,
        ptx: bool,
        /// `stmatrix` for the storage type (sm_90+), which the stationary output pass needs.
        stmatrix: bool,
        geometry: Geometry,
    },
}

impl Kernel {
    fn choose<R: CubeRuntime>(
        client: &ComputeClient<R>,
        dtype: DType,
        dqk: usize,
        dv: usize,
    ) -> Self {
        let props = client.properties();
        let max_shared = props.hardware.max_shared_memory_size;
        let dcap = dqk.next_multiple_of(16);
        let storage: StorageType = dtype.into();
        // `storage` operands, fp32 accumulators, 16 x `n` x 16.
        let shape = |n| MmaConfig {
            a_type: storage,
            b_type: storage,
            cd_type: DType::F32.into(),
            m: 16,
            n,
            k: 16,
        };
        let has_cmma = props.features.matmul.cmma.contains(&shape(16));
        let has_mma = props.features.matmul.mma.contains(&shape(8))
            && props.features.matmul.ldmatrix.contains(&storage);
        let half = matches!(dtype, DType::F16 | DType::BF16);
        let ptx = has_mma && forced().is_none();
        let stmatrix = props.features.matmul.stmatrix.contains(&storage);
        // The whole value dim per cube wherever the stationary pass takes it (manual MMA,
        // `stmatrix`, and `cp.async`, which needs even head dims) and it is more than one
        // slice of the wide geometry.
        let whole = ptx
            && stmatrix
            && props.features.copy_async
            && dqk.is_multiple_of(2)
            && dv.is_multiple_of(2)
            && dv > Geometry::WIDE.ev
            && Geometry::WHOLE.stationary(dcap);
        let geometries: &[Geometry] = match forced() {
            Some(Forced::Compact) => &[Geometry::COMPACT],
            _ if whole => &[Geometry::WHOLE, Geometry::WIDE, Geometry::COMPACT],
            _ => &[Geometry::WIDE, Geometry::COMPACT],
        };
        let geometry = geometries
            .iter()
            .find(|&&g| cmma::shared_bytes(dcap, dtype.size(), ptx, g) <= max_shared);
        match geometry {
            Some(&geometry) if half && has_cmma && forced() != Some(Forced::Scalar) => {
                Kernel::Cmma {
                    dcap,
                    ptx,
                    stmatrix,
                    geometry,
                }
            }
            _ => {
                let max_units = props.hardware.max_units_per_cube as usize;
                let vec_max = scalar_vec_max(dqk, dv, props.hardware.max_vector_size);
                let tiles = choose_tiles(dqk, dv, max_shared, max_units, vec_max);
                let local = local_tiles(tiles, dqk, max_shared, max_units);
                Kernel::Scalar { tiles, local }
            }
        }
    }

    fn block(self) -> usize {
        match self {
            Kernel::Scalar { tiles, .. } => tiles.blk,
            Kernel::Cmma { .. } => cmma::BLK,
        }
    }

    fn value_slice(self) -> usize {
        match self {
            Kernel::Scalar { tiles, .. } => tiles.ev,
            Kernel::Cmma { geometry, .. } => geometry.ev,
        }
    }

    /// Local-state segments per output segment. The tensor-core kernel's local pass fits
    /// twice the cubes per SM of its output pass (two of eight warps against one of twelve
    /// on CUDA at d = e = 128): it runs twice the cubes, each over half a segment, and the
    /// scan chains the halves (H200, (1,16,64K), when the passes fitted four and two: 0.248
    /// -> 0.223 ms). The scalar kernel's local pass is bound by its FMAs and its cubes do
    /// not fill whole waves, so shorter pieces shorten the last wave: quarters against
    /// halves, H200, f32, forward -3 % at (4,8,2K) (TNL-385M's op), -5 % at (1,32,8K), -7 %
    /// at (2,16,32K), within the rounds' spread at (1,8,32K) and (1,16,64K); thirds were
    /// slower than halves (NOTES v30). Every kernel splits, which also keeps the split chain
    /// under test wherever segments run.
    fn local_split(self) -> usize {
        match self {
            Kernel::Scalar { .. } => 4,
            Kernel::Cmma { .. } => 2,
        }
    }

    /// Cubes per SM that the segment count plans for: the tensor-core geometry's, by its
    /// registers; the scalar kernel's by its shared memory (two of up to 102 KB with slices
    /// up to 64, one of 151 KB with a slice of 128).
    fn per_sm(self) -> usize {
        match self {
            Kernel::Scalar { tiles, .. } if tiles.ev > 64 => 1,
            Kernel::Scalar { .. } => 2,
            Kernel::Cmma { geometry, .. } => geometry.per_sm(),
        }
    }
}

/// A kernel asked for by `LIGHTNING_KERNEL`, for comparing kernels in benchmarks and
/// checks, not for users: `scalar` keeps f16/bf16 on the scalar kernel, `wmma` keeps the
/// tensor-core kernel on WMMA where manual MMA is available, `compact` runs WMMA in the
/// compact geometry (the one Vulkan's 48 KB allow) on any device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forced {
    Scalar,
    Wmma,
    Compact,
}

fn forced() -> Option<Forced> {
    static FORCED: std::sync::OnceLock<Option<Forced>> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| match std::env::var("LIGHTNING_KERNEL").as_deref() {
        Ok("scalar") => Some(Forced::Scalar),
        Ok("wmma") => Some(Forced::Wmma),
        Ok("compact") => Some(Forced::Compact),
        Ok(other) => {
            panic!("LIGHTNING_KERNEL = {other:?}: expected \"scalar\", \"wmma\" or \"compact\"")
        }
        Err(_) => None,
    })
}

/// Segments per sequence. Segments cost a second pass over K and V (the local states) and
/// a scan, which only pays where the cubes leave SMs idle: with at least one cube per SM,
/// one segment (the H200 profile of (4,32,4K): 256 cubes split in two spent 25 % of the
/// forward in the local-state pass). With fewer, as many segments as fit `per_sm` cubes
/// per SM, each at least four blocks long. WGPU does not report its SM count. A guess too
/// high costs a device with fewer SMs a needless local pass and scan (H200, (1,16,64K):
/// 0.22 ms against the output pass's 0.62); a guess too low leaves SMs idle (H200 under
/// Vulkan, guessing 64: (1,16,64K)'s 64 compact cubes took 8.2 ms, four segments of them
/// 4.9), so the guess is a large GPU's 128 SMs.
fn choose_segments(n: usize, blk: usize, cubes: usize, per_sm: usize, sms: Option<u32>) -> usize {
    let sms = sms.unwrap_or(128) as usize;
    if cubes >= sms {
        return 1;
    }
    // Rounded down: rounding up overfilled the slots (b=1, h=16 on the H200: 288 cubes for
    // 264, a second wave 9 % full on every pass).
    ((per_sm * sms) / cubes).clamp(1, (n / (4 * blk)).max(1))
}

/// How a sweep over `q`, `k` `[b, h, n, dqk]` and `v` `[b, h, n, dv]` runs: its kernel and
/// its sequence segments, a function of the shapes, the dtype and the device alone (so a
/// later sweep can tell whether an earlier one's segment states fit it).
struct Plan {
    kernel: Kernel,
    /// Output segments, each `seg_len` tokens (the last one shorter) ...
    segments: usize,
    seg_len: usize,
    /// ... and `split` local segments of `local_len` tokens each (1 and `n` rounded up to
    /// a block when unsegmented).
    split: usize,
    local_len: usize,
}

impl Plan {
    fn new<R: CubeRuntime>(client: &ComputeClient<R>, dtype: DType, dims: [usize; 5]) -> Self {
        let [b, h, n, dqk, dv] = dims;
        let props = &client.properties().hardware;
        let kernel = Kernel::choose(client, dtype, dqk, dv);
        let rows = b * h;
        assert!(
            rows <= props.max_cube_count.1 as usize,
            "lightning_attention: batch * heads = {rows} exceeds the device's {} cubes along y",
            props.max_cube_count.1
        );
        let blk = kernel.block();
        let slices = dv.div_ceil(kernel.value_slice());
        let segments = choose_segments(
            n,
            blk,
            slices * rows,
            kernel.per_sm(),
            props.num_streaming_multiprocessors,
        );
        let split = if segments > 1 {
            kernel.local_split()
        } else {
            1
        };
        // Output segments are `split` local ones, so each starts where a local one does.
        let local_len = n.div_ceil(segments * split).next_multiple_of(blk);
        let seg_len = local_len * split;
        Plan {
            kernel,
            segments: n.div_ceil(seg_len),
            seg_len,
            split,
            local_len,
        }
    }
}

/// The shape of the states a forward over `[b, h, n, d]`, `[b, h, n, e]` in `dtype` hands
/// its backward ([`Entering`]), `None` where it runs unsegmented.
pub(crate) fn entering_shape<R: CubeRuntime>(
    client: &ComputeClient<R>,
    dtype: DType,
    dims: [usize; 5],
) -> Option<[usize; 5]> {
    let [b, h, _, d, e] = dims;
    let plan = Plan::new(client, dtype, dims);
    (plan.segments > 1).then_some([plan.segments, b, h, d, e])
}

/// `tensor` `[b, h, d, e]` seen as `[1, b, h, d, e]`, strides kept (no copy).
fn with_segment_dim<R: CubeRuntime>(tensor: CubeTensor<R>) -> CubeTensor<R> {
    let shape = tensor.meta.shape();
    let strides = tensor.meta.strides();
    let (mut dims, mut steps) = (vec![1], vec![shape.num_elements()]);
    dims.extend(shape.iter().copied());
    steps.extend(strides.iter().copied());
    CubeTensor::new(
        tensor.client.clone(),
        tensor.handle.clone(),
        Metadata::new(Shape::from(dims), Strides::new(&steps)),
        tensor.device.clone(),
        tensor.dtype,
    )
}

pub(super) fn empty<R: CubeRuntime>(
    like: &CubeTensor<R>,
    shape: Vec<usize>,
    dtype: DType,
) -> CubeTensor<R> {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::from(shape),
        dtype,
    )
}

pub(crate) fn sweep<R: CubeRuntime>(args: Sweep<R>) -> Swept<R> {
    let Sweep {
        q,
        k,
        v,
        slopes,
        state,
        direction,
        write_state,
        entering,
    } = args;
    let q = into_contiguous(q);
    let k = into_contiguous(k);
    let v = into_contiguous(v);
    let slopes = into_contiguous(slopes);
    let [b, h, n, dqk] = q.meta.shape().dims::<4>();
    let dv = v.meta.shape()[3];
    let client = q.client.clone();

    let props = &client.properties().hardware;
    let Plan {
        kernel,
        segments,
        split,
        local_len,
        seg_len,
    } = Plan::new(&client, q.dtype, [b, h, n, dqk, dv]);
    let rows = b * h;
    // Widest access that divides both head dims (the tensors are contiguous) and that the
    // target has: Vulkan's SPIR-V and WGSL have no vectors wider than 4.
    let vec = [8, 4, 2, 1]
        .into_iter()
        .find(|&w| w <= props.max_vector_size && dqk % w == 0 && dv % w == 0)
        .unwrap_or(1);
    // `cp.async` copies 4, 8 or 16 bytes: two or more 2-byte elements.
    let prefetch = client.properties().features.copy_async && vec >= 2;
    let reverse = direction == Direction::Backward;
    let state = state.map(with_segment_dim);
    let out = empty(&q, vec![b, h, n, dv], q.dtype);
    let launch = |mode: Mode,
                  seg_len: usize,
                  segments: usize,
                  state_in: Option<&CubeTensor<R>>,
                  state_out: &CubeTensor<R>,
                  write_state: bool| {
        // Without a state the kernel never reads `state_in`: any fp32 tensor fills the slot.
        let has_state = state_in.is_some();
        let state_in = state_in.unwrap_or(&slopes).clone();
        let count = |slices: usize| CubeCount::Static(slices as u32, rows as u32, segments as u32);
        let dtype = out.dtype.into();
        // SAFETY: every index the kernels form is bounded by the shapes above (rows and
        // columns past n, dqk or dv are masked); `check_mode = "validate"` confirms it.
        unsafe {
            match kernel {
                Kernel::Scalar { tiles, local } => {
                    let tiles = match mode {
                        Mode::State => local,
                        Mode::Output => tiles,
                    };
                    sweep_kernel::launch_unchecked::<R>(
                        &client,
                        count(dv.div_ceil(tiles.ev)),
                        CubeDim::new_1d(tiles.units as u32),
                        tiles.vec,
                        q.clone().into_tensor_arg(),
                        k.clone().into_tensor_arg(),
                        v.clone().into_tensor_arg(),
                        slopes.clone().into_tensor_arg(),
                        state_in.into_tensor_arg(),
                        out.clone().into_tensor_arg(),
                        state_out.clone().into_tensor_arg(),
                        seg_len,
                        tiles,
                        mode,
                        has_state,
                        write_state,
                        reverse,
                        dtype,
                    )
                }
                Kernel::Cmma {
                    dcap,
                    ptx,
                    stmatrix,
                    geometry,
                } => {
                    let geometry = match mode {
                        Mode::State if ptx => geometry.local(dcap, dv),
                        _ => geometry,
                    };
                    sweep_cmma_kernel::launch_unchecked::<R>(
                        &client,
                        count(dv.div_ceil(geometry.ev)),
                        CubeDim::new_2d(32, geometry.warps as u32),
                        vec,
                        q.clone().into_tensor_arg(),
                        k.clone().into_tensor_arg(),
                        v.clone().into_tensor_arg(),
                        slopes.clone().into_tensor_arg(),
                        state_in.into_tensor_arg(),
                        out.clone().into_tensor_arg(),
                        state_out.clone().into_tensor_arg(),
                        seg_len,
                        cmma::fold_limit(q.dtype),
                        dcap,
                        vec,
                        mode,
                        has_state,
                        write_state,
                        reverse,
                        prefetch,
                        ptx,
                        stmatrix,
                        geometry,
                        dtype,
                    )
                }
            }
        }
    };

    if segments == 1 {
        let state_out = if write_state {
            empty(&q, vec![1, b, h, dqk, dv], DType::F32)
        } else {
            slopes.clone()
        };
        launch(
            Mode::Output,
            seg_len,
            1,
            state.as_ref(),
            &state_out,
            write_state,
        );
        let final_state = write_state.then(|| {
            let mut s = state_out;
            s.meta = Box::new(Metadata::new(
                Shape::new([b, h, dqk, dv]),
                Strides::new(&s.meta.strides()[1..]),
            ));
            s
        });
        return Swept {
            out,
            state: final_state,
            entering: None,
        };
    }

    let shared = entering.filter(|shared| {
        shared.seg_len == seg_len
            && !write_state
            && shared.states.meta.shape().as_slice() == [segments, b, h, dqk, dv]
    });
    let (entering, last) = match shared {
        Some(shared) => (shared.states, None),
        None => {
            // The last output segment's local states only make the final state.
            let locals = if write_state {
                n.div_ceil(local_len)
            } else {
                (segments - 1) * split
            };
            let local = empty(&q, vec![locals, b, h, dqk, dv], DType::F32);
            launch(Mode::State, local_len, locals, None, &local, false);
            let entering = empty(&q, vec![segments, b, h, dqk, dv], DType::F32);
            let last = if write_state {
                empty(&q, vec![b, h, dqk, dv], DType::F32)
            } else {
                // Never written (see `scan_kernel`): any fp32 tensor fills the slot.
                slopes.clone()
            };
            let elements = b * h * dqk * dv;
            let scan_dim = CubeDim::new_1d(256.min(props.max_units_per_cube));
            // SAFETY: one unit per state element, guarded by `idx >= per_segment`.
            unsafe {
                scan_kernel::launch_unchecked::<R>(
                    &client,
                    CubeCount::Static(elements.div_ceil(scan_dim.x as usize) as u32, 1, 1),
                    scan_dim,
                    local.into_tensor_arg(),
                    state.as_ref().unwrap_or(&slopes).clone().into_tensor_arg(),
                    slopes.clone().into_tensor_arg(),
                    entering.clone().into_tensor_arg(),
                    last.clone().into_tensor_arg(),
                    local_len,
                    split,
                    n,
                    state.is_some(),
                );
            }
            (entering, write_state.then_some(last))
        }
    };
    launch(
        Mode::Output,
        seg_len,
        segments,
        Some(&entering),
        &slopes,
        false,
    );
    Swept {
        out,
        state: write_state.then(|| last.expect("a sweep writing its state scans its own")),
        entering: Some(Entering {
            states: entering,
            seg_len,
        }),
    }
}

/// `lambda^(n-1-t) x_t M` for every t: the final state's gradient `M` (`[b, h, r, c]` fp32,
/// any strides) reaching `x` (`[b, h, n, r]`); returns `[b, h, n, c]` in `x`'s dtype.
pub(crate) fn state_grad<R: CubeRuntime>(
    x: CubeTensor<R>,
    m: CubeTensor<R>,
    slopes: CubeTensor<R>,
) -> CubeTensor<R> {
    let x = into_contiguous(x);
    let [b, h, n, _] = x.meta.shape().dims::<4>();
    let c = m.meta.shape()[3];
    let out = empty(&x, vec![b, h, n, c], x.dtype);
    let elements = b * h * n * c;
    let cube_dim = CubeDim::new(&x.client, elements);
    let count = calculate_cube_count_elemwise(&x.client, elements, cube_dim);
    // SAFETY: one unit per output element, guarded by `idx >= out.len()`.
    unsafe {
        state_grad_kernel::launch_unchecked::<R>(
            &x.client,
            count,
            cube_dim,
            x.clone().into_tensor_arg(),
            m.into_tensor_arg(),
            into_contiguous(slopes).into_tensor_arg(),
            out.clone().into_tensor_arg(),
            out.dtype.into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over head dims and the limits of the devices measured (lavapipe's 32 KB, Vulkan's 48
    /// KB on the H200, CUDA's 227 KB): both passes' tiles fit, their vectors divide every
    /// tile dim, and the local pass's update grid keeps every unit busy, with chunks and
    /// blocks no narrower than the output pass's.
    #[test]
    fn scalar_tiles_fit_and_keep_units_busy() {
        for (max_shared, max_units, max_vector) in [
            (32 << 10, 256, 4),
            (48 << 10, 1024, 4),
            (227 << 10, 1024, 8),
        ] {
            for (dqk, dv) in [
                (16, 16),
                (16, 64),
                (64, 64),
                (80, 96),
                (128, 128),
                (256, 128),
            ] {
                let vec_max = scalar_vec_max(dqk, dv, max_vector);
                let tiles = choose_tiles(dqk, dv, max_shared, max_units, vec_max);
                let local = local_tiles(tiles, dqk, max_shared, max_units);
                let at = format!("d = {dqk}, e = {dv}, {max_shared} B: {tiles:?}, {local:?}");
                assert!(tiles.shared_bytes(Mode::Output) <= max_shared, "{at}");
                assert!(local.shared_bytes(Mode::State) <= max_shared, "{at}");
                assert!(local.dk >= tiles.dk && local.blk >= tiles.blk, "{at}");
                assert_eq!(local.vec, tiles.vec, "{at}");
                for t in [tiles, local] {
                    assert!(t.units <= max_units && t.dcap >= dqk, "{at}");
                    assert!([t.blk, t.dk, t.ev].iter().all(|x| x % t.vec == 0), "{at}");
                }
                let [.., update] = local.grids();
                assert_eq!(update.gr * update.gc, local.units, "{at}");
            }
        }
    }
}
