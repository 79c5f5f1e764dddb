//! The shipped evaluator networks: their hashes, their accuracy on the real
//! test sets, and their features' sanity.

use std::path::PathBuf;

use genlab::data::{DataSources, Dataset, DatasetName};
use genlab::eval::evaluator::{FEATURES, SHIPPED, load};

mod common;

fn sources() -> DataSources {
    DataSources {
        data_dir: Some(common::shared_data()),
        system: Some(PathBuf::from("/usr/share/datasets")),
        offline: true,
        ..Default::default()
    }
}

#[test]
fn shipped_weights_match_their_recorded_hashes() {
    for s in SHIPPED {
        assert_eq!(
            genlab::data::download::sha256_hex(s.bytes),
            s.sha256,
            "{}",
            s.dataset
        );
        let (_, desc) = load(s.dataset, None, 100).unwrap();
        assert!(desc.contains(&s.sha256[..16]), "{desc}");
    }
    let err = load("idx:/somewhere", None, 10).err().unwrap().to_string();
    assert!(err.contains("--evaluator FILE"), "{err}");
}

#[test]
fn mnist_evaluator_is_at_least_99_percent_accurate() {
    let data = Dataset::load(&DatasetName::Mnist, &sources(), false).unwrap();
    let (mut net, _) = load("mnist", None, 500).unwrap();
    let acc = net.accuracy(&data.test);
    assert!(acc >= 0.99, "MNIST test accuracy {acc}");
    // The recorded figure is the one this build measures.
    assert!((acc - SHIPPED[0].test_accuracy).abs() < 5e-5, "{acc}");
    // Features: 64 per image, finite, not all alike.
    let x: Vec<f32> = data
        .test
        .image(0)
        .iter()
        .chain(data.test.image(1))
        .map(|&b| b as f32 / 255.0)
        .collect();
    let (f, p) = net.features_and_probs(&x);
    assert_eq!(f.len(), 2 * FEATURES);
    assert!(f.iter().all(|v| v.is_finite()) && f[..FEATURES] != f[FEATURES..]);
    assert!((p[..10].iter().sum::<f32>() - 1.0).abs() < 1e-5);
}

#[test]
fn fashion_evaluator_is_at_least_90_percent_accurate() {
    if common::skip_without(
        sources().find(&DatasetName::FashionMnist).is_some(),
        "Fashion-MNIST",
        "apt-get install dataset-fashion-mnist, or put fashion-mnist/ in $GENLAB_DATA",
    ) {
        return;
    }
    let data = Dataset::load(&DatasetName::FashionMnist, &sources(), false).unwrap();
    let (mut net, _) = load("fashion-mnist", None, 500).unwrap();
    let acc = net.accuracy(&data.test);
    assert!(acc >= 0.90, "Fashion-MNIST test accuracy {acc}");
}
