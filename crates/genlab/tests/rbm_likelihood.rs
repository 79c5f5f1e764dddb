//! Partition functions: exact enumeration against brute force over both
// Reference computations index like the formulas they transcribe.
#![allow(clippy::needless_range_loop)]
//! layers, and AIS against the exact value on an RBM trained on MNIST.

mod common;

use genlab::data::batches::split_to_f32;
use genlab::data::{DataSources, Dataset, DatasetName, PixelView};
use genlab::eval::ais::{exact_log_z, log_sum_exp, two_base_log_z};
use genlab::models::rbm::Rbm;
use genlab::rng::{Purpose, stream};
use genlab::run::Checkpoint;
use rand::RngExt;

#[test]
fn exact_log_z_matches_brute_force_over_both_layers() {
    let (nv, nh) = (7, 5);
    let mut rng = stream(1, Purpose::Init, 0);
    let mut rbm = Rbm::init(nv, nh, &mut rng);
    for x in rbm
        .w
        .iter_mut()
        .chain(rbm.hb.iter_mut())
        .chain(rbm.vb.iter_mut())
    {
        *x = rng.random::<f32>() * 3.0 - 1.5;
    }
    let mut terms = Vec::new();
    for vc in 0..(1u32 << nv) {
        for hc in 0..(1u32 << nh) {
            let v = |i: usize| ((vc >> i) & 1) as f64;
            let h = |j: usize| ((hc >> j) & 1) as f64;
            let mut neg_e = 0.0;
            for i in 0..nv {
                neg_e += rbm.vb[i] as f64 * v(i);
                for j in 0..nh {
                    neg_e += v(i) * rbm.w[i * nh + j] as f64 * h(j);
                }
            }
            for j in 0..nh {
                neg_e += rbm.hb[j] as f64 * h(j);
            }
            terms.push(neg_e);
        }
    }
    let brute = log_sum_exp(&terms);
    let exact = exact_log_z(&rbm);
    assert!((exact - brute).abs() < 1e-4, "{exact} vs {brute}");
}

fn mnist() -> Dataset {
    let sources = DataSources {
        genlab_data: Some(common::shared_data()),
        offline: true,
        ..Default::default()
    };
    Dataset::load(&DatasetName::Mnist, &sources, false).unwrap()
}

/// The seed preset `rbm-20` trained to completion by
/// `genlab train rbm --preset rbm-20 --seed 0` (30 epochs of CD-30); see fixtures/README.md.
fn trained_rbm_20() -> Rbm {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rbm-20-seed0.safetensors");
    let ck = Checkpoint::load(&path).unwrap();
    Rbm::from_checkpoint(&ck, 784, 20).unwrap()
}

#[test]
fn ais_matches_exact_log_z_on_a_trained_20_unit_rbm() {
    let rbm = trained_rbm_20();
    let data = mnist();
    let exact = exact_log_z(&rbm);
    // The same estimate `genlab eval` makes: AIS from two bases, combined.
    let binary = split_to_f32(
        &data.train,
        PixelView::Dynamic,
        &mut stream(0, Purpose::Eval, 12),
    );
    let e = two_base_log_z(&rbm, &binary, 100, 14_500, 0);
    let (a, b) = (&e.from_base_rates, &e.from_model_biases);
    eprintln!(
        "exact {exact:.3}; AIS {:.3} ({}), from base rates {:.3} [{:.3}, {:.3}], from model biases {:.3} [{:.3}, {:.3}]",
        e.log_z, e.rule, a.log_z, a.log_z_low, a.log_z_high, b.log_z, b.log_z_low, b.log_z_high
    );
    assert!(
        (e.log_z - exact).abs() < 0.2,
        "AIS {} vs exact {exact}",
        e.log_z
    );
    for x in [a, b] {
        assert!(x.log_z_low <= x.log_z && x.log_z <= x.log_z_high);
    }
}

#[test]
fn trained_rbm_20_fixture_is_what_the_seed_preset_produces() {
    // The fixture must stay reproducible: its free energies on real digits are
    // those of a trained model (far below an untrained one's).
    let rbm = trained_rbm_20();
    let data = mnist();
    let mut none = stream(0, Purpose::Fixed, 0);
    let mut test = data.test.clone();
    test.truncate(1000);
    let v = split_to_f32(&test, PixelView::Binarised, &mut none);
    let mean_f = rbm.free_energy(&v).iter().map(|&f| f as f64).sum::<f64>() / 1000.0;
    let untrained = Rbm::init(784, 20, &mut stream(0, Purpose::Init, 0));
    let mean_f0 = untrained
        .free_energy(&v)
        .iter()
        .map(|&f| f as f64)
        .sum::<f64>()
        / 1000.0;
    assert!(
        mean_f < mean_f0 - 50.0,
        "trained {mean_f} vs untrained {mean_f0}"
    );
}
