//! The two executors of one network description agree: the host executor's
//! forward values and its hand-written backward pass against burn's tensors
//! and autodiff, for every layer kind on random shapes and for randomly
//! built whole networks (inputs of other shapes than MNIST's among them).

use burn::tensor::{Device, Tensor};
use genlab::models::tensors::{download, upload};
use genlab::nn::host::{HostNetwork, InputGradient};
use genlab::nn::{Layer, Mode, Network, Padding, tensor};
use rand::{RngExt, SeedableRng};

type Rand = rand::rngs::StdRng;

fn uniform(rng: &mut Rand, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Inverted-dropout masks: 0 or 1/(1 - rate).
fn mask(rng: &mut Rand, n: usize, rate: f64) -> Vec<f32> {
    let keep = 1.0 / (1.0 - rate) as f32;
    (0..n)
        .map(|_| {
            if rng.random::<f64>() < rate {
                0.0
            } else {
                keep
            }
        })
        .collect()
}

fn close(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = 1e-4 * (1.0 + x.abs().max(y.abs()));
        assert!((x - y).abs() <= tol, "{what}[{i}]: host {x} vs burn {y}");
    }
}

/// Runs `net` on both executors with random parameters, inputs, masks and a
/// random output weighting `r` (loss = sum(out * r)), and compares outputs,
/// parameter gradients and the input gradient.
fn check(net: &Network, rows: usize, rng: &mut Rand) {
    let x = uniform(rng, rows * net.input_size(), 1.0);
    check_on(net, rows, x, rng);
}

/// [`check`] on the input `x`.
fn check_on(net: &Network, rows: usize, x: Vec<f32>, rng: &mut Rand) {
    let device = Device::flex();
    let params: Vec<Vec<f32>> = net
        .params
        .iter()
        .map(|p| uniform(rng, p.len(), 0.5))
        .collect();
    let rates: Vec<f64> = net
        .layers
        .iter()
        .filter_map(|l| match l.layer {
            Layer::Dropout { rate } => Some(rate),
            _ => None,
        })
        .collect();
    let masks: Vec<Vec<f32>> = net
        .dropout_widths()
        .iter()
        .zip(&rates)
        .map(|(&w, &rate)| mask(rng, rows * w, rate))
        .collect();
    let r = uniform(rng, rows * net.output_size(), 1.0);

    let mut host = HostNetwork::new(net.clone());
    let mask_refs: Vec<&[f32]> = masks.iter().map(Vec::as_slice).collect();
    let out = host.forward(&params, &x, rows, &mask_refs).to_vec();
    let mut grads = vec![Vec::new(); params.len()];
    let mut dx = vec![0.0; x.len()];
    host.backward(
        &params,
        &x,
        rows,
        &r,
        &mask_refs,
        Some(&mut grads),
        InputGradient::Write(&mut dx),
    );

    let tracked: Vec<Tensor<1>> = params
        .iter()
        .map(|p| {
            upload(p.clone(), [p.len()], &device)
                .autodiff()
                .require_grad()
        })
        .collect();
    let xt = upload(x.clone(), [rows, net.input_size()], &device)
        .autodiff()
        .require_grad();
    let mt: Vec<Tensor<2>> = masks
        .iter()
        .zip(net.dropout_widths())
        .map(|(m, w)| upload(m.clone(), [rows, w], &device).autodiff())
        .collect();
    let yt = tensor::forward(net, &tracked, xt.clone(), &mt);
    close(
        &format!("{} output", net.name),
        &out,
        &download(yt.clone().inner()).unwrap(),
    );
    let rt = upload(r, [rows, net.output_size()], &device).autodiff();
    let mut g = (yt * rt).sum().backward();
    for ((p, spec), host_grad) in tracked.iter().zip(&net.params).zip(&grads) {
        let burn_grad = download(p.grad_remove(&mut g).expect("every parameter is used")).unwrap();
        close(&spec.name, host_grad, &burn_grad);
    }
    let burn_dx = download(xt.grad_remove(&mut g).expect("the input is used")).unwrap();
    close(&format!("{} input gradient", net.name), &dx, &burn_dx);
}

#[test]
fn every_layer_kind_agrees_with_autodiff_on_random_shapes() {
    let mut rng = Rand::seed_from_u64(1);
    let kinds = [
        Layer::Relu,
        Layer::LeakyRelu { slope: 0.2 },
        Layer::Tanh,
        Layer::Sigmoid,
        Layer::Identity,
        Layer::Dropout { rate: 0.3 },
        Layer::Flatten,
    ];
    for trial in 0..20 {
        let (inp, units, rows) = (
            rng.random_range(1..40),
            rng.random_range(1..40),
            rng.random_range(1..9),
        );
        // A dense layer alone, then each kind between two dense layers (so
        // that its backward pass feeds a parameter gradient).
        let net =
            Network::build("dense", &[inp], &[("fc".into(), Layer::Dense { units })]).unwrap();
        check(&net, rows, &mut rng);
        let kind = kinds[trial % kinds.len()].clone();
        let net = Network::build(
            &format!("{kind:?}"),
            &[inp],
            &[
                ("a".into(), Layer::Dense { units }),
                ("k".into(), kind),
                ("b".into(), Layer::Dense { units: 3 }),
            ],
        )
        .unwrap();
        check(&net, rows, &mut rng);
    }
}

#[test]
fn mostly_zero_inputs_take_the_sparse_first_layer_and_agree_with_autodiff() {
    let mut rng = Rand::seed_from_u64(5);
    // MNIST-like: most pixels 0, the rest in (0, 1]; one row all zeros.
    // Rows from one (serial) to enough for the row-parallel split.
    for (trial, rows) in [1, 7, 40].into_iter().enumerate() {
        let (inp, units) = (rng.random_range(17..90), rng.random_range(1..70));
        let mut x: Vec<f32> = (0..rows * inp)
            .map(|_| {
                if rng.random::<f64>() < 0.15 {
                    rng.random_range(0.01f32..1.0)
                } else {
                    0.0
                }
            })
            .collect();
        x[..inp].fill(0.0);
        let density = genlab::cpu::nonzero_fraction(&x);
        assert!(
            density < genlab::cpu::SPARSE_BELOW,
            "the input must be sparse enough for the sparse path: {density}"
        );
        let net = Network::build(
            &format!("sparse{trial}"),
            &[inp],
            &[
                ("a".into(), Layer::Dense { units }),
                ("r".into(), Layer::Relu),
                ("b".into(), Layer::Dense { units: 5 }),
            ],
        )
        .unwrap();
        check_on(&net, rows, x, &mut rng);
    }
}

#[test]
fn random_whole_networks_agree_with_autodiff_also_on_32x32x3_inputs() {
    let mut rng = Rand::seed_from_u64(2);
    let activations = [
        Layer::Relu,
        Layer::LeakyRelu { slope: 0.2 },
        Layer::Tanh,
        Layer::Sigmoid,
    ];
    for trial in 0..12 {
        let input: Vec<usize> = if trial % 3 == 0 {
            vec![3, 32, 32]
        } else {
            vec![rng.random_range(1..30)]
        };
        let size: usize = input.iter().product();
        let mut layers = vec![("flat".to_string(), Layer::Flatten)];
        let depth = rng.random_range(1..5);
        let mut width = size;
        for k in 0..depth {
            width = rng.random_range(1..24);
            layers.push((format!("fc{k}"), Layer::Dense { units: width }));
            layers.push((
                format!("act{k}"),
                activations[rng.random_range(0..4)].clone(),
            ));
            if rng.random::<bool>() {
                layers.push((format!("drop{k}"), Layer::Dropout { rate: 0.25 }));
            }
        }
        if width.is_multiple_of(2) {
            layers.push((
                "r".into(),
                Layer::Reshape {
                    shape: vec![2, width / 2],
                },
            ));
            layers.push(("f".into(), Layer::Flatten));
        }
        layers.push((
            "out".into(),
            Layer::Dense {
                units: rng.random_range(1..6),
            },
        ));
        let net = Network::build(&format!("net{trial}"), &input, &layers).unwrap();
        check(&net, rng.random_range(1..7), &mut rng);
    }
}

#[test]
fn the_mlp_builder_describes_the_seed_gan_discriminator() {
    let d = Network::mlp(
        "discriminator",
        784,
        &[128, 64, 32, 1],
        &Layer::LeakyRelu { slope: 0.2 },
        0.3,
    )
    .unwrap();
    let count: usize = d.params.iter().map(|p| p.len()).sum();
    assert_eq!(
        count,
        784 * 128 + 128 + 128 * 64 + 64 + 64 * 32 + 32 + 32 + 1
    );
    assert_eq!(d.params[0].name, "discriminator.layer0.weight");
    assert_eq!(d.params[7].name, "discriminator.layer3.bias");
    assert_eq!(d.dropout_widths(), [128, 64, 32]);
    let mut rng = Rand::seed_from_u64(3);
    check(&d, 4, &mut rng);
}

fn random_padding(rng: &mut Rand) -> Padding {
    match rng.random_range(0..3) {
        0 => Padding::Same,
        1 => Padding::Valid,
        _ => Padding::Explicit([
            [rng.random_range(0..3), rng.random_range(0..3)],
            [rng.random_range(0..3), rng.random_range(0..3)],
        ]),
    }
}

#[test]
fn convolutions_of_any_kernel_stride_and_padding_agree_with_autodiff() {
    let mut rng = Rand::seed_from_u64(4);
    let mut checked = 0;
    while checked < 40 {
        let transposed = checked % 2 == 1;
        let input = [
            rng.random_range(1..4),
            rng.random_range(1..9),
            rng.random_range(1..9),
        ];
        let kernel = [rng.random_range(1..6), rng.random_range(1..6)];
        let stride = [rng.random_range(1..4), rng.random_range(1..4)];
        let (filters, padding) = (rng.random_range(1..5), random_padding(&mut rng));
        let layer = if transposed {
            Layer::ConvTranspose2d {
                filters,
                kernel,
                stride,
                padding,
            }
        } else {
            Layer::Conv2d {
                filters,
                kernel,
                stride,
                padding,
            }
        };
        // Some draws do not fit (a kernel larger than the padded input).
        let Ok(net) = Network::build(
            "conv",
            &input,
            &[
                ("c".into(), layer),
                ("act".into(), Layer::Tanh),
                ("flat".into(), Layer::Flatten),
            ],
        ) else {
            continue;
        };
        check(&net, rng.random_range(1..4), &mut rng);
        checked += 1;
    }
}

#[test]
fn conv_networks_on_32x32x3_and_a_5x5_conv_vae_shape_agree_with_autodiff() {
    let mut rng = Rand::seed_from_u64(5);
    let conv = |filters, k, s| Layer::Conv2d {
        filters,
        kernel: [k, k],
        stride: [s, s],
        padding: Padding::Same,
    };
    let up = |filters, k, s| Layer::ConvTranspose2d {
        filters,
        kernel: [k, k],
        stride: [s, s],
        padding: Padding::Same,
    };
    let encoder = Network::build(
        "encoder",
        &[3, 32, 32],
        &[
            ("conv1".into(), conv(8, 5, 2)),
            ("a1".into(), Layer::Relu),
            ("conv2".into(), conv(16, 5, 2)),
            ("a2".into(), Layer::LeakyRelu { slope: 0.2 }),
            ("flat".into(), Layer::Flatten),
            ("mean".into(), Layer::Dense { units: 4 }),
        ],
    )
    .unwrap();
    assert_eq!(encoder.layers[2].output, [16, 8, 8]);
    check(&encoder, 2, &mut rng);
    let decoder = Network::build(
        "decoder",
        &[4],
        &[
            ("dense".into(), Layer::Dense { units: 16 * 7 * 7 }),
            (
                "shape".into(),
                Layer::Reshape {
                    shape: vec![16, 7, 7],
                },
            ),
            ("deconv1".into(), up(8, 5, 2)),
            ("a".into(), Layer::Relu),
            ("deconv2".into(), up(4, 5, 2)),
            ("out".into(), up(1, 3, 1)),
            ("p".into(), Layer::Sigmoid),
        ],
    )
    .unwrap();
    assert_eq!(decoder.layers.last().unwrap().output, [1, 28, 28]);
    check(&decoder, 2, &mut rng);
}

#[test]
fn the_seed_conv_vae_described_as_data_has_its_parameter_counts() {
    let same = |filters, stride| Layer::Conv2d {
        filters,
        kernel: [3, 3],
        stride: [stride, stride],
        padding: Padding::Same,
    };
    let up = |filters, stride| Layer::ConvTranspose2d {
        filters,
        kernel: [3, 3],
        stride: [stride, stride],
        padding: Padding::Same,
    };
    let count = |n: &Network| n.params.iter().map(|p| p.len()).sum::<usize>();
    // The encoder's trunk and one head; the two heads (mean, log-variance) of 2 each.
    let trunk = Network::build(
        "encoder",
        &[1, 28, 28],
        &[
            ("conv1".into(), same(32, 2)),
            ("a1".into(), Layer::Relu),
            ("conv2".into(), same(64, 2)),
            ("a2".into(), Layer::Relu),
            ("flat".into(), Layer::Flatten),
            ("hidden".into(), Layer::Dense { units: 16 }),
            ("a3".into(), Layer::Relu),
        ],
    )
    .unwrap();
    let head = Network::build(
        "encoder",
        &[16],
        &[("mean".into(), Layer::Dense { units: 2 })],
    )
    .unwrap();
    assert_eq!(count(&trunk) + 2 * count(&head), 69_076);
    let decoder = Network::build(
        "decoder",
        &[2],
        &[
            ("dense".into(), Layer::Dense { units: 7 * 7 * 64 }),
            ("a0".into(), Layer::Relu),
            (
                "shape".into(),
                Layer::Reshape {
                    shape: vec![64, 7, 7],
                },
            ),
            ("deconv1".into(), up(64, 2)),
            ("a1".into(), Layer::Relu),
            ("deconv2".into(), up(32, 2)),
            ("a2".into(), Layer::Relu),
            ("deconv3".into(), up(1, 1)),
        ],
    )
    .unwrap();
    assert_eq!(count(&decoder), 65_089);
    assert_eq!(decoder.layers.last().unwrap().output, [1, 28, 28]);
    assert_eq!(decoder.params[2].name, "decoder.deconv1.weight");
    assert_eq!(decoder.params[2].shape, [64, 64, 3, 3]);
}

/// [`check`] for networks with batch normalisation, in `mode`, from random
/// running statistics; in training, the updated statistics must agree too.
fn check_with_statistics(net: &Network, rows: usize, mode: Mode, rng: &mut Rand) {
    let device = Device::flex();
    let params: Vec<Vec<f32>> = net
        .params
        .iter()
        .map(|p| uniform(rng, p.len(), 0.8))
        .collect();
    let buffers: Vec<Vec<f32>> = net
        .buffers
        .iter()
        .map(|b| {
            let v = uniform(rng, b.len(), 0.5);
            if b.name.ends_with("running_var") {
                v.iter().map(|x| x.abs() + 0.5).collect()
            } else {
                v
            }
        })
        .collect();
    let x = uniform(rng, rows * net.input_size(), 1.0);
    let r = uniform(rng, rows * net.output_size(), 1.0);
    let mut host = HostNetwork::new(net.clone());
    host.mode = mode;
    host.buffers = buffers.clone();
    let out = host.forward(&params, &x, rows, &[]).to_vec();
    let mut grads = vec![Vec::new(); params.len()];
    let mut dx = vec![0.0; x.len()];
    host.backward(
        &params,
        &x,
        rows,
        &r,
        &[],
        Some(&mut grads),
        InputGradient::Write(&mut dx),
    );

    let tracked: Vec<Tensor<1>> = params
        .iter()
        .map(|p| {
            upload(p.clone(), [p.len()], &device)
                .autodiff()
                .require_grad()
        })
        .collect();
    let bt: Vec<Tensor<1>> = buffers
        .iter()
        .map(|b| upload(b.clone(), [b.len()], &device).autodiff())
        .collect();
    let xt = upload(x.clone(), [rows, net.input_size()], &device)
        .autodiff()
        .require_grad();
    let (yt, new_buffers) = tensor::run(net, &tracked, &bt, xt.clone(), &[], mode);
    let what = format!("{} ({mode:?})", net.name);
    close(
        &format!("{what} output"),
        &out,
        &download(yt.clone().inner()).unwrap(),
    );
    for ((b, spec), host_b) in new_buffers.iter().zip(&net.buffers).zip(&host.buffers) {
        close(&spec.name, host_b, &download(b.clone().inner()).unwrap());
    }
    if mode == Mode::Infer {
        assert_eq!(
            host.buffers, buffers,
            "inference leaves the statistics alone"
        );
    } else if !buffers.is_empty() {
        assert_ne!(host.buffers, buffers, "training moves the statistics");
    }
    let rt = upload(r, [rows, net.output_size()], &device).autodiff();
    let mut g = (yt * rt).sum().backward();
    for ((p, spec), host_grad) in tracked.iter().zip(&net.params).zip(&grads) {
        let burn_grad = download(p.grad_remove(&mut g).expect("every parameter is used")).unwrap();
        close(&format!("{what} {}", spec.name), host_grad, &burn_grad);
    }
    let burn_dx = download(xt.grad_remove(&mut g).expect("the input is used")).unwrap();
    close(&format!("{what} input gradient"), &dx, &burn_dx);
}

#[test]
fn batch_normalisation_agrees_with_autodiff_in_training_and_inference() {
    let mut rng = Rand::seed_from_u64(6);
    let bn = Layer::BatchNorm {
        epsilon: 1e-5,
        momentum: 0.1,
    };
    for trial in 0..8 {
        let rows = rng.random_range(2..7);
        // Per feature after a dense layer, and per channel after a convolution.
        let dense = Network::build(
            "mlp",
            &[rng.random_range(1..12)],
            &[
                (
                    "fc".into(),
                    Layer::Dense {
                        units: rng.random_range(1..10),
                    },
                ),
                ("bn".into(), bn.clone()),
                ("act".into(), Layer::LeakyRelu { slope: 0.2 }),
                ("out".into(), Layer::Dense { units: 3 }),
            ],
        )
        .unwrap();
        let conv = Network::build(
            "dcgan",
            &[2, 6, 6],
            &[
                (
                    "conv".into(),
                    Layer::Conv2d {
                        filters: rng.random_range(1..5),
                        kernel: [3, 3],
                        stride: [2, 2],
                        padding: Padding::Same,
                    },
                ),
                ("bn".into(), bn.clone()),
                ("act".into(), Layer::Relu),
                ("flat".into(), Layer::Flatten),
            ],
        )
        .unwrap();
        let mode = if trial % 2 == 0 {
            Mode::Train
        } else {
            Mode::Infer
        };
        check_with_statistics(&dense, rows, mode, &mut rng);
        check_with_statistics(&conv, rows, mode, &mut rng);
    }
    let net = Network::build("n", &[4], &[("bn".into(), bn)]).unwrap();
    let names: Vec<&str> = net.buffers.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["n.bn.running_mean", "n.bn.running_var"]);
    assert_eq!(net.initial_buffers(), [vec![0.0; 4], vec![1.0; 4]]);
}

#[test]
fn max_pooling_agrees_with_autodiff_on_random_shapes_and_in_a_lenet() {
    let mut rng = Rand::seed_from_u64(7);
    for _ in 0..12 {
        let input = [
            rng.random_range(1..4),
            rng.random_range(2..10),
            rng.random_range(2..10),
        ];
        // Windows that leave rows and columns over are dropped at the end.
        let size = [rng.random_range(1..4), rng.random_range(1..4)];
        let Ok(net) = Network::build(
            "pool",
            &input,
            &[
                ("pool".into(), Layer::MaxPool2d { size }),
                ("flat".into(), Layer::Flatten),
                ("out".into(), Layer::Dense { units: 3 }),
            ],
        ) else {
            continue;
        };
        assert_eq!(
            net.layers[0].output,
            [input[0], input[1] / size[0], input[2] / size[1]]
        );
        check(&net, rng.random_range(1..4), &mut rng);
    }
    let same = |filters| Layer::Conv2d {
        filters,
        kernel: [3, 3],
        stride: [1, 1],
        padding: Padding::Same,
    };
    let lenet = Network::build(
        "classifier",
        &[1, 12, 12],
        &[
            ("conv1".into(), same(4)),
            ("act1".into(), Layer::Relu),
            ("pool1".into(), Layer::MaxPool2d { size: [2, 2] }),
            ("conv2".into(), same(6)),
            ("act2".into(), Layer::Relu),
            ("pool2".into(), Layer::MaxPool2d { size: [2, 2] }),
            ("flat".into(), Layer::Flatten),
            ("features".into(), Layer::Dense { units: 8 }),
            ("act3".into(), Layer::Relu),
            ("classes".into(), Layer::Dense { units: 5 }),
        ],
    )
    .unwrap();
    check(&lenet, 3, &mut rng);
    let err = Network::build(
        "bad",
        &[4],
        &[("pool".into(), Layer::MaxPool2d { size: [2, 2] })],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("[channels, height, width]"), "{err}");
}
