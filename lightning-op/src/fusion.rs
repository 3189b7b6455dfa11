//! `Fusion<B>`: `burn::backend::{Cuda, Wgpu}` with burn's default features are fusion
//! backends, so the op is registered in the fusion stream as a custom operation whose
//! execution runs the inner backend's fused kernels.

use burn::tensor::{
    DType, Shape,
    ops::{FloatTensor, FloatTensorOps},
};
use burn_fusion::{
    Fusion, FusionBackend, FusionRuntime,
    stream::{Operation, OperationStreams},
};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

use crate::{LightningBackend, LightningGrads};

/// Which product of the op a registered custom operation computes.
#[derive(Clone, Copy, Debug)]
enum Product {
    /// inputs `q, k, v, slopes, [state]`; outputs `o, state, [kept]`.
    Forward,
    /// inputs `q, k, v, slopes`; outputs `o, [kept]` (no final state).
    Output,
    /// inputs `q, k, v, slopes, [state], grad_output, [kept]`; outputs `dq, dk, dv,
    /// [d state]`.
    Backward,
    /// inputs `k, v, slopes, grad_state`; outputs `dk, dv, d state`. Run unfused: burn
    /// 0.21's fusion miscomputes these matmul chains when n = 1 (seen on WGPU).
    StateBackward,
    /// inputs `q, k, v, slopes, state`; outputs `o, state`.
    Decode,
}

#[derive(Debug)]
struct LightningOp<B> {
    desc: CustomOpIr,
    product: Product,
    has_state: bool,
    /// Whether the forward keeps, or the backward gets, `kept` (see `Product`).
    has_kept: bool,
    _backend: core::marker::PhantomData<B>,
}

impl<B> Clone for LightningOp<B> {
    fn clone(&self) -> Self {
        Self {
            desc: self.desc.clone(),
            product: self.product,
            has_state: self.has_state,
            has_kept: self.has_kept,
            _backend: core::marker::PhantomData,
        }
    }
}

impl<B: FusionBackend + LightningBackend> Operation<B::FusionRuntime> for LightningOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let mut inputs = self
            .desc
            .inputs
            .iter()
            .map(|ir| handles.get_float_tensor::<B>(ir))
            .collect::<Vec<_>>()
            .into_iter();
        let mut next = || inputs.next().expect("input registered with the op");
        if let Product::StateBackward = self.product {
            let grads = B::lightning_state_backward(next(), next(), next(), next());
            for (ir, tensor) in self.desc.outputs.iter().zip(grads) {
                handles.register_float_tensor::<B>(&ir.id, tensor);
            }
            return;
        }
        if let Product::Decode = self.product {
            let (o, state) = B::lightning_decode(next(), next(), next(), next(), next());
            for (ir, tensor) in self.desc.outputs.iter().zip([o, state]) {
                handles.register_float_tensor::<B>(&ir.id, tensor);
            }
            return;
        }
        let (q, k, v, slopes) = (next(), next(), next(), next());
        let state = self.has_state.then(&mut next);
        let results = match self.product {
            Product::Forward => {
                let (o, state, kept) = B::lightning_forward_kept(q, k, v, slopes, state);
                self.forward_results(o, Some(state), kept)
            }
            Product::Output => {
                let (o, kept) = B::lightning_output_kept(q, k, v, slopes);
                self.forward_results(o, None, kept)
            }
            Product::Backward => {
                let grad_output = next();
                let kept = self.has_kept.then(&mut next);
                let grads = B::lightning_backward(q, k, v, slopes, state, grad_output, kept);
                [grads.q, grads.k, grads.v]
                    .into_iter()
                    .chain(grads.initial_state)
                    .collect()
            }
            Product::StateBackward | Product::Decode => unreachable!("handled above"),
        };
        for (ir, tensor) in self.desc.outputs.iter().zip(results) {
            handles.register_float_tensor::<B>(&ir.id, tensor);
        }
    }
}

impl<B: FusionBackend + LightningBackend> LightningOp<B> {
    /// A forward product's outputs in registration order, `kept` as announced.
    fn forward_results(
        &self,
        o: FloatTensor<B>,
        state: Option<FloatTensor<B>>,
        kept: Option<FloatTensor<B>>,
    ) -> Vec<FloatTensor<B>> {
        assert_eq!(
            kept.is_some(),
            self.has_kept,
            "the forward returned `kept` against lightning_kept_shape"
        );
        [o].into_iter().chain(state).chain(kept).collect()
    }
}

/// Registers one product; returns its outputs in order.
fn register<B: FusionBackend + LightningBackend>(
    product: Product,
    inputs: Vec<FloatTensor<Fusion<B>>>,
    has_state: bool,
    has_kept: bool,
    outputs: Vec<(Shape, DType)>,
) -> Vec<FloatTensor<Fusion<B>>> {
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(inputs.iter());
    let outputs: Vec<TensorIr> = outputs
        .into_iter()
        .map(|(shape, dtype)| TensorIr::uninit(client.create_empty_handle(), shape, dtype))
        .collect();
    let inputs: Vec<TensorIr> = inputs.into_iter().map(|t| t.into_ir()).collect();
    let id = match product {
        Product::Forward => "lightning_attention_forward",
        Product::Output => "lightning_attention_output",
        Product::Backward => "lightning_attention_backward",
        Product::StateBackward => "lightning_attention_state_backward",
        Product::Decode => "lightning_attention_decode",
    };
    let desc = CustomOpIr::new(id, &inputs, &outputs);
    let op = LightningOp::<B> {
        desc: desc.clone(),
        product,
        has_state,
        has_kept,
        _backend: core::marker::PhantomData,
    };
    client.register(streams, OperationIr::Custom(desc), op)
}

/// Registers `Forward` or `Output`; returns `o`, the state (`Forward` only) and `kept`
/// (where the inner backend keeps anything), in that order.
fn register_forward<B: FusionBackend + LightningBackend>(
    product: Product,
    q: FloatTensor<Fusion<B>>,
    k: FloatTensor<Fusion<B>>,
    v: FloatTensor<Fusion<B>>,
    slopes: FloatTensor<Fusion<B>>,
    initial_state: Option<FloatTensor<Fusion<B>>>,
) -> std::vec::IntoIter<FloatTensor<Fusion<B>>> {
    let [b, h, n, d] = q.shape.dims::<4>();
    let e = v.shape[3];
    let device = Fusion::<B>::float_device(&q);
    let kept = B::lightning_kept_shape(&device, q.dtype, [b, h, n, d, e]);
    let has_kept = kept.is_some();
    let state = matches!(product, Product::Forward).then(|| (Shape::new([b, h, d, e]), DType::F32));
    let outputs = [(Shape::new([b, h, n, e]), q.dtype)]
        .into_iter()
        .chain(state)
        .chain(kept.map(|shape| (shape, DType::F32)))
        .collect();
    let has_state = initial_state.is_some();
    let inputs = [q, k, v, slopes].into_iter().chain(initial_state).collect();
    register::<B>(product, inputs, has_state, has_kept, outputs).into_iter()
}

impl<B: FusionBackend + LightningBackend> LightningBackend for Fusion<B> {
    fn lightning_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        initial_state: Option<FloatTensor<Self>>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (o, state, _) = Self::lightning_forward_kept(q, k, v, slopes, initial_state);
        (o, state)
    }

    fn lightning_forward_kept(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        initial_state: Option<FloatTensor<Self>>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        Option<FloatTensor<Self>>,
    ) {
        let mut outputs = register_forward::<B>(Product::Forward, q, k, v, slopes, initial_state);
        (
            outputs.next().expect("o"),
            outputs.next().expect("state"),
            outputs.next(),
        )
    }

    fn lightning_output_kept(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        let mut outputs = register_forward::<B>(Product::Output, q, k, v, slopes, None);
        (outputs.next().expect("o"), outputs.next())
    }

    fn lightning_kept_shape(
        device: &Self::Device,
        dtype: DType,
        dims: [usize; 5],
    ) -> Option<Shape> {
        B::lightning_kept_shape(device, dtype, dims)
    }

    fn lightning_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        initial_state: Option<FloatTensor<Self>>,
        grad_output: FloatTensor<Self>,
        kept: Option<FloatTensor<Self>>,
    ) -> LightningGrads<Self> {
        let mut outputs = vec![
            (q.shape.clone(), q.dtype),
            (k.shape.clone(), k.dtype),
            (v.shape.clone(), v.dtype),
        ];
        if let Some(state) = &initial_state {
            outputs.push((state.shape.clone(), DType::F32));
        }
        let has_state = initial_state.is_some();
        let has_kept = kept.is_some();
        let inputs = [q, k, v, slopes]
            .into_iter()
            .chain(initial_state)
            .chain([grad_output])
            .chain(kept)
            .collect();
        let mut grads =
            register::<B>(Product::Backward, inputs, has_state, has_kept, outputs).into_iter();
        LightningGrads {
            q: grads.next().expect("dq"),
            k: grads.next().expect("dk"),
            v: grads.next().expect("dv"),
            initial_state: grads.next(),
        }
    }

    fn lightning_state_backward(
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        grad_state: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let outputs = vec![
            (k.shape.clone(), k.dtype),
            (v.shape.clone(), v.dtype),
            (grad_state.shape.clone(), DType::F32),
        ];
        let inputs = vec![k, v, slopes, grad_state];
        register::<B>(Product::StateBackward, inputs, false, false, outputs)
            .try_into()
            .expect("three outputs")
    }

    fn lightning_decode(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slopes: FloatTensor<Self>,
        state: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let outputs = vec![
            (v.shape.clone(), q.dtype),
            (state.shape.clone(), DType::F32),
        ];
        let inputs = vec![q, k, v, slopes, state];
        let [o, state] = register::<B>(Product::Decode, inputs, false, false, outputs)
            .try_into()
            .expect("two outputs");
        (o, state)
    }
}
