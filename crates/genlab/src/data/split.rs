//! The loaded data's types: a split of byte images (any height, width and
//! channel count, in the models' `[channels, height, width]` layout) with
//! their labels, a dataset of two splits, and the fixed-seed split every
//! source without its own test images shares. The readers build these;
//! [`super::dataset`] chooses the reader.

use std::path::PathBuf;

use anyhow::Result;

use super::ImageShape;
use super::bytes::ImageBytes;
use super::locate::DatasetName;

/// One split: images of `shape`, one after another, and their labels.
#[derive(Debug, Clone)]
pub struct Split {
    pub shape: ImageShape,
    /// In memory, or mapped from the image cache.
    pub pixels: ImageBytes,
    /// One class index per image; `None` for an unlabelled source.
    pub labels: Option<Vec<u8>>,
}

impl Split {
    /// A split of `pixels` (whole images of `shape`) and their labels.
    pub fn new(shape: ImageShape, pixels: impl Into<ImageBytes>, labels: Option<Vec<u8>>) -> Self {
        let pixels = pixels.into();
        debug_assert!(pixels.len().is_multiple_of(shape.pixels()));
        if let Some(l) = &labels {
            debug_assert_eq!(l.len(), pixels.len() / shape.pixels());
        }
        Split {
            shape,
            pixels,
            labels,
        }
    }

    pub fn len(&self) -> usize {
        self.pixels.len() / self.shape.pixels()
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// The bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let per = self.shape.pixels();
        &self.pixels[i * per..(i + 1) * per]
    }

    /// The labels, or an error naming what needs them.
    pub fn labels_for(&self, what: &str) -> Result<&[u8]> {
        match &self.labels {
            Some(l) => Ok(l),
            None => crate::usage_bail!(
                "{what} needs class labels, and this dataset has none; use a labelled source (class subfolders for folder:DIR, a labels array for npy:)"
            ),
        }
    }

    /// A copy of the images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Split {
        let mut pixels = Vec::with_capacity(indices.len() * self.shape.pixels());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        let labels = self
            .labels
            .as_ref()
            .map(|l| indices.iter().map(|&i| l[i]).collect());
        Split::new(self.shape, pixels, labels)
    }

    /// A copy of the first `n` images (all of them if `n` is larger).
    pub fn head(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split::new(
            self.shape,
            self.pixels[..n * self.shape.pixels()].to_vec(),
            self.labels.as_ref().map(|l| l[..n].to_vec()),
        )
    }

    /// Keeps the first `n` images and returns the rest.
    pub fn split_off(&mut self, n: usize) -> Split {
        let n = n.min(self.len());
        Split::new(
            self.shape,
            self.pixels.split_off(n * self.shape.pixels()),
            self.labels.as_mut().map(|l| l.split_off(n)),
        )
    }

    /// Keeps the first `n` images (all of them if `n` is larger).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        if let Some(l) = &mut self.labels {
            l.truncate(n);
        }
        self.pixels.truncate(n * self.shape.pixels());
    }

    /// Images per class, for `classes` classes (empty when unlabelled).
    pub fn class_counts(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &l in self.labels.iter().flatten() {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
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
    /// The shape of every image of both splits.
    pub image: ImageShape,
    /// The classes' names, in label order; empty for an unlabelled source.
    pub classes: Vec<String>,
    pub train: Split,
    pub test: Split,
    /// Training images held out by `data.validation` (none unless asked).
    pub validation: Option<Split>,
    /// The image cache the splits are mapped from, if any.
    pub cache: Option<PathBuf>,
}

/// Splits `all` into training and test images, `fraction` of them (at
/// least one) for test, by a permutation from a fixed seed: the same split
/// for every run of the same source. Both keep the source's order.
pub fn seeded_split(all: Split, fraction: f64, what: &str) -> Result<(Split, Split)> {
    use rand::seq::SliceRandom;
    let n = all.len();
    if !(fraction > 0.0 && fraction < 1.0) {
        crate::usage_bail!(
            "data.test_fraction = {fraction}: use a share strictly between 0 and 1, such as 0.1"
        );
    }
    if n < 2 {
        crate::usage_bail!(
            "{what}: {n} image{} cannot be split into training and test images; give at least 2",
            if n == 1 { "" } else { "s" }
        );
    }
    let test_n = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut crate::rng::stream(
        0,
        crate::rng::Purpose::DataSplit,
        0,
    ));
    let (mut test, mut train) = (order[..test_n].to_vec(), order[test_n..].to_vec());
    test.sort_unstable();
    train.sort_unstable();
    Ok((all.select(&train), all.select(&test)))
}

/// The names of classes 0..n as digits.
pub fn numbered_classes(n: usize) -> Vec<String> {
    (0..n).map(|c| c.to_string()).collect()
}
