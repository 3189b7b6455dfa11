//! The blockwise sweep kernel (scalar path: shared memory and fp32 FMAs, no tensor cores).
//!
//! One cube owns one (batch, head) and one slice of `ev` value columns, and walks the
//! sequence block by block, keeping its `[dqk, ev]` slice of the running state in shared
//! memory in fp32. Per block: the masked intra-block scores `Q K^T * M`, the inter-block
//! term `Q KV` against the state of all earlier blocks, then the state update
//! `KV <- lambda^m KV + (diag(lambda^(m-1-j)) K)^T V`. The qk dim is streamed through shared
//! memory in chunks of `dk` columns, so the on-chip footprint is bounded whatever `dqk` is.
//!
//! The same kernel serves the forward and all three backward products (see
//! [`crate::reference::backward`]): `reverse` walks time backwards and moves one decay factor
//! from the inter term to the state update, the form the reverse-time gradient sweeps take.

use cubecl::prelude::*;

/// Tile sizes of one launch, all compile-time so the shared buffers have fixed sizes.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Tiles {
    /// Tokens per block (BLK in the paper).
    pub blk: usize,
    /// Columns of the qk dim staged per step.
    pub dk: usize,
    /// Value columns per cube (the state slice is `dqk x ev`).
    pub ev: usize,
    /// qk dim rounded up to a multiple of `dk`: the rows of the on-chip state.
    pub dcap: usize,
}

impl Tiles {
    /// Bytes of shared memory one cube uses.
    pub fn shared_bytes(&self) -> usize {
        let floats = 2 * self.blk * self.dk      // Q and K chunks
            + 2 * self.blk * self.ev             // V slice and the output accumulator
            + self.blk * self.blk                // intra-block scores
            + self.dcap * self.ev                // state slice
            + self.blk + 1; // decay table
        floats * 4
    }
}

/// Time index of the `i`-th token in sweep order.
#[cube]
fn time_index(i: usize, n: usize, #[comptime] reverse: bool) -> usize {
    if reverse { n - 1 - i } else { i }
}

/// `out = (Q K^T * M) V + diag(lambda^(i+1)) Q KV` blockwise (`lambda^i` when `reverse`),
/// and the final state.
///
/// `q`, `k`: `[B, H, N, DQK]`, `v`, `out`: `[B, H, N, DV]`, all contiguous. `state_in` and
/// `state_out`: `[B, H, DQK, DV]` fp32; `state_in` is read through its strides (a transposed
/// view is fine) and only when `has_state`; `state_out` is written only when `write_state`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn sweep_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    slopes: &Tensor<f32>,
    state_in: &Tensor<f32>,
    out: &mut Tensor<F>,
    state_out: &mut Tensor<f32>,
    #[comptime] tiles: Tiles,
    #[comptime] has_state: bool,
    #[comptime] write_state: bool,
    #[comptime] reverse: bool,
    #[define(F)] _dtype: StorageType,
) {
    let blk = tiles.blk;
    let dk = tiles.dk;
    let ev = tiles.ev;
    let dcap = tiles.dcap;

    let units = CUBE_DIM as usize;
    let unit = UNIT_POS as usize;
    let bh = CUBE_POS_Y as usize;
    let c0 = CUBE_POS_X as usize * ev;

    let heads = q.shape(1);
    let n = q.shape(2);
    let dqk = q.shape(3);
    let dv = v.shape(3);
    let head = bh % heads;
    let batch = bh / heads;

    let qk_base = bh * n * dqk;
    let v_base = bh * n * dv;

    let mut qs = SharedMemory::<f32>::new(blk * dk);
    let mut ks = SharedMemory::<f32>::new(blk * dk);
    let mut vs = SharedMemory::<f32>::new(blk * ev);
    let mut os = SharedMemory::<f32>::new(blk * ev);
    let mut att = SharedMemory::<f32>::new(blk * blk);
    let mut kv = SharedMemory::<f32>::new(dcap * ev);
    let mut decay = SharedMemory::<f32>::new(blk + 1);

    // decay[x] = lambda^x = exp(-s x) for x in [0, blk]: every exponent used is in that range.
    let slope = slopes[head];
    let mut x = unit;
    while x <= blk {
        decay[x] = (-slope * f32::cast_from(x)).exp();
        x += units;
    }

    let mut idx = unit;
    while idx < dcap * ev {
        let row = idx / ev;
        let col = idx % ev;
        let mut init = 0.0f32;
        if has_state {
            if row < dqk && c0 + col < dv {
                init = state_in[batch * state_in.stride(0)
                    + head * state_in.stride(1)
                    + row * state_in.stride(2)
                    + (c0 + col) * state_in.stride(3)];
            }
        }
        kv[idx] = init;
        idx += units;
    }
    sync_cube();

    let shift_inter = if reverse { 0usize } else { 1usize };
    let shift_update = if reverse { 1usize } else { 0usize };
    let num_blocks = n.div_ceil(blk);
    let num_chunks = dqk.div_ceil(dk);

    for block in 0..num_blocks {
        let t0 = block * blk;
        let m = min(blk, n - t0);

        let mut idx = unit;
        while idx < blk * ev {
            let i = idx / ev;
            let c = idx % ev;
            let mut val = 0.0f32;
            if i < m && c0 + c < dv {
                let t = time_index(t0 + i, n, reverse);
                val = f32::cast_from(v[v_base + t * dv + c0 + c]);
            }
            vs[idx] = val;
            os[idx] = 0.0;
            idx += units;
        }
        let mut idx = unit;
        while idx < blk * blk {
            att[idx] = 0.0;
            idx += units;
        }

        for chunk in 0..num_chunks {
            let d0 = chunk * dk;
            sync_cube();
            let mut idx = unit;
            while idx < blk * dk {
                let i = idx / dk;
                let kk = idx % dk;
                let mut qv = 0.0f32;
                let mut kvv = 0.0f32;
                if i < m && d0 + kk < dqk {
                    let t = time_index(t0 + i, n, reverse);
                    qv = f32::cast_from(q[qk_base + t * dqk + d0 + kk]);
                    kvv = f32::cast_from(k[qk_base + t * dqk + d0 + kk]);
                }
                qs[idx] = qv;
                ks[idx] = kvv;
                idx += units;
            }
            sync_cube();

            // intra: scores of this qk chunk, lower triangle only.
            let mut idx = unit;
            while idx < blk * blk {
                let i = idx / blk;
                let j = idx % blk;
                if j <= i {
                    let mut acc = 0.0f32;
                    for kk in 0..dk {
                        acc += qs[i * dk + kk] * ks[j * dk + kk];
                    }
                    att[idx] += acc;
                }
                idx += units;
            }
            // inter: this chunk's rows of the state entering the block.
            let mut idx = unit;
            while idx < blk * ev {
                let i = idx / ev;
                let c = idx % ev;
                let mut acc = 0.0f32;
                for kk in 0..dk {
                    acc += qs[i * dk + kk] * kv[(d0 + kk) * ev + c];
                }
                os[idx] += acc;
                idx += units;
            }
            sync_cube();

            // state update of this chunk's rows: lambda^m KV + sum_j lambda^(m-1-j+shift) k_j v_j.
            let mut idx = unit;
            while idx < dk * ev {
                let kk = idx / ev;
                let c = idx % ev;
                let mut acc = decay[m] * kv[(d0 + kk) * ev + c];
                for j in 0..m {
                    acc += decay[m - 1 - j + shift_update] * ks[j * dk + kk] * vs[j * ev + c];
                }
                kv[(d0 + kk) * ev + c] = acc;
                idx += units;
            }
        }
        sync_cube();

        let mut idx = unit;
        while idx < blk * ev {
            let i = idx / ev;
            let c = idx % ev;
            if i < m && c0 + c < dv {
                let mut acc = decay[i + shift_inter] * os[idx];
                for j in 0..i + 1 {
                    acc += att[i * blk + j] * decay[i - j] * vs[j * ev + c];
                }
                let t = time_index(t0 + i, n, reverse);
                out[v_base + t * dv + c0 + c] = F::cast_from(acc);
            }
            idx += units;
        }
        sync_cube();
    }

    if write_state {
        let mut idx = unit;
        while idx < dcap * ev {
            let row = idx / ev;
            let col = idx % ev;
            if row < dqk && c0 + col < dv {
                state_out[(bh * dqk + row) * dv + c0 + col] = kv[idx];
            }
            idx += units;
        }
    }
}
