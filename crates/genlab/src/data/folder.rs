//! `folder:DIR`: PNG and JPEG files. Class subfolders give labels, numbered
//! in the sorted order of their names (as torchvision's ImageFolder does);
//! a folder of images alone is unlabelled. `DIR/train/` and `DIR/test/`,
//! when both exist, are the two splits; otherwise the images are split by
//! `data.test_fraction`. Files of other extensions and hidden files are
//! ignored. Images are decoded in parallel.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;

use super::ImageShape;
use super::locate::DatasetName;
use super::prepare::ImageOptions;
use super::split::{Dataset, Split, seeded_split};

/// Whether `path` names a PNG or JPEG file by its extension.
fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn visible_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Every image file under `dir` (hidden entries skipped), which a cache of
/// the folder depends on; an unreadable directory gives none, for the
/// reader to name.
pub fn source_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_str().is_none_or(|n| n.starts_with('.')) {
                continue;
            }
            // The entry's own type needs no stat on most file systems.
            let p = e.path();
            let is_dir = match e.file_type() {
                Ok(t) if t.is_symlink() => p.is_dir(),
                Ok(t) => t.is_dir(),
                Err(_) => p.is_dir(),
            };
            if is_dir {
                pending.push(p);
            } else if is_image(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Image files with their class (by folder; none when unlabelled).
type Files = Vec<(PathBuf, Option<u8>)>;

/// The image files of one split with their class (by folder), and the class names.
fn listing(dir: &Path) -> Result<(Files, Vec<String>)> {
    let entries = visible_entries(dir)?;
    let subdirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
    if subdirs.is_empty() {
        let files: Files = entries
            .into_iter()
            .filter(|p| p.is_file() && is_image(p))
            .map(|p| (p, None))
            .collect();
        return Ok((files, Vec::new()));
    }
    if let Some(stray) = entries.iter().find(|p| p.is_file() && is_image(p)) {
        bail!(
            "{}: an image beside class folders ({}); put every image in a class folder, or use a folder without subfolders for unlabelled images",
            dir.display(),
            stray.display()
        );
    }
    if subdirs.len() > 256 {
        bail!(
            "{}: {} class folders; genlab takes at most 256 classes",
            dir.display(),
            subdirs.len()
        );
    }
    let mut files = Vec::new();
    let mut classes = Vec::new();
    for (c, sub) in subdirs.iter().enumerate() {
        classes.push(sub.file_name().unwrap().to_string_lossy().into_owned());
        for p in visible_entries(sub)? {
            if p.is_file() && is_image(&p) {
                files.push((p, Some(c as u8)));
            }
        }
    }
    Ok((files, classes))
}

/// Images decoded at once: enough for every core, few enough that only
/// prepared bytes, not whole decoded images, accumulate.
const CHUNK: usize = 1024;

fn reader(path: &Path) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>> {
    image::ImageReader::open(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))
}

fn undecodable(path: &Path, e: image::ImageError) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: cannot decode the image ({e}); remove or replace the file",
        path.display()
    )
}

/// An image's width, height and channel count (1 or 3), from its header.
fn probe(path: &Path) -> Result<(u32, u32, usize)> {
    use image::ImageDecoder;
    let decoder = reader(path)?
        .into_decoder()
        .map_err(|e| undecodable(path, e))?;
    let (w, h) = decoder.dimensions();
    let channels = if decoder.color_type().has_color() {
        3
    } else {
        1
    };
    Ok((w, h, channels))
}

fn decode(path: &Path) -> Result<image::DynamicImage> {
    reader(path)?.decode().map_err(|e| undecodable(path, e))
}

/// Decodes and prepares `files` into one split of `channels` channels (by
/// default the most any image has), the size of every image being that of
/// the first unless resized. Headers are read first, so a mixed size is
/// refused before anything is decoded.
fn decode_split(
    files: &[(PathBuf, Option<u8>)],
    opts: &ImageOptions,
    channels: Option<usize>,
) -> Result<(Split, usize)> {
    let headers: Vec<(u32, u32, usize)> = files
        .par_iter()
        .map(|(p, _)| probe(p))
        .collect::<Result<_>>()?;
    let channels = channels.unwrap_or(if opts.grey {
        1
    } else {
        headers.iter().map(|h| h.2).max().unwrap_or(1)
    });
    let (first_w, first_h, _) = headers[0];
    let source = ImageShape {
        channels,
        height: first_h as usize,
        width: first_w as usize,
    };
    let mut shape = opts.output_shape(source);
    shape.channels = channels;
    if opts.resize.is_none() {
        // Without a resize every image must come out at the first one's size.
        for (&(w, h, _), (path, _)) in headers.iter().zip(files) {
            let after = opts.crop.unwrap_or([h as usize, w as usize]);
            if after != [shape.height, shape.width] {
                bail!(
                    "{}: {w}x{h} (width x height) where {} is {first_w}x{first_h}; images of mixed sizes need a resize: --set data.resize=[H, W]",
                    path.display(),
                    files[0].0.display(),
                );
            }
        }
    }
    let mut pixels = Vec::with_capacity(files.len() * shape.pixels());
    for chunk in files.chunks(CHUNK) {
        let images: Vec<Vec<u8>> = chunk
            .par_iter()
            .map(|(path, _)| {
                let img = decode(path)?;
                let bytes = opts.prepare(img, channels, &path.display().to_string())?;
                if bytes.len() != shape.pixels() {
                    bail!(
                        "{}: its header and its pixels disagree on its size; remove or replace the file",
                        path.display()
                    );
                }
                Ok(bytes)
            })
            .collect::<Result<_>>()?;
        for img in images {
            pixels.extend_from_slice(&img);
        }
    }
    let labels = files.iter().map(|(_, l)| *l).collect::<Option<Vec<u8>>>();
    Ok((Split::new(shape, pixels, labels), channels))
}

/// Reads a `folder:` source.
pub fn read_folder(name: &DatasetName, dir: &Path, opts: &ImageOptions) -> Result<Dataset> {
    if !dir.is_dir() {
        bail!(
            "folder:{}: not a directory; name a directory of PNG or JPEG images",
            dir.display()
        );
    }
    let (train_dir, test_dir) = (dir.join("train"), dir.join("test"));
    let own_splits = train_dir.is_dir() && test_dir.is_dir();
    let cap = |mut files: Files| {
        if let Some(n) = opts.max_images {
            files.truncate(n);
        }
        files
    };
    let nonempty = |files: &[(PathBuf, Option<u8>)], d: &Path| -> Result<()> {
        if files.is_empty() {
            bail!(
                "{}: no PNG or JPEG images (files ending .png, .jpg or .jpeg, directly or in class folders)",
                d.display()
            );
        }
        Ok(())
    };
    let (train, test, classes) = if own_splits {
        let (train_files, classes) = listing(&train_dir)?;
        let (test_files, test_classes) = listing(&test_dir)?;
        nonempty(&train_files, &train_dir)?;
        nonempty(&test_files, &test_dir)?;
        if classes != test_classes {
            bail!(
                "{}: the class folders of train/ ({}) and test/ ({}) differ; give both the same classes",
                dir.display(),
                classes.join(", "),
                test_classes.join(", ")
            );
        }
        let (train, channels) = decode_split(&cap(train_files), opts, None)?;
        let (test, _) = decode_split(&cap(test_files), opts, Some(channels))?;
        if test.shape != train.shape {
            bail!(
                "{}: the test images come out {} and the training images {}; give both one size, or --set data.resize=[H, W]",
                dir.display(),
                test.shape.to_meta(),
                train.shape.to_meta()
            );
        }
        (train, test, classes)
    } else {
        let (files, classes) = listing(dir)?;
        nonempty(&files, dir)?;
        let (all, _) = decode_split(&cap(files), opts, None)?;
        let (train, test) = seeded_split(
            all,
            opts.test_fraction,
            &format!("folder:{}", dir.display()),
        )?;
        (train, test, classes)
    };
    Ok(Dataset {
        name: name.clone(),
        dir: dir.to_path_buf(),
        image: train.shape,
        classes,
        train,
        test,
        validation: None,
        cache: None,
    })
}
