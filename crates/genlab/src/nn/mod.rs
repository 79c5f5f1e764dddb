//! Networks described as data. A network is a named list of layers, built
//! against the shape of one example (from the data, never from constants);
//! building it checks every layer's input, derives the output shapes and
//! names the parameters after the layers (`{network}.{layer}.weight`).
//!
//! Two executors run one description: [`host`] on host buffers (one
//! forward and one backward per layer kind, buffers owned and reused) and
//! [`tensor`] on burn tensors, where burn's autodiff gives the backward pass
//! on any device. Both take dropout masks from the caller, so that they see
//! the same draws and can be tested equal.

pub mod conv;
pub mod host;
mod pointwise;
pub mod tensor;

pub use conv::Padding;

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// One layer of the vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Layer {
    /// `y = x @ W + b`, `W` stored `[in, out]` as in Keras.
    Dense {
        units: usize,
    },
    Relu,
    LeakyRelu {
        slope: f64,
    },
    Tanh,
    Sigmoid,
    Identity,
    /// Inverted dropout: the caller's mask holds 0 or 1/(1 - rate) per unit.
    Dropout {
        rate: f64,
    },
    /// 2-D convolution over a `[channels, height, width]` input; weights
    /// `[filters, channels, kh, kw]`.
    Conv2d {
        filters: usize,
        kernel: [usize; 2],
        #[serde(default = "unit_stride")]
        stride: [usize; 2],
        padding: Padding,
    },
    /// 2-D max pooling over non-overlapping `size` windows of a
    /// `[channels, height, width]` input (rows and columns left over at the
    /// end are dropped, as in PyTorch's floor mode).
    MaxPool2d {
        size: [usize; 2],
    },
    /// 2-D transposed convolution; weights `[channels, filters, kh, kw]`.
    ConvTranspose2d {
        filters: usize,
        kernel: [usize; 2],
        #[serde(default = "unit_stride")]
        stride: [usize; 2],
        padding: Padding,
    },
    /// Batch normalisation per feature (a flat input) or per channel (a
    /// `[channels, height, width]` input): in training, over the batch's
    /// statistics, which also update the running ones with `momentum`
    /// (PyTorch's convention: running = (1 - momentum) running + momentum
    /// batch, the unbiased variance); in inference, over the running ones.
    /// Parameters `weight` (scale) and `bias` (shift) per channel; buffers
    /// `running_mean` and `running_var`.
    BatchNorm {
        #[serde(default = "default_bn_epsilon")]
        epsilon: f64,
        #[serde(default = "default_bn_momentum")]
        momentum: f64,
    },
    /// Any shape to one dimension (row-major, so (c, h, w) stays in that order).
    Flatten,
    /// To `shape`, which must hold as many values.
    Reshape {
        shape: Vec<usize>,
    },
}

fn unit_stride() -> [usize; 2] {
    [1, 1]
}

fn default_bn_epsilon() -> f64 {
    1e-5
}

fn default_bn_momentum() -> f64 {
    0.1
}

/// Whether a network runs for training (batch statistics, dropout masks as
/// given) or for inference (running statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Infer,
}

impl Layer {
    /// The geometry of a convolution layer on `input`, or why it does not fit.
    pub fn geometry(&self, input: &[usize]) -> std::result::Result<Option<conv::Geometry>, String> {
        let (filters, kernel, stride, padding, transposed) = match self {
            Layer::Conv2d {
                filters,
                kernel,
                stride,
                padding,
            } => (*filters, *kernel, *stride, *padding, false),
            Layer::ConvTranspose2d {
                filters,
                kernel,
                stride,
                padding,
            } => (*filters, *kernel, *stride, *padding, true),
            _ => return Ok(None),
        };
        let &[channels, h, w] = input else {
            return Err(format!(
                "a convolution needs a [channels, height, width] input, this one gets {input:?} (add a reshape layer)"
            ));
        };
        if filters == 0 || kernel.contains(&0) || stride.contains(&0) {
            return Err("filters, kernel and stride must be positive".into());
        }
        // Such a transposed convolution leaves gaps that burn's operation
        // does not fill, so its executors would disagree.
        if transposed && (kernel[0] < stride[0] || kernel[1] < stride[1]) {
            return Err(format!(
                "a transposed convolution's kernel {kernel:?} must be at least its stride {stride:?}"
            ));
        }
        let g = if transposed {
            conv::Geometry::transposed(filters, [h, w], kernel, stride, padding)
        } else {
            conv::Geometry::conv(channels, [h, w], kernel, stride, padding)
        };
        g.map(Some)
            .ok_or_else(|| format!("a {kernel:?} kernel with stride {stride:?} and {padding:?} padding does not fit a {h}x{w} input"))
    }

    /// The output shape for one example of shape `input`, or why it does not fit.
    fn output(&self, input: &[usize]) -> std::result::Result<Vec<usize>, String> {
        let size: usize = input.iter().product();
        match self {
            Layer::Dense { units } => {
                if input.len() != 1 {
                    return Err(format!(
                        "a dense layer needs a flat input, this one gets {input:?} (add a flatten layer)"
                    ));
                }
                if *units == 0 {
                    return Err("units = 0: a dense layer needs at least one unit".into());
                }
                Ok(vec![*units])
            }
            Layer::Dropout { rate } if !(0.0..1.0).contains(rate) => {
                Err(format!("rate = {rate}: must be in [0, 1)"))
            }
            Layer::BatchNorm { epsilon, momentum }
                if !(*epsilon > 0.0 && epsilon.is_finite() && (0.0..=1.0).contains(momentum)) =>
            {
                Err(format!(
                    "epsilon = {epsilon}, momentum = {momentum}: epsilon must be > 0 and momentum in [0, 1]"
                ))
            }
            Layer::BatchNorm { .. } if input.len() != 1 && input.len() != 3 => Err(format!(
                "batch normalisation needs a flat or a [channels, height, width] input, this one gets {input:?}"
            )),
            Layer::LeakyRelu { slope } if !slope.is_finite() || *slope < 0.0 => {
                Err(format!("slope = {slope}: must be a finite number >= 0"))
            }
            Layer::Conv2d { filters, .. } => {
                let g = self.geometry(input)?.expect("a convolution");
                Ok(vec![*filters, g.grid[0], g.grid[1]])
            }
            Layer::ConvTranspose2d { filters, .. } => {
                let g = self.geometry(input)?.expect("a convolution");
                Ok(vec![*filters, g.image[0], g.image[1]])
            }
            Layer::MaxPool2d { size } => {
                let &[c, h, w] = input else {
                    return Err(format!(
                        "max pooling needs a [channels, height, width] input, this one gets {input:?}"
                    ));
                };
                if size.contains(&0) || size[0] > h || size[1] > w {
                    return Err(format!("a {size:?} window does not fit a {h}x{w} input"));
                }
                Ok(vec![c, h / size[0], w / size[1]])
            }
            Layer::Flatten => Ok(vec![size]),
            Layer::Reshape { shape } => {
                if shape.iter().product::<usize>() != size || shape.is_empty() {
                    return Err(format!(
                        "cannot reshape {input:?} ({size} values) to {shape:?}"
                    ));
                }
                Ok(shape.clone())
            }
            _ => Ok(input.to_vec()),
        }
    }
}

/// A parameter's name and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl ParamSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A layer in a built network, with the shapes it maps between.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltLayer {
    pub name: String,
    pub layer: Layer,
    pub input: Vec<usize>,
    pub output: Vec<usize>,
    /// Indices of its weight and bias in [`Network::params`] (dense and
    /// convolution layers).
    pub params: Option<(usize, usize)>,
    /// A convolution's geometry.
    pub geometry: Option<conv::Geometry>,
    /// Indices of its running mean and variance in [`Network::buffers`]
    /// (batch normalisation).
    pub buffers: Option<(usize, usize)>,
}

impl BuiltLayer {
    /// Channels and values per channel of a batch-normalised input.
    pub fn channels(&self) -> (usize, usize) {
        let c = self.input[0];
        (c, self.input.iter().product::<usize>() / c)
    }
}

/// A network description checked against its input shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub name: String,
    pub input: Vec<usize>,
    pub layers: Vec<BuiltLayer>,
    pub params: Vec<ParamSpec>,
    /// State that is not trained by gradients (batch normalisation's running
    /// statistics), saved beside the parameters.
    pub buffers: Vec<ParamSpec>,
}

impl Network {
    /// Builds `layers` (name, layer) for examples of shape `input`; errors
    /// name the network and the layer.
    pub fn build(name: &str, input: &[usize], layers: &[(String, Layer)]) -> Result<Network> {
        if input.is_empty() || input.contains(&0) {
            crate::usage_bail!(
                "network {name}: input shape {input:?} must be non-empty and positive"
            );
        }
        if layers.is_empty() {
            crate::usage_bail!("network {name}: give at least one layer");
        }
        let mut shape = input.to_vec();
        let mut built = Vec::with_capacity(layers.len());
        let mut params = Vec::new();
        let mut buffers = Vec::new();
        for (layer_name, layer) in layers {
            if built.iter().any(|b: &BuiltLayer| &b.name == layer_name) {
                crate::usage_bail!("network {name}: two layers are named {layer_name}");
            }
            let output = layer
                .output(&shape)
                .map_err(|e| anyhow::anyhow!("network {name}, layer {layer_name}: {e}"))
                .map_err(crate::error::usage)?;
            let own = match layer {
                Layer::Dense { units } => {
                    let w = params.len();
                    params.push(ParamSpec {
                        name: format!("{name}.{layer_name}.weight"),
                        shape: vec![shape[0], *units],
                    });
                    params.push(ParamSpec {
                        name: format!("{name}.{layer_name}.bias"),
                        shape: vec![*units],
                    });
                    Some((w, w + 1))
                }
                Layer::Conv2d {
                    filters, kernel, ..
                }
                | Layer::ConvTranspose2d {
                    filters, kernel, ..
                } => {
                    let w = params.len();
                    let (a, b) = if matches!(layer, Layer::Conv2d { .. }) {
                        (*filters, shape[0])
                    } else {
                        (shape[0], *filters)
                    };
                    params.push(ParamSpec {
                        name: format!("{name}.{layer_name}.weight"),
                        shape: vec![a, b, kernel[0], kernel[1]],
                    });
                    params.push(ParamSpec {
                        name: format!("{name}.{layer_name}.bias"),
                        shape: vec![*filters],
                    });
                    Some((w, w + 1))
                }
                Layer::BatchNorm { .. } => {
                    let w = params.len();
                    for what in ["weight", "bias"] {
                        params.push(ParamSpec {
                            name: format!("{name}.{layer_name}.{what}"),
                            shape: vec![shape[0]],
                        });
                    }
                    Some((w, w + 1))
                }
                _ => None,
            };
            let own_buffers = matches!(layer, Layer::BatchNorm { .. }).then(|| {
                let m = buffers.len();
                for what in ["running_mean", "running_var"] {
                    buffers.push(ParamSpec {
                        name: format!("{name}.{layer_name}.{what}"),
                        shape: vec![shape[0]],
                    });
                }
                (m, m + 1)
            });
            let geometry = layer.geometry(&shape).unwrap_or(None);
            built.push(BuiltLayer {
                name: layer_name.clone(),
                layer: layer.clone(),
                input: shape.clone(),
                output: output.clone(),
                params: own,
                geometry,
                buffers: own_buffers,
            });
            shape = output;
        }
        Ok(Network {
            name: name.to_string(),
            input: input.to_vec(),
            layers: built,
            params,
            buffers,
        })
    }

    /// Values per example going in.
    pub fn input_size(&self) -> usize {
        self.input.iter().product()
    }

    /// Values per example coming out.
    pub fn output_size(&self) -> usize {
        self.layers
            .last()
            .map_or(self.input_size(), |l| l.output.iter().product())
    }

    /// The index of the parameter called `name`.
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p.name == name)
    }

    /// Fresh buffers: running means 0, running variances 1.
    pub fn initial_buffers(&self) -> Vec<Vec<f32>> {
        self.buffers
            .iter()
            .map(|b| {
                let fill = if b.name.ends_with("running_var") {
                    1.0
                } else {
                    0.0
                };
                vec![fill; b.len()]
            })
            .collect()
    }

    /// Units per example of each dropout layer, in order: the masks' widths.
    pub fn dropout_widths(&self) -> Vec<usize> {
        self.layers
            .iter()
            .filter(|l| matches!(l.layer, Layer::Dropout { .. }))
            .map(|l| l.input.iter().product())
            .collect()
    }

    /// PyTorch's default initialisation of its `Linear` and `Conv2d` layers
    /// (Kaiming-uniform with a = sqrt(5)): every weight and bias uniform in
    /// +-1/sqrt(fan_in), drawn layer by layer, weight before bias. Other
    /// parameters (batch normalisation) start at scale 1 and shift 0.
    pub fn torch_default_init(&self, rng: &mut crate::rng::GenRng) -> Vec<Vec<f32>> {
        use rand::RngExt;
        let mut out: Vec<Vec<f32>> = self.params.iter().map(|p| vec![0.0; p.len()]).collect();
        for layer in &self.layers {
            let Some((w, b)) = layer.params else { continue };
            match layer.layer {
                Layer::Dense { .. } | Layer::Conv2d { .. } | Layer::ConvTranspose2d { .. } => {
                    // PyTorch reads fan_in off the weight's second dimension
                    // times the kernel: inputs for Linear and Conv2d, outputs
                    // for ConvTranspose2d (its weight is [in, out, kh, kw]).
                    let fan_in = match layer.layer {
                        Layer::Dense { .. } => layer.input.iter().product(),
                        Layer::Conv2d { .. } => self.params[w].len() / self.params[b].len(),
                        _ => self.params[w].len() / layer.input[0],
                    };
                    let bound = 1.0 / (fan_in as f32).sqrt();
                    for k in [w, b] {
                        for v in &mut out[k] {
                            *v = rng.random_range(-bound..bound);
                        }
                    }
                }
                _ => out[w].fill(1.0),
            }
        }
        out
    }

    /// The widths of a stack of dense layers: the input, then each dense
    /// layer's units (the shape the CPU MLP kernels take).
    pub fn dense_widths(&self) -> Vec<usize> {
        std::iter::once(self.input_size())
            .chain(self.layers.iter().filter_map(|l| match l.layer {
                Layer::Dense { units } => Some(units),
                _ => None,
            }))
            .collect()
    }

    /// An MLP as the families describe one: dense layers of `widths` (the
    /// last is the output), each hidden one followed by `activation` and,
    /// with `dropout > 0`, a dropout layer. Layers are named `layer{k}`
    /// (dense), `act{k}` and `drop{k}`.
    pub fn mlp(
        name: &str,
        input: usize,
        widths: &[usize],
        activation: &Layer,
        dropout: f64,
    ) -> Result<Network> {
        let mut layers = Vec::new();
        for (k, &w) in widths.iter().enumerate() {
            layers.push((format!("layer{k}"), Layer::Dense { units: w }));
            if k + 1 < widths.len() {
                layers.push((format!("act{k}"), activation.clone()));
                if dropout > 0.0 {
                    layers.push((format!("drop{k}"), Layer::Dropout { rate: dropout }));
                }
            }
        }
        Network::build(name, &[input], &layers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn building_names_parameters_after_layers_and_checks_shapes() {
        let net = Network::build(
            "encoder",
            &[1, 28, 28],
            &[
                ("flat".into(), Layer::Flatten),
                ("hidden".into(), Layer::Dense { units: 256 }),
                ("act".into(), Layer::Relu),
                ("mean".into(), Layer::Dense { units: 2 }),
            ],
        )
        .unwrap();
        let names: Vec<&str> = net.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "encoder.hidden.weight",
                "encoder.hidden.bias",
                "encoder.mean.weight",
                "encoder.mean.bias"
            ]
        );
        assert_eq!(net.params[0].shape, [784, 256]);
        assert_eq!(net.output_size(), 2);
        assert_eq!(net.param_index("encoder.mean.bias"), Some(3));

        let err = Network::build(
            "d",
            &[1, 28, 28],
            &[("fc".into(), Layer::Dense { units: 4 })],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("network d, layer fc") && err.contains("flatten"),
            "{err}"
        );
        let err = Network::build(
            "d",
            &[6],
            &[("r".into(), Layer::Reshape { shape: vec![4] })],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cannot reshape [6]"), "{err}");
        let err = Network::build(
            "d",
            &[6],
            &[("a".into(), Layer::Relu), ("a".into(), Layer::Tanh)],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("two layers are named a"), "{err}");
        let err = Network::build(
            "d",
            &[2, 7, 7],
            &[(
                "up".into(),
                Layer::ConvTranspose2d {
                    filters: 1,
                    kernel: [1, 1],
                    stride: [2, 2],
                    padding: Padding::Same,
                },
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("must be at least its stride"), "{err}");
    }

    #[test]
    fn layers_read_from_toml() {
        #[derive(Deserialize)]
        struct Doc {
            layers: Vec<Layer>,
        }
        let doc: Doc = toml::from_str(
            "layers = [{ kind = \"dense\", units = 512 }, { kind = \"leaky-relu\", slope = 0.2 }, { kind = \"dropout\", rate = 0.3 }]",
        )
        .unwrap();
        assert_eq!(
            doc.layers,
            [
                Layer::Dense { units: 512 },
                Layer::LeakyRelu { slope: 0.2 },
                Layer::Dropout { rate: 0.3 }
            ]
        );
        assert!(toml::from_str::<Doc>("layers = [{ kind = \"dense\", unit = 5 }]").is_err());
    }
}
