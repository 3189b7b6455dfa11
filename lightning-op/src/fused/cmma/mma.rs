//! The warp-level product the sweep is built on: `acc += A B` over 16x16x16 steps into
//! 16x16 fp32 accumulator tiles, operands read from shared memory, in two forms.
//! - [`Wmma`]: CubeCL's `cmma` (WMMA 16x16x16), every runtime with cooperative matrices.
//!   A fragment's elements are opaque, so scaling one goes through shared memory, and on
//!   CUDA each operand load compiles to four generic loads and a shuffle (`MOVM`).
//! - [`Ptx`]: CubeCL's manual MMA on CUDA: `ldmatrix` (one `LDSM.x4` per operand tile,
//!   `.trans` where the stored layout is not the one `mma.sync` wants) and two
//!   `mma.sync.m16n8k16` per step. Accumulators are plain registers whose positions are
//!   known, so scaling, casting and storing a tile are a handful of register operations,
//!   and so is weighting an operand's rows (the decays the sweep needs, see
//!   [`TensorCore::scale_rows`] and [`TensorCore::weight_rhs`]): WMMA has no such access,
//!   so its sweep makes decayed copies of Q and K in shared memory instead.

use cubecl::cmma::{self, Matrix, MatrixIdent, MatrixLayout, MmaDefinition};
use cubecl::prelude::*;

/// Tile edge.
pub const T: usize = 16;

/// How an operand tile is stored: rows `stride` elements apart, `vec` elements per item of
/// its shared memory, `layout` as the product reads it (`RowMajor`: `[rows, k]` for A,
/// `[k, cols]` for B; `ColMajor`: the transpose is stored).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Operand {
    pub stride: usize,
    pub vec: usize,
    pub layout: MatrixLayout,
}

/// This unit's lane in its warp. The sweep's cubes are `(32, WARPS)`, so it is `UNIT_POS_X`;
/// `UNIT_POS_PLANE` compiles on CUDA to `% warpSize`, a division by a run-time value that
/// the products would otherwise redo wherever registers run short (ncu of v14: ~15
/// instructions each time).
#[cube]
pub fn lane() -> usize {
    UNIT_POS_X as usize
}

/// One past the last element of a 16x16 tile at `at` with rows (or columns) `stride` apart.
#[cube]
pub fn tile_end(at: usize, stride: usize) -> usize {
    at + (T - 1) * stride + T
}

#[cube]
pub trait TensorCore<F: Float> {
    /// A 16x16 fp32 accumulator tile, held by one warp.
    type Acc: CubeType;
    /// A 16x16 A operand in registers, for products that share it.
    type Lhs: CubeType;
    /// A 16x16 B operand in registers, for products that share it.
    type Rhs: CubeType;

    fn zero() -> Self::Acc;

    /// The 16x16 B operand of `b` from element `at`.
    fn load_rhs<V: CubePrimitive>(
        b: &SharedMemory<V>,
        at: usize,
        #[comptime] op: Operand,
    ) -> Self::Rhs;

    /// The 16x16 A operand of `a` from element `at`.
    fn load_lhs<V: CubePrimitive>(
        a: &SharedMemory<V>,
        at: usize,
        #[comptime] op: Operand,
    ) -> Self::Lhs;

    /// `acc += A B`.
    fn mma(acc: &mut Self::Acc, a: &Self::Lhs, b: &Self::Rhs);

    /// Row `k` of `b` times `w[at + k]`, the weight rounded to `F` and multiplied two
    /// lanes at a time (`HMUL2`). Manual MMA only.
    fn weight_rhs(b: &mut Self::Rhs, w: &SharedMemory<f32>, at: usize);

    /// Row `r` of `acc` times `w[at + r]`. Manual MMA only.
    fn scale_rows(acc: &mut Self::Acc, w: &SharedMemory<f32>, at: usize);

    /// Element `(r, c)` of `acc` times `decay[off + r - c]`, zero where `c > off + r`: the
    /// decay and causal mask of a score tile whose rows start `off` tokens after its
    /// columns. Manual MMA only.
    fn decay_mask(acc: &mut Self::Acc, decay: &SharedMemory<f32>, off: usize);

    /// The tile into shared fp32 rows `stride` apart from element `at`, row-major.
    fn store(dst: &mut SharedMemory<f32>, acc: &Self::Acc, at: usize, #[comptime] stride: usize);

    /// The tile rounded to `F`, into shared rows `stride` apart from element `at`.
    fn store_cast(dst: &mut SharedMemory<F>, acc: &Self::Acc, at: usize, #[comptime] stride: usize);

    /// The tile from shared fp32 rows `stride` apart from element `at`.
    fn load(acc: &mut Self::Acc, src: &SharedMemory<f32>, at: usize, #[comptime] stride: usize);

    /// `acc <- s acc`; may pass through the warp's fp32 scratch tile at `scratch` (rows
    /// `stride` apart), which is free again on return.
    fn scale(
        acc: &mut Self::Acc,
        s: f32,
        scratch_mem: &mut SharedMemory<f32>,
        scratch: usize,
        #[comptime] stride: usize,
    );
}

/// `acc += A B`, both 16x16 tiles from shared memory.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn product<F: Float, M: TensorCore<F>, A: CubePrimitive, B: CubePrimitive>(
    acc: &mut M::Acc,
    a: &SharedMemory<A>,
    a_at: usize,
    #[comptime] a_op: Operand,
    b: &SharedMemory<B>,
    b_at: usize,
    #[comptime] b_op: Operand,
) {
    let rhs = M::load_rhs::<B>(b, b_at, b_op);
    M::mma(acc, &M::load_lhs::<A>(a, a_at, a_op), &rhs);
}

/// CubeCL's cooperative matrices (WMMA).
pub struct Wmma;

#[cube]
fn wmma_operand<F: Float, V: CubePrimitive>(
    mem: &SharedMemory<V>,
    at: usize,
    #[comptime] ident: MatrixIdent,
    #[comptime] op: Operand,
) -> Matrix<F> {
    let frag = unsafe { Matrix::<F>::uninitialized(ident, T, T, T, op.layout) };
    let tile = mem.slice(at / op.vec, tile_end(at, op.stride) / op.vec);
    cmma::load(&frag, &tile, op.stride as u32);
    frag
}

#[cube]
impl<F: Float> TensorCore<F> for Wmma {
    type Acc = Matrix<f32>;
    type Lhs = Matrix<F>;
    type Rhs = Matrix<F>;

    fn zero() -> Matrix<f32> {
        Matrix::<f32>::from_value(
            MatrixIdent::Accumulator,
            T,
            T,
            T,
            MatrixLayout::Undefined,
            0.0,
        )
    }

    fn load_rhs<V: CubePrimitive>(
        b: &SharedMemory<V>,
        at: usize,
        #[comptime] op: Operand,
    ) -> Matrix<F> {
        wmma_operand::<F, V>(b, at, MatrixIdent::B, op)
    }

    fn load_lhs<V: CubePrimitive>(
        a: &SharedMemory<V>,
        at: usize,
        #[comptime] op: Operand,
    ) -> Matrix<F> {
        wmma_operand::<F, V>(a, at, MatrixIdent::A, op)
    }

    fn mma(acc: &mut Matrix<f32>, a: &Matrix<F>, b: &Matrix<F>) {
        cmma::execute::<F, F, f32, f32>(a, b, acc, acc);
    }

    fn weight_rhs(_b: &mut Matrix<F>, _w: &SharedMemory<f32>, _at: usize) {
        comptime!(panic!(
            "WMMA fragments hide their rows: weight the operand in shared memory"
        ));
    }

    fn scale_rows(_acc: &mut Matrix<f32>, _w: &SharedMemory<f32>, _at: usize) {
        comptime!(panic!(
            "WMMA fragments hide their rows: weight the operand in shared memory"
        ));
    }

    fn decay_mask(_acc: &mut Matrix<f32>, _decay: &SharedMemory<f32>, _off: usize) {
        comptime!(panic!(
            "WMMA fragments hide their positions: mask the scores in shared memory"
        ));
    }

    fn store(dst: &mut SharedMemory<f32>, acc: &Matrix<f32>, at: usize, #[comptime] stride: usize) {
        cmma::store(
            &mut dst.slice_mut(at, tile_end(at, stride)),
            acc,
            stride as u32,
            MatrixLayout::RowMajor,
        );
    }

    fn store_cast(
        dst: &mut SharedMemory<F>,
        acc: &Matrix<f32>,
        at: usize,
        #[comptime] stride: usize,
    ) {
        let cast = cmma::cast::<f32, F>(acc);
        cmma::store(
            &mut dst.slice_mut(at, tile_end(at, stride)),
            &cast,
            stride as u32,
            MatrixLayout::RowMajor,
        );
    }

    fn load(acc: &mut Matrix<f32>, src: &SharedMemory<f32>, at: usize, #[comptime] stride: usize) {
        cmma::load_with_layout(
            acc,
            &src.slice(at, tile_end(at, stride)),
            stride as u32,
            MatrixLayout::RowMajor,
        );
    }

    fn scale(
        acc: &mut Matrix<f32>,
        s: f32,
        scratch_mem: &mut SharedMemory<f32>,
        scratch: usize,
        #[comptime] stride: usize,
    ) {
        <Self as TensorCore<F>>::store(scratch_mem, acc, scratch, stride);
        sync_plane();
        let lane = lane();
        #[unroll]
        for e in 0..T * T / 32 {
            let idx = lane + e * 32;
            let at = scratch + (idx / T) * stride + idx % T;
            scratch_mem[at] = scratch_mem[at] * s;
        }
        sync_plane();
        <Self as TensorCore<F>>::load(acc, scratch_mem, scratch, stride);
        sync_plane();
    }
}

/// Manual MMA (`ldmatrix` + `mma.sync.m16n8k16`), CUDA only.
pub struct Ptx;

/// 32-bit registers per lane of an operand tile (four 8x8 matrices, two elements each).
const REGS: usize = 4;
/// Two-float items per lane of each 16x8 accumulator half.
const ITEMS: usize = 2;

/// Two 16x8 halves (columns 0-7 and 8-15) of a 16x16 tile in `mma.sync`'s accumulator
/// layout: lane `l` holds rows `l / 4` (item 0) and `l / 4 + 8` (item 1), columns
/// `2 (l % 4)` and the next, of each half.
#[derive(CubeType)]
pub struct PtxAcc {
    lo: Array<Vector<f32, Const<2>>>,
    hi: Array<Vector<f32, Const<2>>>,
}

/// Where lane `lane` points `ldmatrix.x4` in a 16x16 tile with rows `stride` apart. Lanes
/// `8j .. 8j + 8` give the rows of 8x8 matrix `j`, which lands in register `j`; A wants
/// matrices ordered (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), .., and B
/// (k 0-7, cols 0-7), (k 8-15, cols 0-7), (k 0-7, cols 8-15), .. (registers 0-1 are the
/// first 16x8 half). Row-major A and row-major (`[k, cols]`) B both walk the stored rows
/// first; the column-major ones the stored columns.
#[cube]
fn ldmatrix_offset(lane: usize, #[comptime] op: Operand) -> usize {
    let sub = lane % 8usize;
    let bit3 = (lane / 8usize) % 2usize;
    let bit4 = lane / 16usize;
    if comptime!(op.layout == MatrixLayout::RowMajor) {
        (sub + 8usize * bit3) * op.stride + 8usize * bit4
    } else {
        (sub + 8usize * bit4) * op.stride + 8usize * bit3
    }
}

/// The four registers of one operand tile. `mma.sync` takes A row-major and B column-major
/// (K-contiguous per column), so A stored column-major and B stored row-major are loaded
/// with `.trans`. In B's registers, `j` holds rows `2 (l % 4) + 8 (j % 2)` and the next.
#[cube]
fn ptx_operand<F: Float, V: CubePrimitive>(
    mem: &SharedMemory<V>,
    at: usize,
    #[comptime] ident: MatrixIdent,
    #[comptime] op: Operand,
) -> Array<Vector<F, Const<2>>> {
    let def = MmaDefinition::<F, F, f32>::new(T, T / 2, T);
    let start = (at + ldmatrix_offset(lane(), op)) / op.vec;
    let row = mem.slice(start, start + comptime!((8 / op.vec).max(1)));
    let transpose = comptime!((ident == MatrixIdent::A) != (op.layout == MatrixLayout::RowMajor));
    let regs = def.load_matrix::<V, Const<2>>(&row, ident, REGS, transpose);
    let mut out = Array::<Vector<F, Const<2>>>::new(REGS);
    #[unroll]
    for i in 0..REGS {
        out[i] = Vector::cast_from(regs[i]);
    }
    out
}

#[cube]
fn half_b<F: Float>(
    regs: &Array<Vector<F, Const<2>>>,
    #[comptime] half: usize,
) -> Array<Vector<F, Const<2>>> {
    let mut out = Array::<Vector<F, Const<2>>>::new(ITEMS);
    out[0] = regs[2 * half];
    out[1] = regs[2 * half + 1];
    out
}

/// Element offset of lane `lane`'s item `item` (0: row `l / 4`, 1: row `l / 4 + 8`) of a
/// tile's half `half`, rows `stride` apart: always even, so each item is one 2-wide access.
#[cube]
fn acc_offset(
    lane: usize,
    #[comptime] item: usize,
    #[comptime] half: usize,
    #[comptime] stride: usize,
) -> usize {
    (lane / 4 + 8 * item) * stride + 8 * half + 2 * (lane % 4)
}

/// The tile as `O` (one rounding from fp32, none for `O = f32`) into shared rows `stride`
/// apart from element `at`.
#[cube]
fn ptx_store<O: Float>(
    dst: &mut SharedMemory<O>,
    acc: &PtxAcc,
    at: usize,
    #[comptime] stride: usize,
) {
    let lane = lane();
    let mut d = dst
        .slice_mut(at, tile_end(at, stride))
        .into_vectorized()
        .with_vector_size::<Const<2>>();
    #[unroll]
    for i in 0..ITEMS {
        d[acc_offset(lane, i, 0usize, stride) / 2] = Vector::cast_from(acc.lo[i]);
        d[acc_offset(lane, i, 1usize, stride) / 2] = Vector::cast_from(acc.hi[i]);
    }
}

/// Columns `c` and `c + 1` of row `r` (counted from the columns' first token) of a score
/// tile, decayed by their distance and masked past the diagonal.
#[cube]
fn band(
    x: Vector<f32, Const<2>>,
    decay: &SharedMemory<f32>,
    r: usize,
    c: usize,
) -> Vector<f32, Const<2>> {
    let mut out = Vector::<f32, Const<2>>::new(0.0f32);
    #[unroll]
    for e in 0..2usize {
        if c + e <= r {
            out[e] = x[e] * decay[r - c - e];
        }
    }
    out
}

#[cube]
impl<F: Float> TensorCore<F> for Ptx {
    type Acc = PtxAcc;
    type Lhs = PtxLhs<F>;
    type Rhs = Array<Vector<F, Const<2>>>;

    fn zero() -> PtxAcc {
        let mut lo = Array::<Vector<f32, Const<2>>>::new(ITEMS);
        let mut hi = Array::<Vector<f32, Const<2>>>::new(ITEMS);
        #[unroll]
        for i in 0..ITEMS {
            lo[i] = Vector::new(0.0f32);
            hi[i] = Vector::new(0.0f32);
        }
        PtxAcc { lo, hi }
    }

    fn load_rhs<V: CubePrimitive>(
        b: &SharedMemory<V>,
        at: usize,
        #[comptime] op: Operand,
    ) -> Array<Vector<F, Const<2>>> {
        ptx_load_rhs::<F, V>(b, at, op)
    }

    fn load_lhs<V: CubePrimitive>(
        a: &SharedMemory<V>,
        at: usize,
        #[comptime] op: Operand,
    ) -> PtxLhs<F> {
        ptx_load_lhs::<F, V>(a, at, op)
    }

    fn mma(acc: &mut PtxAcc, a: &PtxLhs<F>, b: &Array<Vector<F, Const<2>>>) {
        ptx_mma::<F>(acc, a, b);
    }

    fn weight_rhs(b: &mut Array<Vector<F, Const<2>>>, w: &SharedMemory<f32>, at: usize) {
        weight_k::<F>(b, w, at, MatrixIdent::B);
    }

    fn scale_rows(acc: &mut PtxAcc, w: &SharedMemory<f32>, at: usize) {
        let row = at + lane() / 4;
        #[unroll]
        for i in 0..ITEMS {
            let wi = Vector::<f32, Const<2>>::new(w[row + 8 * i]);
            acc.lo[i] = acc.lo[i] * wi;
            acc.hi[i] = acc.hi[i] * wi;
        }
    }

    fn decay_mask(acc: &mut PtxAcc, decay: &SharedMemory<f32>, off: usize) {
        let lane = lane();
        let c = 2 * (lane % 4);
        #[unroll]
        for i in 0..ITEMS {
            let r = off + lane / 4 + 8 * i;
            acc.lo[i] = band(acc.lo[i], decay, r, c);
            acc.hi[i] = band(acc.hi[i], decay, r, c + 8);
        }
    }

    fn store(dst: &mut SharedMemory<f32>, acc: &PtxAcc, at: usize, #[comptime] stride: usize) {
        ptx_store::<f32>(dst, acc, at, stride);
    }

    fn store_cast(dst: &mut SharedMemory<F>, acc: &PtxAcc, at: usize, #[comptime] stride: usize) {
        ptx_store::<F>(dst, acc, at, stride);
    }

    fn load(acc: &mut PtxAcc, src: &SharedMemory<f32>, at: usize, #[comptime] stride: usize) {
        let lane = lane();
        let s = src
            .slice(at, tile_end(at, stride))
            .into_vectorized()
            .with_vector_size::<Const<2>>();
        #[unroll]
        for i in 0..ITEMS {
            acc.lo[i] = s[acc_offset(lane, i, 0usize, stride) / 2];
            acc.hi[i] = s[acc_offset(lane, i, 1usize, stride) / 2];
        }
    }

    fn scale(
        acc: &mut PtxAcc,
        s: f32,
        _scratch_mem: &mut SharedMemory<f32>,
        _scratch: usize,
        #[comptime] _stride: usize,
    ) {
        ptx_scale(acc, s);
    }
}

// Manual MMA's own operations, for the output pass that keeps the state as an operand in
// registers ([`super::stationary`]): they rely on the fragments' positions, which the
// [`TensorCore`] form leaves to each implementation.

/// A 16x16 A operand in registers: four pairs of the storage type.
pub type PtxLhs<F> = Array<Vector<F, Const<2>>>;

/// `acc <- s acc`.
#[cube]
pub fn ptx_scale(acc: &mut PtxAcc, s: f32) {
    let s = Vector::<f32, Const<2>>::new(s);
    #[unroll]
    for i in 0..ITEMS {
        acc.lo[i] = acc.lo[i] * s;
        acc.hi[i] = acc.hi[i] * s;
    }
}

/// The B operand tile of `b` from element `at`.
#[cube]
pub fn ptx_load_rhs<F: Float, V: CubePrimitive>(
    b: &SharedMemory<V>,
    at: usize,
    #[comptime] op: Operand,
) -> Array<Vector<F, Const<2>>> {
    ptx_operand::<F, V>(b, at, MatrixIdent::B, op)
}

/// The A operand tile of `a` from element `at`.
#[cube]
pub fn ptx_load_lhs<F: Float, V: CubePrimitive>(
    a: &SharedMemory<V>,
    at: usize,
    #[comptime] op: Operand,
) -> PtxLhs<F> {
    ptx_operand::<F, V>(a, at, MatrixIdent::A, op)
}

/// `acc += A B`, both operands in registers.
#[cube]
pub fn ptx_mma<F: Float>(acc: &mut PtxAcc, a: &PtxLhs<F>, b: &Array<Vector<F, Const<2>>>) {
    let def = MmaDefinition::<F, F, f32>::new(T, T / 2, T);
    def.execute_inplace(a, &half_b::<F>(b, 0usize), &mut acc.lo);
    def.execute_inplace(a, &half_b::<F>(b, 1usize), &mut acc.hi);
}

/// An accumulator tile, rounded to `F`, as the A operand of a further product (its columns
/// become k). The accumulator's layout (rows `l / 4` and `l / 4 + 8`, columns `2 (l % 4)`
/// and the next, in two halves) is the A operand's, register for register, so the tile
/// never passes through shared memory.
#[cube]
pub fn ptx_lhs_of<F: Float>(acc: &PtxAcc) -> PtxLhs<F> {
    let mut a = Array::<Vector<F, Const<2>>>::new(REGS);
    a[0] = Vector::cast_from(acc.lo[0]);
    a[1] = Vector::cast_from(acc.lo[1]);
    a[2] = Vector::cast_from(acc.hi[0]);
    a[3] = Vector::cast_from(acc.hi[1]);
    a
}

/// Column `k` of the A operand `a` times `w[at + k]`, as [`TensorCore::weight_rhs`] weights
/// B's rows.
#[cube]
pub fn ptx_weight_lhs<F: Float>(a: &mut PtxLhs<F>, w: &SharedMemory<f32>, at: usize) {
    weight_k::<F>(a, w, at, MatrixIdent::A);
}

/// Index `k` (B's rows, A's columns) of an operand tile's registers times `w[at + k]`, the
/// weight rounded to `F` and multiplied two lanes at a time (`HMUL2`). Each register holds k
/// `2 (l % 4)` and the next, plus 8 in B's registers `1, 3` and A's `2, 3`.
#[cube]
fn weight_k<F: Float>(
    regs: &mut Array<Vector<F, Const<2>>>,
    w: &SharedMemory<f32>,
    at: usize,
    #[comptime] ident: MatrixIdent,
) {
    let w = w
        .slice(at, at + T)
        .into_vectorized()
        .with_vector_size::<Const<2>>();
    let k = lane() % 4;
    #[unroll]
    for j in 0..ITEMS {
        let wj = Vector::<F, Const<2>>::cast_from(w[k + 4 * j]);
        #[unroll]
        for i in 0..ITEMS {
            if comptime!(ident == MatrixIdent::A) {
                regs[2 * j + i] *= wj;
            } else {
                regs[2 * i + j] *= wj;
            }
        }
    }
}

/// Column `c` of `acc` times `w[at + c]`.
#[cube]
pub fn ptx_scale_cols(acc: &mut PtxAcc, w: &SharedMemory<f32>, at: usize) {
    let w = w
        .slice(at, at + T)
        .into_vectorized()
        .with_vector_size::<Const<2>>();
    let k = lane() % 4;
    let (lo, hi) = (w[k], w[k + 4]);
    #[unroll]
    for i in 0..ITEMS {
        acc.lo[i] = acc.lo[i] * lo;
        acc.hi[i] = acc.hi[i] * hi;
    }
}

/// The tile's transpose, rounded to `O`, into shared rows `stride` apart from element `at`:
/// element `(r, c)` to `at + c stride + r`. One `stmatrix.x4.trans` (sm_90+): the rounded
/// tile is the A operand's registers ([`ptx_lhs_of`]), whose four 8x8 quarters `stmatrix`
/// stores transposed, each row 16 bytes from the address of lane `8 j + row`. Per tile it
/// replaced eight 2-byte stores and conversions per lane (H200, (1,16,64K): output pass
/// 491 -> 474 us).
#[cube]
pub fn ptx_store_transposed<O: Float>(
    dst: &mut SharedMemory<O>,
    acc: &PtxAcc,
    at: usize,
    #[comptime] stride: usize,
) {
    let def = MmaDefinition::<O, O, f32>::new(T, T / 2, T);
    let lane = lane();
    // Quarter j holds rows (value columns) 8 (j % 2) .. and columns (tokens) 8 (j / 2) ..
    let j = lane / 8;
    let start = at + (lane % 8 + 8 * (j / 2)) * stride + 8 * (j % 2);
    let mut row = dst.slice_mut(start, start + 8);
    def.store_matrix::<O, Const<2>>(&mut row, &ptx_lhs_of::<O>(acc), MatrixIdent::A, REGS, true);
}
