//! A loaded dataset: train and test splits of 28x28 byte images with labels.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::idx::{find_file, read_pair};
use super::locate::{DataSources, DatasetName, IDX_FILES};
use super::{CLASSES, PIXELS};

/// One split: `count` images of [`PIXELS`] bytes each, row-major, and their labels.
#[derive(Debug, Clone)]
pub struct Split {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * PIXELS..(i + 1) * PIXELS]
    }

    /// A copy of the first `n` images (all of them if `n` is larger).
    pub fn head(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            pixels: self.pixels[..n * PIXELS].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }

    /// Keeps the first `n` images and returns the rest.
    pub fn split_off(&mut self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            pixels: self.pixels.split_off(n * PIXELS),
            labels: self.labels.split_off(n),
        }
    }

    /// Keeps the first `n` images (all of them if `n` is larger).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.pixels.truncate(n * PIXELS);
    }

    /// Images per class.
    pub fn class_counts(&self) -> [usize; CLASSES] {
        let mut counts = [0; CLASSES];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// Mean pixel value on the 0-255 scale.
    pub fn mean_pixel(&self) -> f64 {
        if self.pixels.is_empty() {
            return 0.0;
        }
        self.pixels.iter().map(|&p| p as u64).sum::<u64>() as f64 / self.pixels.len() as f64
    }
}

/// A dataset with its two splits and where it came from.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: DatasetName,
    pub dir: PathBuf,
    /// The shape of every image (the IDX files' rows and columns, one channel).
    pub image: super::ImageShape,
    pub train: Split,
    pub test: Split,
    /// Training images held out by `data.validation` (none unless asked).
    pub validation: Option<Split>,
}

impl Dataset {
    /// Reads the four IDX files in `dir`.
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
        let (train_images, train_labels) = read_pair(&path(IDX_FILES[0])?, &path(IDX_FILES[1])?)?;
        let (test_images, test_labels) = read_pair(&path(IDX_FILES[2])?, &path(IDX_FILES[3])?)?;
        Ok(Dataset {
            name,
            dir: dir.to_path_buf(),
            image: super::ImageShape {
                channels: 1,
                height: train_images.rows,
                width: train_images.cols,
            },
            train: Split {
                pixels: train_images.pixels,
                labels: train_labels,
            },
            test: Split {
                pixels: test_images.pixels,
                labels: test_labels,
            },
            validation: None,
        })
    }

    /// Finds the dataset in the standard places, downloading MNIST or
    /// Fashion-MNIST into the cache if it is nowhere; fails with one message
    /// listing every place it looked.
    pub fn load(name: &DatasetName, sources: &DataSources, show_progress: bool) -> Result<Self> {
        if let Some(dir) = sources.find(name) {
            return Self::from_dir(name.clone(), &dir);
        }
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
        let fix = format!(
            "set GENLAB_DATA to a directory holding {}/ with the four IDX files, or pass --data-dir DIR",
            name.dir_name().unwrap_or("the dataset")
        );
        let (Some(sub), Some(cache)) = (name.dir_name(), sources.cache.as_ref()) else {
            bail!("dataset {name} not found; looked in {looked}; {fix}");
        };
        if sources.offline {
            bail!(
                "dataset {name} not found and GENLAB_OFFLINE=1 forbids a download; looked in {looked}; {fix}"
            );
        }
        let dest = cache.join(sub);
        let mirrors = sources
            .mirrors
            .clone()
            .unwrap_or_else(|| name.default_mirrors());
        if show_progress {
            eprintln!(
                "genlab: {name} not found locally; downloading into {}",
                dest.display()
            );
        }
        if let Err(e) = super::download::download_dataset(name, &mirrors, &dest, show_progress) {
            bail!(
                "dataset {name} not found and the download failed ({e}); looked in {looked}; {fix}"
            );
        }
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
}
