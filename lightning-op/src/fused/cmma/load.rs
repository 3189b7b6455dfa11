//! A block's rows into shared memory. The sweep is a chain of blocks, each waiting on the
//! one before, so a block's loads would stall the whole cube once per block (ncu of v10:
//! one wait on memory per 32 tokens, the largest single stall). Instead block `i + 1` is
//! copied raw into the other half of a double buffer while block `i` computes: with
//! `cp.async` where the device has it (CUDA, sm_80+), the copy runs in the background and
//! the next block's first barrier waits for it; elsewhere ([`Synchronous`]) the same copy
//! goes through registers at the same point, so both paths share the buffers and the order.
//! Where shared memory holds one buffer only ([`super::Geometry::double`]), block `i + 1` is
//! copied once block `i` is done. WMMA's sweep then decays Q and K in place ([`scale_rows`]).

use cubecl::prelude::barrier::{Barrier, copy_async_checked};
use cubecl::prelude::*;

use super::super::kernel::time_index;
use super::{BLK, within};

/// How raw rows reach shared memory and how the cube waits for them.
#[cube]
pub trait Copier {
    /// What the units wait on.
    type Gate: CubeType + Clone;

    fn create() -> Self::Gate;

    /// `src[from]` into `dst[at]`, or zeros when `!valid` (past the block or the head dim).
    fn copy<F: Float, N: Size>(
        src: &Tensor<Vector<F, N>>,
        from: usize,
        valid: bool,
        dst: &mut SharedMemory<Vector<F, N>>,
        at: usize,
        #[comptime] vec: usize,
    );

    /// Makes this unit's copies so far part of the next [`Copier::wait`].
    fn commit(gate: &Self::Gate);

    /// Returns once every unit got here and every committed copy has landed.
    fn wait(gate: &Self::Gate);
}

/// `cp.async` (16, 8 or 4 bytes per copy, so `vec >= 2` for 2-byte types), waited on
/// through an mbarrier that also serves as the cube's barrier.
pub struct AsyncCopy;

#[cube]
impl Copier for AsyncCopy {
    type Gate = Shared<Barrier>;

    fn create() -> Self::Gate {
        Barrier::shared(CUBE_DIM, UNIT_POS == 0)
    }

    fn copy<F: Float, N: Size>(
        src: &Tensor<Vector<F, N>>,
        from: usize,
        valid: bool,
        dst: &mut SharedMemory<Vector<F, N>>,
        at: usize,
        #[comptime] vec: usize,
    ) {
        // A zero-length source fills the destination with zeros.
        let mut start = 0usize;
        let mut len = 0usize;
        if valid {
            start = from;
            len = 1;
        }
        copy_async_checked(
            &src.slice(start, start + len),
            &mut dst.slice_mut(at, at + 1),
            comptime!(vec as u32),
        );
    }

    fn commit(gate: &Self::Gate) {
        gate.commit_copy_async();
    }

    fn wait(gate: &Self::Gate) {
        gate.arrive_and_wait();
    }
}

/// Plain loads and stores, and `sync_cube`: every runtime.
pub struct Synchronous;

#[cube]
impl Copier for Synchronous {
    type Gate = ();

    fn create() -> Self::Gate {}

    fn copy<F: Float, N: Size>(
        src: &Tensor<Vector<F, N>>,
        from: usize,
        valid: bool,
        dst: &mut SharedMemory<Vector<F, N>>,
        at: usize,
        #[comptime] _vec: usize,
    ) {
        let mut x = Vector::<F, N>::new(F::new(0.0));
        if valid {
            x = src[from];
        }
        dst[at] = x;
    }

    fn commit(_gate: &Self::Gate) {}

    fn wait(_gate: &Self::Gate) {
        sync_cube();
    }
}

/// The units that copy a block: `units` of them from unit `first` on. The output pass's
/// score warps leave the next block's copy to others (see `outputs`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Crew {
    pub first: usize,
    pub units: usize,
    /// Each unit keeps its column from step to step ([`load_rows`]): fewer instructions per
    /// copy, more registers live across the sweep. It pays where registers do not set the
    /// cubes per SM (CUDA's two cubes at up to 128); on Vulkan's compact geometry it cost
    /// 4-9 % (H200, f16, v18c).
    pub keep_columns: bool,
}

/// Rows `t0 .. t0 + m` (sweep order) of `src` `[.., n, width]` from element `base`, columns
/// `c0 .. c0 + cols`, into `dst` from element `at`, rows `stride` apart, by the units of
/// `crew` (the caller keeps the others out); zeros past `m` and past `width` (a stale row
/// from two blocks back must not leak into a short last block).
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn load_rows<F: Float, N: Size, C: Copier>(
    src: &Tensor<Vector<F, N>>,
    base: usize,
    n: usize,
    width: usize,
    c0: usize,
    t0: usize,
    m: usize,
    dst: &mut SharedMemory<Vector<F, N>>,
    at: usize,
    #[comptime] cols: usize,
    #[comptime] stride: usize,
    #[comptime] vec: usize,
    #[comptime] reverse: bool,
    #[comptime] crew: Crew,
) {
    let units = comptime!(crew.units);
    let unit = UNIT_POS as usize - crew.first;
    let row_vecs = comptime!(cols / vec);
    // Indices in vectors: every offset and stride here is a multiple of `vec`.
    let (width_v, c0_v, base_v, at_v) = (width / vec, c0 / vec, base / vec, at / vec);
    let stride_v = comptime!(stride / vec);
    // Where the crew covers whole rows per step (and keeps its columns), a unit moves down
    // `units / row_vecs` rows per step: no division per copy (ncu of v18a: ~20 instructions
    // per copy, the address rebuilt from the step's index every block).
    let whole = comptime!(crew.keep_columns && units % row_vecs == 0);
    let (i0, c0_unit) = (unit / row_vecs, unit % row_vecs);
    #[unroll]
    for it in 0..comptime!((BLK * row_vecs).div_ceil(units)) {
        let idx = unit + it * units;
        let i = if comptime!(whole) {
            i0 + it * comptime!(units / row_vecs)
        } else {
            idx / row_vecs
        };
        let c = if comptime!(whole) {
            c0_unit
        } else {
            idx % row_vecs
        };
        if within(idx, BLK * row_vecs, units) {
            let valid = i < m && c0_v + c < width_v;
            let from = base_v + time_index(t0 + i, n, reverse) * width_v + c0_v + c;
            C::copy::<F, N>(src, from, valid, dst, at_v + i * stride_v + c, vec);
        }
    }
}

/// How [`scale_rows`] scales row `i` of a block (in fp32, rounded once).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Scale {
    /// `lambda^(e0 - i)`: K for the state update.
    Down,
    /// `lambda^(e0 + i)`: Q for the inter term.
    Up,
}

/// Row `i`'s weight: `lambda^(e0 - i)` (`Down`) or `lambda^(e0 + i)` (`Up`), with
/// `lambda = exp(-slope)`.
#[cube]
pub fn row_weight(slope: f32, e0: f32, i: usize, #[comptime] scale: Scale) -> f32 {
    let fi = f32::cast_from(i as u32);
    if comptime!(scale == Scale::Down) {
        (-slope * (e0 - fi)).exp()
    } else {
        (-slope * (e0 + fi)).exp()
    }
}

/// Rows `0 .. m` of `cols` columns of `rows` (element `at`, rows `stride` apart), row `i`
/// scaled by `scale` in place (in fp32, rounded once), one `vec`-wide access per vector.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn scale_rows<F: Float, N: Size>(
    rows: &mut SharedMemory<Vector<F, N>>,
    at: usize,
    m: usize,
    slope: f32,
    e0: f32,
    #[comptime] cols: usize,
    #[comptime] stride: usize,
    #[comptime] vec: usize,
    #[comptime] scale: Scale,
    #[comptime] units: usize,
) {
    let unit = UNIT_POS as usize;
    let row_vecs = comptime!(cols / vec);
    #[unroll]
    for it in 0..comptime!((BLK * cols / vec).div_ceil(units)) {
        let idx = unit + it * units;
        let i = idx / row_vecs;
        if within(idx, BLK * row_vecs, units) && i < m {
            let c = (idx % row_vecs) * vec;
            let at = (at + i * stride + c) / vec;
            let w = row_weight(slope, e0, i, scale);
            let mut x = rows[at];
            #[unroll]
            for l in 0..vec {
                x[l] = F::cast_from(f32::cast_from(x[l]) * w);
            }
            rows[at] = x;
        }
    }
}
