//! Host side of the sweep kernel: tile choice from the device's limits, allocation, launch.

use burn::tensor::{DType, Shape};
use burn_cubecl::{
    CubeRuntime,
    kernel::into_contiguous,
    ops::numeric::empty_device_contiguous_dtype,
    tensor::CubeTensor,
};
use cubecl::prelude::*;

use super::kernel::{Tiles, sweep_kernel};
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
}

/// Units per cube: enough to cover a block's tiles without idling most of them.
const UNITS: u32 = 256;

/// Picks the tiles: the widest value slice first (fewer cubes recompute the intra scores),
/// then the longest block, then the widest qk chunk that fit in shared memory.
pub(crate) fn choose_tiles(dqk: usize, dv: usize, max_shared: usize) -> Tiles {
    let ev_cap = dv.next_multiple_of(8).min(64);
    for ev in [64, 32, 16, 8].into_iter().filter(|&ev| ev <= ev_cap) {
        for blk in [64, 32, 16] {
            for dk in [32, 16, 8] {
                let tiles = Tiles {
                    blk,
                    dk,
                    ev,
                    dcap: dqk.next_multiple_of(dk),
                };
                if tiles.shared_bytes() <= max_shared {
                    return tiles;
                }
            }
        }
    }
    panic!(
        "lightning_attention: no tiling of d = {dqk}, e = {dv} fits in {max_shared} bytes of shared memory"
    );
}

pub(crate) fn sweep<R: CubeRuntime>(args: Sweep<R>) -> (CubeTensor<R>, Option<CubeTensor<R>>) {
    let Sweep {
        q,
        k,
        v,
        slopes,
        state,
        direction,
        write_state,
    } = args;
    let q = into_contiguous(q);
    let k = into_contiguous(k);
    let v = into_contiguous(v);
    let slopes = into_contiguous(slopes);
    let [b, h, n, dqk] = q.meta.shape().dims::<4>();
    let dv = v.meta.shape()[3];
    let client = q.client.clone();
    let device = q.device.clone();

    let props = &client.properties().hardware;
    let tiles = choose_tiles(dqk, dv, props.max_shared_memory_size);
    let units = UNITS.min(props.max_units_per_cube);
    let slices = dv.div_ceil(tiles.ev) as u32;
    let rows = (b * h) as u32;
    assert!(
        rows <= props.max_cube_count.1,
        "lightning_attention: batch * heads = {rows} exceeds the device's {} cubes along y",
        props.max_cube_count.1
    );

    let out = empty_device_contiguous_dtype(
        client.clone(),
        device.clone(),
        Shape::new([b, h, n, dv]),
        q.dtype,
    );
    // With no state to write, the kernel never touches `state_out`: any fp32 tensor does.
    let state_out = if write_state {
        empty_device_contiguous_dtype(
            client.clone(),
            device,
            Shape::new([b, h, dqk, dv]),
            DType::F32,
        )
    } else {
        slopes.clone()
    };
    let has_state = state.is_some();
    // Likewise `state_in` is only read when there is a state.
    let state_in = state.unwrap_or_else(|| slopes.clone());

    // SAFETY: every index the kernel forms is bounded by the shapes checked above (rows
    // and columns past n, dqk or dv are masked), which `check_mode = "validate"` confirms
    // in the test suite.
    unsafe {
        sweep_kernel::launch_unchecked::<R>(
            &client,
            CubeCount::Static(slices, rows, 1),
            CubeDim::new_1d(units),
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            slopes.into_tensor_arg(),
            state_in.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            state_out.clone().into_tensor_arg(),
            tiles,
            has_state,
            write_state,
            direction == Direction::Backward,
            out.dtype.into(),
        );
    }
    (out, write_state.then_some(state_out))
}
