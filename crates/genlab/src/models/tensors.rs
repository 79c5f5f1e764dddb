//! Moving values between host buffers, burn tensors and checkpoints.

use anyhow::{Result, anyhow};
use burn::tensor::{Device, Gradients, Tensor, TensorData as BurnData};

use crate::run::{Checkpoint, TensorData};

/// A host buffer as a tensor of shape `shape` on `device`.
pub fn upload<const D: usize>(data: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::<D>::from_data(BurnData::new(data, shape), device)
}

/// A tensor's values as a host buffer (row-major).
pub fn download<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow!("reading a tensor back from the device: {e:?}"))
}

/// The gradients of the tracked `params` (each must be used) taken out of
/// `grads`, and the `[1]` sum of all their values: one number to read back,
/// finite exactly when every gradient is.
pub fn take_gradients(params: &[Tensor<1>], grads: &mut Gradients) -> (Vec<Tensor<1>>, Tensor<1>) {
    let g: Vec<Tensor<1>> = params
        .iter()
        .map(|p| p.grad_remove(grads).expect("every parameter is used"))
        .collect();
    let total = g
        .iter()
        .map(|t| t.clone().sum())
        .reduce(|a, b| a + b)
        .expect("parameters");
    (g, total)
}

/// A flat parameter as a checkpoint entry.
pub fn to_checkpoint(t: &Tensor<1>) -> Result<TensorData> {
    let data = download(t.clone())?;
    Ok(TensorData::new(vec![data.len()], data))
}

/// Reads entry `name` (any shape with `len` values) as a flat tensor.
pub fn from_checkpoint(
    ck: &Checkpoint,
    name: &str,
    len: usize,
    device: &Device,
) -> Result<Tensor<1>> {
    let t = ck
        .tensors
        .get(name)
        .ok_or_else(|| anyhow!("checkpoint has no tensor '{name}'"))?;
    if t.data.len() != len {
        return Err(anyhow!(
            "checkpoint tensor '{name}' has {} values, expected {len} (shape {:?}); was it written for another configuration?",
            t.data.len(),
            t.shape
        ));
    }
    Ok(upload(t.data.clone(), [len], device))
}
