//! CIFAR-10's binary version: five training batches and one test batch of
//! 10,000 records each, a record being one label byte and 3 x 32 x 32 pixel
//! bytes (red, green, blue planes, rows top to bottom), which is already the
//! models' layout.

use std::path::Path;

use anyhow::{Result, bail};

use super::ImageShape;
use super::locate::DatasetName;
pub use super::locate::{
    CIFAR10_TEST_FILE as TEST_FILE, CIFAR10_TRAIN_FILES as TRAIN_FILES,
    cifar10_batches_dir as batches_dir, cifar10_files as files,
};
use super::split::{Dataset, Split};

/// CIFAR-10's image shape.
pub const SHAPE: ImageShape = ImageShape {
    channels: 3,
    height: 32,
    width: 32,
};

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
