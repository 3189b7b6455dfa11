//! Sequence parallelism for long contexts, the LASP way (Sun et al., "Linear Attention
//! Sequence Parallelism", arXiv 2404.02882): split the sequence into contiguous segments,
//! one per device, and pass only the `d x e` state between them in ring order.
//!
//! Softmax attention would need every device to see every earlier key (ring attention
//! moves `O(n d)` per hop); linear attention summarises the past in one state, so a hop
//! moves `b * h * d * e` fp32 values whatever the context length. The three phases:
//! 1. intra, in parallel: each device runs the op on its segment from a zero state,
//!    giving its local output and its local state `sum_j lambda^(m-1-j) k_j^T v_j`;
//! 2. the ring, sequential but tiny: `S_in(i+1) = lambda^m(i) S_in(i) + local(i)`, each
//!    state sent from device `i` to device `i + 1`;
//! 3. inter, in parallel: `o_t += lambda^(t+1) q_t S_in(i)` on each device.
//!
//! The op is linear in (initial state, keys x values), so phase 1 + phase 3 equal one call
//! from `S_in(i)`; splitting them lets phase 1 run before the ring has arrived. Under
//! `Autodiff` the backward is the same ring in reverse order (the state's gradient flows
//! from device `i + 1` back to `i`), which is LASP's backward pass.

use burn::tensor::{DType, Int, Tensor};

use crate::{IntoSlopes, LightningBackend, checks, lightning_attention_with_state};

/// Lightning attention over `devices.len()` contiguous sequence segments, segment `i` on
/// `devices[i]`; returns the output and final state on `devices[0]`. Equal to
/// [`lightning_attention_with_state`] on the whole sequence (outputs and gradients), which
/// the tests check; the devices may repeat (one machine, several segments).
pub fn lasp_attention<B: LightningBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    slopes: impl IntoSlopes<B>,
    initial_state: Option<Tensor<B, 4>>,
    devices: &[B::Device],
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let slopes = slopes.into_slopes("lightning_attention");
    checks::check_attention(&q, &k, &v, slopes.tensor(), initial_state.as_ref());
    assert!(
        !devices.is_empty(),
        "lasp_attention: `devices` is empty, expected at least one device"
    );
    let [b, h, n, d] = q.dims();
    let e = v.dims()[3];
    if n == 0 {
        return lightning_attention_with_state(q, k, v, slopes, initial_state);
    }
    let home = q.device();
    let seg = n.div_ceil(devices.len()).max(1);
    let ranges: Vec<_> = (0..n)
        .step_by(seg)
        .map(|start| start..(start + seg).min(n))
        .collect();
    let part = |t: &Tensor<B, 4>, r: &std::ops::Range<usize>, dev| {
        t.clone().slice([0..b, 0..h, r.clone()]).to_device(dev)
    };

    // Phase 1: each segment from a zero state, independently.
    let local: Vec<_> = ranges
        .iter()
        .zip(devices)
        .map(|(r, dev)| {
            let slopes = slopes.clone().to_device(dev);
            lightning_attention_with_state(
                part(&q, r, dev),
                part(&k, r, dev),
                part(&v, r, dev),
                slopes,
                None,
            )
        })
        .collect();

    // Phase 2: the ring. Only `[b, h, d, e]` crosses devices.
    let mut state = initial_state
        .map(|s| s.cast(DType::F32))
        .unwrap_or_else(|| Tensor::zeros([b, h, d, e], (&home, DType::F32)));
    let mut incoming = Vec::with_capacity(ranges.len());
    for ((r, dev), (_, local_state)) in ranges.iter().zip(devices).zip(&local) {
        let state_in = state.to_device(dev);
        let carried =
            decay(slopes.tensor(), r.len(), dev).slice([0..1, 0..h, r.len() - 1..r.len()]);
        state = state_in.clone() * carried + local_state.clone();
        incoming.push(state_in);
    }

    // Phase 3: the inter term from each segment's incoming state, then gather.
    let outputs = ranges
        .iter()
        .zip(devices)
        .zip(local.into_iter().zip(incoming))
        .map(|((r, dev), ((o, _), state_in))| {
            let q = part(&q, r, dev).cast(DType::F32) * decay(slopes.tensor(), r.len(), dev);
            (o.clone().cast(DType::F32) + q.matmul(state_in))
                .cast(o.dtype())
                .to_device(&home)
        })
        .collect();
    (Tensor::cat(outputs, 2), state.to_device(&home))
}

/// `lambda^(t+1)` for `t < len` as `[1, h, len, 1]` (fp32, on `device`).
fn decay<B: LightningBackend>(
    slopes: &Tensor<B, 1>,
    len: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let h = slopes.dims()[0];
    let steps = Tensor::<B, 1, Int>::arange(1..len as i64 + 1, device)
        .float()
        .cast(DType::F32);
    let slopes = slopes.clone().to_device(device).cast(DType::F32);
    let exponents = slopes.reshape([h, 1]).neg() * steps.reshape([1, len]);
    exponents.exp().reshape([1, h, len, 1])
}
