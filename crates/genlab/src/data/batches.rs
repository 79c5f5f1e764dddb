//! Views of the pixels the models train on, per-epoch shuffling and batching.

use rand::RngExt;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::split::Split;
use crate::rng::{GenRng, Purpose, stream};

/// How byte pixels become model inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PixelView {
    /// pixel / 255, in [0, 1].
    Unit,
    /// pixel / 127.5 - 1, in [-1, 1] (GAN images).
    Signed,
    /// 1 where pixel / 255 > 0.5, else 0.
    Binarised,
    /// A fresh Bernoulli(pixel / 255) draw every time the image is used (every epoch).
    Dynamic,
}

impl PixelView {
    /// Converts one byte; `rng` is used only by [`PixelView::Dynamic`].
    #[inline]
    pub fn convert(self, byte: u8, rng: &mut GenRng) -> f32 {
        let unit = byte as f32 / 255.0;
        match self {
            PixelView::Unit => unit,
            PixelView::Signed => byte as f32 / 127.5 - 1.0,
            PixelView::Binarised => (unit > 0.5) as u8 as f32,
            PixelView::Dynamic => (rng.random::<f32>() < unit) as u8 as f32,
        }
    }
}

/// Writes the images at `indices` into `out` (resized to `indices.len()` images), reusing its allocation.
pub fn fill_batch(
    split: &Split,
    indices: &[usize],
    view: PixelView,
    rng: &mut GenRng,
    out: &mut Vec<f32>,
) {
    // Every value is overwritten below: at an unchanged size this writes nothing.
    let per = split.shape.pixels();
    out.resize(indices.len() * per, 0.0);
    let mut scratch = Vec::new();
    for (dst, &i) in out.chunks_exact_mut(per).zip(indices) {
        let img = image_bytes(split, i, &mut scratch);
        match view {
            PixelView::Unit => unit_pixels(dst, img),
            PixelView::Signed => signed_pixels(dst, img),
            _ => {
                for (d, &b) in dst.iter_mut().zip(img) {
                    *d = view.convert(b, rng);
                }
            }
        }
    }
}

/// Image `i`'s bytes: borrowed from memory, or read from a mapped cache
/// into `scratch` (see [`super::bytes`]: batches never map pages in).
fn image_bytes<'a>(split: &'a Split, i: usize, scratch: &'a mut Vec<u8>) -> &'a [u8] {
    if !split.pixels.is_mapped() {
        return split.image(i);
    }
    let per = split.shape.pixels();
    scratch.resize(per, 0);
    split.pixels.read_into(i * per, scratch);
    scratch
}

crate::simd_fn! {
    /// `out[k] = img[k] / 255` ([`PixelView::Unit`], the same division).
    fn unit_pixels(out: &mut [f32], img: &[u8]) {
        for (o, &b) in out.iter_mut().zip(img) {
            *o = b as f32 / 255.0;
        }
    }
}

crate::simd_fn! {
    /// `out[k] = img[k] / 127.5 - 1` ([`PixelView::Signed`]).
    fn signed_pixels(out: &mut [f32], img: &[u8]) {
        for (o, &b) in out.iter_mut().zip(img) {
            *o = b as f32 / 127.5 - 1.0;
        }
    }
}

/// Writes the images at `indices` into `out`, which must hold exactly `indices.len()` images.
pub fn fill_batch_slice(
    split: &Split,
    indices: &[usize],
    view: PixelView,
    rng: &mut GenRng,
    out: &mut [f32],
) {
    let per = split.shape.pixels();
    assert_eq!(out.len(), indices.len() * per, "batch buffer size");
    let mut scratch = Vec::new();
    for (dst, &i) in out.chunks_exact_mut(per).zip(indices) {
        for (d, &b) in dst.iter_mut().zip(image_bytes(split, i, &mut scratch)) {
            *d = view.convert(b, rng);
        }
    }
}

/// The first `n` images of a split (all of them if fewer), as pixel / 255.
pub fn first_rows(split: &Split, n: usize) -> Vec<f32> {
    let idx: Vec<usize> = (0..n.min(split.len())).collect();
    let mut out = Vec::new();
    // The unit view draws nothing; the generator is only a formality.
    fill_batch(
        split,
        &idx,
        PixelView::Unit,
        &mut crate::rng::stream(0, crate::rng::Purpose::Fixed, 0),
        &mut out,
    );
    out
}

/// A split's images in `view`, `chunk` images at a time and in order, with
/// `rng` drawn in order: the values [`split_to_f32`] gives, without the
/// whole split as f32 in memory at once.
pub fn for_each_chunk<E>(
    split: &Split,
    view: PixelView,
    rng: &mut GenRng,
    chunk: usize,
    mut f: impl FnMut(&[f32]) -> Result<(), E>,
) -> Result<(), E> {
    assert!(chunk > 0, "chunk size must be positive");
    let mut buf = Vec::new();
    let mut indices = Vec::with_capacity(chunk);
    for start in (0..split.len()).step_by(chunk) {
        indices.clear();
        indices.extend(start..(start + chunk).min(split.len()));
        fill_batch(split, &indices, view, rng, &mut buf);
        f(&buf)?;
    }
    Ok(())
}

/// A whole split as f32 in one view (one image after another).
pub fn split_to_f32(split: &Split, view: PixelView, rng: &mut GenRng) -> Vec<f32> {
    let all: Vec<usize> = (0..split.len()).collect();
    let mut out = Vec::new();
    fill_batch(split, &all, view, rng, &mut out);
    out
}

/// The order of one epoch, derived from the run's seed and the epoch number
/// alone, so a run resumed at an epoch boundary sees the same batches.
#[derive(Debug, Clone)]
pub struct EpochOrder {
    pub indices: Vec<usize>,
    pub batch_size: usize,
    pub drop_last: bool,
}

impl EpochOrder {
    pub fn new(
        n: usize,
        batch_size: usize,
        drop_last: bool,
        shuffle: bool,
        seed: u64,
        epoch: u32,
    ) -> Self {
        assert!(batch_size > 0, "batch size must be positive");
        let mut indices: Vec<usize> = (0..n).collect();
        if shuffle {
            indices.shuffle(&mut stream(seed, Purpose::Shuffle, epoch));
        }
        EpochOrder {
            indices,
            batch_size,
            drop_last,
        }
    }

    pub fn num_batches(&self) -> usize {
        if self.drop_last {
            self.indices.len() / self.batch_size
        } else {
            self.indices.len().div_ceil(self.batch_size)
        }
    }

    /// The indices of every batch, in order.
    pub fn batches(&self) -> impl Iterator<Item = &[usize]> {
        self.indices
            .chunks(self.batch_size)
            .take(self.num_batches())
    }

    /// The generator for dynamic binarisation in this epoch.
    pub fn binarise_rng(seed: u64, epoch: u32) -> GenRng {
        stream(seed, Purpose::Binarise, epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::PIXELS;

    fn split(n: usize) -> Split {
        Split {
            shape: crate::data::ImageShape::MNIST,
            pixels: (0..n * PIXELS)
                .map(|i| (i % 256) as u8)
                .collect::<Vec<u8>>()
                .into(),
            labels: Some((0..n).map(|i| (i % 10) as u8).collect()),
        }
    }

    #[test]
    fn views_map_bytes_as_documented() {
        let mut rng = stream(0, Purpose::Train, 0);
        assert_eq!(PixelView::Unit.convert(255, &mut rng), 1.0);
        assert_eq!(PixelView::Unit.convert(0, &mut rng), 0.0);
        assert_eq!(PixelView::Signed.convert(0, &mut rng), -1.0);
        assert_eq!(PixelView::Signed.convert(255, &mut rng), 1.0);
        assert_eq!(PixelView::Binarised.convert(128, &mut rng), 1.0);
        assert_eq!(PixelView::Binarised.convert(127, &mut rng), 0.0);
        for _ in 0..100 {
            assert_eq!(PixelView::Dynamic.convert(0, &mut rng), 0.0);
            assert_eq!(PixelView::Dynamic.convert(255, &mut rng), 1.0);
        }
    }

    #[test]
    fn dynamic_binarisation_has_the_pixel_mean_and_changes_per_epoch() {
        let s = Split {
            shape: crate::data::ImageShape::MNIST,
            pixels: vec![64; 100 * PIXELS].into(),
            labels: Some(vec![0; 100]),
        };
        let idx: Vec<usize> = (0..100).collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        fill_batch(
            &s,
            &idx,
            PixelView::Dynamic,
            &mut EpochOrder::binarise_rng(1, 0),
            &mut a,
        );
        fill_batch(
            &s,
            &idx,
            PixelView::Dynamic,
            &mut EpochOrder::binarise_rng(1, 1),
            &mut b,
        );
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!((mean - 64.0 / 255.0).abs() < 0.01, "mean {mean}");
        assert_ne!(a, b);
        let mut again = Vec::new();
        fill_batch(
            &s,
            &idx,
            PixelView::Dynamic,
            &mut EpochOrder::binarise_rng(1, 0),
            &mut again,
        );
        assert_eq!(a, again);
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation_with_and_without_drop_last() {
        let a = EpochOrder::new(10, 4, true, true, 5, 0);
        let b = EpochOrder::new(10, 4, true, true, 5, 0);
        let c = EpochOrder::new(10, 4, true, true, 5, 1);
        assert_eq!(a.indices, b.indices);
        assert_ne!(a.indices, c.indices);
        let mut sorted = a.indices.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(a.batches().map(|b| b.len()).collect::<Vec<_>>(), vec![4, 4]);
        let keep = EpochOrder::new(10, 4, false, false, 5, 0);
        assert_eq!(
            keep.batches().map(|b| b.len()).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        assert_eq!(keep.indices, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn fill_batch_reuses_the_buffer_and_picks_the_right_images() {
        let s = split(3);
        let mut rng = stream(0, Purpose::Train, 0);
        let mut out = Vec::with_capacity(2 * PIXELS);
        let ptr = out.as_ptr();
        fill_batch(&s, &[2, 0], PixelView::Unit, &mut rng, &mut out);
        assert_eq!(out.len(), 2 * PIXELS);
        assert_eq!(out.as_ptr(), ptr);
        assert_eq!(out[0], s.image(2)[0] as f32 / 255.0);
        assert_eq!(out[PIXELS + 5], s.image(0)[5] as f32 / 255.0);
    }
}
