//! The reference implementation for backends without fused kernels: the trait's default
//! methods, so each backend takes one line.

use crate::LightningBackend;

#[cfg(feature = "ndarray")]
impl<E, I, Q> LightningBackend for burn::backend::NdArray<E, I, Q>
where
    E: burn::backend::ndarray::FloatNdArrayElement,
    I: burn::backend::ndarray::IntNdArrayElement,
    Q: burn::backend::ndarray::QuantElement,
    burn::backend::ndarray::NdArrayTensor: From<burn::backend::ndarray::SharedArray<E>>,
    burn::backend::ndarray::NdArrayTensor: From<burn::backend::ndarray::SharedArray<I>>,
{
}
