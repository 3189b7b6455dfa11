//! The blockwise sweep on tensor cores (16x16x16 steps, f16/bf16 operands, fp32
//! accumulators; [`mma`]: manual MMA on CUDA, WMMA elsewhere). Same contract and modes as
//! the scalar [`super::kernel::sweep_kernel`]; chosen when the storage dtype is f16/bf16
//! and the device has cooperative matrices.
//!
//! Per block of `BLK` tokens, with the cube's `[dcap, EV]` state slice held in fp32
//! accumulator fragments (each warp keeps its tiles in registers for the whole sweep):
//! 1. `S = Q K^T` (lower-triangle tiles only);
//! 2. `P = S * M` in the storage type (manual MMA: on the tile's registers; WMMA: through
//!    shared fp32);
//! 3. `O = diag(lambda^(i+1)) Q KV + P V` (one accumulator per output tile, KV read from a
//!    storage-type snapshot), then `KV <- lambda^m KV + K^T diag(lambda^(m-1-j)) V`, each
//!    tile's accumulator also stored as the next block's snapshot;
//! 4. the output tile leaves through shared memory, coalesced.
//! Block `i + 1`'s raw rows are copied in while block `i` computes ([`load`]).
//! Where the decays go: manual MMA knows which rows a lane's registers hold, so Q's decay
//! scales the rows of the `Q KV` accumulator and K's weights V's registers, from per-block
//! tables ([`token_weights`]); WMMA fragments are opaque, so its sweep makes decayed copies
//! of Q and K in shared memory ([`scale_rows`]). The state's own decay `lambda^m` is, while
//! the storage type's range allows (see [`fold_limit`]), folded into K's weights instead of
//! applied to the state; past that limit (and every block for f16) the state's tiles are
//! scaled in place (on registers, or for WMMA on a round trip through shared memory).
//! The segments' local-state pass (`Mode::State`) needs no state decay per block: see
//! [`local_state`].

use cubecl::cmma::MatrixLayout;
use cubecl::prelude::*;

mod load;
mod mma;

use super::kernel::{Mode, entering_state, time_index};
use load::{AsyncCopy, Copier, Scale, Synchronous, load_rows, row_weight, scale_rows};
use mma::{Operand, Ptx, T, TensorCore, Wmma, product};

/// Tokens per block.
pub const BLK: usize = 32;
/// Value columns per cube.
pub const EV: usize = 64;
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
/// Elements of one half of the raw double buffer: a block of Q (when `with_q`), K and V.
const fn raw_set(dcap: usize, with_q: bool) -> usize {
    let qk = BLK * qk_stride(dcap);
    (if with_q { 2 * qk } else { qk }) + BLK * VS
}
const VS: usize = EV + PAD;
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
/// Floats of the staging buffer: the scores (WMMA), and between blocks every warp's
/// scratch tile.
const STAGE: usize = max(BLK * SS, WARPS as usize * SCRATCH);
/// Warps (planes of 32 units) per cube.
pub const WARPS: u32 = 8;
// `update` loads each V operand once per warp: all of a warp's state tiles (`warp + s
// WARPS`) must sit in the same column of tiles.
const _: () = assert!(WARPS as usize % (EV / T) == 0);
const UNITS: usize = 32 * WARPS as usize;

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

/// Elements of each decayed copy of Q or K: WMMA's products read them; manual MMA puts the
/// decays on registers instead, and its kernel only declares a minimal buffer.
const fn decayed_len(dcap: usize, ptx: bool) -> usize {
    if ptx { ALIGN } else { BLK * qk_stride(dcap) }
}

/// Floats of the token-weight tables: `tables` per block (Q's and K's, or K's), for each
/// half of the double buffer; manual MMA only.
const fn weights_len(ptx: bool, tables: usize) -> usize {
    if ptx { 2 * tables * BLK } else { ALIGN }
}

/// Bytes of shared memory one cube uses with a qk dim padded to `dcap` and `elem`-byte
/// storage: the larger of the output pass and the local-state pass (each with its raw
/// double buffer, decayed copies or weight tables, and 16 bytes for the copy barrier).
pub fn shared_bytes(dcap: usize, elem: usize, ptx: bool) -> usize {
    let qk = decayed_len(dcap, ptx);
    let outputs = (2 * raw_set(dcap, true) + 2 * qk + BLK * PS + dcap * VS + BLK * VS) * elem
        + (STAGE + BLK + weights_len(ptx, 2)) * 4;
    let local = (2 * raw_set(dcap, false) + qk) * elem
        + (WARPS as usize * SCRATCH + weights_len(ptx, 1)) * 4;
    outputs.max(local) + 16
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

/// The warp's state tiles, times `scale`, to their place in `state_out` `[S, B, H, dqk, dv]`
/// (segment `CUBE_POS_Z`), each through the warp's fp32 scratch tile at `scratch`: a
/// fragment's elements are only reachable through shared memory, and a tile at a time keeps
/// that to `SCRATCH` floats per warp instead of a staged `[dcap, EV]` slice.
#[cube]
fn store_state<F: Float, M: TensorCore<F>>(
    accs: &Sequence<M::Acc>,
    ss: &mut SharedMemory<f32>,
    scratch: usize,
    state_out: &mut Tensor<f32>,
    scale: f32,
    #[comptime] dcap: usize,
) {
    let warp = UNIT_POS_Y as usize;
    let lane = UNIT_POS_X as usize;
    let (dqk, dv) = (state_out.shape(3), state_out.shape(4));
    let c0 = CUBE_POS_X as usize * EV;
    let base = (CUBE_POS_Z as usize * CUBE_COUNT_Y as usize + CUBE_POS_Y as usize) * dqk;
    let v_tiles = comptime!(EV / T);
    let tiles = comptime!(dcap / T * EV / T);
    #[unroll]
    for s in 0..comptime!(tiles.div_ceil(WARPS as usize)) {
        let tile = warp + s * WARPS as usize;
        if within(tile, tiles, WARPS as usize) {
            M::store(ss, accs.index(s), scratch, XS);
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

/// See the module docs; arguments as [`super::kernel::sweep_kernel`]'s, with the qk dim
/// padded to `dcap` (a multiple of 16), q/k/v/out read and written `vec` (= `N`) elements at
/// a time (`vec` divides both head dims), and `CubeDim = (32, WARPS)`. `prefetch`: copy
/// blocks with `cp.async` ([`AsyncCopy`]: needs the device's `copy_async` and `vec >= 2`);
/// `ptx`: products by manual MMA ([`Ptx`]: CUDA's `mma.sync` and `ldmatrix`), else WMMA.
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
    });
    if comptime!(prefetch) {
        if comptime!(ptx) {
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
        );
    }
}

/// One block of `KV += K^T diag(w) V` on the warp's state tiles (`accs[s]` is tile
/// `warp + s WARPS`, `EV / T` tiles per row of tiles). `WARPS` is a multiple of `EV / T`,
/// so a warp's tiles share their columns of V: each V operand is loaded once for all of
/// them. With `ptx`, `k` holds the raw block from element `ka` and the token weights
/// `w[wa ..]` go onto V's registers; otherwise `k` holds K already weighted (the decayed
/// copy) and `w` is unused. V `[BLK, EV]` is in `raw` from element `va`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn update<F: Float, N: Size, M: TensorCore<F>, K: CubePrimitive>(
    accs: &mut Sequence<M::Acc>,
    k: &SharedMemory<K>,
    ka: usize,
    raw: &SharedMemory<Vector<F, N>>,
    va: usize,
    w: &SharedMemory<f32>,
    wa: usize,
    #[comptime] dcap: usize,
    #[comptime] vec: usize,
    #[comptime] ptx: bool,
) {
    let warp = UNIT_POS_Y as usize;
    let qks = comptime!(qk_stride(dcap));
    let tiles = comptime!(dcap / T * EV / T);
    let per_warp = comptime!(tiles.div_ceil(WARPS as usize));
    let k_vec = comptime!(if ptx { vec } else { 1 });
    let c = warp % (EV / T);
    #[unroll]
    for kk in 0..BLK / T {
        let mut b =
            M::load_rhs::<Vector<F, N>>(raw, va + kk * T * VS + c * T, comptime!(rows(VS, vec)));
        if comptime!(ptx) {
            M::weight_rhs(&mut b, w, wa + kk * T);
        }
        #[unroll]
        for s in 0..per_warp {
            let tile = warp + s * WARPS as usize;
            if within(tile, tiles, WARPS as usize) {
                let r = tile / (EV / T);
                M::mma_rhs::<K>(
                    accs.index_mut(s),
                    k,
                    ka + kk * T * qks + r * T,
                    comptime!(cols(qks, k_vec)),
                    &b,
                );
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
) {
    let warp = UNIT_POS_Y as usize;
    let bh = CUBE_POS_Y as usize;
    let n = k.shape(2);
    let seg_start = CUBE_POS_Z as usize * seg_len;
    let seg_end = min(n, seg_start + seg_len);
    let slope = slopes[bh % k.shape(1)];
    let shift = if reverse { 1usize } else { 0usize };

    let qks = comptime!(qk_stride(dcap));
    // Raw K then V, twice: the block being computed and the next one arriving.
    let set = comptime!(raw_set(dcap, false));
    let mut raw = SharedMemory::<Vector<F, N>>::new_aligned(comptime!(2 * set / vec), ALIGN);
    let mut kd = SharedMemory::<F>::new_aligned(comptime!(decayed_len(dcap, ptx)), ALIGN);
    let mut ss = SharedMemory::<f32>::new_aligned(comptime!(WARPS as usize * SCRATCH), ALIGN);
    let mut w = SharedMemory::<f32>::new_aligned(comptime!(weights_len(ptx, 1)), ALIGN);
    let gate = C::create();

    let tiles = comptime!(dcap / T * EV / T);
    let per_warp = comptime!(tiles.div_ceil(WARPS as usize));
    let mut accs = Sequence::<M::Acc>::new();
    #[unroll]
    for _ in 0..per_warp {
        accs.push(M::zero());
    }

    let mut t0 = seg_start;
    let mut half = 0usize;
    let first = min(BLK, seg_end - t0);
    load_block::<F, N, C>(
        k, k, v, &mut raw, 0usize, t0, first, dcap, vec, reverse, false,
    );
    C::commit(&gate);
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
        if next < seg_end {
            let at = (1usize - half) * set;
            let mn = min(BLK, seg_end - next);
            load_block::<F, N, C>(k, k, v, &mut raw, at, next, mn, dcap, vec, reverse, false);
            C::commit(&gate);
        }
        let at = half * set;
        if comptime!(ptx) {
            update::<F, N, M, Vector<F, N>>(
                &mut accs,
                &raw,
                at,
                &raw,
                at + va,
                &w,
                wa,
                dcap,
                vec,
                ptx,
            );
        } else {
            scale_rows::<F, N>(&raw, at, &mut kd, m, slope, e0, dcap, qks, vec, Scale::Down);
            sync_cube();
            update::<F, N, M, F>(&mut accs, &kd, 0, &raw, at + va, &w, wa, dcap, vec, ptx);
        }
        half = 1usize - half;
        t0 = next;
    }

    store_state::<F, M>(&accs, &mut ss, warp * SCRATCH, state_out, 1.0, dcap);
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
    // Raw Q, K, V, twice: the block being computed and the next one arriving.
    let set = comptime!(raw_set(dcap, true));
    let mut raw = SharedMemory::<Vector<F, N>>::new_aligned(comptime!(2 * set / vec), ALIGN);
    // WMMA only: Q and K with their decays folded in, for the inter term and the update.
    let mut qd = SharedMemory::<F>::new_aligned(comptime!(decayed_len(dcap, ptx)), ALIGN);
    let mut kd = SharedMemory::<F>::new_aligned(comptime!(decayed_len(dcap, ptx)), ALIGN);
    let mut ps = SharedMemory::<F>::new_aligned(BLK * PS, ALIGN);
    let mut kvb = SharedMemory::<F>::new_aligned(dcap * VS, ALIGN);
    // Scores (WMMA), and the warps' scratch tiles between blocks (the output goes through `ob`).
    let mut ss = SharedMemory::<f32>::new_aligned(STAGE, ALIGN);
    // The output block on its way out, already in the storage type: the copy out reads one
    // vector per store and converts nothing.
    let mut ob = SharedMemory::<F>::new_aligned(BLK * VS, ALIGN);
    let mut decay = SharedMemory::<f32>::new(BLK);
    let mut w = SharedMemory::<f32>::new_aligned(comptime!(weights_len(ptx, 2)), ALIGN);

    let slope = slopes[head];
    let mut x = unit;
    while x < BLK {
        decay[x] = (-slope * f32::cast_from(x as u32)).exp();
        x += units;
    }

    let shift_inter = if reverse { 0u32 } else { 1u32 };
    let shift_update = if reverse { 1u32 } else { 0u32 };
    let row_tiles = BLK / T;
    let v_tiles = EV / T;
    // The state: warp `w` holds tiles `w, w + WARPS, ..` (`v_tiles` per row of tiles) in fp32
    // fragments for the whole sweep, so no block reads or writes it in shared memory.
    let tiles = comptime!(dcap / T * EV / T);
    let per_warp = comptime!(tiles.div_ceil(WARPS as usize));
    let lane = UNIT_POS_X as usize;
    let scratch = warp * SCRATCH;
    let mut accs = Sequence::<M::Acc>::new();
    #[unroll]
    for _ in 0..per_warp {
        accs.push(M::zero());
    }
    if has_state {
        #[unroll]
        for s in 0..per_warp {
            let tile = warp + s * warps;
            if within(tile, tiles, WARPS as usize) {
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
                M::load(accs.index_mut(s), &ss, scratch, XS);
                sync_plane();
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
    let mut half = 0usize;
    let gate = C::create();
    let first = min(BLK, seg_end - t0);
    load_block::<F, N, C>(
        q, k, v, &mut raw, 0usize, t0, first, dcap, vec, reverse, true,
    );
    C::commit(&gate);
    while t0 < seg_end {
        let m = min(BLK, seg_end - t0);
        let grown = f32::cast_from(tau + m as u32);
        let fold = slope * grown <= fold_limit;
        let mut k_e0 = f32::cast_from(m as u32 - 1 + shift_update);
        if fold {
            k_e0 -= grown;
        }
        let q_e0 = f32::cast_from(tau + shift_inter);
        let wa = half * 2 * BLK;
        if comptime!(ptx) {
            token_weights(&mut w, wa, slope, q_e0, m, Scale::Up);
            token_weights(&mut w, wa + BLK, slope, k_e0, m, Scale::Down);
        }
        // Block `t0` has landed and every warp is done with the block before, whose half of
        // the double buffer now takes the next block.
        C::wait(&gate);
        let next = t0 + BLK;
        if next < seg_end {
            let mn = min(BLK, seg_end - next);
            let at = (1usize - half) * set;
            load_block::<F, N, C>(q, k, v, &mut raw, at, next, mn, dcap, vec, reverse, true);
            C::commit(&gate);
        }
        let qa = half * set;
        let ka = qa + BLK * qks;
        let va = ka + BLK * qks;
        if comptime!(!ptx) {
            scale_rows::<F, N>(&raw, qa, &mut qd, m, slope, q_e0, dcap, qks, vec, Scale::Up);
            scale_rows::<F, N>(
                &raw,
                ka,
                &mut kd,
                m,
                slope,
                k_e0,
                dcap,
                qks,
                vec,
                Scale::Down,
            );
        }
        if !fold {
            // `KV <- lambda^m KV` in place (`kvb` already holds the state the block's inter
            // term reads).
            let lm = (-slope * grown).exp();
            #[unroll]
            for s in 0..per_warp {
                if within(warp + s * warps, tiles, WARPS as usize) {
                    M::scale(accs.index_mut(s), lm, &mut ss, scratch, XS);
                }
            }
        }
        if comptime!(!ptx) {
            // The decayed copies, and WMMA's scratch tiles (they share `ss` with S).
            sync_cube();
        }

        // 1. S = Q K^T on the tiles at or below the diagonal.
        let s_tiles = comptime!(BLK / T * BLK / T);
        #[unroll]
        for s in 0..comptime!(s_tiles.div_ceil(WARPS as usize)) {
            let tile = warp + s * warps;
            let ti = tile / row_tiles;
            let tj = tile % row_tiles;
            if within(tile, s_tiles, WARPS as usize) && tj <= ti {
                let mut acc = M::zero();
                #[unroll]
                for kk in 0..comptime!(dcap / T) {
                    product::<F, M, Vector<F, N>, Vector<F, N>>(
                        &mut acc,
                        &raw,
                        qa + ti * T * qks + kk * T,
                        comptime!(rows(qks, vec)),
                        &raw,
                        ka + tj * T * qks + kk * T,
                        comptime!(cols(qks, vec)),
                    );
                }
                if comptime!(ptx) {
                    // 2. (manual MMA) P = S * M on the tile's registers, in the storage type.
                    M::decay_mask(&mut acc, &decay, (ti - tj) * T);
                    M::store_cast(&mut ps, &acc, ti * T * PS + tj * T, PS);
                } else {
                    M::store(&mut ss, &acc, ti * T * SS + tj * T, SS);
                }
            }
        }
        sync_cube();

        // 2. (WMMA) P = S * M in the storage type, through shared fp32.
        if comptime!(!ptx) {
            #[unroll]
            for it in 0..comptime!((BLK * BLK).div_ceil(UNITS)) {
                let idx = unit + it * units;
                if within(idx, BLK * BLK, UNITS) {
                    let i = idx / BLK;
                    let j = idx % BLK;
                    let mut p = 0.0f32;
                    if j <= i {
                        p = ss[i * SS + j] * decay[i - j];
                    }
                    ps[i * PS + j] = F::cast_from(p);
                }
            }
            sync_cube();
        }

        // 3a. O = Q KV + P V.
        let o_tiles = comptime!(BLK / T * EV / T);
        #[unroll]
        for s in 0..comptime!(o_tiles.div_ceil(WARPS as usize)) {
            let tile = warp + s * warps;
            if within(tile, o_tiles, WARPS as usize) {
                let ti = tile / v_tiles;
                let tj = tile % v_tiles;
                let mut acc = M::zero();
                if comptime!(ptx) {
                    // `diag(lambda^(i + 1)) (Q KV)`: the decay goes onto the product's rows.
                    #[unroll]
                    for kk in 0..comptime!(dcap / T) {
                        product::<F, M, Vector<F, N>, F>(
                            &mut acc,
                            &raw,
                            qa + ti * T * qks + kk * T,
                            comptime!(rows(qks, vec)),
                            &kvb,
                            kk * T * VS + tj * T,
                            comptime!(rows(VS, 1)),
                        );
                    }
                    M::scale_rows(&mut acc, &w, wa + ti * T);
                } else {
                    #[unroll]
                    for kk in 0..comptime!(dcap / T) {
                        product::<F, M, F, F>(
                            &mut acc,
                            &qd,
                            ti * T * qks + kk * T,
                            comptime!(rows(qks, 1)),
                            &kvb,
                            kk * T * VS + tj * T,
                            comptime!(rows(VS, 1)),
                        );
                    }
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
                            va + kk * T * VS + tj * T,
                            comptime!(rows(VS, vec)),
                        );
                    }
                }
                M::store_cast(&mut ob, &acc, ti * T * VS + tj * T, VS);
            }
        }
        sync_cube();

        // 3b. KV += K^T V on the warp's own tiles, and the storage-type snapshot of each for
        // the next block's inter term, straight from the fragment.
        if comptime!(ptx) {
            update::<F, N, M, Vector<F, N>>(
                &mut accs,
                &raw,
                ka,
                &raw,
                va,
                &w,
                wa + BLK,
                dcap,
                vec,
                ptx,
            );
        } else {
            update::<F, N, M, F>(&mut accs, &kd, 0, &raw, va, &w, 0, dcap, vec, ptx);
        }
        #[unroll]
        for s in 0..per_warp {
            let tile = warp + s * warps;
            if within(tile, tiles, WARPS as usize) {
                let r = tile / v_tiles;
                let c = tile % v_tiles;
                M::store_cast(&mut kvb, accs.index(s), r * T * VS + c * T, VS);
            }
        }

        // 4. The output tile (staged in 3a), coalesced, `vec` elements per store.
        let staged = ob
            .slice(0, BLK * VS)
            .into_vectorized()
            .with_vector_size::<N>();
        #[unroll]
        for it in 0..comptime!((BLK * EV / vec).div_ceil(UNITS)) {
            let idx = unit + it * units;
            let i = idx / (EV / vec);
            let c = (idx % (EV / vec)) * vec;
            if within(idx, BLK * EV / vec, UNITS) && i < m && c0 + c < dv {
                out[(bh * n * dv + time_index(t0 + i, n, reverse) * dv + c0 + c) / vec] =
                    staged[(i * VS + c) / vec];
            }
        }
        if fold {
            tau += m as u32;
        } else {
            tau = 0;
        }
        half = 1usize - half;
        t0 = next;
    }
    sync_cube();

    if write_state {
        // `KV = lambda^tau U`.
        let scale = (-slope * f32::cast_from(tau)).exp();
        store_state::<F, M>(&accs, &mut ss, scratch, state_out, scale, dcap);
    }
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

/// Block `t0 .. t0 + m` of Q (when `with_q`), K (all `dcap` columns) and this cube's `EV`
/// columns of V into `raw` from element `at`, one after the other: one half of the double
/// buffer.
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
    #[comptime] dcap: usize,
    #[comptime] vec: usize,
    #[comptime] reverse: bool,
    #[comptime] with_q: bool,
) {
    let qks = comptime!(qk_stride(dcap));
    let bh = CUBE_POS_Y as usize;
    let (n, dqk, dv) = (k.shape(2), k.shape(3), v.shape(3));
    let c0 = CUBE_POS_X as usize * EV;
    let mut ka = at;
    if comptime!(with_q) {
        load_rows::<F, N, C>(
            q,
            bh * n * dqk,
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
        );
        ka += BLK * qks;
    }
    let va = ka + BLK * qks;
    load_rows::<F, N, C>(
        k,
        bh * n * dqk,
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
    );
    load_rows::<F, N, C>(v, bh * n * dv, dv, c0, t0, m, raw, va, EV, VS, vec, reverse);
}
