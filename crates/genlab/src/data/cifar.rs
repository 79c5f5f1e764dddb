//! CIFAR-10's binary version: five training batches and one test batch of
//! 10,000 records each, a record being one label byte and 3 x 32 x 32 pixel
//! bytes (red, green, blue planes, rows top to bottom), which is already the
//! models' layout.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::ImageShape;
use super::dataset::{Dataset, Split};
use super::locate::DatasetName;

/// CIFAR-10's image shape.
pub const SHAPE: ImageShape = ImageShape {
    channels: 3,
    height: 32,
    width: 32,
};

/// The training batches' file names, in order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test batch's file name.
pub const TEST_FILE: &str = "test_batch.bin";

/// The classes in label order, as `batches.meta.txt` lists them.
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The directory holding the batches: `dir` itself or its
/// `cifar-10-batches-bin/` (as the archive unpacks).
pub fn batches_dir(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.join("cifar-10-batches-bin")]
        .into_iter()
        .find(|d| {
            TRAIN_FILES
                .iter()
                .chain([&TEST_FILE])
                .all(|f| d.join(f).is_file())
        })
}

/// Reads one batch file: whole records only, labels 0-9.
fn read_batch(path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let record = 1 + SHAPE.pixels();
    let bytes = crate::bounded::read_file(path, crate::bounded::DATA_LIMIT, "a CIFAR-10 batch")?;
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        bail!(
            "{}: {} bytes is not a whole number of CIFAR-10 records ({record} bytes: a label and 3x32x32 pixels); the file is truncated or not a CIFAR-10 binary batch",
            path.display(),
            bytes.len()
        );
    }
    let n = bytes.len() / record;
    let mut pixels = Vec::with_capacity(n * SHAPE.pixels());
    let mut labels = Vec::with_capacity(n);
    for (i, r) in bytes.chunks_exact(record).enumerate() {
        if r[0] > 9 {
            bail!(
                "{}: record {i} has label {}, outside 0-9; the file is corrupt or not a CIFAR-10 batch",
                path.display(),
                r[0]
            );
        }
        labels.push(r[0]);
        pixels.extend_from_slice(&r[1..]);
    }
    Ok((pixels, labels))
}

/// The batch files in `batches`, which a cache of them depends on.
pub fn files(batches: &Path) -> Vec<PathBuf> {
    TRAIN_FILES
        .iter()
        .chain([&TEST_FILE])
        .map(|f| batches.join(f))
        .collect()
}

/// Reads CIFAR-10 from `dir` (or its `cifar-10-batches-bin/`).
pub fn read_cifar10(name: &DatasetName, dir: &Path) -> Result<Dataset> {
    let Some(batches) = batches_dir(dir) else {
        bail!(
            "{}: no CIFAR-10 binary batches (expected {} and {TEST_FILE} there or in cifar-10-batches-bin/)",
            dir.display(),
            TRAIN_FILES.join(", ")
        );
    };
    let (mut train_pixels, mut train_labels) = (Vec::new(), Vec::new());
    for f in TRAIN_FILES {
        let (p, l) = read_batch(&batches.join(f))?;
        train_pixels.extend(p);
        train_labels.extend(l);
    }
    let (test_pixels, test_labels) = read_batch(&batches.join(TEST_FILE))?;
    Ok(Dataset {
        name: name.clone(),
        dir: batches,
        image: SHAPE,
        classes: CLASSES.map(String::from).to_vec(),
        train: Split::new(SHAPE, train_pixels, Some(train_labels)),
        test: Split::new(SHAPE, test_pixels, Some(test_labels)),
        validation: None,
        cache: None,
    })
}
