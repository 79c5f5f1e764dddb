//! Partition functions: exact enumeration against brute force over both
// Reference computations index like the formulas they transcribe.
#![allow(clippy::needless_range_loop)]
//! layers, and AIS against the exact value on an RBM trained on MNIST.

mod common;

use genlab::data::batches::{fill_batch_slice, split_to_f32};
use genlab::data::{DataSources, Dataset, DatasetName, EpochOrder, PixelView};
use genlab::eval::ais::{ais_log_z, base_rate_biases, exact_log_z, log_sum_exp};
use genlab::models::rbm::{CdBuffers, Rbm, RbmConfig, UpdateRule};
use genlab::rng::{Purpose, stream};
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

#[test]
fn ais_matches_exact_log_z_on_a_trained_20_unit_rbm() {
    let data = mnist();
    let config = RbmConfig {
        hidden: 20,
        ..Default::default()
    };
    let mut rbm = Rbm::init(784, 20, &mut stream(0, Purpose::Init, 0));
    let mut state = rbm.new_state(&config, &mut stream(0, Purpose::Init, 1));
    let mut bufs = CdBuffers::new(&rbm, 64);
    let mut rng = stream(0, Purpose::Train, 1);
    let mut none = stream(0, Purpose::Fixed, 0);
    let rule = UpdateRule {
        k: 5,
        lr: 0.1,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    let order = EpochOrder::new(data.train.len(), 64, true, true, 0, 1);
    for idx in order.batches() {
        fill_batch_slice(
            &data.train,
            idx,
            PixelView::Unit,
            &mut none,
            bufs.data_mut(),
        );
        rbm.cd_update(&mut bufs, &mut state, rule, &mut rng);
    }
    let exact = exact_log_z(&rbm);
    let binary = split_to_f32(&data.train, PixelView::Binarised, &mut none);
    let base = base_rate_biases(&binary, 784);
    let from_data = ais_log_z(&rbm, &base, 100, 10_000, &mut stream(0, Purpose::Eval, 0));
    let from_model = ais_log_z(
        &rbm,
        &rbm.vb.clone(),
        100,
        10_000,
        &mut stream(0, Purpose::Eval, 1),
    );
    let conservative = from_data.log_z.max(from_model.log_z);
    if let Ok(extra) = std::env::var("AIS_SCRATCH") {
        for (runs, steps) in [(100usize, 50_000usize), (1000, 10_000), (100, 200_000)] {
            let _ = extra.len();
            let e = ais_log_z(&rbm, &base, runs, steps, &mut stream(5, Purpose::Eval, 0));
            let e2 = ais_log_z(&rbm, &rbm.vb.clone(), runs, steps, &mut stream(5, Purpose::Eval, 1));
            eprintln!("runs {runs} steps {steps}: {:.3} {:.3} [{:.3},{:.3}]", e.log_z, e2.log_z, e.log_z_low, e.log_z_high);
        }
    }
    eprintln!(
        "exact {exact:.3}; AIS from base rates {:.3} [{:.3}, {:.3}], from model biases {:.3}",
        from_data.log_z, from_data.log_z_low, from_data.log_z_high, from_model.log_z
    );
    assert!(
        (conservative - exact).abs() < 0.2,
        "AIS {conservative} vs exact {exact}"
    );
    assert!(from_data.log_z_low <= from_data.log_z && from_data.log_z <= from_data.log_z_high);
}
