//! Reader for the IDX format that MNIST and Fashion-MNIST ship in.
//!
//! Layout: two zero bytes, a type byte (0x08 = unsigned byte), the number of
//! dimensions, one big-endian u32 per dimension, then the values. Files may be
//! gzip-compressed; compression is detected from the first two bytes.

use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// What can be wrong with an IDX file. Every message names the file.
#[derive(Debug, Error)]
pub enum IdxError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: corrupt gzip stream: {reason}")]
    Gzip { file: String, reason: String },
    #[error("{file}: truncated, expected {expected} bytes, found {found}")]
    Truncated {
        file: String,
        expected: u64,
        found: u64,
    },
    #[error("{file}: trailing data, expected {expected} bytes, found {found}")]
    TrailingData {
        file: String,
        expected: u64,
        found: u64,
    },
    #[error(
        "{file}: longer than its header says ({expected} bytes); the file is corrupt or not an IDX file of this dataset"
    )]
    Oversized { file: String, expected: u64 },
    #[error(
        "{file}: bad magic number, expected 0x0000080{expected_dims:x} ({what}), found 0x{found:08x}"
    )]
    BadMagic {
        file: String,
        what: &'static str,
        expected_dims: u8,
        found: u32,
    },
    #[error("{file}: bad dimensions, expected {expected}, found {found}")]
    BadDimensions {
        file: String,
        expected: String,
        found: String,
    },
    #[error("{file}: label {label} at index {index} is outside 0-{last}")]
    BadLabel {
        file: String,
        label: u8,
        index: usize,
        last: usize,
    },
    #[error(
        "{images} and {labels} disagree on the count: {image_count} images but {label_count} labels"
    )]
    CountMismatch {
        images: String,
        labels: String,
        image_count: usize,
        label_count: usize,
    },
}

/// An unsigned-byte IDX array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Reads the whole file, decompressing it if it starts with the gzip magic bytes.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, IdxError> {
    let file = display_name(path);
    let io = |source| IdxError::Io {
        file: file.clone(),
        source,
    };
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(crate::bounded::DATA_LIMIT + 1).read_to_end(&mut raw))
        .map_err(io)?;
    if raw.len() as u64 > crate::bounded::DATA_LIMIT {
        return Err(IdxError::Oversized {
            file,
            expected: crate::bounded::DATA_LIMIT,
        });
    }
    decompress_if_gzip(&file, raw)
}

/// Decompresses `raw` if it starts with the gzip magic bytes; `file` names it
/// in errors. Only as many bytes are decompressed as the IDX header inside
/// claims (plus one, to see trailing data), so a small file that inflates
/// without end is refused early.
pub fn decompress_if_gzip(file: &str, raw: Vec<u8>) -> Result<Vec<u8>, IdxError> {
    if !(raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b) {
        return Ok(raw);
    }
    let gzip = |e: std::io::Error| IdxError::Gzip {
        file: file.to_string(),
        reason: e.to_string(),
    };
    let mut decoder = flate2::read::MultiGzDecoder::new(&raw[..]);
    let mut out = Vec::new();
    (&mut decoder).take(4).read_to_end(&mut out).map_err(gzip)?;
    let rank = out.get(3).copied().unwrap_or(0) as u64;
    (&mut decoder)
        .take(4 * rank)
        .read_to_end(&mut out)
        .map_err(gzip)?;
    let claimed = out
        .get(4..)
        .filter(|dims| dims.len() as u64 == 4 * rank)
        .map(|dims| {
            dims.chunks_exact(4)
                .map(|d| u32::from_be_bytes(d.try_into().expect("4 bytes")) as u64)
                .fold(1u64, |a, d| a.saturating_mul(d))
                .saturating_add(4 + 4 * rank)
        })
        .unwrap_or(out.len() as u64)
        .min(crate::bounded::DATA_LIMIT);
    let rest = claimed.saturating_sub(out.len() as u64);
    (&mut decoder)
        .take(rest + 1)
        .read_to_end(&mut out)
        .map_err(gzip)?;
    if out.len() as u64 > claimed {
        return Err(IdxError::Oversized {
            file: file.to_string(),
            expected: claimed,
        });
    }
    Ok(out)
}

/// Parses IDX bytes, checking the magic number, the rank and the byte count.
pub fn parse_idx(file: &str, bytes: &[u8], rank: u8) -> Result<IdxArray, IdxError> {
    let what = if rank == 1 { "labels" } else { "images" };
    let expected_magic = 0x0000_0800u32 | rank as u32;
    if bytes.len() < 4 {
        return Err(IdxError::Truncated {
            file: file.into(),
            expected: 4 + 4 * rank as u64,
            found: bytes.len() as u64,
        });
    }
    let magic = u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if magic != expected_magic {
        return Err(IdxError::BadMagic {
            file: file.into(),
            what,
            expected_dims: rank,
            found: magic,
        });
    }
    let header = 4 + 4 * rank as usize;
    if bytes.len() < header {
        return Err(IdxError::Truncated {
            file: file.into(),
            expected: header as u64,
            found: bytes.len() as u64,
        });
    }
    let dims: Vec<usize> = (0..rank as usize)
        .map(|i| {
            let at = 4 + 4 * i;
            u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize
        })
        .collect();
    // Checked: a corrupt header can claim more values than a u64 counts.
    let count = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .and_then(|c| c.checked_add(header as u64));
    let Some(expected) = count else {
        return Err(IdxError::BadDimensions {
            file: file.into(),
            expected: "dimensions whose product fits in 64 bits".into(),
            found: dims
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(" x "),
        });
    };
    let found = bytes.len() as u64;
    if found < expected {
        return Err(IdxError::Truncated {
            file: file.into(),
            expected,
            found,
        });
    }
    if found > expected {
        return Err(IdxError::TrailingData {
            file: file.into(),
            expected,
            found,
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Images: n x rows x cols unsigned bytes.
#[derive(Debug, Clone)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Reads an image file (rank 3: N x rows x cols, one grey channel, any size).
pub fn read_images(path: &Path) -> Result<IdxImages, IdxError> {
    let file = display_name(path);
    let bytes = read_maybe_gzip(path)?;
    let array = parse_idx(&file, &bytes, 3)?;
    let (count, rows, cols) = (array.dims[0], array.dims[1], array.dims[2]);
    if rows == 0 || cols == 0 {
        return Err(IdxError::BadDimensions {
            file,
            expected: "N x rows x cols with rows, cols >= 1".into(),
            found: format!("{count} x {rows} x {cols}"),
        });
    }
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: array.data,
    })
}

/// Reads a label file (rank 1) and checks each label is a class 0-9.
pub fn read_labels(path: &Path) -> Result<Vec<u8>, IdxError> {
    read_labels_below(path, 10)
}

/// Reads a label file (rank 1) whose labels are classes `0..classes`
/// (up to 256: EMNIST's and KMNIST's IDX files have more than ten).
pub fn read_labels_below(path: &Path, classes: usize) -> Result<Vec<u8>, IdxError> {
    let file = display_name(path);
    let bytes = read_maybe_gzip(path)?;
    let array = parse_idx(&file, &bytes, 1)?;
    if let Some((index, &label)) = array
        .data
        .iter()
        .enumerate()
        .find(|(_, l)| **l as usize >= classes)
    {
        return Err(IdxError::BadLabel {
            file,
            label,
            index,
            last: classes - 1,
        });
    }
    Ok(array.data)
}

/// Reads an image file and its label file (classes `0..classes`) and checks they agree on the count.
pub fn read_pair(
    images: &Path,
    labels: &Path,
    classes: usize,
) -> Result<(IdxImages, Vec<u8>), IdxError> {
    let imgs = read_images(images)?;
    let labs = read_labels_below(labels, classes)?;
    if imgs.count != labs.len() {
        return Err(IdxError::CountMismatch {
            images: display_name(images),
            labels: display_name(labels),
            image_count: imgs.count,
            label_count: labs.len(),
        });
    }
    Ok((imgs, labs))
}

/// Encodes an IDX array (used by tests and by tools that write datasets).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, 0x08, dims.len() as u8]);
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// The path of `name` inside `dir`, raw or gzipped, whichever exists (raw first).
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Some(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    gz.is_file().then_some(gz)
}
