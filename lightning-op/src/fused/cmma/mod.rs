//! The blockwise sweep on tensor cores (16x16x16 steps, f16/bf16 operands, fp32
//! accumulators; [`mma`]: manual MMA on CUDA, WMMA elsewhere). Same contract and modes as
//! the scalar [`super::kernel::sweep_kernel`]; chosen when the storage dtype is f16/bf16
//! and the device has cooperative matrices.
//!
//! Per block of `BLK` tokens, with the cube's `[dcap, ev]` state slice held in fp32
//! accumulator fragments (each warp keeps its tiles in registers for the whole sweep):
//! 1. `S = Q K^T` (lower-triangle tiles only);
//! 2. `P = S * M` in the storage type (manual MMA: on the tile's registers; WMMA: through
//!    shared fp32);
//! 3. `O = diag(lambda^(i+1)) Q KV + P V` (one accumulator per output tile, KV read from a
//!    storage-type snapshot), then `KV <- lambda^m KV + K^T diag(lambda^(m-1-j)) V`, each
//!    tile's accumulator also stored as the next block's snapshot;
//! 4. the output tile leaves through shared memory, coalesced.
//! Block `i + 1`'s raw rows are copied in while block `i` computes ([`load`]), where
//! shared memory has room for two buffers of rows ([`Geometry`]).
//! Where the decays go: manual MMA knows which rows a lane's registers hold, so Q's decay
//! scales the rows of the `Q KV` accumulator and K's weights V's registers, from per-block
//! tables ([`token_weights`]); WMMA fragments are opaque, so its sweep decays the rows of Q
//! and K in shared memory once S is made ([`scale_rows`]). The state's own decay `lambda^m` is, while
//! the storage type's range allows (see [`fold_limit`]), folded into K's weights instead of
//! applied to the state; past that limit (and every block for f16) the state's tiles are
//! scaled in place (on registers, or for WMMA on a round trip through shared memory).
//! The segments' local-state pass (`Mode::State`) needs no state decay per block: see
//! [`local_state`].
//! On CUDA sm_90+ (manual MMA, `stmatrix`, two buffers of rows) with `dcap <= 128`,
//! `Mode::Output` runs [`stationary`] instead, which keeps the state as an MMA operand and
//! needs no snapshot.

use cubecl::cmma::MatrixLayout;
use cubecl::prelude::*;

mod load;
mod mma;
mod stationary;

use super::kernel::{Mode, entering_state, time_index};
use load::{AsyncCopy, Copier, Crew, Scale, Synchronous, load_rows, row_weight, scale_rows};
use mma::{Operand, Ptx, T, TensorCore, Wmma, product};

/// Tokens per block.
pub const BLK: usize = 32;
/// Byte alignment of the shared buffers: WMMA loads and stores need 32-byte aligned tiles.
const ALIGN: usize = 32;
/// Row padding of the shared tiles, in elements: 16 bytes for the storage type, 16 bytes
/// for fp32. Unpadded rows are 128 or 256 bytes apart, so the 8 rows a WMMA fragment load
/// reads at once all start in the same bank (an 8-way conflict); 16 more bytes per row
/// spread them over all 32 banks. Strides stay multiples of 16 bytes, as WMMA requires.
const PAD: usize = 8;
const PAD_F32: usize = 4;
/// Row stride of Q and K (`dcap` wide).
const fn qk_stride(dcap: usize) -> usize {
    dcap + PAD
}
const PS: usize = BLK + PAD;
/// fp32 row stride of the scores (`BLK` wide).
const SS: usize = BLK + PAD_F32;
/// Warps' scratch tiles: fp32 16x16, rows `XS` apart. The state's fragments pass through
/// them when they are loaded, decayed in place or written out (a fragment's elements are
/// only reachable through shared memory).
const XS: usize = T + PAD_F32;
const SCRATCH: usize = T * XS;
const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// A cube's shape, chosen at launch from the device's shared memory.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Geometry {
    /// Value columns per cube (the width of its state slice).
    pub ev: usize,
    /// Warps (planes of 32 units) per cube.
    pub warps: usize,
    /// Block `i + 1` copied into a second buffer while block `i` computes; otherwise it is
    /// copied after block `i`, behind one more barrier.
    pub double: bool,
}

impl Geometry {
    /// Where shared memory allows (CUDA: 227 KB per cube): two cubes per SM.
    pub const WIDE: Geometry = Geometry {
        ev: 64,
        warps: 8,
        double: true,
    };
    /// A whole 128-wide value dim per cube on twelve warps, one cube per SM (whose
    /// registers hold their 135-136 per unit): the stationary pass's eight state warps hold
    /// every value column, so its crew makes a block's scores and copies its Q and K rows
    /// once per head instead of once per value slice. Per SM and block that is 12 % fewer
    /// `ldmatrix`, 7 % fewer products and 40 % fewer bytes copied than two wide cubes (H200,
    /// bf16 forward: -5 to -8 % at n >= 2K, +3 to 6 us at (4,32,1K), whose 32-block cubes
    /// gain little and lose half the cubes per SM).
    pub const WHOLE: Geometry = Geometry {
        ev: 128,
        warps: 12,
        double: true,
    };
    /// Within Vulkan's 48 KB of workgroup memory (~45 KB at d = 128): half the value
    /// columns and one buffer of rows. Eight warps (two state tiles each, half of them
    /// idle on the four output tiles) ran 25-30 % faster on Vulkan than four (H200, f16).
    pub const COMPACT: Geometry = Geometry {
        ev: 32,
        warps: 8,
        double: false,
    };

    /// The local-state pass's shape. It makes no scores and keeps no snapshot, so with
    /// manual MMA and two buffers of rows (CUDA) a cube can hold a whole 128-column state
    /// on eight warps (eight tiles each): K is then read once per head instead of once per
    /// value slice (H200, (1,16,64K): 187 -> 158 us, at 128 registers). Not past `dcap =
    /// 128`: sixteen tiles per warp would not fit in registers. [`Geometry::WHOLE`]'s twelve
    /// warps would split the state's columns between warps, which `update` does not allow.
    pub const fn local(self, dcap: usize, dv: usize) -> Geometry {
        if self.double && (dv > self.ev || self.ev == LOCAL_EV) && dcap <= LOCAL_EV {
            Geometry {
                ev: LOCAL_EV,
                warps: LOCAL_WARPS,
                ..self
            }
        } else {
            self
        }
    }

    /// Cubes one SM holds at 128 registers per unit (the kernels' budget on CUDA, 64K
    /// registers per SM), which sets how many segments fill a device.
    pub const fn per_sm(self) -> usize {
        let per = 65536 / (128 * self.units());
        if per > 0 { per } else { 1 }
    }

    /// Whether `Mode::Output` can keep the state as an operand in registers
    /// ([`stationary`]): a geometry with two buffers of rows (the pass takes three, which
    /// [`shared_bytes`] counts), `dcap` up to [`stationary::MAX_DCAP`], and past
    /// the state warps a crew for the score tiles that copies whole rows per step. It also
    /// needs manual MMA and `stmatrix`, which [`sweep_cmma_kernel`] checks.
    pub const fn stationary(self, dcap: usize) -> bool {
        let state_warps = self.ev / T;
        self.double
            && dcap <= stationary::MAX_DCAP
            && self.warps >= state_warps + S_TILES
            && (self.warps - state_warps).is_power_of_two()
    }

    const fn units(self) -> usize {
        32 * self.warps
    }

    /// Every unit of the cube.
    const fn everyone(self) -> Crew {
        Crew {
            first: 0,
            units: self.units(),
            keep_columns: self.double,
        }
    }

    /// The last warps of the cube, as many as a power of two allows among those that make no
    /// score tile: every copy step then covers whole rows, with no bounds check
    /// ([`load_rows`]).
    const fn past_scores(self) -> Crew {
        let mut warps = 1;
        while 2 * warps <= self.warps - S_TILES {
            warps *= 2;
        }
        Crew {
            first: 32 * (self.warps - warps),
            units: 32 * warps,
            keep_columns: self.double,
        }
    }

    /// Row stride of V, the state snapshot and the output block (`ev` wide).
    const fn vs(self) -> usize {
        self.ev + PAD
    }

    const fn buffers(self) -> usize {
        if self.double { 2 } else { 1 }
    }

    /// Elements of one buffer of raw rows: a block of Q (when `with_q`), K and V.
    const fn raw_set(self, dcap: usize, with_q: bool) -> usize {
        let qk = BLK * qk_stride(dcap);
        (if with_q { 2 * qk } else { qk }) + BLK * self.vs()
    }

    /// Floats of the staging buffer: the scores (WMMA), and between blocks every warp's
    /// scratch tile.
    const fn stage(self) -> usize {
        max(BLK * SS, self.warps * SCRATCH)
    }
}

/// Score tiles per block: those at or below the diagonal of its `BLK / T` rows of tiles.
const S_TILES: usize = (BLK / T) * (BLK / T + 1) / 2;

// Each score tile has a warp of its own, and some warps are left to copy meanwhile.
const _: () = assert!(Geometry::WIDE.warps > S_TILES);
const _: () = assert!(Geometry::COMPACT.warps > S_TILES);

/// Score tile `k` of a block, in row order of the lower triangle: `(row, col)` of tiles,
/// `col <= row`. Row `r` starts at `k = r (r + 1) / 2`; the float root is exact at those.
#[cube]
fn lower_tile(k: usize) -> (usize, usize) {
    let r = usize::cast_from((f32::sqrt(f32::cast_from(8 * k as u32 + 1)) - 1.0) / 2.0);
    (r, k - r * (r + 1) / 2)
}

/// Value columns and warps per cube of the local-state pass on CUDA ([`Geometry::local`]).
const LOCAL_EV: usize = 128;
const LOCAL_WARPS: usize = 8;

// `update` loads each V operand once per warp: with `Spread`, all of a warp's state tiles
// (`warp + s warps`) must sit in the same column of tiles; the local pass deals its tiles
// out as `Blocks`.
const _: () = assert!(Layout::blocks_fit(Geometry {
    ev: LOCAL_EV,
    warps: LOCAL_WARPS,
    double: true
}));
const _: () = assert!(Geometry::WIDE.warps % (Geometry::WIDE.ev / T) == 0);
const _: () = assert!(Geometry::COMPACT.warps % (Geometry::COMPACT.ev / T) == 0);

/// Whether item `i` of `n`, dealt out `step` at a time (`i = first + s step` for the `n /
/// step` rounded up values of `s`), exists. Where `step` divides `n` that is known at
/// compile time: no branch, and around `mma.sync` no warp re-convergence either (ncu of
/// v14: a branch, `WARPSYNC` and `BSSY`/`BSYNC` per state tile and per block).
#[cube]
pub(crate) fn within(i: usize, #[comptime] n: usize, #[comptime] step: usize) -> bool {
    let mut inside = true;
    if comptime!(n % step != 0) {
        inside = i < n;
    }
    inside
}

/// How far (`e^limit`) the output pass may let its state grow before decaying it in place:
/// the grown state and the K rows that feed it are rounded to the storage type. bf16 has
/// fp32's exponent range, so `e^40` leaves `e^48` of headroom below its largest value and
/// the matching Q scale `>= e^-(40 + BLK slope)` stays normal; f16 tops out at 65504,
/// which a state already near its range could not spare, so it decays every block.
pub fn fold_limit(dtype: burn::tensor::DType) -> f32 {
    match dtype {
        burn::tensor::DType::BF16 => 40.0,
        _ => 0.0,
    }
}

/// Floats of the token-weight tables: `tables` per block (Q's and K's, or K's), for each
/// buffer of rows; manual MMA only.
const fn weights_len(ptx: bool, tables: usize, g: Geometry) -> usize {
    if ptx {
        g.buffers() * tables * BLK
    } else {
        ALIGN
    }
}

/// Bytes of shared memory one cube of geometry `g` uses with a qk dim padded to `dcap` and
/// `elem`-byte storage: the largest of the output passes and the local-state pass (each
/// with its raw rows and weight tables, and 16 bytes for the copy barrier).
pub fn shared_bytes(dcap: usize, elem: usize, ptx: bool, g: Geometry) -> usize {
    let raw = |with_q| g.buffers() * g.raw_set(dcap, with_q);
    let outputs = (raw(true) + BLK * PS + dcap * g.vs() + BLK * g.vs()) * elem
        + (g.stage() + BLK + weights_len(ptx, 2, g)) * 4;
    let local = raw(false) * elem + (g.warps * SCRATCH + weights_len(ptx, 1, g)) * 4;
    let mut resident = 0;
    if ptx && g.stationary(dcap) {
        resident = (stationary::BUFFERS * g.raw_set(dcap, true) + 2 * BLK * (PS + g.vs())) * elem
            + (g.warps * SCRATCH + BLK + weights_len(ptx, 2, g)) * 4;
    }
    outputs.max(local).max(resident) + 16
}

/// A row-major operand tile (`[rows, k]` for A, `[k, cols]` for B), rows `stride` apart.
const fn rows(stride: usize, vec: usize) -> Operand {
    Operand {
        stride,
        vec,
        layout: MatrixLayout::RowMajor,
    }
}

/// The transpose of a row-major operand tile is stored.
const fn cols(stride: usize, vec: usize) -> Operand {
    Operand {
        stride,
        vec,
        layout: MatrixLayout::ColMajor,
    }
}

/// How a cube's `[dcap, ev]` state slice is dealt out to its warps' accumulator tiles.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Layout {
    /// Tile `warp + s warps` of the slice (`ev / T` per row of tiles), every warp holding
    /// some: [`outputs`] and [`local_state`].
    Spread,
    /// Warp `j < ev / T` holds value columns `j T ..` for every d, transposed (rows e,
    /// columns d), slot `s` the d rows `s T ..`: [`stationary`].
    Stationary,
    /// Warp `w` holds two neighbouring columns of tiles (pair `w % pairs` of the `pairs =
    /// ev / 2T`) over a run of `slots / 2` rows of tiles (run `w / pairs`), slot `s` row
    /// `s / 2` of the run, column `s % 2`: [`local_state`] with manual MMA. Each K^T operand
    /// a warp loads then serves two products, where `Spread` loads one per product: with
    /// every warp reading all of K, those loads were most of the pass's shared traffic.
    Blocks,
}

impl Layout {
    /// Accumulator tiles per warp.
    const fn slots(self, dcap: usize, g: Geometry) -> usize {
        match self {
            Layout::Spread => (dcap / T * g.ev / T).div_ceil(g.warps),
            Layout::Stationary => dcap / T,
            Layout::Blocks => 2 * (dcap / T).div_ceil(g.warps / Layout::pairs(g)),
        }
    }

    /// Columns of tiles a warp holds in [`update`] (one for `Spread`).
    const fn columns(self) -> usize {
        match self {
            Layout::Blocks => 2,
            _ => 1,
        }
    }

    /// `Blocks`' pairs of tile columns.
    const fn pairs(g: Geometry) -> usize {
        g.ev / T / 2
    }

    /// Whether `Blocks` deals geometry `g`'s tiles out evenly.
    const fn blocks_fit(g: Geometry) -> bool {
        (g.ev / T) % 2 == 0 && g.warps % Layout::pairs(g) == 0
    }
}

/// Slot `s` of this warp's state tiles: whether it holds one, and that tile's first state
/// row (d) and column (e) in the cube's slice.
#[cube]
fn slot(
    s: usize,
    #[comptime] layout: Layout,
    #[comptime] dcap: usize,
    #[comptime] g: Geometry,
) -> (bool, usize, usize) {
    let warp = UNIT_POS_Y as usize;
    let v_tiles = comptime!(g.ev / T);
    if comptime!(layout == Layout::Spread) {
        let tile = warp + s * g.warps;
        (
            within(tile, comptime!(dcap / T * g.ev / T), g.warps),
            (tile / v_tiles) * T,
            (tile % v_tiles) * T,
        )
    } else if comptime!(layout == Layout::Blocks) {
        let pairs = comptime!(Layout::pairs(g));
        let run = comptime!(layout.slots(dcap, g) / 2);
        let row = (warp / pairs) * run + s / 2;
        // Runs of `run` rows cover every row exactly only where the runs divide them.
        let mut held = true;
        if comptime!((dcap / T) % (g.warps / pairs) != 0) {
            held = row < comptime!(dcap / T);
        }
        (held, row * T, (2 * (warp % pairs) + s % 2) * T)
    } else {
        (warp < v_tiles, s * T, warp * T)
    }
}

/// Element `idx` (row-major) of a tile at `(d0, e0)`: its state row and column.
#[cube]
fn tile_element(idx: usize, d0: usize, e0: usize, #[comptime] layout: Layout) -> (usize, usize) {
    if comptime!(layout == Layout::Stationary) {
        (d0 + idx % T, e0 + idx / T)
    } else {
        (d0 + idx / T, e0 + idx % T)
    }
}

/// `count` zero accumulator tiles.
#[cube]
fn zeros<F: Float, M: TensorCore<F>>(#[comptime] count: usize) -> Sequence<M::Acc> {
    let mut accs = Sequence::<M::Acc>::new();
    #[unroll]
    for _ in 0..count {
        accs.push(M::zero());
    }
    accs
}

/// The state entering this cube's segment of `(batch, head)`, from `state_in` (see
/// [`entering_state`]), into the warp's tiles, each through its fp32 scratch tile at
/// `scratch`.
///
/// Every tile's elements are fetched into registers before the first goes through the
/// scratch tile. One fetch per tile between the scratch tile's barriers cost a memory
/// round trip per tile (the dq and dk passes read states written long before, no longer
/// in L2), and with it the segmented dq, dv and dk passes ran 21-57 us longer at
/// (1,16,64K) than with the batch (NOTES v27; part of that was the loop's register
/// allocation).
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_state<F: Float, M: TensorCore<F>>(
    accs: &mut Sequence<M::Acc>,
    ss: &mut SharedMemory<f32>,
    scratch: usize,
    state_in: &Tensor<f32>,
    batch_head: (usize, usize),
    sizes: (usize, usize, usize),
    #[comptime] layout: Layout,
    #[comptime] dcap: usize,
    #[comptime] g: Geometry,
) {
    let lane = UNIT_POS_X as usize;
    let (_, dqk, dv) = sizes;
    let (batch, head) = batch_head;
    let c0 = CUBE_POS_X as usize * g.ev;
    let slots = comptime!(layout.slots(dcap, g));
    let per_lane = comptime!(T * T / 32);
    let mut fetched = Array::<f32>::new(comptime!(slots * per_lane));
    #[unroll]
    for s in 0..slots {
        let (held, d0, e0) = slot(s, layout, dcap, g);
        #[unroll]
        for e in 0..per_lane {
            let (row, col) = tile_element(lane + e * 32, d0, e0, layout);
            let mut init = 0.0f32;
            if held && row < dqk && c0 + col < dv {
                init = entering_state(state_in, CUBE_POS_Z as usize, batch, head, row, c0 + col);
            }
            fetched[s * per_lane + e] = init;
        }
    }
    #[unroll]
    for s in 0..slots {
        let (held, _, _) = slot(s, layout, dcap, g);
        if held {
            #[unroll]
            for e in 0..per_lane {
                let idx = lane + e * 32;
                ss[scratch + (idx / T) * XS + idx % T] = fetched[s * per_lane + e];
            }
            sync_plane();
            M::load(accs.index_mut(s), ss, scratch, XS);
            sync_plane();
        }
    }
}

/// The warp's state tiles, times `scale`, to their place in `state_out` `[S, B, H, dqk, dv]`
/// (segment `CUBE_POS_Z`), each through the warp's fp32 scratch tile at `scratch`: a
/// fragment's elements are only reachable through shared memory, and a tile at a time keeps
/// that to `SCRATCH` floats per warp instead of a staged `[dcap, ev]` slice.
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_state<F: Float, M: TensorCore<F>>(
    accs: &Sequence<M::Acc>,
    ss: &mut SharedMemory<f32>,
    scratch: usize,
    state_out: &mut Tensor<f32>,
    scale: f32,
    #[comptime] layout: Layout,
    #[comptime] dcap: usize,
    #[comptime] g: Geometry,
) {
    let lane = UNIT_POS_X as usize;
    let (dqk, dv) = (state_out.shape(3), state_out.shape(4));
    let c0 = CUBE_POS_X as usize * g.ev;
    let base = (CUBE_POS_Z as usize * CUBE_COUNT_Y as usize + CUBE_POS_Y as usize) * dqk;
    #[unroll]
    for s in 0..comptime!(layout.slots(dcap, g)) {
        let (held, d0, e0) = slot(s, layout, dcap, g);
        if held {
            M::store(ss, accs.index(s), scratch, XS);
            sync_plane();
            #[unroll]
            for e in 0..T * T / 32 {
                let idx = lane + e * 32;
                let (row, col) = tile_element(idx, d0, e0, layout);
                if row < dqk && c0 + col < dv {
                    state_out[(base + row) * dv + c0 + col] =
                        ss[scratch + (idx / T) * XS + idx % T] * scale;
                }
            }
            sync_plane();
        }
    }
}

/// See the module docs; arguments as [`super::kernel::sweep_kernel`]'s, with the qk dim
/// padded to `dcap` (a multiple of 16), q/k/v/out read and written `vec` (= `N`) elements at
/// a time (`vec` divides both head dims), and `CubeDim = (32, geometry.warps)`. `prefetch`:
/// copy blocks with `cp.async` ([`AsyncCopy`]: needs the device's `copy_async` and `vec >=
/// 2`); `ptx`: products by manual MMA ([`Ptx`]: CUDA's `mma.sync` and `ldmatrix`), else WMMA;
/// `stmatrix`: the device has `stmatrix` for `F` (sm_90+), which [`stationary`] stores its
/// output tiles with.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn sweep_cmma_kernel<F: Float, N: Size>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    slopes: &Tensor<f32>,
    state_in: &Tensor<f32>,
    out: &mut Tensor<Vector<F, N>>,
    state_out: &mut Tensor<f32>,
    seg_len: usize,
    fold_limit: f32,
    #[comptime] dcap: usize,
    #[comptime] vec: usize,
    #[comptime] mode: Mode,
    #[comptime] has_state: bool,
    #[comptime] write_state: bool,
    #[comptime] reverse: bool,
    #[comptime] prefetch: bool,
    #[comptime] ptx: bool,
    #[comptime] stmatrix: bool,
    #[comptime] geometry: Geometry,
    #[define(F)] _dtype: StorageType,
) {
    let flags = comptime!(Flags {
        dcap,
        vec,
        mode,
        has_state,
        write_state,
        reverse,
        ptx,
        g: geometry,
    });
    if comptime!(prefetch) {
        if comptime!(ptx && stmatrix && mode == Mode::Output && geometry.stationary(dcap)) {
            stationary::outputs::<F, N, AsyncCopy>(
                q,
                k,
                v,
                slopes,
                state_in,
                out,
                state_out,
                seg_len,
                fold_limit,
                dcap,
                vec,
                has_state,
                write_state,
                reverse,
                geometry,
            );
        } else if comptime!(ptx) {
            sweep::<F, N, AsyncCopy, Ptx>(
                q, k, v, slopes, state_in, out, state_out, seg_len, fold_limit, flags,
            );
        } else {
            sweep::<F, N, AsyncCopy, Wmma>(
                q, k, v, slopes, state_in, out, state_out, seg_len, fold_limit, flags,
            );
        }
    } else if comptime!(ptx) {
        sweep::<F, N, Synchronous, Ptx>(
            q, k, v, slopes, state_in, out, state_out, seg_len, fold_limit, flags,
        );
    } else {
        sweep::<F, N, Synchronous, Wmma>(
            q, k, v, slopes, state_in, out, state_out, seg_len, fold_limit, flags,
        );
    }
}

/// The kernel's compile-time arguments other than the copier and the product.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Flags {
    dcap: usize,
    vec: usize,
    mode: Mode,
    has_state: bool,
    write_state: bool,
    reverse: bool,
    ptx: bool,
    g: Geometry,
}

#[cube]
#[allow(clippy::too_many_arguments)]
fn sweep<F: Float, N: Size, C: Copier, M: TensorCore<F>>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    slopes: &Tensor<f32>,
    state_in: &Tensor<f32>,
    out: &mut Tensor<Vector<F, N>>,
    state_out: &mut Tensor<f32>,
    seg_len: usize,
    fold_limit: f32,
    #[comptime] flags: Flags,
) {
    if comptime!(flags.mode == Mode::State) {
        local_state::<F, N, C, M>(
            k,
            v,
            slopes,
            state_out,
            seg_len,
            comptime!(flags.dcap),
            comptime!(flags.vec),
            comptime!(flags.reverse),
            comptime!(flags.ptx),
            comptime!(flags.g),
        );
    } else {
        outputs::<F, N, C, M>(
            q,
            k,
            v,
            slopes,
            state_in,
            out,
            state_out,
            seg_len,
            fold_limit,
            comptime!(flags.dcap),
            comptime!(flags.vec),
            comptime!(flags.has_state),
            comptime!(flags.write_state),
            comptime!(flags.reverse),
            comptime!(flags.ptx),
            comptime!(flags.g),
        );
    }
}

/// One block of `KV += K^T diag(w) V` on the warp's state tiles (`accs[s]` is its slot
/// `s` of `layout`, `Spread` or `Blocks`). Either way a warp's tiles share their one or two
/// columns of V, each V operand loaded once for all of them, and each K^T operand serves
/// the warp's tiles of its row. K `[BLK, dcap]` is in `raw` from element `ka`: raw with
/// `ptx`, whose token weights `w[wa ..]` go onto V's registers; otherwise already weighted
/// in place ([`scale_rows`]) and `w` is unused. V `[BLK, ev]` is in `raw` from element `va`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn update<F: Float, N: Size, M: TensorCore<F>>(
    accs: &mut Sequence<M::Acc>,
    raw: &SharedMemory<Vector<F, N>>,
    ka: usize,
    va: usize,
    w: &SharedMemory<f32>,
    wa: usize,
    #[comptime] layout: Layout,
    #[comptime] dcap: usize,
    #[comptime] vec: usize,
    #[comptime] ptx: bool,
    #[comptime] g: Geometry,
) {
    let qks = comptime!(qk_stride(dcap));
    let vs = comptime!(g.vs());
    let columns = comptime!(layout.columns());
    // The warp's first tile sets its columns of V.
    let (_, _, e0) = slot(0, layout, dcap, g);
    #[unroll]
    for kk in 0..BLK / T {
        let mut b = Sequence::<M::Rhs>::new();
        #[unroll]
        for j in 0..columns {
            let mut rhs = M::load_rhs::<Vector<F, N>>(
                raw,
                va + kk * T * vs + e0 + j * T,
                comptime!(rows(vs, vec)),
            );
            if comptime!(ptx) {
                M::weight_rhs(&mut rhs, w, wa + kk * T);
            }
            b.push(rhs);
        }
        #[unroll]
        for i in 0..comptime!(layout.slots(dcap, g) / columns) {
            let (held, d0, _) = slot(i * columns, layout, dcap, g);
            if held {
                let a = M::load_lhs::<Vector<F, N>>(
                    raw,
                    ka + kk * T * qks + d0,
                    comptime!(cols(qks, vec)),
                );
                #[unroll]
                for j in 0..columns {
                    M::mma(accs.index_mut(i * columns + j), &a, b.index(j));
                }
            }
        }
    }
}

/// `Mode::State`: the segment's own state from zero, `sum_p lambda^(L-1-p) k_p^T v_p` over
/// its `L` tokens (`lambda^(L-p)` when `reverse`). Every term's decay is known when its
/// block arrives, so it goes onto the operands (as in the output pass) and the
/// accumulators stay in registers for the whole segment: no per-block pass over a
/// shared-memory state, and less shared memory.
#[cube]
#[allow(clippy::too_many_arguments)]
fn local_state<F: Float, N: Size, C: Copier, M: TensorCore<F>>(
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    slopes: &Tensor<f32>,
    state_out: &mut Tensor<f32>,
    seg_len: usize,
    #[comptime] dcap: usize,
    #[comptime] vec: usize,
    #[comptime] reverse: bool,
    #[comptime] ptx: bool,
    #[comptime] g: Geometry,
) {
    let warp = UNIT_POS_Y as usize;
    let bh = CUBE_POS_Y as usize;
    let n = k.shape(2);
    // Read once: in the block loop they were global loads on every block's copy (ncu, v19).
    let sizes = (n, k.shape(3), v.shape(3));
    let seg_start = CUBE_POS_Z as usize * seg_len;
    let seg_end = min(n, seg_start + seg_len);
    let slope = slopes[bh % k.shape(1)];
    let shift = if reverse { 1usize } else { 0usize };

    let qks = comptime!(qk_stride(dcap));
    // Raw K then V, once or twice (see `Geometry::double`).
    let set = comptime!(g.raw_set(dcap, false));
    let mut raw =
        SharedMemory::<Vector<F, N>>::new_aligned(comptime!(g.buffers() * set / vec), ALIGN);
    let mut ss = SharedMemory::<f32>::new_aligned(comptime!(g.warps * SCRATCH), ALIGN);
    let mut w = SharedMemory::<f32>::new_aligned(comptime!(weights_len(ptx, 1, g)), ALIGN);
    let gate = C::create();

    let layout = comptime!(if ptx && Layout::blocks_fit(g) {
        Layout::Blocks
    } else {
        Layout::Spread
    });
    let mut accs = zeros::<F, M>(comptime!(layout.slots(dcap, g)));

    let mut t0 = seg_start;
    let mut half = 0usize;
    load_first::<F, N, C>(
        k, k, v, &mut raw, &gate, t0, seg_end, sizes, dcap, vec, reverse, false, g,
    );
    let va = BLK * qks;
    while t0 < seg_end {
        let m = min(BLK, seg_end - t0);
        let e0 = f32::cast_from((seg_end - 1 - t0 + shift) as u32);
        let wa = half * BLK;
        if comptime!(ptx) {
            token_weights(&mut w, wa, slope, e0, m, Scale::Down);
        }
        C::wait(&gate);
        let next = t0 + BLK;
        if comptime!(g.double) {
            load_ahead::<F, N, C>(
                k,
                k,
                v,
                &mut raw,
                &gate,
                half,
                next,
                seg_end,
                sizes,
                dcap,
                vec,
                reverse,
                false,
                g,
                g.everyone(),
            );
        }
        let at = half * set;
        if comptime!(!ptx) {
            scale_rows::<F, N>(
                &mut raw,
                at,
                m,
                slope,
                e0,
                dcap,
                qks,
                vec,
                Scale::Down,
                g.units(),
            );
            sync_cube();
        }
        update::<F, N, M>(
            &mut accs,
            &raw,
            at,
            at + va,
            &w,
            wa,
            layout,
            dcap,
            vec,
            ptx,
            g,
        );
        if comptime!(g.double) {
            half = 1usize - half;
        } else {
            load_after::<F, N, C>(
                k, k, v, &mut raw, &gate, next, seg_end, sizes, dcap, vec, reverse, false, g,
            );
        }
        t0 = next;
    }

    store_state::<F, M>(
        &accs,
        &mut ss,
        warp * SCRATCH,
        state_out,
        1.0,
        layout,
        dcap,
        g,
    );
}

/// `Mode::Output`: steps 1-4 of the module docs for every block of the segment, from the
/// state entering it.
#[cube]
#[allow(clippy::too_many_arguments)]
fn outputs<F: Float, N: Size, C: Copier, M: TensorCore<F>>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    slopes: &Tensor<f32>,
    state_in: &Tensor<f32>,
    out: &mut Tensor<Vector<F, N>>,
    state_out: &mut Tensor<f32>,
    seg_len: usize,
    fold_limit: f32,
    #[comptime] dcap: usize,
    #[comptime] vec: usize,
    #[comptime] has_state: bool,
    #[comptime] write_state: bool,
    #[comptime] reverse: bool,
    #[comptime] ptx: bool,
    #[comptime] g: Geometry,
) {
    let warps = comptime!(g.warps);
    // `update` loads each V operand once per warp (see there).
    comptime!(assert!(
        warps % (g.ev / T) == 0,
        "a warp's state tiles share a column"
    ));
    let units = comptime!(g.units());
    let unit = UNIT_POS as usize;
    let warp = UNIT_POS_Y as usize;
    let bh = CUBE_POS_Y as usize;
    let segment = CUBE_POS_Z as usize;

    let heads = q.shape(1);
    let n = q.shape(2);
    let dqk = q.shape(3);
    let dv = v.shape(3);
    let sizes = (n, dqk, dv);
    let head = bh % heads;
    let batch = bh / heads;
    let seg_start = segment * seg_len;
    let seg_end = min(n, seg_start + seg_len);

    let qks = comptime!(qk_stride(dcap));
    let vs = comptime!(g.vs());
    // Raw Q, K, V, once or twice (see `Geometry::double`).
    let set = comptime!(g.raw_set(dcap, true));
    let mut raw =
        SharedMemory::<Vector<F, N>>::new_aligned(comptime!(g.buffers() * set / vec), ALIGN);
    let mut ps = SharedMemory::<F>::new_aligned(BLK * PS, ALIGN);
    let mut kvb = SharedMemory::<F>::new_aligned(comptime!(dcap * vs), ALIGN);
    // Scores (WMMA), and the warps' scratch tiles between blocks (the output goes through `ob`).
    let mut ss = SharedMemory::<f32>::new_aligned(comptime!(g.stage()), ALIGN);
    // The output block on its way out, already in the storage type: the copy out reads one
    // vector per store and converts nothing.
    let mut ob = SharedMemory::<F>::new_aligned(comptime!(BLK * vs), ALIGN);
    let mut decay = SharedMemory::<f32>::new(BLK);
    let mut w = SharedMemory::<f32>::new_aligned(comptime!(weights_len(ptx, 2, g)), ALIGN);

    let slope = slopes[head];
    decay_table(&mut decay, slope, units);

    let v_tiles = comptime!(g.ev / T);
    // The state: warp `w` holds tiles `w, w + warps, ..` (`v_tiles` per row of tiles) in fp32
    // fragments for the whole sweep, so no block reads or writes it in shared memory.
    let tiles = comptime!(dcap / T * g.ev / T);
    let per_warp = comptime!(tiles.div_ceil(g.warps));
    let scratch = warp * SCRATCH;
    let mut accs = zeros::<F, M>(per_warp);
    if has_state {
        load_state::<F, M>(
            &mut accs,
            &mut ss,
            scratch,
            state_in,
            (batch, head),
            sizes,
            Layout::Spread,
            dcap,
            g,
        );
        // The first block's inter term reads the state from its snapshot.
        #[unroll]
        for s in 0..per_warp {
            let tile = warp + s * warps;
            if within(tile, tiles, g.warps) {
                let r = tile / v_tiles;
                let c = tile % v_tiles;
                M::store_cast(&mut kvb, accs.index(s), r * T * vs + c * T, vs);
            }
        }
    } else {
        let mut idx = unit;
        while idx < dcap * vs {
            kvb[idx] = F::new(0.0);
            idx += units;
        }
    }

    // The state is kept as `U = KV / lambda^tau`, `tau` tokens after it was last decayed in
    // place: a block's decay `lambda^m` goes into the scale of its K rows (and the next Q
    // rows) instead of a pass over the whole fp32 state, for as long as the growth
    // `lambda^-(tau + m)` stays below `e^fold_limit`, which the launch picks per dtype.
    // This warp's score tile (warps from `S_TILES` on make none).
    let (srow, scol) = lower_tile(warp);
    let mut tau = 0u32;
    let mut t0 = seg_start;
    let mut half = 0usize;
    let gate = C::create();
    load_first::<F, N, C>(
        q, k, v, &mut raw, &gate, t0, seg_end, sizes, dcap, vec, reverse, true, g,
    );
    while t0 < seg_end {
        let m = min(BLK, seg_end - t0);
        let (grown, fold, q_e0, k_e0) = block_exponents(tau, m, slope, fold_limit, reverse);
        let wa = half * 2 * BLK;
        if comptime!(ptx) {
            token_weights(&mut w, wa, slope, q_e0, m, Scale::Up);
            token_weights(&mut w, wa + BLK, slope, k_e0, m, Scale::Down);
        }
        // Block `t0` has landed and every warp is done with the block before, whose buffer
        // (when there are two) now takes the next block.
        C::wait(&gate);
        let next = t0 + BLK;
        // The warps past the score tiles copy the next block while the others make S.
        if comptime!(g.double) {
            load_ahead::<F, N, C>(
                q,
                k,
                v,
                &mut raw,
                &gate,
                half,
                next,
                seg_end,
                sizes,
                dcap,
                vec,
                reverse,
                true,
                g,
                g.past_scores(),
            );
        }
        let qa = half * set;
        let ka = qa + BLK * qks;
        let va = ka + BLK * qks;
        if !fold {
            // `KV <- lambda^m KV` in place (`kvb` already holds the state the block's inter
            // term reads).
            let lm = (-slope * grown).exp();
            #[unroll]
            for s in 0..per_warp {
                if within(warp + s * warps, tiles, g.warps) {
                    M::scale(accs.index_mut(s), lm, &mut ss, scratch, XS);
                }
            }
        }
        if comptime!(!ptx) {
            // WMMA's scratch tiles share `ss` with S.
            sync_cube();
        }

        // 1. S = Q K^T on the tiles at or below the diagonal, one per warp.
        if warp < S_TILES {
            score_tile::<F, N, M>(
                &raw,
                qa,
                ka,
                (srow, scol),
                &decay,
                &mut ps,
                0,
                &mut ss,
                dcap,
                vec,
                ptx,
            );
        }
        sync_cube();

        // 2. (WMMA) P = S * M in the storage type, through shared fp32; Q and K, read for
        // the last time raw, take their decays in place for the inter term and the update.
        if comptime!(!ptx) {
            #[unroll]
            for it in 0..comptime!((BLK * BLK).div_ceil(g.units())) {
                let idx = unit + it * units;
                if within(idx, BLK * BLK, g.units()) {
                    let i = idx / BLK;
                    let j = idx % BLK;
                    let mut p = 0.0f32;
                    if j <= i {
                        p = ss[i * SS + j] * decay[i - j];
                    }
                    ps[i * PS + j] = F::cast_from(p);
                }
            }
            scale_rows::<F, N>(
                &mut raw,
                qa,
                m,
                slope,
                q_e0,
                dcap,
                qks,
                vec,
                Scale::Up,
                units,
            );
            scale_rows::<F, N>(
                &mut raw,
                ka,
                m,
                slope,
                k_e0,
                dcap,
                qks,
                vec,
                Scale::Down,
                units,
            );
            sync_cube();
        }

        // 3a. O = Q KV + P V; with manual MMA `diag(lambda^(i + 1)) (Q KV)` takes the decay
        // onto the product's rows.
        let o_tiles = comptime!(BLK / T * g.ev / T);
        #[unroll]
        for s in 0..comptime!(o_tiles.div_ceil(g.warps)) {
            let tile = warp + s * warps;
            if within(tile, o_tiles, g.warps) {
                let ti = tile / v_tiles;
                let tj = tile % v_tiles;
                let mut acc = M::zero();
                #[unroll]
                for kk in 0..comptime!(dcap / T) {
                    product::<F, M, Vector<F, N>, F>(
                        &mut acc,
                        &raw,
                        qa + ti * T * qks + kk * T,
                        comptime!(rows(qks, vec)),
                        &kvb,
                        kk * T * vs + tj * T,
                        comptime!(rows(vs, 1)),
                    );
                }
                if comptime!(ptx) {
                    M::scale_rows(&mut acc, &w, wa + ti * T);
                }
                #[unroll]
                for kk in 0..comptime!(BLK / T) {
                    if kk <= ti {
                        product::<F, M, F, Vector<F, N>>(
                            &mut acc,
                            &ps,
                            ti * T * PS + kk * T,
                            comptime!(rows(PS, 1)),
                            &raw,
                            va + kk * T * vs + tj * T,
                            comptime!(rows(vs, vec)),
                        );
                    }
                }
                M::store_cast(&mut ob, &acc, ti * T * vs + tj * T, vs);
            }
        }
        sync_cube();

        // 3b. KV += K^T V on the warp's own tiles, and the storage-type snapshot of each for
        // the next block's inter term, straight from the fragment.
        update::<F, N, M>(
            &mut accs,
            &raw,
            ka,
            va,
            &w,
            wa + BLK,
            Layout::Spread,
            dcap,
            vec,
            ptx,
            g,
        );
        #[unroll]
        for s in 0..per_warp {
            let tile = warp + s * warps;
            if within(tile, tiles, g.warps) {
                let r = tile / v_tiles;
                let c = tile % v_tiles;
                M::store_cast(&mut kvb, accs.index(s), r * T * vs + c * T, vs);
            }
        }

        // 4. The output tile (staged in 3a).
        write_block::<F, N>(
            out,
            &ob,
            0,
            t0,
            m,
            sizes,
            vec,
            reverse,
            ptx,
            g,
            g.everyone(),
        );
        if fold {
            tau += m as u32;
        } else {
            tau = 0;
        }
        if comptime!(g.double) {
            half = 1usize - half;
        } else {
            load_after::<F, N, C>(
                q, k, v, &mut raw, &gate, next, seg_end, sizes, dcap, vec, reverse, true, g,
            );
        }
        t0 = next;
    }
    sync_cube();

    if write_state {
        // `KV = lambda^tau U`.
        let scale = (-slope * f32::cast_from(tau)).exp();
        store_state::<F, M>(
            &accs,
            &mut ss,
            scratch,
            state_out,
            scale,
            Layout::Spread,
            dcap,
            g,
        );
    }
}

/// `S = Q K^T` on score tile `(srow, scol)` (of 16x16 tiles) of the block whose Q and K
/// rows are in `raw` from elements `qa` and `ka`, by this warp. Manual MMA makes `P = S * M`
/// on the tile's registers and stores it to `ps` in the storage type; WMMA stores S to `ss`
/// in fp32 for a pass that decays and masks it there.
#[cube]
#[allow(clippy::too_many_arguments)]
fn score_tile<F: Float, N: Size, M: TensorCore<F>>(
    raw: &SharedMemory<Vector<F, N>>,
    qa: usize,
    ka: usize,
    tile: (usize, usize),
    decay: &SharedMemory<f32>,
    ps: &mut SharedMemory<F>,
    pa: usize,
    ss: &mut SharedMemory<f32>,
    #[comptime] dcap: usize,
    #[comptime] vec: usize,
    #[comptime] ptx: bool,
) {
    let qks = comptime!(qk_stride(dcap));
    let (srow, scol) = tile;
    let mut acc = M::zero();
    #[unroll]
    for kk in 0..comptime!(dcap / T) {
        product::<F, M, Vector<F, N>, Vector<F, N>>(
            &mut acc,
            raw,
            qa + srow * T * qks + kk * T,
            comptime!(rows(qks, vec)),
            raw,
            ka + scol * T * qks + kk * T,
            comptime!(cols(qks, vec)),
        );
    }
    if comptime!(ptx) {
        M::decay_mask(&mut acc, decay, (srow - scol) * T);
        M::store_cast(ps, &acc, pa + srow * T * PS + scol * T, PS);
    } else {
        M::store(ss, &acc, srow * T * SS + scol * T, SS);
    }
}

/// Block `t0 .. t0 + m`'s output rows, staged in `ob` (`[BLK, ev]`, rows `vs` apart), to
/// this cube's value columns of `out`, coalesced, `vec` elements per store, by the units of
/// `crew` (the caller keeps the others out). SPIR-V (CubeCL 0.10) compiles a vector read of
/// scalar shared memory into a scalar load stored as a vector (infinities on Vulkan), so
/// WMMA gathers the elements instead.
#[cube]
#[allow(clippy::too_many_arguments)]
fn write_block<F: Float, N: Size>(
    out: &mut Tensor<Vector<F, N>>,
    ob: &SharedMemory<F>,
    at: usize,
    t0: usize,
    m: usize,
    sizes: (usize, usize, usize),
    #[comptime] vec: usize,
    #[comptime] reverse: bool,
    #[comptime] ptx: bool,
    #[comptime] g: Geometry,
    #[comptime] crew: Crew,
) {
    let (n, _, dv) = sizes;
    let bh = CUBE_POS_Y as usize;
    let c0 = CUBE_POS_X as usize * g.ev;
    let unit = UNIT_POS as usize - crew.first;
    let units = comptime!(crew.units);
    let vs = comptime!(g.vs());
    let staged = ob
        .slice(at, at + BLK * vs)
        .into_vectorized()
        .with_vector_size::<N>();
    let row_vecs = comptime!(g.ev / vec);
    #[unroll]
    for it in 0..comptime!((BLK * g.ev / vec).div_ceil(units)) {
        let idx = unit + it * units;
        let i = idx / row_vecs;
        let c = (idx % row_vecs) * vec;
        if within(idx, BLK * row_vecs, units) && i < m && c0 + c < dv {
            let mut x = Vector::<F, N>::new(F::new(0.0));
            if comptime!(ptx) {
                x = staged[(i * vs + c) / vec];
            } else {
                #[unroll]
                for l in 0..vec {
                    x[l] = ob[at + i * vs + c + l];
                }
            }
            out[(bh * n * dv + time_index(t0 + i, n, reverse) * dv + c0 + c) / vec] = x;
        }
    }
}

/// `decay[x] = lambda^x` for the distances `x < BLK` within a block, by the cube's `units`.
#[cube]
fn decay_table(decay: &mut SharedMemory<f32>, slope: f32, #[comptime] units: usize) {
    let mut x = UNIT_POS as usize;
    while x < BLK {
        decay[x] = (-slope * f32::cast_from(x as u32)).exp();
        x += units;
    }
}

/// For a block of `m` tokens, `tau` tokens after the state was last decayed in place
/// (`KV = lambda^tau U`): the growth `tau + m`, whether the block's decay folds into K's
/// weights instead of the state ([`fold_limit`]), and the exponents of the first token's
/// weights for Q (the inter term) and K (the update).
#[cube]
fn block_exponents(
    tau: u32,
    m: usize,
    slope: f32,
    fold_limit: f32,
    #[comptime] reverse: bool,
) -> (f32, bool, f32, f32) {
    let shift_inter = if reverse { 0u32 } else { 1u32 };
    let shift_update = if reverse { 1u32 } else { 0u32 };
    let grown = f32::cast_from(tau + m as u32);
    let fold = slope * grown <= fold_limit;
    let mut k_e0 = f32::cast_from(m as u32 - 1 + shift_update);
    if fold {
        k_e0 -= grown;
    }
    (grown, fold, f32::cast_from(tau + shift_inter), k_e0)
}

/// The weights of one block's tokens into `w[at ..]`, as [`scale_rows`] would scale its
/// rows (`Down` rows from `m` on get 0: they are zero, and their weight could overflow).
/// Written before the block's wait, by the first `BLK` units: the table is double-buffered
/// like the rows, so warps still on the block before read the other half.
#[cube]
fn token_weights(
    w: &mut SharedMemory<f32>,
    at: usize,
    slope: f32,
    e0: f32,
    m: usize,
    #[comptime] scale: Scale,
) {
    let i = UNIT_POS as usize;
    if i < BLK {
        let mut x = 0.0f32;
        if comptime!(scale == Scale::Up) {
            x = row_weight(slope, e0, i, scale);
        } else if i < m {
            x = row_weight(slope, e0, i, scale);
        }
        w[at + i] = x;
    }
}

/// Block `t0 .. t0 + m` of Q (when `with_q`), K (all `dcap` columns) and this cube's `ev`
/// columns of V into `raw` from element `at`, one after the other: one buffer of rows, copied
/// by `crew`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_block<F: Float, N: Size, C: Copier>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    raw: &mut SharedMemory<Vector<F, N>>,
    at: usize,
    t0: usize,
    m: usize,
    sizes: (usize, usize, usize),
    #[comptime] dcap: usize,
    #[comptime] vec: usize,
    #[comptime] reverse: bool,
    #[comptime] with_q: bool,
    #[comptime] g: Geometry,
    #[comptime] crew: Crew,
) {
    let qks = comptime!(qk_stride(dcap));
    let bh = CUBE_POS_Y as usize;
    let (n, dqk, dv) = sizes;
    let c0 = CUBE_POS_X as usize * g.ev;
    let mut ka = at;
    if comptime!(with_q) {
        load_rows::<F, N, C>(
            q,
            bh * n * dqk,
            n,
            dqk,
            0,
            t0,
            m,
            raw,
            at,
            dcap,
            qks,
            vec,
            reverse,
            crew,
        );
        ka += BLK * qks;
    }
    let va = ka + BLK * qks;
    load_rows::<F, N, C>(
        k,
        bh * n * dqk,
        n,
        dqk,
        0,
        t0,
        m,
        raw,
        ka,
        dcap,
        qks,
        vec,
        reverse,
        crew,
    );
    load_rows::<F, N, C>(
        v,
        bh * n * dv,
        n,
        dv,
        c0,
        t0,
        m,
        raw,
        va,
        comptime!(g.ev),
        comptime!(g.vs()),
        vec,
        reverse,
        crew,
    );
}

/// Block `t0 ..` (before `end`) into the first buffer of rows, by every unit, committed to
/// `gate`: a segment's first block, or with one buffer every block.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_first<F: Float, N: Size, C: Copier>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    raw: &mut SharedMemory<Vector<F, N>>,
    gate: &C::Gate,
    t0: usize,
    end: usize,
    sizes: (usize, usize, usize),
    #[comptime] dcap: usize,
    #[comptime] vec: usize,
    #[comptime] reverse: bool,
    #[comptime] with_q: bool,
    #[comptime] g: Geometry,
) {
    let m = min(BLK, end - t0);
    load_block::<F, N, C>(
        q,
        k,
        v,
        raw,
        0usize,
        t0,
        m,
        sizes,
        dcap,
        vec,
        reverse,
        with_q,
        g,
        g.everyone(),
    );
    C::commit(gate);
}

/// With two buffers of rows: block `next` (if it is before `end`) into the buffer the block
/// before used, copied by the units of `crew` while the others compute (the caller has
/// waited for that block, so every warp is done with its buffer).
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_ahead<F: Float, N: Size, C: Copier>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    raw: &mut SharedMemory<Vector<F, N>>,
    gate: &C::Gate,
    half: usize,
    next: usize,
    end: usize,
    sizes: (usize, usize, usize),
    #[comptime] dcap: usize,
    #[comptime] vec: usize,
    #[comptime] reverse: bool,
    #[comptime] with_q: bool,
    #[comptime] g: Geometry,
    #[comptime] crew: Crew,
) {
    if next < end && UNIT_POS as usize >= comptime!(crew.first) {
        let m = min(BLK, end - next);
        let at = (1usize - half) * comptime!(g.raw_set(dcap, with_q));
        load_block::<F, N, C>(
            q, k, v, raw, at, next, m, sizes, dcap, vec, reverse, with_q, g, crew,
        );
        C::commit(gate);
    }
}

/// With one buffer of rows: block `next` (if it is before `end`) into it once every warp is
/// done with the block there.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_after<F: Float, N: Size, C: Copier>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    raw: &mut SharedMemory<Vector<F, N>>,
    gate: &C::Gate,
    next: usize,
    end: usize,
    sizes: (usize, usize, usize),
    #[comptime] dcap: usize,
    #[comptime] vec: usize,
    #[comptime] reverse: bool,
    #[comptime] with_q: bool,
    #[comptime] g: Geometry,
) {
    if next < end {
        sync_cube();
        load_first::<F, N, C>(
            q, k, v, raw, gate, next, end, sizes, dcap, vec, reverse, with_q, g,
        );
    }
}
