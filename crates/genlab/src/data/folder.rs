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
use super::dataset::{Dataset, Split, seeded_split};
use super::locate::DatasetName;
use super::prepare::ImageOptions;

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

/// A decoded image and how many channels it has (1 or 3).
fn decode(path: &Path) -> Result<(image::DynamicImage, usize)> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))?
        .decode()
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: cannot decode the image ({e}); remove or replace the file",
                path.display()
            )
        })?;
    let channels = if img.color().has_color() { 3 } else { 1 };
    Ok((img, channels))
}

/// Decodes and prepares `files` into one split of `channels` channels, the
/// size of every image being that of the first unless resized.
fn decode_split(
    files: &[(PathBuf, Option<u8>)],
    opts: &ImageOptions,
    channels: Option<usize>,
) -> Result<(Split, usize)> {
    let decoded: Vec<(image::DynamicImage, usize)> = files
        .par_iter()
        .map(|(p, _)| decode(p))
        .collect::<Result<_>>()?;
    let channels = channels.unwrap_or(if opts.grey {
        1
    } else {
        decoded.iter().map(|(_, c)| *c).max().unwrap_or(1)
    });
    let first = &decoded[0].0;
    let source = ImageShape {
        channels,
        height: first.height() as usize,
        width: first.width() as usize,
    };
    let mut shape = opts.output_shape(source);
    shape.channels = channels;
    if opts.resize.is_none() {
        // Without a resize every image must come out at the first one's size.
        for ((img, _), (path, _)) in decoded.iter().zip(files) {
            let after = opts
                .crop
                .unwrap_or([img.height() as usize, img.width() as usize]);
            if after != [shape.height, shape.width] {
                bail!(
                    "{}: {}x{} (width x height) where {} is {}x{}; images of mixed sizes need a resize: --set data.resize=[H, W]",
                    path.display(),
                    img.width(),
                    img.height(),
                    files[0].0.display(),
                    first.width(),
                    first.height()
                );
            }
        }
    }
    let images: Vec<Vec<u8>> = decoded
        .into_par_iter()
        .zip(files.par_iter())
        .map(|((img, _), (path, _))| opts.prepare(img, channels, &path.display().to_string()))
        .collect::<Result<_>>()?;
    let labels = files.iter().map(|(_, l)| *l).collect::<Option<Vec<u8>>>();
    Ok((Split::new(shape, images.concat(), labels), channels))
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
    })
}
