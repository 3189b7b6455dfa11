//! Per-head decay slopes whose values have been checked once.
//!
//! Every op needs its slopes finite and `>= 0` (a negative slope turns the decay into
//! exponential growth). Checking a plain tensor's values means reading it back to the host,
//! a device sync on every call: for a layer called once per token while decoding, that sync
//! costs more than the step. A [`Slopes`] carries the check with it, so it is paid once.

use burn::tensor::{Tensor, TensorData, backend::Backend};

/// Slopes `[heads]` known to be finite and `>= 0`; every op takes them (or a plain tensor,
/// checked on each call, see [`IntoSlopes`]).
#[derive(Clone, Debug)]
pub struct Slopes<B: Backend>(Tensor<B, 1>);

impl<B: Backend> Slopes<B> {
    /// Checks `values` on the host and uploads them: no read-back.
    ///
    /// # Panics
    /// If a value is negative or not finite.
    pub fn from_values(values: &[f64], device: &B::Device) -> Self {
        check_values("Slopes::from_values", values.iter().copied());
        let values: Vec<f32> = values.iter().map(|&s| s as f32).collect();
        let len = values.len();
        Self(Tensor::from_data(TensorData::new(values, [len]), device))
    }

    /// Reads `tensor` back once and checks it.
    ///
    /// # Panics
    /// If a value is negative or not finite.
    pub fn new(tensor: Tensor<B, 1>) -> Self {
        tensor.into_slopes("Slopes::new")
    }

    /// Takes `tensor` as checked without reading it: for a module's constant that was made
    /// from checked values (e.g. by [`Self::from_values`]) and has since moved with the
    /// module. Values that are in fact negative or not finite give wrong outputs instead of
    /// a panic.
    pub fn assume_checked(tensor: Tensor<B, 1>) -> Self {
        Self(tensor)
    }

    /// The same slopes on `device`.
    pub fn to_device(self, device: &B::Device) -> Self {
        Self(self.0.to_device(device))
    }

    pub fn tensor(&self) -> &Tensor<B, 1> {
        &self.0
    }

    pub fn into_tensor(self) -> Tensor<B, 1> {
        self.0
    }
}

/// What the ops accept as slopes: a [`Slopes`] (already checked) or a plain `[heads]`
/// tensor, whose values are then read back and checked on every call.
pub trait IntoSlopes<B: Backend> {
    /// `op` names the caller in the panic message.
    fn into_slopes(self, op: &str) -> Slopes<B>;
}

impl<B: Backend> IntoSlopes<B> for Slopes<B> {
    fn into_slopes(self, _op: &str) -> Slopes<B> {
        self
    }
}

impl<B: Backend> IntoSlopes<B> for Tensor<B, 1> {
    fn into_slopes(self, op: &str) -> Slopes<B> {
        let values = self
            .to_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("slopes convert to f32");
        check_values(op, values.into_iter().map(f64::from));
        Slopes(self)
    }
}

fn check_values(op: &str, values: impl Iterator<Item = f64>) {
    if let Some((head, s)) = values.enumerate().find(|(_, s)| !s.is_finite() || *s < 0.0) {
        panic!(
            "{op}: slopes must be finite and >= 0 (decay lambda = exp(-slope)); got {s} for head {head}"
        );
    }
}
