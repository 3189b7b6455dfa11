//! `Mode::Output` on manual MMA with the state as an operand that never leaves registers.
//!
//! [`super::outputs`] spreads the cube's `[dcap, ev]` state over all its warps and, every
//! block, rounds it into a shared snapshot that the inter term `Q KV` reads back with
//! `ldmatrix`: per block and cube a snapshot store (32 tiles), 128 operand loads of it and
//! of Q, and three barriers. Here the inter term is computed transposed, `O^T = KV^T Q^T`:
//! warp `j < ev / T` holds `KV^T` for value columns `j T ..` and every d (all `dcap / T`
//! tiles of that column, [`Layout::Stationary`]), and an accumulator tile is, register
//! for register, the A operand of the next product ([`ptx_lhs_of`]). So that warp makes its
//! 16 columns of the block's output from its own registers and Q, then its state update
//! `KV^T += V^T diag(w) K`, with no snapshot and no barrier between the two.
//! The other warps (the crew) run a block ahead: while the state warps make block `i`'s
//! output and update, the crew copies block `i + 2` in, makes block `i + 1`'s score tiles
//! and writes block `i - 1` out, so the copy's barrier is the only one per block (three
//! buffers of rows, two of scores and of staged output). With the crew on block `i` and a
//! second barrier (v21), ncu put its copy, scores and write-out on the critical path.
//! Needs `dcap <= 128` (the state warps hold `dcap / T` tiles, 64 registers at 128), a
//! geometry with two buffers of rows (room for three) and `stmatrix` (sm_90+) for the
//! output tiles.

use cubecl::prelude::*;

use super::load::{Copier, Crew, Scale};
use super::mma::{
    Ptx, PtxLhs, T, ptx_lhs_of, ptx_load_lhs, ptx_load_rhs, ptx_mma, ptx_scale, ptx_scale_cols,
    ptx_store_transposed, ptx_weight_lhs,
};
use super::{
    ALIGN, BLK, Geometry, Layout, PS, S_TILES, SCRATCH, block_exponents, cols, decay_table,
    load_block, load_first, load_state, lower_tile, qk_stride, rows, score_tile, store_state,
    token_weights, weights_len, write_block, zeros,
};

/// Head dims up to which the state warps' tiles fit in registers.
pub const MAX_DCAP: usize = 128;

/// Buffers of rows: block `i`'s for the state warps, `i + 1`'s for the crew's scores, and
/// `i + 2`'s copy in flight.
pub(super) const BUFFERS: usize = 3;

/// The warps that hold no state: the score tiles, the copies in and out.
pub(super) const fn crew(g: Geometry) -> Crew {
    let first = 32 * (g.ev / T);
    Crew {
        first,
        units: g.units() - first,
        keep_columns: true,
    }
}

// CUDA's geometry takes this pass at d = 128.
const _: () = assert!(Geometry::WIDE.stationary(128));
const _: () = assert!(Geometry::WHOLE.stationary(128));

/// See the module docs; arguments as [`super::outputs`]'s.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn outputs<F: Float, N: Size, C: Copier>(
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
    #[comptime] g: Geometry,
) {
    let units = comptime!(g.units());
    let warp = UNIT_POS_Y as usize;
    let bh = CUBE_POS_Y as usize;
    let heads = q.shape(1);
    let n = q.shape(2);
    let sizes = (n, q.shape(3), v.shape(3));
    let head = bh % heads;
    let seg_start = CUBE_POS_Z as usize * seg_len;
    let seg_end = min(n, seg_start + seg_len);

    let qks = comptime!(qk_stride(dcap));
    let vs = comptime!(g.vs());
    let set = comptime!(g.raw_set(dcap, true));
    let mut raw = SharedMemory::<Vector<F, N>>::new_aligned(comptime!(BUFFERS * set / vec), ALIGN);
    let mut ps = SharedMemory::<F>::new_aligned(comptime!(2 * BLK * PS), ALIGN);
    let mut ob = SharedMemory::<F>::new_aligned(comptime!(2 * BLK * vs), ALIGN);
    let mut ss = SharedMemory::<f32>::new_aligned(comptime!(g.warps * SCRATCH), ALIGN);
    let mut decay = SharedMemory::<f32>::new(BLK);
    let mut w = SharedMemory::<f32>::new_aligned(comptime!(weights_len(true, 2, g)), ALIGN);

    let slope = slopes[head];
    decay_table(&mut decay, slope, units);

    let d_tiles = comptime!(dcap / T);
    let v_tiles = comptime!(g.ev / T);
    let crew = comptime!(crew(g));
    let scratch = warp * SCRATCH;
    // Empty on the crew's warps (see `Layout::Stationary`).
    let mut accs = zeros::<F, Ptx>(d_tiles);
    if has_state {
        load_state::<F, Ptx>(
            &mut accs,
            &mut ss,
            scratch,
            state_in,
            (bh / heads, head),
            sizes,
            Layout::Stationary,
            dcap,
            g,
        );
    }
    let mut crew_warp = 0usize;
    if warp >= v_tiles {
        crew_warp = warp - v_tiles;
    }
    let score = lower_tile(crew_warp);

    // Blocks 0 and 1 in, then block 0's scores: the crew stays a block ahead from here on.
    let gate = C::create();
    load_first::<F, N, C>(
        q, k, v, &mut raw, &gate, seg_start, seg_end, sizes, dcap, vec, reverse, true, g,
    );
    let second = seg_start + BLK;
    if second < seg_end {
        load_block::<F, N, C>(
            q,
            k,
            v,
            &mut raw,
            set,
            second,
            min(BLK, seg_end - second),
            sizes,
            dcap,
            vec,
            reverse,
            true,
            g,
            g.everyone(),
        );
        C::commit(&gate);
    }
    C::wait(&gate);
    if warp >= v_tiles && crew_warp < S_TILES {
        score_tile::<F, N, Ptx>(
            &raw,
            0,
            BLK * qks,
            score,
            &decay,
            &mut ps,
            0,
            &mut ss,
            dcap,
            vec,
            true,
        );
    }

    // The state is kept as `U = KV / lambda^tau`, as in `super::outputs`.
    let mut tau = 0u32;
    let mut t0 = seg_start;
    // Block i's buffer of rows (of three), and its half of the score, staging and weight
    // buffers (of two).
    let mut buf = 0usize;
    let mut half = 0usize;
    // The block whose output waits in `ob` (none while `prev_m = 0`).
    let mut prev_t0 = t0;
    let mut prev_m = 0usize;
    while t0 < seg_end {
        let m = min(BLK, seg_end - t0);
        let (grown, fold, q_e0, k_e0) = block_exponents(tau, m, slope, fold_limit, reverse);
        let wa = half * 2 * BLK;
        token_weights(&mut w, wa, slope, q_e0, m, Scale::Up);
        token_weights(&mut w, wa + BLK, slope, k_e0, m, Scale::Down);
        // Block i + 1's rows are in, block i's scores made, block i - 1's output staged.
        C::wait(&gate);
        let next = t0 + BLK;
        let qa = buf * set;
        let ka = qa + BLK * qks;
        let va = ka + BLK * qks;
        let pa = half * comptime!(BLK * PS);
        let oa = half * comptime!(BLK * vs);

        if warp >= v_tiles {
            // The crew, a block ahead of the state warps and never waiting for them within
            // a block: block i + 2 comes in (first: the copy wants its head start), block
            // i + 1's scores are made, block i - 1 goes out.
            let after = next + BLK;
            if after < seg_end {
                load_block::<F, N, C>(
                    q,
                    k,
                    v,
                    &mut raw,
                    ((buf + 2) % BUFFERS) * set,
                    after,
                    min(BLK, seg_end - after),
                    sizes,
                    dcap,
                    vec,
                    reverse,
                    true,
                    g,
                    crew,
                );
                C::commit(&gate);
            }
            if next < seg_end && crew_warp < S_TILES {
                let qn = ((buf + 1) % BUFFERS) * set;
                score_tile::<F, N, Ptx>(
                    &raw,
                    qn,
                    qn + BLK * qks,
                    score,
                    &decay,
                    &mut ps,
                    comptime!(BLK * PS) - pa,
                    &mut ss,
                    dcap,
                    vec,
                    true,
                );
            }
            if prev_m > 0 {
                write_block::<F, N>(
                    out,
                    &ob,
                    comptime!(BLK * vs) - oa,
                    prev_t0,
                    prev_m,
                    sizes,
                    vec,
                    reverse,
                    true,
                    g,
                    crew,
                );
            }
        } else {
            // O^T = diag(lambda^(i + 1)) applied to the columns of KV^T Q^T: A is the
            // state tile itself, B is Q^T (Q's rows, read as columns).
            let mut o = zeros::<F, Ptx>(BLK / T);
            #[unroll]
            for kk in 0..d_tiles {
                let a = ptx_lhs_of::<F>(accs.index(kk));
                #[unroll]
                for ti in 0..BLK / T {
                    let b = ptx_load_rhs::<F, Vector<F, N>>(
                        &raw,
                        qa + ti * T * qks + kk * T,
                        comptime!(cols(qks, vec)),
                    );
                    ptx_mma::<F>(o.index_mut(ti), &a, &b);
                }
            }
            #[unroll]
            for ti in 0..BLK / T {
                ptx_scale_cols(o.index_mut(ti), &w, wa + ti * T);
            }
            if !fold {
                // `KV <- lambda^m KV` in place, now that the inter term has read it.
                let lm = (-slope * grown).exp();
                #[unroll]
                for kk in 0..d_tiles {
                    ptx_scale(accs.index_mut(kk), lm);
                }
            }
            // O^T += V^T P^T (P's lower-triangle tiles), then out through `ob`.
            let mut vt = Sequence::<PtxLhs<F>>::new();
            #[unroll]
            for kk in 0..BLK / T {
                vt.push(ptx_load_lhs::<F, Vector<F, N>>(
                    &raw,
                    va + kk * T * vs + warp * T,
                    comptime!(cols(vs, vec)),
                ));
            }
            #[unroll]
            for ti in 0..BLK / T {
                #[unroll]
                for kk in 0..BLK / T {
                    if kk <= ti {
                        let b = ptx_load_rhs::<F, F>(
                            &ps,
                            pa + ti * T * PS + kk * T,
                            comptime!(cols(PS, 1)),
                        );
                        ptx_mma::<F>(o.index_mut(ti), vt.index(kk), &b);
                    }
                }
                ptx_store_transposed::<F>(&mut ob, o.index(ti), oa + ti * T * vs + warp * T, vs);
            }
            // KV^T += V^T diag(w) K on the warp's own tiles.
            #[unroll]
            for kk in 0..BLK / T {
                // The products above are done with V^T: weight it in place.
                ptx_weight_lhs::<F>(vt.index_mut(kk), &w, wa + BLK + kk * T);
                #[unroll]
                for dt in 0..d_tiles {
                    let b = ptx_load_rhs::<F, Vector<F, N>>(
                        &raw,
                        ka + kk * T * qks + dt * T,
                        comptime!(rows(qks, vec)),
                    );
                    ptx_mma::<F>(accs.index_mut(dt), vt.index(kk), &b);
                }
            }
        }
        if fold {
            tau += m as u32;
        } else {
            tau = 0;
        }
        prev_t0 = t0;
        prev_m = m;
        half = 1usize - half;
        buf = (buf + 1) % BUFFERS;
        t0 = next;
    }
    sync_cube();
    write_block::<F, N>(
        out,
        &ob,
        comptime!(BLK * vs) * (1usize - half),
        prev_t0,
        prev_m,
        sizes,
        vec,
        reverse,
        true,
        g,
        g.everyone(),
    );

    if write_state {
        // `KV = lambda^tau U`.
        let scale = (-slope * f32::cast_from(tau)).exp();
        store_state::<F, Ptx>(
            &accs,
            &mut ss,
            scratch,
            state_out,
            scale,
            Layout::Stationary,
            dcap,
            g,
        );
    }
}
