//! The decoded-image cache: a source's prepared images (both splits, their
//! labels and class names) in one file that training memory-maps, so a
//! second run starts without decoding and a dataset larger than memory
//! trains (see [`super::bytes`]).
//!
//! The file lives beside the data, in `.genlab-cache/` of the source's
//! directory (hidden, so a folder source never lists it), or in the user
//! cache's `images/` when that directory cannot be written. Its name comes
//! from the source and the image options; inside, a fingerprint of every
//! source file (path, length, modification time) and of the options says
//! whether it is still the source's: any change rebuilds it. It is written
//! to a temporary file and renamed, so a crash leaves the old file or none.
//!
//! Layout (little-endian): the 16-byte magic, the format version, the
//! fingerprint (32 bytes), channels, height, width (u32), the two splits'
//! image counts (u64), a labelled flag, the class names (u32 length, then
//! names joined by newlines); the data from byte [`DATA_START`]: training
//! pixels, test pixels, training labels, test labels.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::ImageShape;
use super::bytes::ImageBytes;
use super::locate::DatasetName;
use super::prepare::ImageOptions;
use super::split::{Dataset, Split};

const MAGIC: &[u8; 16] = b"genlab images\0\0\0";
const VERSION: u32 = 1;
/// Where the pixels begin: one page, so the mapped data is page-aligned.
pub const DATA_START: usize = 4096;
/// The hidden directory beside the data.
pub const DIR_NAME: &str = ".genlab-cache";

/// The files a source is read from, which its cache depends on.
pub fn fingerprint(source: &DatasetName, files: &[PathBuf], opts: &ImageOptions) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(format!("v{VERSION}\n{}\n{opts:?}\n", source.canonical()));
    // Each file under its directory's one spelling, so that another
    // spelling of the source gives the same lines; a folder's files share a
    // few directories, each resolved once.
    let mut dirs: std::collections::HashMap<&Path, PathBuf> = std::collections::HashMap::new();
    for f in files {
        if let Some(d) = f.parent() {
            dirs.entry(d)
                .or_insert_with(|| std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf()));
        }
    }
    use rayon::prelude::*;
    let lines: Vec<String> = files
        .par_iter()
        .map(|f| {
            // A missing file is left for the reader to name.
            let Ok(meta) = std::fs::metadata(f) else {
                return format!("{}\tmissing\n", f.display());
            };
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let f = match (f.parent(), f.file_name()) {
                (Some(d), Some(name)) => dirs[d].join(name),
                _ => f.clone(),
            };
            format!("{}\t{}\t{mtime}\n", f.display(), meta.len())
        })
        .collect();
    for line in lines {
        h.update(line);
    }
    h.finalize().into()
}

/// The cache file's name for a source read with `opts`.
fn file_name(source: &DatasetName, beside: &Path, opts: &ImageOptions) -> String {
    let canonical = std::fs::canonicalize(beside).unwrap_or_else(|_| beside.to_path_buf());
    let key = Sha256::digest(format!(
        "{}\n{}\n{opts:?}",
        source.canonical(),
        canonical.display()
    ));
    let kind = source.to_string();
    let kind = kind.split(':').next().unwrap_or("data");
    let hex: String = key[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{kind}-{hex}.images")
}

/// Where a source's cache may be, in order: beside the data, then the user cache.
pub fn places(
    source: &DatasetName,
    beside: &Path,
    user_cache: Option<&Path>,
    opts: &ImageOptions,
) -> Vec<PathBuf> {
    let name = file_name(source, beside, opts);
    let mut out = vec![beside.join(DIR_NAME).join(&name)];
    if let Some(c) = user_cache {
        out.push(c.join("images").join(&name));
    }
    out
}

/// The cached dataset at `path` if it is there, whole, and of `fingerprint`.
pub fn open(
    path: &Path,
    fingerprint: &[u8; 32],
    name: &DatasetName,
    dir: &Path,
) -> Option<Dataset> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: genlab replaces cache files only by rename, never in place,
    // so the mapped bytes do not change under the mapping.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let h = Header::read(&map)?;
    if &h.fingerprint != fingerprint {
        return None;
    }
    let per = h.shape.pixels();
    let (train_px, test_px) = (h.train * per, h.test * per);
    let labels = if h.labelled { h.train + h.test } else { 0 };
    if map.len() != DATA_START + train_px + test_px + labels {
        return None;
    }
    let label_at = DATA_START + train_px + test_px;
    let train_labels = h
        .labelled
        .then(|| map[label_at..label_at + h.train].to_vec());
    let test_labels = h
        .labelled
        .then(|| map[label_at + h.train..label_at + h.train + h.test].to_vec());
    let mut parts = ImageBytes::mapped_ranges(
        map,
        file,
        &[
            DATA_START..DATA_START + train_px,
            DATA_START + train_px..DATA_START + train_px + test_px,
        ],
    );
    let test = parts.pop()?;
    let train = parts.pop()?;
    Some(Dataset {
        name: name.clone(),
        dir: dir.to_path_buf(),
        image: h.shape,
        classes: h.classes,
        train: Split::new(h.shape, train, train_labels),
        test: Split::new(h.shape, test, test_labels),
        validation: None,
        cache: Some(path.to_path_buf()),
    })
}

/// Writes `data` as a cache file at `path` (atomically).
pub fn write(path: &Path, fingerprint: &[u8; 32], data: &Dataset) -> Result<()> {
    let dir = path.parent().context("a cache file needs a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let header = Header {
        fingerprint: *fingerprint,
        shape: data.image,
        train: data.train.len(),
        test: data.test.len(),
        labelled: data.train.labels.is_some() && data.test.labels.is_some(),
        classes: data.classes.clone(),
    }
    .to_bytes()?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        w.write_all(&header)?;
        w.write_all(&data.train.pixels)?;
        w.write_all(&data.test.pixels)?;
        if let (Some(a), Some(b)) = (&data.train.labels, &data.test.labels) {
            w.write_all(a)?;
            w.write_all(b)?;
        }
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

struct Header {
    fingerprint: [u8; 32],
    shape: ImageShape,
    train: usize,
    test: usize,
    labelled: bool,
    classes: Vec<String>,
}

impl Header {
    fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut b = Vec::with_capacity(DATA_START);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&self.fingerprint);
        for d in self.shape.dims() {
            b.extend_from_slice(&(d as u32).to_le_bytes());
        }
        b.extend_from_slice(&(self.train as u64).to_le_bytes());
        b.extend_from_slice(&(self.test as u64).to_le_bytes());
        b.push(self.labelled as u8);
        let names = self.classes.join("\n");
        b.extend_from_slice(&(names.len() as u32).to_le_bytes());
        b.extend_from_slice(names.as_bytes());
        if b.len() > DATA_START {
            bail!("the class names take more than {DATA_START} bytes; shorten the folder names");
        }
        b.resize(DATA_START, 0);
        Ok(b)
    }

    fn read(b: &[u8]) -> Option<Header> {
        if b.len() < DATA_START || &b[..16] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap()) as usize;
        if u32_at(16) != VERSION as usize {
            return None;
        }
        let fingerprint: [u8; 32] = b[20..52].try_into().ok()?;
        let shape = ImageShape {
            channels: u32_at(52),
            height: u32_at(56),
            width: u32_at(60),
        };
        let (train, test) = (u64_at(64), u64_at(72));
        let labelled = b[80] == 1;
        let len = u32_at(81);
        let names = std::str::from_utf8(b.get(85..85 + len)?).ok()?;
        let classes = if names.is_empty() {
            Vec::new()
        } else {
            names.split('\n').map(String::from).collect()
        };
        (shape.pixels() > 0).then_some(Header {
            fingerprint,
            shape,
            train,
            test,
            labelled,
            classes,
        })
    }
}

/// Opens the source's cache, or builds the dataset with `build` and caches
/// it in the first place that can be written (mapping it from there). When
/// no place can be written the dataset stays in memory, with one line saying so.
pub fn cached(
    source: &DatasetName,
    files: &[PathBuf],
    beside: &Path,
    user_cache: Option<&Path>,
    opts: &ImageOptions,
    show: bool,
    build: impl FnOnce() -> Result<Dataset>,
) -> Result<Dataset> {
    let print = fingerprint(source, files, opts);
    let places = places(source, beside, user_cache, opts);
    for p in &places {
        if let Some(d) = open(p, &print, source, beside) {
            return Ok(d);
        }
    }
    let started = std::time::Instant::now();
    let data = build()?;
    let mut why = Vec::new();
    for p in &places {
        match write(p, &print, &data) {
            Ok(()) => match open(p, &print, source, beside) {
                Some(mut mapped) => {
                    if show {
                        eprintln!(
                            "genlab: decoded {} images of {source} in {:.1} s; cached in {}",
                            data.train.len() + data.test.len(),
                            started.elapsed().as_secs_f64(),
                            p.display()
                        );
                    }
                    mapped.dir = data.dir.clone();
                    return Ok(mapped);
                }
                None => why.push(format!("{} did not read back", p.display())),
            },
            Err(e) => why.push(format!("{e:#}")),
        }
    }
    if show {
        eprintln!(
            "genlab: {source} is not cached ({}); it is read into memory each run",
            why.join("; ")
        );
    }
    Ok(data)
}
