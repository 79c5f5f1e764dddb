//! The two executors of one network description agree: the host executor's
//! forward values and its hand-written backward pass against burn's tensors
//! and autodiff, for every layer kind on random shapes and for randomly
//! built whole networks (inputs of other shapes than MNIST's among them).

use burn::tensor::{Device, Tensor};
use genlab::models::tensors::{download, upload};
use genlab::nn::host::HostNetwork;
use genlab::nn::{Layer, Network, tensor};
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
    let device = Device::flex();
    let params: Vec<Vec<f32>> = net
        .params
        .iter()
        .map(|p| uniform(rng, p.len(), 0.5))
        .collect();
    let x = uniform(rng, rows * net.input_size(), 1.0);
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
    host.backward(&params, &x, rows, &r, &mask_refs, &mut grads, Some(&mut dx));

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
