//! The blockwise sweep on tensor cores (CubeCL `cmma`: WMMA 16x16x16, f16/bf16 operands,
//! fp32 accumulators). Same contract and modes as the scalar [`super::kernel::sweep_kernel`];
//! chosen when the storage dtype is f16/bf16 and the device has cooperative matrices.
//!
//! Per block of `BLK` tokens, with the cube's `[dcap, EV]` state slice held in fp32
//! accumulator fragments (each warp keeps its tiles in registers for the whole sweep):
//! 1. `S = Q K^T` (lower-triangle tiles only) into shared fp32;
//! 2. `P = S * M` in the storage type;
//! 3. `O = Q KV + P V` (one accumulator per output tile, `diag(lambda^(i+1)) Q` made on
//!    load next to the raw Q the scores need, KV read from a storage-type snapshot), then
//!    `KV <- lambda^m KV + K^T diag(lambda^(m-1-j)) V`, each tile's accumulator also stored
//!    as the next block's snapshot;
//! 4. the output tile leaves through shared memory, coalesced.
//! The decays are folded into the operands, so no fragment is ever indexed element-wise;
//! even the state's own decay `lambda^m` is, while the storage type's range allows (see
//! [`fold_limit`]), folded into K instead of applied to the state; past that limit (and
//! every block for f16) the state's tiles are scaled on a round trip through shared memory.
//! The segments' local-state pass (`Mode::State`) needs no state decay per block: see
//! [`local_state`].

use cubecl::cmma::{self, Matrix, MatrixIdent, MatrixLayout};
use cubecl::prelude::*;

use super::kernel::{Mode, entering_state};

/// Tokens per block.
pub const BLK: usize = 32;
/// Value columns per cube.
pub const EV: usize = 64;
/// WMMA tile edge.
const T: usize = 16;
/// Byte alignment of the shared buffers: WMMA loads and stores need 32-byte aligned tiles.
const ALIGN: usize = 32;
/// Row padding of the shared tiles, in elements: 16 bytes for the storage type, 16 bytes
/// for fp32. Unpadded rows are 128 or 256 bytes apart, so the 8 rows a WMMA fragment load
/// reads at once all start in the same bank (an 8-way conflict); 16 more bytes per row
/// spread them over all 32 banks. Strides stay multiples of 16 bytes, as WMMA requires.
const PAD: usize = 8;
const PAD_F32: usize = 4;
/// Row strides: Q and K (`dcap` wide), V and the state snapshot (`EV`), P (`BLK`).
const fn qk_stride(dcap: usize) -> usize {
    dcap + PAD
}
const VS: usize = EV + PAD;
const PS: usize = BLK + PAD;
/// fp32 row strides: scores (`BLK` wide), output staging and the state (`EV`).
const SS: usize = BLK + PAD_F32;
const OS: usize = EV + PAD_F32;
/// Warps' scratch tiles: fp32 16x16, rows `XS` apart. The state's fragments pass through
/// them when they are loaded, decayed in place or written out (a fragment's elements are
/// only reachable through shared memory).
const XS: usize = T + PAD_F32;
const SCRATCH: usize = T * XS;
const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}
/// Floats of the staging buffer: the scores, then the output tile on its way out, and
/// between blocks every warp's scratch tile.
const STAGE: usize = max(max(BLK * SS, BLK * OS), WARPS as usize * SCRATCH);
/// Warps (planes of 32 units) per cube.
pub const WARPS: u32 = 8;
const UNITS: usize = 32 * WARPS as usize;

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

/// Bytes of shared memory one cube uses with a qk dim padded to `dcap` and `elem`-byte
/// storage: the larger of the output pass and the local-state pass.
pub fn shared_bytes(dcap: usize, elem: usize) -> usize {
    let outputs =
        (4 * BLK * qk_stride(dcap) + BLK * VS + BLK * PS + dcap * VS) * elem + (STAGE + BLK) * 4;
    let local = (BLK * qk_stride(dcap) + BLK * VS) * elem + dcap * OS * 4;
    outputs.max(local)
}

/// Time index of the `i`-th token in sweep order.
#[cube]
fn time_index(i: usize, n: usize, #[comptime] reverse: bool) -> usize {
    if reverse { n - 1 - i } else { i }
}

/// One past the last element of a 16x16 tile at `at` with rows (or columns) `stride` apart.
#[cube]
fn tile_end(at: usize, stride: usize) -> usize {
    at + (T - 1) * stride + T
}

#[cube]
fn zero_acc() -> Matrix<f32> {
    Matrix::<f32>::from_value(
        MatrixIdent::Accumulator,
        T,
        T,
        T,
        MatrixLayout::Undefined,
        0.0,
    )
}

/// A 16x16 fragment into shared rows `stride` apart, row-major, from element `at`.
#[cube]
fn store_tile<C: CubePrimitive, O: CubePrimitive>(
    dst: &mut SharedMemory<O>,
    mat: &Matrix<C>,
    at: usize,
    #[comptime] stride: usize,
) {
    cmma::store(
        &mut dst.slice_mut(at, tile_end(at, stride)),
        mat,
        stride as u32,
        MatrixLayout::RowMajor,
    );
}

/// `acc += A B` for one 16x16x16 step, operands read from shared memory.
#[cube]
#[allow(clippy::too_many_arguments)]
fn mma<F: Float>(
    acc: &Matrix<f32>,
    a: &SharedMemory<F>,
    a_at: usize,
    a_stride: usize,
    #[comptime] a_layout: MatrixLayout,
    b: &SharedMemory<F>,
    b_at: usize,
    b_stride: usize,
    #[comptime] b_layout: MatrixLayout,
) {
    let lhs = unsafe { Matrix::<F>::uninitialized(MatrixIdent::A, T, T, T, a_layout) };
    let rhs = unsafe { Matrix::<F>::uninitialized(MatrixIdent::B, T, T, T, b_layout) };
    cmma::load(
        &lhs,
        &a.slice(a_at, tile_end(a_at, a_stride)),
        a_stride as u32,
    );
    cmma::load(
        &rhs,
        &b.slice(b_at, tile_end(b_at, b_stride)),
        b_stride as u32,
    );
    cmma::execute::<F, F, f32, f32>(&lhs, &rhs, acc, acc);
}

/// How [`store_block`] scales row `i` of a block on the way in (from fp32, rounded once).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Scale {
    None,
    /// `lambda^(e0 - i)`: K for the state update.
    Down,
    /// `lambda^(e0 + i)`: Q for the inter term.
    Up,
}

/// Vectors of a block each unit fetches: `BLK` rows of `cols` columns, `vec` per vector.
const fn fetches(cols: usize, vec: usize) -> usize {
    (BLK * cols / vec).div_ceil(UNITS)
}

/// This unit's vectors of rows `t0 .. t0 + m` (sweep order) of `src` `[.., n, width]`,
/// columns `c0 .. c0 + cols`, `vec` elements each; zeros past `m` and past `width`. Every
/// load of a block is issued before any is stored, so a block's loads wait on memory once,
/// and Q and K, which the output pass stores twice (raw and decayed), are read once.
#[cube]
#[allow(clippy::too_many_arguments)]
fn fetch_block<F: Float, N: Size>(
    src: &Tensor<Vector<F, N>>,
    base: usize,
    width: usize,
    c0: usize,
    t0: usize,
    m: usize,
    #[comptime] cols: usize,
    #[comptime] vec: usize,
    #[comptime] reverse: bool,
) -> Sequence<Vector<F, N>> {
    let unit = UNIT_POS as usize;
    let n = src.shape(2);
    let row_vecs = comptime!(cols / vec);
    let mut block = Sequence::new();
    #[unroll]
    for it in 0..comptime!(fetches(cols, vec)) {
        let idx = unit + it * UNITS;
        let i = idx / row_vecs;
        let c = (idx % row_vecs) * vec;
        let mut x = Vector::<F, N>::new(F::new(0.0));
        if idx < BLK * row_vecs && i < m && c0 + c < width {
            x = src[(base + time_index(t0 + i, n, reverse) * width + c0 + c) / vec];
        }
        block.push(x);
    }
    block
}

/// A block from [`fetch_block`] into shared rows `stride` apart, row `i` scaled by
/// `scale` (rows past `m` stay zero), one `vec`-wide store per vector: element by element,
/// 32 lanes storing 2 bytes 16 bytes apart hit 8 banks 4 ways (ncu of v9: 2.5-way
/// conflicts on average over all shared stores).
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_block<F: Float, N: Size>(
    block: &Sequence<Vector<F, N>>,
    dst: &mut SharedMemory<F>,
    m: usize,
    slope: f32,
    e0: f32,
    #[comptime] cols: usize,
    #[comptime] stride: usize,
    #[comptime] vec: usize,
    #[comptime] scale: Scale,
) {
    let unit = UNIT_POS as usize;
    let row_vecs = comptime!(cols / vec);
    let mut dst = dst
        .slice_mut(0, BLK * stride)
        .into_vectorized()
        .with_vector_size::<N>();
    #[unroll]
    for it in 0..comptime!(fetches(cols, vec)) {
        let idx = unit + it * UNITS;
        if idx < BLK * row_vecs {
            let i = idx / row_vecs;
            let c = (idx % row_vecs) * vec;
            let mut x = *block.index(it);
            if comptime!(scale != Scale::None) {
                let mut w = 1.0f32;
                if i < m {
                    let fi = f32::cast_from(i as u32);
                    if comptime!(scale == Scale::Down) {
                        w = (-slope * (e0 - fi)).exp();
                    } else {
                        w = (-slope * (e0 + fi)).exp();
                    }
                }
                #[unroll]
                for l in 0..vec {
                    x[l] = F::cast_from(f32::cast_from(x[l]) * w);
                }
            }
            dst[(i * stride + c) / vec] = x;
        }
    }
}

/// This unit's vectors of rows `t0 .. t0 + m` of this cube's `EV` columns of V.
#[cube]
fn fetch_values<F: Float, N: Size>(
    v: &Tensor<Vector<F, N>>,
    t0: usize,
    m: usize,
    #[comptime] vec: usize,
    #[comptime] reverse: bool,
) -> Sequence<Vector<F, N>> {
    let dv = v.shape(3);
    let base = CUBE_POS_Y as usize * v.shape(2) * dv;
    fetch_block::<F, N>(
        v,
        base,
        dv,
        CUBE_POS_X as usize * EV,
        t0,
        m,
        EV,
        vec,
        reverse,
    )
}

/// The `[dqk, EV]` slice of the state, staged in shared fp32 rows `OS` apart, to its place
/// in `state_out` `[S, B, H, dqk, dv]`, times `scale`.
#[cube]
fn store_state(
    kv: &SharedMemory<f32>,
    state_out: &mut Tensor<f32>,
    scale: f32,
    #[comptime] dcap: usize,
) {
    let unit = UNIT_POS as usize;
    let bh = CUBE_POS_Y as usize;
    let c0 = CUBE_POS_X as usize * EV;
    let base = (CUBE_POS_Z as usize * CUBE_COUNT_Y as usize + bh) * state_out.shape(3);
    let dqk = state_out.shape(3);
    let dv = state_out.shape(4);
    let mut idx = unit;
    while idx < dcap * EV {
        let row = idx / EV;
        let col = idx % EV;
        if row < dqk && c0 + col < dv {
            state_out[(base + row) * dv + c0 + col] = kv[row * OS + col] * scale;
        }
        idx += UNITS;
    }
}

/// See the module docs; arguments as [`super::kernel::sweep_kernel`]'s, with the qk dim
/// padded to `dcap` (a multiple of 16), q/k/v/out read and written `vec` (= `N`) elements at
/// a time (`vec` divides both head dims), and `CubeDim = (32, WARPS)`.
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
    #[define(F)] _dtype: StorageType,
) {
    if comptime!(mode == Mode::State) {
        local_state::<F, N>(k, v, slopes, state_out, seg_len, dcap, vec, reverse);
    } else {
        outputs::<F, N>(
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
        );
    }
}

/// `KV += K^T V` on state tile `tile` (`EV / T` tiles per row of tiles): K `[BLK, dcap]`
/// and V `[BLK, EV]` in shared memory, the tile's accumulator in registers.
#[cube]
fn update_tile<F: Float>(
    acc: &Matrix<f32>,
    ks: &SharedMemory<F>,
    vs: &SharedMemory<F>,
    tile: usize,
    #[comptime] dcap: usize,
) {
    let qks = comptime!(qk_stride(dcap));
    let r = tile / (EV / T);
    let c = tile % (EV / T);
    for kk in 0..BLK / T {
        mma::<F>(
            acc,
            ks,
            kk * T * qks + r * T,
            qks,
            MatrixLayout::ColMajor,
            vs,
            kk * T * VS + c * T,
            VS,
            MatrixLayout::RowMajor,
        );
    }
}

/// `Mode::State`: the segment's own state from zero, `sum_p lambda^(L-1-p) k_p^T v_p` over
/// its `L` tokens (`lambda^(L-p)` when `reverse`). Every term's decay is known when its
/// block arrives, so it is folded into K on load and the accumulators stay in registers for
/// the whole segment: no per-block pass over a shared-memory state, and less shared memory.
#[cube]
#[allow(clippy::too_many_arguments)]
fn local_state<F: Float, N: Size>(
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    slopes: &Tensor<f32>,
    state_out: &mut Tensor<f32>,
    seg_len: usize,
    #[comptime] dcap: usize,
    #[comptime] vec: usize,
    #[comptime] reverse: bool,
) {
    let warp = UNIT_POS_Y as usize;
    let bh = CUBE_POS_Y as usize;
    let n = k.shape(2);
    let dqk = k.shape(3);
    let seg_start = CUBE_POS_Z as usize * seg_len;
    let seg_end = min(n, seg_start + seg_len);
    let slope = slopes[bh % k.shape(1)];
    let shift = if reverse { 1usize } else { 0usize };

    let qks = comptime!(qk_stride(dcap));
    let mut ks = SharedMemory::<F>::new_aligned(BLK * qks, ALIGN);
    let mut vs = SharedMemory::<F>::new_aligned(BLK * VS, ALIGN);
    let mut kv = SharedMemory::<f32>::new_aligned(dcap * OS, ALIGN);

    let v_tiles = comptime!(EV / T);
    let tiles = comptime!(dcap / T * EV / T);
    let per_warp = comptime!(tiles.div_ceil(WARPS as usize));
    let mut accs = Sequence::<Matrix<f32>>::new();
    #[unroll]
    for _ in 0..per_warp {
        accs.push(zero_acc());
    }

    let mut t0 = seg_start;
    while t0 < seg_end {
        let m = min(BLK, seg_end - t0);
        sync_cube();
        let kb = fetch_block::<F, N>(k, bh * n * dqk, dqk, 0, t0, m, dcap, vec, reverse);
        let vb = fetch_values::<F, N>(v, t0, m, vec, reverse);
        store_block::<F, N>(
            &kb,
            &mut ks,
            m,
            slope,
            f32::cast_from((seg_end - 1 - t0 + shift) as u32),
            dcap,
            qks,
            vec,
            Scale::Down,
        );
        store_block::<F, N>(&vb, &mut vs, m, 0.0, 0.0, EV, VS, vec, Scale::None);
        sync_cube();
        #[unroll]
        for s in 0..per_warp {
            let tile = warp + s * WARPS as usize;
            if tile < tiles {
                update_tile::<F>(accs.index(s), &ks, &vs, tile, dcap);
            }
        }
        t0 += BLK;
    }

    #[unroll]
    for s in 0..per_warp {
        let tile = warp + s * WARPS as usize;
        if tile < tiles {
            let at = (tile / v_tiles) * T * OS + (tile % v_tiles) * T;
            store_tile(&mut kv, accs.index(s), at, OS);
        }
    }
    sync_cube();
    store_state(&kv, state_out, 1.0, dcap);
}

/// `Mode::Output`: steps 1-4 of the module docs for every block of the segment, from the
/// state entering it.
#[cube]
#[allow(clippy::too_many_arguments)]
fn outputs<F: Float, N: Size>(
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
) {
    let warps = WARPS as usize;
    let units = UNITS;
    let unit = UNIT_POS as usize;
    let warp = UNIT_POS_Y as usize;
    let bh = CUBE_POS_Y as usize;
    let c0 = CUBE_POS_X as usize * EV;
    let segment = CUBE_POS_Z as usize;

    let heads = q.shape(1);
    let n = q.shape(2);
    let dqk = q.shape(3);
    let dv = v.shape(3);
    let head = bh % heads;
    let batch = bh / heads;
    let seg_start = segment * seg_len;
    let seg_end = min(n, seg_start + seg_len);

    let qks = comptime!(qk_stride(dcap));
    let mut qs = SharedMemory::<F>::new_aligned(BLK * qks, ALIGN);
    let mut ks = SharedMemory::<F>::new_aligned(BLK * qks, ALIGN);
    // Q and K with their decays folded in, for the inter term and the state update.
    let mut qd = SharedMemory::<F>::new_aligned(BLK * qks, ALIGN);
    let mut kd = SharedMemory::<F>::new_aligned(BLK * qks, ALIGN);
    let mut vs = SharedMemory::<F>::new_aligned(BLK * VS, ALIGN);
    let mut ps = SharedMemory::<F>::new_aligned(BLK * PS, ALIGN);
    let mut kvb = SharedMemory::<F>::new_aligned(dcap * VS, ALIGN);
    // Scores, then the output tile on its way out; the warps' scratch tiles between blocks.
    let mut ss = SharedMemory::<f32>::new_aligned(STAGE, ALIGN);
    let mut decay = SharedMemory::<f32>::new(BLK);

    let slope = slopes[head];
    let mut x = unit;
    while x < BLK {
        decay[x] = (-slope * f32::cast_from(x as u32)).exp();
        x += units;
    }

    let shift_inter = if reverse { 0u32 } else { 1u32 };
    let shift_update = if reverse { 1u32 } else { 0u32 };
    let row_tiles = BLK / T;
    let d_tiles = dcap / T;
    let v_tiles = EV / T;
    let qk_base = bh * n * dqk;
    // The state: warp `w` holds tiles `w, w + WARPS, ..` (`v_tiles` per row of tiles) in fp32
    // fragments for the whole sweep, so no block reads or writes it in shared memory.
    let tiles = comptime!(dcap / T * EV / T);
    let per_warp = comptime!(tiles.div_ceil(WARPS as usize));
    let lane = UNIT_POS_X as usize;
    let scratch = warp * SCRATCH;
    let mut accs = Sequence::<Matrix<f32>>::new();
    #[unroll]
    for _ in 0..per_warp {
        accs.push(zero_acc());
    }
    if has_state {
        #[unroll]
        for s in 0..per_warp {
            let tile = warp + s * warps;
            if tile < tiles {
                let r0 = (tile / v_tiles) * T;
                let col0 = (tile % v_tiles) * T;
                #[unroll]
                for e in 0..T * T / 32 {
                    let idx = lane + e * 32;
                    let row = r0 + idx / T;
                    let col = col0 + idx % T;
                    let mut init = 0.0f32;
                    if row < dqk && c0 + col < dv {
                        init = entering_state(state_in, segment, batch, head, row, c0 + col);
                    }
                    ss[scratch + (idx / T) * XS + idx % T] = init;
                    kvb[row * VS + col] = F::cast_from(init);
                }
                sync_plane();
                load_scratch(&mut ss, accs.index(s), scratch);
            }
        }
    } else {
        let mut idx = unit;
        while idx < dcap * VS {
            kvb[idx] = F::new(0.0);
            idx += units;
        }
    }

    // The state is kept as `U = KV / lambda^tau`, `tau` tokens after it was last decayed in
    // place: a block's decay `lambda^m` goes into the scale of its K rows (and the next Q
    // rows) instead of a pass over the whole fp32 state, for as long as the growth
    // `lambda^-(tau + m)` stays below `e^fold_limit`, which the launch picks per dtype.
    let mut tau = 0u32;
    let mut t0 = seg_start;
    while t0 < seg_end {
        let m = min(BLK, seg_end - t0);
        let grown = f32::cast_from(tau + m as u32);
        let fold = slope * grown <= fold_limit;
        let mut k_e0 = f32::cast_from(m as u32 - 1 + shift_update);
        if fold {
            k_e0 -= grown;
        }
        sync_cube();
        let qb = fetch_block::<F, N>(q, qk_base, dqk, 0, t0, m, dcap, vec, reverse);
        let kb = fetch_block::<F, N>(k, qk_base, dqk, 0, t0, m, dcap, vec, reverse);
        let vb = fetch_values::<F, N>(v, t0, m, vec, reverse);
        let q_e0 = f32::cast_from(tau + shift_inter);
        store_block::<F, N>(&qb, &mut qs, m, slope, 0.0, dcap, qks, vec, Scale::None);
        store_block::<F, N>(&qb, &mut qd, m, slope, q_e0, dcap, qks, vec, Scale::Up);
        store_block::<F, N>(&kb, &mut ks, m, slope, 0.0, dcap, qks, vec, Scale::None);
        store_block::<F, N>(&kb, &mut kd, m, slope, k_e0, dcap, qks, vec, Scale::Down);
        store_block::<F, N>(&vb, &mut vs, m, 0.0, 0.0, EV, VS, vec, Scale::None);
        if !fold {
            // `KV <- lambda^m KV` in place, tile by tile through the warp's scratch (`kvb`
            // already holds the state the block's inter term reads).
            let lm = (-slope * grown).exp();
            #[unroll]
            for s in 0..per_warp {
                if warp + s * warps < tiles {
                    store_tile(&mut ss, accs.index(s), scratch, XS);
                    sync_plane();
                    #[unroll]
                    for e in 0..T * T / 32 {
                        let idx = lane + e * 32;
                        let at = scratch + (idx / T) * XS + idx % T;
                        ss[at] = ss[at] * lm;
                    }
                    sync_plane();
                    load_scratch(&mut ss, accs.index(s), scratch);
                }
            }
        }
        sync_cube();

        // 1. S = Q K^T on the tiles at or below the diagonal.
        let mut tile = warp;
        while tile < row_tiles * row_tiles {
            let ti = tile / row_tiles;
            let tj = tile % row_tiles;
            if tj <= ti {
                let acc = zero_acc();
                for kk in 0..d_tiles {
                    mma::<F>(
                        &acc,
                        &qs,
                        ti * T * qks + kk * T,
                        qks,
                        MatrixLayout::RowMajor,
                        &ks,
                        tj * T * qks + kk * T,
                        qks,
                        MatrixLayout::ColMajor,
                    );
                }
                let at = ti * T * SS + tj * T;
                store_tile(&mut ss, &acc, at, SS);
            }
            tile += warps;
        }
        sync_cube();

        // 2. P = S * M in the storage type.
        let mut idx = unit;
        while idx < BLK * BLK {
            let i = idx / BLK;
            let j = idx % BLK;
            let mut p = 0.0f32;
            if j <= i {
                p = ss[i * SS + j] * decay[i - j];
            }
            ps[i * PS + j] = F::cast_from(p);
            idx += units;
        }
        sync_cube();

        // 3a. O = Q KV + P V.
        let mut tile = warp;
        while tile < row_tiles * v_tiles {
            let ti = tile / v_tiles;
            let tj = tile % v_tiles;
            let acc = zero_acc();
            for kk in 0..d_tiles {
                mma::<F>(
                    &acc,
                    &qd,
                    ti * T * qks + kk * T,
                    qks,
                    MatrixLayout::RowMajor,
                    &kvb,
                    kk * T * VS + tj * T,
                    VS,
                    MatrixLayout::RowMajor,
                );
            }
            for kk in 0..ti + 1 {
                mma::<F>(
                    &acc,
                    &ps,
                    ti * T * PS + kk * T,
                    PS,
                    MatrixLayout::RowMajor,
                    &vs,
                    kk * T * VS + tj * T,
                    VS,
                    MatrixLayout::RowMajor,
                );
            }
            let at = ti * T * OS + tj * T;
            store_tile(&mut ss, &acc, at, OS);
            tile += warps;
        }
        sync_cube();

        // 3b. KV += K^T V on the warp's own tiles, and the storage-type snapshot of each for
        // the next block's inter term, straight from the fragment.
        #[unroll]
        for s in 0..per_warp {
            let tile = warp + s * warps;
            if tile < tiles {
                update_tile::<F>(accs.index(s), &kd, &vs, tile, dcap);
                let r = tile / v_tiles;
                let c = tile % v_tiles;
                let snapshot = cmma::cast::<f32, F>(accs.index(s));
                store_tile(&mut kvb, &snapshot, r * T * VS + c * T, VS);
            }
        }

        // 4. The output tile (staged in 3a), coalesced, `vec` elements per store.
        let mut idx = unit;
        while idx < BLK * EV / vec {
            let i = idx / (EV / vec);
            let c = (idx % (EV / vec)) * vec;
            if i < m && c0 + c < dv {
                let mut o = Vector::<F, N>::new(F::new(0.0));
                #[unroll]
                for l in 0..vec {
                    o[l] = F::cast_from(ss[i * OS + c + l]);
                }
                out[(bh * n * dv + time_index(t0 + i, n, reverse) * dv + c0 + c) / vec] = o;
            }
            idx += units;
        }
        if fold {
            tau += m as u32;
        } else {
            tau = 0;
        }
        t0 += BLK;
    }
    sync_cube();

    if write_state {
        // `KV = lambda^tau U`, tile by tile through the warp's scratch, to its place in
        // `state_out` `[S, B, H, dqk, dv]`.
        let scale = (-slope * f32::cast_from(tau)).exp();
        let base = (CUBE_POS_Z as usize * CUBE_COUNT_Y as usize + bh) * dqk;
        #[unroll]
        for s in 0..per_warp {
            let tile = warp + s * warps;
            if tile < tiles {
                store_tile(&mut ss, accs.index(s), scratch, XS);
                sync_plane();
                let r0 = (tile / v_tiles) * T;
                let col0 = (tile % v_tiles) * T;
                #[unroll]
                for e in 0..T * T / 32 {
                    let idx = lane + e * 32;
                    let row = r0 + idx / T;
                    let col = col0 + idx % T;
                    if row < dqk && c0 + col < dv {
                        state_out[(base + row) * dv + c0 + col] =
                            ss[scratch + (idx / T) * XS + idx % T] * scale;
                    }
                }
                sync_plane();
            }
        }
    }
}

/// Loads the warp's scratch tile into `acc`; the scratch is free again on return.
#[cube]
fn load_scratch(ss: &mut SharedMemory<f32>, acc: &Matrix<f32>, scratch: usize) {
    cmma::load_with_layout(
        acc,
        &ss.slice(scratch, tile_end(scratch, XS)),
        XS as u32,
        MatrixLayout::RowMajor,
    );
    sync_plane();
}
