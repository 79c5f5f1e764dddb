//! Loading a dataset: the reader each source takes (IDX, folder, arrays,
//! CIFAR-10), the decoded-image cache in front of them, downloads, the
//! image options and the limits. The loaded types are in [`super::split`].

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::ImageShape;
use super::idx::{find_file, read_pair};
use super::locate::{DataSources, DatasetName, IDX_FILES};
use super::prepare::{ImageOptions, prepare_all};
use super::split::{Dataset, Split, numbered_classes};

impl Dataset {
    /// Reads the four IDX files in `dir`, whose labels are the ten digits
    /// for MNIST and Fashion-MNIST and any byte for `idx:DIR`.
    pub fn from_dir(name: DatasetName, dir: &Path) -> Result<Self> {
        let path = |f: &str| {
            find_file(dir, f).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: missing {f} (or {f}.gz); a dataset directory needs all of {}",
                    dir.display(),
                    IDX_FILES.join(", ")
                )
            })
        };
        let limit = if matches!(name, DatasetName::Idx(_)) {
            256
        } else {
            10
        };
        let (train_images, train_labels) =
            read_pair(&path(IDX_FILES[0])?, &path(IDX_FILES[1])?, limit)?;
        let (test_images, test_labels) =
            read_pair(&path(IDX_FILES[2])?, &path(IDX_FILES[3])?, limit)?;
        let shape = ImageShape {
            channels: 1,
            height: train_images.rows,
            width: train_images.cols,
        };
        if (test_images.rows, test_images.cols) != (shape.height, shape.width) {
            bail!(
                "{}: the test images are {}x{} and the training images {}x{}; both splits need one size",
                dir.display(),
                test_images.rows,
                test_images.cols,
                shape.height,
                shape.width
            );
        }
        let classes = if limit == 10 {
            10
        } else {
            1 + train_labels
                .iter()
                .chain(&test_labels)
                .copied()
                .max()
                .unwrap_or(0) as usize
        };
        Ok(Dataset {
            name,
            dir: dir.to_path_buf(),
            image: shape,
            classes: numbered_classes(classes),
            train: Split::new(shape, train_images.pixels, Some(train_labels)),
            test: Split::new(shape, test_images.pixels, Some(test_labels)),
            validation: None,
            cache: None,
        })
    }

    /// Finds and reads the dataset with the default image options (see [`Dataset::load_with`]).
    pub fn load(name: &DatasetName, sources: &DataSources, show_progress: bool) -> Result<Self> {
        Self::load_with(name, sources, &ImageOptions::default(), show_progress)
    }

    /// Finds and reads the dataset and applies the image options. MNIST and
    /// Fashion-MNIST are looked for in the standard places and downloaded
    /// into the cache if they are nowhere; fails with one message listing
    /// every place it looked.
    pub fn load_with(
        name: &DatasetName,
        sources: &DataSources,
        opts: &ImageOptions,
        show_progress: bool,
    ) -> Result<Self> {
        let user_cache = sources.cache.as_deref();
        let cached = |files: Vec<PathBuf>, beside: &Path, build: &dyn Fn() -> Result<Dataset>| {
            super::cache::cached(
                name,
                &files,
                beside,
                user_cache,
                opts,
                show_progress,
                || build().map_err(crate::error::usage),
            )
        };
        match name {
            // A bad image or array is the user's input to fix: a usage error.
            DatasetName::Folder(dir) => cached(super::folder::source_files(dir), dir, &|| {
                let data = super::folder::read_folder(name, dir, opts)?;
                // Folders are prepared as they are decoded.
                Ok(limited(data, opts))
            }),
            DatasetName::Npy { images, labels } => {
                let files = std::iter::once(images).chain(labels).cloned().collect();
                let beside = parent_dir(images);
                cached(files, &beside, &|| {
                    prepared(super::arrays::read_arrays(name, opts)?, opts, name)
                })
            }
            DatasetName::Npz(path) => cached(vec![path.clone()], &parent_dir(path), &|| {
                prepared(super::arrays::read_arrays(name, opts)?, opts, name)
            }),
            DatasetName::Cifar10(dir) => {
                let dir = match dir {
                    Some(d) => d.clone(),
                    None => match sources.find(name) {
                        Some(d) => d,
                        None => download(name, sources, show_progress)?,
                    },
                };
                let batches = super::cifar::batches_dir(&dir).unwrap_or(dir.clone());
                cached(super::cifar::files(&batches), &batches, &|| {
                    prepared(super::cifar::read_cifar10(name, &dir)?, opts, name)
                })
            }
            _ => {
                let data = Self::load_idx(name, sources, show_progress)?;
                prepared(data, opts, name).map_err(crate::error::usage)
            }
        }
    }

    fn load_idx(name: &DatasetName, sources: &DataSources, show_progress: bool) -> Result<Self> {
        if let Some(dir) = sources.find(name) {
            return Self::from_dir(name.clone(), &dir);
        }
        let dest = download(name, sources, show_progress)?;
        Self::from_dir(name.clone(), &dest)
    }

    /// Keeps the first `train` training and `test` test images.
    pub fn limit(&mut self, train: Option<usize>, test: Option<usize>) {
        if let Some(n) = train {
            self.train.truncate(n);
        }
        if let Some(n) = test {
            self.test.truncate(n);
        }
    }

    /// Whether the images carry class labels.
    pub fn is_labelled(&self) -> bool {
        self.train.labels.is_some()
    }
}

/// Downloads `name` into the user cache (MNIST and Fashion-MNIST by their
/// files' checksums, CIFAR-10 by its archive's) and returns its directory;
/// without a network, or with `GENLAB_OFFLINE=1`, the error lists every
/// place looked in.
fn download(name: &DatasetName, sources: &DataSources, show_progress: bool) -> Result<PathBuf> {
    let (Some(sub), Some(cache)) = (name.dir_name(), sources.cache.as_ref()) else {
        return Err(not_found(name, sources, None));
    };
    let cifar = matches!(name, DatasetName::Cifar10(_));
    if sources.offline || !(cifar || name.known_sha256().is_some()) {
        return Err(not_found(
            name,
            sources,
            sources
                .offline
                .then_some("GENLAB_OFFLINE=1 forbids a download"),
        ));
    }
    let dest = cache.join(sub);
    let mirrors = sources.mirrors.clone().unwrap_or_else(|| {
        if cifar {
            super::download::CIFAR10_MIRRORS.map(String::from).to_vec()
        } else {
            name.default_mirrors()
        }
    });
    if show_progress {
        eprintln!(
            "genlab: {name} not found locally; downloading into {}",
            dest.display()
        );
    }
    let done = if cifar {
        super::download::download_cifar10(
            &mirrors,
            &dest,
            super::download::CIFAR10_ARCHIVE_SHA256,
            show_progress,
        )
    } else {
        super::download::download_dataset(name, &mirrors, &dest, show_progress)
    };
    if let Err(e) = done {
        let why = format!("the download failed ({e})");
        return Err(not_found(name, sources, Some(&why)));
    }
    Ok(dest)
}

/// The directory a file is in (`.` for a bare name).
fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `data` cut to `data.max_images` per split.
fn limited(mut data: Dataset, opts: &ImageOptions) -> Dataset {
    if let Some(n) = opts.max_images {
        data.limit(Some(n), Some(n));
    }
    data
}

/// `data` cut to `data.max_images` and converted by the grey, crop and resize options.
fn prepared(data: Dataset, opts: &ImageOptions, name: &DatasetName) -> Result<Dataset> {
    let mut data = limited(data, opts);
    if !opts.changes(data.image) {
        return Ok(data);
    }
    let what = name.to_string();
    let (shape, train) = prepare_all(
        std::mem::take(&mut data.train.pixels).into_vec(),
        data.image,
        opts,
        &what,
    )?;
    let (_, test) = prepare_all(
        std::mem::take(&mut data.test.pixels).into_vec(),
        data.image,
        opts,
        &what,
    )?;
    data.image = shape;
    data.train = Split::new(shape, train, data.train.labels.take());
    data.test = Split::new(shape, test, data.test.labels.take());
    Ok(data)
}

/// The one-line error of a dataset found nowhere: every place looked in, and the fix.
fn not_found(name: &DatasetName, sources: &DataSources, why: Option<&str>) -> anyhow::Error {
    let looked: Vec<String> = sources
        .candidates(name)
        .iter()
        .map(|(why, dir)| format!("{} ({why})", dir.display()))
        .collect();
    let looked = if looked.is_empty() {
        "nowhere".to_string()
    } else {
        looked.join(", ")
    };
    let fix = match name {
        DatasetName::Cifar10(_) => format!(
            "put CIFAR-10's binary batches (data_batch_1.bin ... data_batch_5.bin, test_batch.bin) in $GENLAB_DATA/{}/ or name their directory with --dataset cifar10:DIR",
            name.dir_name().unwrap_or("cifar10")
        ),
        _ => format!(
            "set GENLAB_DATA to a directory holding {}/ with the four IDX files, or pass --data-dir DIR",
            name.dir_name().unwrap_or("the dataset")
        ),
    };
    match why {
        Some(why) => {
            anyhow::anyhow!("dataset {name} not found and {why}; looked in {looked}; {fix}")
        }
        None => anyhow::anyhow!("dataset {name} not found; looked in {looked}; {fix}"),
    }
}
