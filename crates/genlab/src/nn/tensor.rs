//! The tensor executor: a [`Network`] run on burn tensors, on any device.
//! Examples are rows of a `[rows, size]` tensor (row-major within an
//! example, so flatten and reshape change nothing here); the backward pass
//! is burn's autodiff when the parameters are tracked.

use burn::tensor::Tensor;
use burn::tensor::activation::{leaky_relu, relu, sigmoid, tanh};
use burn::tensor::module::linear;

use super::{Layer, Network};

/// The output of `net` for the rows of `x`, with `params` in
/// [`Network::params`] order (flat, as checkpoints hold them) and one
/// `[rows, units]` mask per dropout layer.
pub fn forward(
    net: &Network,
    params: &[Tensor<1>],
    x: Tensor<2>,
    masks: &[Tensor<2>],
) -> Tensor<2> {
    let mut h = x;
    let mut mask = masks.iter();
    for layer in &net.layers {
        h = match &layer.layer {
            Layer::Dense { units } => {
                let (w, b) = layer.params.expect("dense layers have parameters");
                let weight = params[w].clone().reshape([layer.input[0], *units]);
                linear(h, weight, Some(params[b].clone()))
            }
            Layer::Relu => relu(h),
            Layer::LeakyRelu { slope } => leaky_relu(h, *slope),
            Layer::Tanh => tanh(h),
            Layer::Sigmoid => sigmoid(h),
            Layer::Dropout { .. } => h * mask.next().expect("one mask per dropout layer").clone(),
            Layer::Identity | Layer::Flatten | Layer::Reshape { .. } => h,
        };
    }
    h
}
