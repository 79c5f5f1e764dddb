//! The tensor executor: a [`Network`] run on burn tensors, on any device.
//! Examples are rows of a `[rows, size]` tensor (row-major within an
//! example, so flatten and reshape change nothing here); the backward pass
//! is burn's autodiff when the parameters are tracked.

use burn::tensor::Tensor;
use burn::tensor::activation::{leaky_relu, relu, sigmoid, tanh};
use burn::tensor::module::{conv_transpose2d, conv2d, linear, max_pool2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, MaxPoolOptions};

use super::{Layer, Mode, Network};

/// A fresh network's running statistics on `device`.
fn fresh_buffers(net: &Network, device: &burn::tensor::Device) -> Vec<Tensor<1>> {
    net.initial_buffers()
        .into_iter()
        .map(|b| {
            let n = b.len();
            crate::models::tensors::upload(b, [n], device)
        })
        .collect()
}

/// The output of `net` for the rows of `x`, with `params` in
/// [`Network::params`] order (flat, as checkpoints hold them) and one
/// `[rows, units]` mask per dropout layer.
pub fn forward(
    net: &Network,
    params: &[Tensor<1>],
    x: Tensor<2>,
    masks: &[Tensor<2>],
) -> Tensor<2> {
    let buffers = fresh_buffers(net, &x.device());
    run(net, params, &buffers, x, masks, Mode::Train).0
}

/// The output of `net` in inference (dropout off, running statistics),
/// with the buffers of a fresh network.
pub fn infer(net: &Network, params: &[Tensor<1>], x: Tensor<2>) -> Tensor<2> {
    let buffers = fresh_buffers(net, &x.device());
    run(net, params, &buffers, x, &[], Mode::Infer).0
}

/// [`forward`] with the running statistics `buffers` ([`Network::buffers`]
/// order) in `mode`; returns the output and the buffers after it (updated
/// in training, as they were in inference).
pub fn run(
    net: &Network,
    params: &[Tensor<1>],
    buffers: &[Tensor<1>],
    x: Tensor<2>,
    masks: &[Tensor<2>],
    mode: Mode,
) -> (Tensor<2>, Vec<Tensor<1>>) {
    let mut buffers = buffers.to_vec();
    let mut h = x;
    let mut mask = masks.iter();
    for layer in &net.layers {
        h = match &layer.layer {
            Layer::Dense { units } => {
                let (w, b) = layer.params.expect("dense layers have parameters");
                let weight = params[w].clone().reshape([layer.input[0], *units]);
                linear(h, weight, Some(params[b].clone()))
            }
            Layer::Conv2d { stride, .. } | Layer::ConvTranspose2d { stride, .. } => {
                let (w, b) = layer.params.expect("convolutions have parameters");
                let g = layer.geometry.expect("convolutions have a geometry");
                let rows = h.dims()[0];
                let [c, ih, iw] = [layer.input[0], layer.input[1], layer.input[2]];
                let [f, oh, ow] = [layer.output[0], layer.output[1], layer.output[2]];
                let x = h.reshape([rows, c, ih, iw]);
                let weight = params[w].clone().reshape(
                    net.params[w]
                        .shape
                        .clone()
                        .try_into()
                        .map(|s: [usize; 4]| s)
                        .expect("4-D weight"),
                );
                let y = if matches!(layer.layer, Layer::Conv2d { .. }) {
                    // The padding after the image is whatever the grid still reaches.
                    let end = |d: usize| {
                        ((g.grid[d] - 1) * stride[d] + g.kernel[d])
                            .saturating_sub(g.image[d] + g.pad[d])
                    };
                    let options = ConvOptions::new_with_padding(
                        *stride,
                        [(g.pad[0], end(0)), (g.pad[1], end(1))],
                        [1, 1],
                        1,
                    );
                    conv2d(x, weight, Some(params[b].clone()), options)
                } else {
                    // The full transposed output, then the crop.
                    let options = ConvTransposeOptions::new(*stride, [0, 0], [0, 0], [1, 1], 1);
                    conv_transpose2d(x, weight, Some(params[b].clone()), options).slice([
                        0..rows,
                        0..f,
                        g.pad[0]..g.pad[0] + oh,
                        g.pad[1]..g.pad[1] + ow,
                    ])
                };
                y.reshape([rows, f * oh * ow])
            }
            Layer::BatchNorm { epsilon, momentum } => {
                let (w, b) = layer.params.expect("batch normalisation has parameters");
                let (rm, rv) = layer.buffers.expect("batch normalisation has buffers");
                let (c, plane) = layer.channels();
                let rows = h.dims()[0];
                let x = h.reshape([rows, c, plane]);
                let (mean, var) = match mode {
                    Mode::Train => {
                        let mean = x.clone().mean_dim(0).mean_dim(2);
                        let var = (x.clone() - mean.clone())
                            .powf_scalar(2.0)
                            .mean_dim(0)
                            .mean_dim(2);
                        let count = (rows * plane) as f64;
                        let unbiased = if count > 1.0 {
                            count / (count - 1.0)
                        } else {
                            1.0
                        };
                        buffers[rm] = buffers[rm].clone() * (1.0 - momentum)
                            + mean.clone().reshape([c]).detach() * *momentum;
                        buffers[rv] = buffers[rv].clone() * (1.0 - momentum)
                            + var.clone().reshape([c]).detach() * (momentum * unbiased);
                        (mean, var)
                    }
                    Mode::Infer => (
                        buffers[rm].clone().reshape([1, c, 1]),
                        buffers[rv].clone().reshape([1, c, 1]),
                    ),
                };
                let xhat = (x - mean) / (var + *epsilon).sqrt();
                let y = xhat * params[w].clone().reshape([1, c, 1])
                    + params[b].clone().reshape([1, c, 1]);
                y.reshape([rows, c * plane])
            }
            Layer::MaxPool2d { size } => {
                let rows = h.dims()[0];
                let [c, ih, iw] = [layer.input[0], layer.input[1], layer.input[2]];
                let x = h.reshape([rows, c, ih, iw]);
                let y = max_pool2d(x, MaxPoolOptions::new(*size));
                y.reshape([rows, layer.output.iter().product::<usize>()])
            }
            Layer::Relu => relu(h),
            Layer::LeakyRelu { slope } => leaky_relu(h, *slope),
            Layer::Tanh => tanh(h),
            Layer::Sigmoid => sigmoid(h),
            // Inference keeps every unit and takes no mask.
            Layer::Dropout { .. } if mode == Mode::Infer => h,
            Layer::Dropout { .. } => h * mask.next().expect("one mask per dropout layer").clone(),
            Layer::Identity | Layer::Flatten | Layer::Reshape { .. } => h,
        };
    }
    (h, buffers)
}
