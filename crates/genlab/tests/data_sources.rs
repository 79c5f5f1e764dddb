//! Finding datasets on real files, downloading them over loopback, and the
//! message when they are nowhere.

mod common;

use std::path::PathBuf;

use genlab::data::download::sha256_hex;
use genlab::data::idx::read_maybe_gzip;
use genlab::data::locate::IDX_FILES;
use genlab::data::{DataSources, Dataset, DatasetName};

fn mnist_dir() -> PathBuf {
    common::shared_data().join("mnist")
}

fn sources_with(cache: PathBuf, mirrors: Vec<String>) -> DataSources {
    DataSources {
        data_dir: None,
        genlab_data: None,
        cache: Some(cache),
        system: None,
        mirrors: Some(mirrors),
        offline: false,
    }
}

#[test]
fn real_mnist_has_the_documented_counts_and_means() {
    let sources = DataSources {
        genlab_data: Some(common::shared_data()),
        system: None,
        cache: None,
        offline: true,
        ..Default::default()
    };
    let d = Dataset::load(&DatasetName::Mnist, &sources, false).unwrap();
    assert_eq!(d.train.len(), 60_000);
    assert_eq!(d.test.len(), 10_000);
    assert_eq!(
        d.train.class_counts(10),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        d.test.class_counts(10),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert!((d.train.mean_pixel() - 33.318).abs() < 5e-4);
    assert!((d.test.mean_pixel() - 33.791).abs() < 5e-4);
}

#[test]
fn data_dir_comes_first_and_accepts_the_directory_itself() {
    let sources = DataSources {
        data_dir: Some(mnist_dir()),
        genlab_data: Some(PathBuf::from("/nonexistent")),
        offline: true,
        ..Default::default()
    };
    assert_eq!(sources.find(&DatasetName::Mnist), Some(mnist_dir()));
    let sources = DataSources {
        data_dir: Some(common::shared_data()),
        offline: true,
        ..Default::default()
    };
    assert_eq!(
        sources.find(&DatasetName::Mnist),
        Some(common::shared_data().join("mnist"))
    );
}

#[test]
fn fashion_mnist_from_debian_package() {
    let system = PathBuf::from("/usr/share/datasets");
    if common::skip_without(
        system.join("fashion-mnist").is_dir(),
        "Debian's Fashion-MNIST",
        "apt-get install dataset-fashion-mnist",
    ) {
        return;
    }
    let sources = DataSources {
        system: Some(system),
        offline: true,
        ..Default::default()
    };
    let d = Dataset::load(&DatasetName::FashionMnist, &sources, false).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (60_000, 10_000));
    assert_eq!(d.train.class_counts(10), [6000; 10]);
    // The decompressed bytes match the documented checksums.
    let hashes = DatasetName::FashionMnist.known_sha256().unwrap();
    for (f, h) in IDX_FILES.iter().zip(hashes) {
        let path = genlab::data::idx::find_file(&d.dir, f).unwrap();
        assert_eq!(sha256_hex(&read_maybe_gzip(&path).unwrap()), h, "{f}");
    }
}

#[test]
fn download_verifies_decompressed_checksums_and_writes_into_the_cache() {
    // Serve the real MNIST files, recompressed differently from the originals
    // for two of them: verification is on the decompressed bytes.
    let mut files = Vec::new();
    for (i, f) in IDX_FILES.iter().enumerate() {
        let gz = std::fs::read(mnist_dir().join(format!("{f}.gz"))).unwrap();
        let body = if i % 2 == 0 {
            common::gzip(&read_maybe_gzip(&mnist_dir().join(format!("{f}.gz"))).unwrap())
        } else {
            gz
        };
        files.push((format!("{f}.gz"), body));
    }
    let server = common::LoopbackServer::start(files);
    let cache = tempfile::tempdir().unwrap();
    // The first mirror is dead; the second serves the files.
    let sources = sources_with(
        cache.path().to_path_buf(),
        vec!["http://127.0.0.1:9/".into(), server.base.clone()],
    );
    let d = Dataset::load(&DatasetName::Mnist, &sources, false).unwrap();
    assert_eq!(d.dir, cache.path().join("mnist"));
    assert_eq!(d.train.len(), 60_000);
    let names: Vec<String> = std::fs::read_dir(cache.path().join("mnist"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        4,
        "only the four files, no temporaries: {names:?}"
    );
}

#[test]
fn download_discards_a_file_that_does_not_match() {
    let mut files = Vec::new();
    for f in IDX_FILES {
        files.push((
            format!("{f}.gz"),
            std::fs::read(mnist_dir().join(format!("{f}.gz"))).unwrap(),
        ));
    }
    // Corrupt one value of the test labels.
    let mut raw = read_maybe_gzip(&mnist_dir().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    raw[100] = (raw[100] + 1) % 10;
    files[3].1 = common::gzip(&raw);
    let server = common::LoopbackServer::start(files);
    let cache = tempfile::tempdir().unwrap();
    let sources = sources_with(cache.path().to_path_buf(), vec![server.base.clone()]);
    let e = format!(
        "{:#}",
        Dataset::load(&DatasetName::Mnist, &sources, false).unwrap_err()
    );
    assert!(
        e.contains("t10k-labels-idx1-ubyte.gz: checksum mismatch (discarded)"),
        "{e}"
    );
    assert!(!e.contains('\n'));
    let dir = cache.path().join("mnist");
    assert!(dir.join("train-images-idx3-ubyte.gz").is_file());
    assert!(!dir.join("t10k-labels-idx1-ubyte.gz").exists());
    let leftovers = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(leftovers, 3, "the bad file was not kept, nor any temporary");
}

#[test]
fn no_data_and_no_network_lists_every_place_and_both_fixes() {
    let cache = tempfile::tempdir().unwrap();
    let sources = DataSources {
        data_dir: Some(PathBuf::from("/nonexistent/dd")),
        genlab_data: Some(PathBuf::from("/nonexistent/gd")),
        cache: Some(cache.path().to_path_buf()),
        system: Some(PathBuf::from("/nonexistent/sys")),
        mirrors: Some(vec!["http://127.0.0.1:9/".into()]),
        offline: false,
    };
    let e = format!(
        "{:#}",
        Dataset::load(&DatasetName::Mnist, &sources, false).unwrap_err()
    );
    assert!(!e.contains('\n'), "{e}");
    for place in [
        "/nonexistent/dd/mnist",
        "/nonexistent/dd ",
        "/nonexistent/gd/mnist",
        "/nonexistent/sys/mnist",
    ] {
        assert!(e.contains(place), "{place} missing from: {e}");
    }
    assert!(e.contains(&cache.path().join("mnist").display().to_string()));
    assert!(e.contains("GENLAB_DATA") && e.contains("--data-dir"), "{e}");
}

#[test]
fn idx_dataset_names_its_directory() {
    let e = format!(
        "{:#}",
        Dataset::load(
            &DatasetName::Idx("/nonexistent/x".into()),
            &DataSources::default(),
            false
        )
        .unwrap_err()
    );
    assert!(e.contains("/nonexistent/x"), "{e}");
    assert!("idx:".parse::<DatasetName>().is_err());
    assert!(
        "emnist"
            .parse::<DatasetName>()
            .unwrap_err()
            .contains("expected mnist, fashion-mnist, cifar10, idx:DIR, folder:DIR")
    );
}
