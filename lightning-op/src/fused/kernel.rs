//! The blockwise sweep kernel (scalar path: shared memory and fp32 FMAs, no tensor cores).
//!
//! One cube owns one (batch, head) and one slice of `ev` value columns, and walks the
//! sequence block by block, keeping its `[dqk, ev]` slice of the running state in shared
//! memory in fp32. Per block: the masked intra-block scores `Q K^T * M`, the inter-block
//! term `Q KV` against the state of all earlier blocks, then the state update
//! `KV <- lambda^m KV + (diag(lambda^(m-1-j)) K)^T V`. The qk dim is streamed through shared
//! memory in chunks of `dk` columns, so the on-chip footprint is bounded whatever `dqk` is.
//! Each unit accumulates its own register tile of every product ([`Grid`]); the scores and
//! the inter term stay in registers across a block's chunks.
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
    /// Units per cube, a power of two: the products' register tiles are laid out for it.
    pub units: usize,
    /// Floats per shared-memory access (1, 2 or 4; see [`Tiles::vectorized`]).
    pub vec: usize,
}

impl Tiles {
    /// Bytes of shared memory one cube uses in `mode`. The local-state pass holds no Q and
    /// no scores.
    pub fn shared_bytes(&self, mode: Mode) -> usize {
        let outputs = match mode {
            Mode::Output => self.qk_chunk() + self.scores(), // Q chunk, intra-block scores
            Mode::State => 0,
        };
        let floats = outputs
            + self.qk_chunk()       // K chunk
            + self.blk * self.ev    // V slice
            + self.dcap * self.ev   // state slice
            + self.blk + 1; // decay table
        floats * 4
    }

    /// Floats of a Q or K chunk in shared memory, rows padded by `vec`.
    fn qk_chunk(&self) -> usize {
        self.blk * (self.dk + self.vec)
    }

    /// Floats of the intra-block scores in shared memory, rows padded by `vec`.
    fn scores(&self) -> usize {
        self.blk * (self.blk + self.vec)
    }

    /// The grids of the scores `[blk, blk]`, of the output `[blk, ev]` (inter and intra
    /// terms) and of the state update `[dk, ev]`.
    ///
    /// Which dims go by vectors follows the shared layouts: the scores are stored
    /// transposed, a vector along the query rows, for the intra product to read along its
    /// output rows; the score columns stay one per unit step, so a warp's K rows lie
    /// `dk + vec` floats apart, on distinct banks.
    pub fn grids(&self) -> [Grid; 3] {
        let v = self.vec;
        [
            Grid::new(self.blk, self.blk, self.units, v, 1),
            Grid::new(self.blk, self.ev, self.units, v, v),
            Grid::new(self.dk, self.ev, self.units, v, v),
        ]
    }

    /// These tiles with the widest shared-memory access, up to `max`, that keeps the output's
    /// and the state update's units as busy as single floats do. A 4-wide access loads four
    /// floats in one instruction: the products issue a quarter of the shared loads per FMA,
    /// which is what the f32 kernel spends its issue slots on (NOTES v24, v28). The scores,
    /// the smallest product, may idle units: Vulkan's 16 x 64 x 64 tiles (block x chunk x
    /// slice) run 2-wide on 256 units, half of them idle in the scores: forward 5 to 14 % under
    /// 4-wide on 128 units with half idle in the output too, which had beaten 256 units of
    /// single floats by 15 to 19 % (H200, f32; NOTES v28, v29).
    pub fn vectorized(self, max: usize) -> Tiles {
        let scalar = Tiles { vec: 1, ..self };
        let busy = |t: Tiles| {
            let [_, out, update] = t.grids();
            [out.gr * out.gc, update.gr * update.gc]
        };
        [4, 2]
            .into_iter()
            .filter(|&v| {
                v <= max
                    && self.blk.is_multiple_of(v)
                    && self.dk.is_multiple_of(v)
                    && self.ev.is_multiple_of(v)
            })
            .map(|vec| Tiles { vec, ..self })
            .find(|&t| busy(t) == busy(scalar))
            .unwrap_or(scalar)
    }
}

/// How a cube's units share one `rows x cols` product: a `gr x gc` grid, each unit
/// accumulating `tr x tc` elements in registers. Unit `(ur, uc)` holds rows
/// `(ur + gr a) vr + i` and columns `(uc + gc b) vc + j` (`i < vr`, `j < vc`): runs of `vr`
/// rows and `vc` columns, the width of the shared loads along each.
///
/// Register tiles cut the shared loads per FMA: every operand loaded from shared memory
/// feeds `tr` or `tc` FMAs instead of one (3.5x the f32 speed of one element per unit on
/// the H200, NOTES v24). Interleaved rather than contiguous runs keep a warp's loads on
/// consecutive banks and spread the triangular intra work evenly.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Grid {
    pub gr: usize,
    pub gc: usize,
    pub tr: usize,
    pub tc: usize,
    pub vr: usize,
    pub vc: usize,
}

impl Grid {
    /// Rows of units at most: 256 units on a square product then form a 16 x 16 grid, whose
    /// square tiles need the fewest loads per FMA (`1 / tr + 1 / tc`).
    const MAX_ROWS: usize = 16;

    /// The most units a `rows x cols` grid keeps busy; more would idle.
    pub fn cells(rows: usize, cols: usize, vr: usize, vc: usize) -> usize {
        (rows / vr).min(Self::MAX_ROWS) * (cols / vc)
    }

    /// `rows`, `cols` and `units` are powers of two, `rows >= vr`, `cols >= vc`; units past
    /// `gr x gc` idle.
    pub fn new(rows: usize, cols: usize, units: usize, vr: usize, vc: usize) -> Self {
        let gr = (rows / vr).min(Self::MAX_ROWS).min(units);
        let gc = (cols / vc).min(units / gr);
        Grid {
            gr,
            gc,
            tr: rows / gr,
            tc: cols / gc,
            vr,
            vc,
        }
    }
}

/// Where one operand of [`product`] lies in shared memory: element `(t, x)` (`t` a row or
/// column of the unit's tile, `x` a step of the sum) at `t stride + x` along `Reduction`,
/// at `x stride + t` along `Tile`, floats from the product's offset. A shared vector holds
/// consecutive floats, so it covers `vec` steps of the sum or `vec` rows (columns) of the
/// tile.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Operand {
    pub stride: usize,
    pub along_tile: bool,
}

impl Operand {
    const fn reduction(stride: usize) -> Self {
        Operand {
            stride,
            along_tile: false,
        }
    }
    const fn tile(stride: usize) -> Self {
        Operand {
            stride,
            along_tile: true,
        }
    }
}

/// This unit's row and column in the grid `g`; a row of `g.gr` or more means it idles there.
#[cube]
fn place(#[comptime] g: Grid) -> (usize, usize) {
    let gc = comptime!(g.gc);
    let unit = UNIT_POS as usize;
    (unit / gc, unit % gc)
}

/// Element `t` of the unit's rows (`run = vr`) or columns (`run = vc`) in a grid of `g`
/// units along that dim, the unit at `u`.
#[cube]
fn tile_index(u: usize, t: usize, #[comptime] g: usize, #[comptime] run: usize) -> usize {
    (u + g * (t / run)) * run + t % run
}

/// `n` floats of one operand for this unit, `vec` steps of the sum from `x0`, into `regs[t
/// vec + xi]` (tile element `t`, step `x0 + xi`). Along the sum: one load per tile
/// element; along the tile (`run == vec`): one per run and step.
#[cube]
#[allow(clippy::too_many_arguments)]
fn operand<N: Size>(
    src: &SharedMemory<Vector<f32, N>>,
    at: usize,
    x0: usize,
    u: usize,
    regs: &mut Array<f32>,
    #[comptime] op: Operand,
    #[comptime] g: usize,
    #[comptime] n: usize,
    #[comptime] run: usize,
    #[comptime] vec: usize,
) {
    if comptime!(op.along_tile) {
        #[unroll]
        for xi in 0..vec {
            #[unroll]
            for a in 0..comptime!(n / vec) {
                let t0 = (u + g * a) * vec;
                let x = src[(at + (x0 + xi) * op.stride + t0) / vec];
                #[unroll]
                for i in 0..vec {
                    regs[(a * vec + i) * vec + xi] = x[i];
                }
            }
        }
    } else {
        #[unroll]
        for t in 0..n {
            let x = src[(at + tile_index(u, t, g, run) * op.stride + x0) / vec];
            #[unroll]
            for xi in 0..vec {
                regs[t * vec + xi] = x[xi];
            }
        }
    }
}

/// `acc[r tc + c] += sum_(x < len) A[row_r, x] B[x, col_c]` over this unit's tile of `g`, with
/// `A` at `a_at` in `a` and `B` at `b_at` in `b`, laid out as `ao` and `bo` (`B`'s tile
/// index is its column). `len` is a multiple of `vec`. When `weighted`, `A[., x]` is also
/// scaled by `weights[top - x]` (zero past `top`): the state update's decay of each key by
/// its distance to the block's end.
#[cube]
#[allow(clippy::too_many_arguments)]
fn product<N: Size>(
    a: &SharedMemory<Vector<f32, N>>,
    a_at: usize,
    b: &SharedMemory<Vector<f32, N>>,
    b_at: usize,
    len: usize,
    weights: &SharedMemory<f32>,
    top: usize,
    acc: &mut Array<f32>,
    #[comptime] ao: Operand,
    #[comptime] bo: Operand,
    #[comptime] weighted: bool,
    #[comptime] g: Grid,
    #[comptime] vec: usize,
) {
    let (gr, gc, tr, tc) = comptime!((g.gr, g.gc, g.tr, g.tc));
    let (ur, uc) = place(g);
    if ur < gr {
        let mut av = Array::<f32>::new(comptime!(tr * vec));
        let mut bv = Array::<f32>::new(comptime!(tc * vec));
        let mut x0 = 0usize;
        while x0 < len {
            operand(a, a_at, x0, ur, &mut av, ao, gr, tr, g.vr, vec);
            operand(b, b_at, x0, uc, &mut bv, bo, gc, tc, g.vc, vec);
            if weighted {
                #[unroll]
                for xi in 0..vec {
                    let x = x0 + xi;
                    // Only a sum rounded up to a whole vector runs past `top`.
                    let mut w = 0.0f32;
                    if comptime!(vec == 1) || x <= top {
                        w = weights[top - x];
                    }
                    #[unroll]
                    for r in 0..tr {
                        av[r * vec + xi] *= w;
                    }
                }
            }
            #[unroll]
            for xi in 0..vec {
                #[unroll]
                for r in 0..tr {
                    #[unroll]
                    for c in 0..tc {
                        acc[r * tc + c] += av[r * vec + xi] * bv[c * vec + xi];
                    }
                }
            }
            x0 += vec;
        }
    }
}

/// `KV[d0 + .., ..] <- lambda^m KV + update` over this unit's tile of the state update's
/// grid `g`; `update` is zeroed for the next chunk.
#[cube]
fn update_state<N: Size>(
    kv: &mut SharedMemory<Vector<f32, N>>,
    update: &mut Array<f32>,
    d0: usize,
    decay_m: f32,
    #[comptime] g: Grid,
    #[comptime] ev: usize,
    #[comptime] vec: usize,
) {
    let (gr, gc, tr, tc) = comptime!((g.gr, g.gc, g.tr, g.tc));
    let (ur, uc) = place(g);
    if ur < gr {
        #[unroll]
        for r in 0..tr {
            let row = d0 + tile_index(ur, r, gr, vec);
            #[unroll]
            for cv in 0..comptime!(tc / vec) {
                let at = (row * ev) / vec + uc + gc * cv;
                let mut s = kv[at];
                #[unroll]
                for l in 0..vec {
                    let i = r * tc + cv * vec + l;
                    s[l] = decay_m * s[l] + update[i];
                    update[i] = 0.0;
                }
                kv[at] = s;
            }
        }
    }
}

/// A register tile of `g`, zeroed.
#[cube]
fn zeros(#[comptime] g: Grid) -> Array<f32> {
    let size = comptime!(g.tr * g.tc);
    let mut acc = Array::<f32>::new(size);
    #[unroll]
    for i in 0..size {
        acc[i] = 0.0;
    }
    acc
}

/// `x` rounded up to a multiple of `vec`.
#[cube]
fn round_up(x: usize, #[comptime] vec: usize) -> usize {
    (x + comptime!(vec - 1)) / vec * vec
}

/// This unit's share of a `[blk, cols]` tile: rows `t0 .. t0 + m` (in sweep order) and columns
/// `c0 .. c0 + cols` of `src` (`[n, width]` from `base`, in vectors of `vec`), zero past `m`
/// rows or `width` columns; vector `unit + it units` goes to `regs[it]`. All loads are issued
/// before any is stored, so the unit waits on memory once per tile instead of once per
/// element.
#[cube]
#[allow(clippy::too_many_arguments)]
fn fetch<F: Float, N: Size>(
    src: &Tensor<Vector<F, N>>,
    base: usize,
    n: usize,
    width: usize,
    c0: usize,
    t0: usize,
    m: usize,
    #[comptime] blk: usize,
    #[comptime] cols: usize,
    #[comptime] units: usize,
    #[comptime] vec: usize,
    #[comptime] reverse: bool,
) -> Array<Vector<f32, N>> {
    let row_vecs = comptime!(cols / vec);
    let count = comptime!((blk * row_vecs).div_ceil(units));
    let unit = UNIT_POS as usize;
    let mut regs = Array::<Vector<f32, N>>::new(count);
    #[unroll]
    for it in 0..count {
        let idx = unit + it * units;
        let i = idx / row_vecs;
        let c = (idx % row_vecs) * vec;
        regs[it] = Vector::new(0.0f32);
        if i < m && c0 + c < width {
            let t = time_index(t0 + i, n, reverse);
            regs[it] = Vector::cast_from(src[(base + t * width + c0 + c) / vec]);
        }
    }
    regs
}

/// Stores what [`fetch`] loaded into `dst`, rows `row_stride` floats apart.
#[cube]
fn stage<N: Size>(
    regs: &Array<Vector<f32, N>>,
    dst: &mut SharedMemory<Vector<f32, N>>,
    #[comptime] blk: usize,
    #[comptime] cols: usize,
    #[comptime] row_stride: usize,
    #[comptime] units: usize,
    #[comptime] vec: usize,
) {
    let row_vecs = comptime!(cols / vec);
    let count = comptime!((blk * row_vecs).div_ceil(units));
    let unit = UNIT_POS as usize;
    #[unroll]
    for it in 0..count {
        let idx = unit + it * units;
        if idx < blk * row_vecs {
            dst[(idx / row_vecs) * comptime!(row_stride / vec) + idx % row_vecs] = regs[it];
        }
    }
}

/// Time index of the `i`-th token in sweep order.
#[cube]
pub(super) fn time_index(i: usize, n: usize, #[comptime] reverse: bool) -> usize {
    if reverse { n - 1 - i } else { i }
}

/// Element `(row, col)` of the state entering `segment` of `(batch, head)`: `state_in`
/// `[S, B, H, dqk, dv]`, any strides (the caller masks rows and columns past the dims).
#[cube]
pub(super) fn entering_state(
    state_in: &Tensor<f32>,
    segment: usize,
    batch: usize,
    head: usize,
    row: usize,
    col: usize,
) -> f32 {
    state_in[segment * state_in.stride(0)
        + batch * state_in.stride(1)
        + head * state_in.stride(2)
        + row * state_in.stride(3)
        + col * state_in.stride(4)]
}

/// What one launch of the sweep computes.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Mode {
    /// Outputs of each segment, starting from the state entering it (and the final state when
    /// there is one segment and `write_state`).
    Output,
    /// Only each segment's local state (from zero): the first pass of sequence parallelism.
    State,
}

/// `out = (Q K^T * M) V + diag(lambda^(i+1)) Q KV` blockwise (`lambda^i` when `reverse`),
/// and the state, over one segment of `seg_len` tokens (in sweep order) per `CUBE_POS_Z`.
///
/// `q`, `k`: `[B, H, N, DQK]`, `v`, `out`: `[B, H, N, DV]`, all contiguous, in vectors of
/// `tiles.vec` (which divides both head dims). `state_in`: `[S, B, H, DQK, DV]` fp32, the
/// state entering each segment, read through its strides (a transposed view is fine) and
/// only when `has_state`. `state_out`: `[S, B, H, DQK, DV]` contiguous fp32, written in
/// `Mode::State` and, in `Mode::Output`, when `write_state`.
///
/// Each unit keeps its tiles of the scores and of the inter term in registers across the qk
/// chunks of a block; only the masked, decayed scores go through shared memory, for the
/// intra product.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn sweep_kernel<F: Float, N: Size>(
    q: &Tensor<Vector<F, N>>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    slopes: &Tensor<f32>,
    state_in: &Tensor<f32>,
    out: &mut Tensor<Vector<F, N>>,
    state_out: &mut Tensor<f32>,
    seg_len: usize,
    #[comptime] tiles: Tiles,
    #[comptime] mode: Mode,
    #[comptime] has_state: bool,
    #[comptime] write_state: bool,
    #[comptime] reverse: bool,
    #[define(F)] _dtype: StorageType,
) {
    let blk = tiles.blk;
    let dk = tiles.dk;
    let ev = tiles.ev;
    let dcap = tiles.dcap;
    let vec = tiles.vec;
    let outputs = comptime!(mode == Mode::Output);
    // Padded rows: a warp reads up to 32 rows of Q, K or the scores at one column (or one
    // vector), which rows `vec` floats longer than a multiple of 8 vectors put on distinct
    // banks.
    let qk_row = comptime!(dk + vec);
    let att_row = comptime!(blk + vec);
    let row_vecs = comptime!(ev / vec);
    let [scores_grid, out_grid, state_grid] = comptime!(tiles.grids());

    // The launch's cube dim; the register tiles above are laid out for it.
    let units = comptime!(tiles.units);
    let unit = UNIT_POS as usize;
    let bh = CUBE_POS_Y as usize;
    let c0 = CUBE_POS_X as usize * ev;
    let segment = CUBE_POS_Z as usize;
    let bh_count = CUBE_COUNT_Y as usize;

    let heads = q.shape(1);
    let n = q.shape(2);
    let dqk = q.shape(3);
    let dv = v.shape(3);
    let head = bh % heads;
    let batch = bh / heads;

    let qk_base = bh * n * dqk;
    let v_base = bh * n * dv;
    let seg_start = segment * seg_len;
    let seg_end = min(n, seg_start + seg_len);

    // The local-state pass reads neither Q nor the scores: one vector each fills the slots.
    let mut qs = SharedMemory::<Vector<f32, N>>::new(comptime!(if outputs {
        tiles.qk_chunk() / vec
    } else {
        1
    }));
    let mut ks = SharedMemory::<Vector<f32, N>>::new(comptime!(tiles.qk_chunk() / vec));
    let mut vs = SharedMemory::<Vector<f32, N>>::new(comptime!(blk * ev / vec));
    // Transposed: `att[j att_row + i]` is query i's score of key j.
    let mut att = SharedMemory::<Vector<f32, N>>::new(comptime!(if outputs {
        tiles.scores() / vec
    } else {
        1
    }));
    let mut kv = SharedMemory::<Vector<f32, N>>::new(comptime!(dcap * ev / vec));
    let mut decay = SharedMemory::<f32>::new(blk + 1);

    // decay[x] = lambda^x = exp(-s x) for x in [0, blk]: every exponent used is in that range.
    let slope = slopes[head];
    let mut x = unit;
    while x <= blk {
        decay[x] = (-slope * f32::cast_from(x as u32)).exp();
        x += units;
    }

    let mut idx = unit;
    while idx < dcap * row_vecs {
        let row = idx / row_vecs;
        let col = (idx % row_vecs) * vec;
        let mut init = Vector::<f32, N>::new(0.0f32);
        if has_state {
            if row < dqk && c0 + col < dv {
                #[unroll]
                for l in 0..vec {
                    init[l] = entering_state(state_in, segment, batch, head, row, c0 + col + l);
                }
            }
        }
        kv[idx] = init;
        idx += units;
    }
    sync_cube();

    let shift_inter = if reverse { 0usize } else { 1usize };
    let shift_update = if reverse { 1usize } else { 0usize };
    let num_chunks = dqk.div_ceil(dk);
    // This unit's place in the output grid.
    let (og_gr, og_gc, og_tr, og_tc) =
        comptime!((out_grid.gr, out_grid.gc, out_grid.tr, out_grid.tc));
    let (our, ouc) = place(out_grid);

    let mut t0 = seg_start;
    while t0 < seg_end {
        let m = min(blk, seg_end - t0);

        let vr = fetch(v, v_base, n, dv, c0, t0, m, blk, ev, units, vec, reverse);
        stage(&vr, &mut vs, blk, ev, ev, units, vec);
        let mut scores = zeros(scores_grid);
        let mut inter = zeros(out_grid);

        // A chunk's update reaches the state after the next barrier, when every unit has
        // read the rows it replaces for the inter term: a barrier per chunk fewer (H200, f32:
        // -1 to -4 % on CUDA, -4 to -5 % on Vulkan, NOTES v29).
        let mut update = zeros(state_grid);
        for chunk in 0..num_chunks {
            let d0 = chunk * dk;
            sync_cube();
            if chunk > 0 {
                update_state(&mut kv, &mut update, d0 - dk, decay[m], state_grid, ev, vec);
            }
            let kr = fetch(k, qk_base, n, dqk, d0, t0, m, blk, dk, units, vec, reverse);
            if outputs {
                let qr = fetch(q, qk_base, n, dqk, d0, t0, m, blk, dk, units, vec, reverse);
                stage(&qr, &mut qs, blk, dk, qk_row, units, vec);
            }
            stage(&kr, &mut ks, blk, dk, qk_row, units, vec);
            sync_cube();

            if outputs {
                // intra scores of this qk chunk, and inter against this chunk's state rows.
                product(
                    &qs,
                    0usize,
                    &ks,
                    0usize,
                    dk,
                    &decay,
                    0usize,
                    &mut scores,
                    comptime!(Operand::reduction(qk_row)),
                    comptime!(Operand::reduction(qk_row)),
                    false,
                    scores_grid,
                    vec,
                );
                product(
                    &qs,
                    0usize,
                    &kv,
                    d0 * ev,
                    dk,
                    &decay,
                    0usize,
                    &mut inter,
                    comptime!(Operand::reduction(qk_row)),
                    comptime!(Operand::tile(ev)),
                    false,
                    out_grid,
                    vec,
                );
            }

            // state update of this chunk's rows: lambda^m KV + sum_j lambda^(m-1-j+shift) k_j v_j.
            // Rows of K and V past m are zero, so the sum may run on to a whole vector.
            product(
                &ks,
                0usize,
                &vs,
                0usize,
                round_up(m, vec),
                &decay,
                m - 1 + shift_update,
                &mut update,
                comptime!(Operand::tile(qk_row)),
                comptime!(Operand::tile(ev)),
                true,
                state_grid,
                vec,
            );
        }

        if outputs {
            // The masked, decayed scores, transposed, for the intra product.
            let (g_gr, g_gc, g_tr, g_tc) = comptime!((
                scores_grid.gr,
                scores_grid.gc,
                scores_grid.tr,
                scores_grid.tc
            ));
            let ur = unit / g_gc;
            let uc = unit % g_gc;
            if ur < g_gr {
                #[unroll]
                for c in 0..g_tc {
                    let j = uc + g_gc * c;
                    #[unroll]
                    for a in 0..comptime!(g_tr / vec) {
                        let i0 = (ur + g_gr * a) * vec;
                        let mut p = Vector::<f32, N>::new(0.0f32);
                        #[unroll]
                        for l in 0..vec {
                            if j <= i0 + l {
                                p[l] = scores[(a * vec + l) * g_tc + c] * decay[i0 + l - j];
                            }
                        }
                        att[(j * att_row + i0) / vec] = p;
                    }
                }
            }
            sync_cube();

            if our < og_gr {
                #[unroll]
                for r in 0..og_tr {
                    let i = tile_index(our, r, og_gr, vec);
                    #[unroll]
                    for c in 0..og_tc {
                        inter[r * og_tc + c] *= decay[i + shift_inter];
                    }
                }
            }
            // Scores past this unit's last row are masked to zero: skip them.
            let last_row = tile_index(our, og_tr - 1, og_gr, vec);
            let keys = round_up(min(m, last_row + 1), vec);
            product(
                &att,
                0usize,
                &vs,
                0usize,
                keys,
                &decay,
                0usize,
                &mut inter,
                comptime!(Operand::tile(att_row)),
                comptime!(Operand::tile(ev)),
                false,
                out_grid,
                vec,
            );
            if our < og_gr {
                #[unroll]
                for r in 0..og_tr {
                    let i = tile_index(our, r, og_gr, vec);
                    #[unroll]
                    for cv in 0..comptime!(og_tc / vec) {
                        let col = c0 + (ouc + og_gc * cv) * vec;
                        if i < m && col < dv {
                            let t = time_index(t0 + i, n, reverse);
                            let mut o = Vector::<f32, N>::new(0.0f32);
                            #[unroll]
                            for l in 0..vec {
                                o[l] = inter[r * og_tc + cv * vec + l];
                            }
                            out[(v_base + t * dv + col) / vec] = Vector::cast_from(o);
                        }
                    }
                }
            }
        }
        // Every unit read the last chunk's state rows before the scores' barrier (the local
        // pass reads none).
        update_state(
            &mut kv,
            &mut update,
            (num_chunks - 1) * dk,
            decay[m],
            state_grid,
            ev,
            vec,
        );
        // The next block overwrites the V slice and the scores.
        sync_cube();
        t0 += blk;
    }

    if write_state || !outputs {
        let base = (segment * bh_count + bh) * dqk;
        let mut idx = unit;
        while idx < dcap * row_vecs {
            let row = idx / row_vecs;
            let col = (idx % row_vecs) * vec;
            if row < dqk && c0 + col < dv {
                let s = kv[idx];
                #[unroll]
                for l in 0..vec {
                    state_out[(base + row) * dv + c0 + col + l] = s[l];
                }
            }
            idx += units;
        }
    }
}

/// Local states [`scan_kernel`] loads at once per unit.
const SCAN_CHUNK: usize = 8;

/// Chains segment states: `S_0 = S0` (or zeros), `S_(s+1) = lambda^len_s S_s + local[s]`,
/// keeping every `every`-th (`entering[s / every] = S_s`) and the state after the last
/// segment. One unit per element. `every > 1` lets the local-state pass run on shorter
/// segments (more cubes) than the output pass, whose segments are `every` of them.
///
/// `local`: `[S, B, H, D, E]` contiguous; `initial`: `[1, B, H, D, E]` any strides, read when
/// `has_state`; `entering`: `[S / every rounded up, B, H, D, E]` and `last`: `[B, H, D, E]`,
/// contiguous. Local segments hold `seg_len` tokens but the last, which holds the rest of
/// `n`. A sweep that wants no final state skips the last output segment's local states
/// (nothing reads them): then `entering` has one row more than `S / every`, and the state
/// after the last local segment goes there instead of to `last`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn scan_kernel(
    local: &Tensor<f32>,
    initial: &Tensor<f32>,
    slopes: &Tensor<f32>,
    entering: &mut Tensor<f32>,
    last: &mut Tensor<f32>,
    seg_len: usize,
    every: usize,
    n: usize,
    #[comptime] has_state: bool,
) {
    let segments = local.shape(0);
    let heads = local.shape(2);
    let d = local.shape(3);
    let e = local.shape(4);
    let per_segment = local.shape(1) * heads * d * e;
    let idx = ABSOLUTE_POS;
    if idx >= per_segment {
        terminate!();
    }
    let col = idx % e;
    let row = (idx / e) % d;
    let head = (idx / (e * d)) % heads;
    let batch = idx / (e * d * heads);
    let slope = slopes[head];

    let mut state = 0.0f32;
    if has_state {
        state = initial[batch * initial.stride(1)
            + head * initial.stride(2)
            + row * initial.stride(3)
            + col * initial.stride(4)];
    }
    // Each step needs only its own local state, so a chunk's loads are issued together and
    // the chain waits on memory once per chunk rather than once per segment (H200,
    // (1,16,64K): 14 dependent loads per unit took 12 us).
    let mut s0 = 0usize;
    while s0 < segments {
        let mut chunk = Array::<f32>::new(SCAN_CHUNK);
        #[unroll]
        for j in 0..SCAN_CHUNK {
            chunk[j] = 0.0;
            if s0 + j < segments {
                chunk[j] = local[(s0 + j) * per_segment + idx];
            }
        }
        #[unroll]
        for j in 0..SCAN_CHUNK {
            let s = s0 + j;
            if s < segments {
                if s % every == 0 {
                    entering[(s / every) * per_segment + idx] = state;
                }
                let len = min(seg_len, n - s * seg_len);
                state = (-slope * f32::cast_from(len as u32)).exp() * state + chunk[j];
            }
        }
        s0 += SCAN_CHUNK;
    }
    let kept = segments.div_ceil(every);
    if kept < entering.shape(0) {
        entering[kept * per_segment + idx] = state;
    } else {
        last[idx] = state;
    }
}

/// The final state's gradient reaching k or v: `out[t] = lambda^(n-1-t) x_t M`, with `x`
/// `[B, H, N, R]` contiguous, `m` `[B, H, R, C]` fp32 read through its strides (`dS` or
/// `dS^T`), `out` `[B, H, N, C]`. One unit per output element, fp32 sums.
#[cube(launch_unchecked)]
pub fn state_grad_kernel<F: Float>(
    x: &Tensor<F>,
    m: &Tensor<f32>,
    slopes: &Tensor<f32>,
    out: &mut Tensor<F>,
    #[define(F)] _dtype: StorageType,
) {
    let idx = ABSOLUTE_POS;
    if idx >= out.len() {
        terminate!();
    }
    let heads = x.shape(1);
    let n = x.shape(2);
    let r_dim = x.shape(3);
    let c_dim = out.shape(3);
    let c = idx % c_dim;
    let t = (idx / c_dim) % n;
    let bh = idx / (c_dim * n);
    let head = bh % heads;
    let batch = bh / heads;
    let m_base = batch * m.stride(0) + head * m.stride(1) + c * m.stride(3);
    let x_base = (bh * n + t) * r_dim;
    let mut acc = 0.0f32;
    for r in 0..r_dim {
        acc += f32::cast_from(x[x_base + r]) * m[m_base + r * m.stride(2)];
    }
    let decay = (-slopes[head] * f32::cast_from((n - 1 - t) as u32)).exp();
    out[idx] = F::cast_from(decay * acc);
}
