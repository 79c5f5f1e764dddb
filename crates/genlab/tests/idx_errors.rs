//! Every way an IDX file can be wrong gets a one-line error naming the file,
//! what was expected and what was found. The files are written by the tests.

mod common;

use std::path::Path;

use genlab::data::idx::{encode_idx, read_images, read_labels, read_pair};
use genlab::data::{Dataset, DatasetName};

fn images(n: usize) -> Vec<u8> {
    encode_idx(&[n, 28, 28], &vec![7u8; n * 784])
}

fn labels(n: usize) -> Vec<u8> {
    encode_idx(&[n], &(0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn one_line(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "error spans lines: {s}");
    s
}

#[test]
fn valid_raw_and_gzip_files_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let raw = write(dir.path(), "a-images", &images(3));
    // Compression is detected from the bytes, not the name: no .gz suffix here.
    let gz = write(dir.path(), "b-images", &common::gzip(&images(3)));
    let a = read_images(&raw).unwrap();
    let b = read_images(&gz).unwrap();
    assert_eq!((a.count, a.rows, a.cols), (3, 28, 28));
    assert_eq!(a.pixels, b.pixels);
}

#[test]
fn truncated_file_names_expected_and_found_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = images(60);
    bytes.truncate(1234);
    let p = write(
        dir.path(),
        "train-images-idx3-ubyte.gz",
        &common::gzip(&bytes),
    );
    let e = one_line(read_images(&p).unwrap_err());
    let expected = 16 + 60 * 784;
    assert_eq!(
        e,
        format!("train-images-idx3-ubyte.gz: truncated, expected {expected} bytes, found 1234")
    );
}

#[test]
fn truncated_header_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "x", &[0, 0, 8, 3, 0, 0]);
    let e = one_line(read_images(&p).unwrap_err());
    assert_eq!(e, "x: truncated, expected 16 bytes, found 6");
    let p = write(dir.path(), "y", &[0, 0]);
    assert!(one_line(read_images(&p).unwrap_err()).contains("y: truncated"));
}

#[test]
fn trailing_bytes_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = labels(5);
    bytes.extend_from_slice(&[1, 2, 3]);
    let p = write(dir.path(), "l", &bytes);
    let e = one_line(read_labels(&p).unwrap_err());
    assert_eq!(e, "l: trailing data, expected 13 bytes, found 16");
}

#[test]
fn bad_magic_number_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    // A label file where an image file is expected.
    let p = write(dir.path(), "imgs", &labels(5));
    let e = one_line(read_images(&p).unwrap_err());
    assert_eq!(
        e,
        "imgs: bad magic number, expected 0x00000803 (images), found 0x00000801"
    );
    let mut bytes = labels(5);
    bytes[2] = 0x0d; // float type
    let p = write(dir.path(), "labs", &bytes);
    let e = one_line(read_labels(&p).unwrap_err());
    assert_eq!(
        e,
        "labs: bad magic number, expected 0x00000801 (labels), found 0x00000d01"
    );
}

#[test]
fn images_of_any_size_are_read_and_empty_ones_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "big",
        &encode_idx(&[2, 32, 24], &vec![7; 2 * 32 * 24]),
    );
    let a = read_images(&p).unwrap();
    assert_eq!((a.count, a.rows, a.cols), (2, 32, 24));
    let p = write(dir.path(), "flat", &encode_idx(&[2, 0, 28], &[]));
    let e = one_line(read_images(&p).unwrap_err());
    assert_eq!(
        e,
        "flat: bad dimensions, expected N x rows x cols with rows, cols >= 1, found 2 x 0 x 28"
    );
}

#[test]
fn dimensions_too_large_to_count_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = vec![0, 0, 8, 3];
    for _ in 0..3 {
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    }
    let p = write(dir.path(), "huge", &bytes);
    let e = one_line(read_images(&p).unwrap_err());
    assert!(
        e.starts_with("huge: bad dimensions, expected dimensions whose product fits in 64 bits"),
        "{e}"
    );
}

#[test]
fn labels_outside_0_9_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "l", &encode_idx(&[3], &[1, 12, 3]));
    let e = one_line(read_labels(&p).unwrap_err());
    assert_eq!(e, "l: label 12 at index 1 is outside 0-9");
}

#[test]
fn corrupt_gzip_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut gz = common::gzip(&images(4));
    gz.truncate(gz.len() / 2);
    let p = write(dir.path(), "half.gz", &gz);
    let e = one_line(read_images(&p).unwrap_err());
    assert!(e.starts_with("half.gz: corrupt gzip stream: "), "{e}");
}

#[test]
fn image_and_label_counts_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let i = write(dir.path(), "i", &images(4));
    let l = write(dir.path(), "l", &labels(5));
    let e = one_line(read_pair(&i, &l, 10).unwrap_err());
    assert_eq!(e, "i and l disagree on the count: 4 images but 5 labels");
}

#[test]
fn missing_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let e = one_line(read_images(&dir.path().join("nope")).unwrap_err());
    assert!(e.starts_with("nope: cannot read: "), "{e}");
}

#[test]
fn dataset_directory_reads_and_names_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "train-images-idx3-ubyte", &images(6));
    write(
        dir.path(),
        "train-labels-idx1-ubyte.gz",
        &common::gzip(&labels(6)),
    );
    write(
        dir.path(),
        "t10k-images-idx3-ubyte.gz",
        &common::gzip(&images(2)),
    );
    let name = DatasetName::Idx(dir.path().to_path_buf());
    let e = format!(
        "{:#}",
        Dataset::from_dir(name.clone(), dir.path()).unwrap_err()
    );
    assert!(
        e.contains("missing t10k-labels-idx1-ubyte (or t10k-labels-idx1-ubyte.gz)"),
        "{e}"
    );
    write(dir.path(), "t10k-labels-idx1-ubyte", &labels(2));
    let d = Dataset::from_dir(name, dir.path()).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (6, 2));
    assert_eq!(d.train.class_counts(10)[5], 1);
}
