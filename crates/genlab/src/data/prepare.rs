//! What genlab does to each image of a source before training on it:
//! conversion to grey, a centre crop, a resize with a stated filter, in that
//! order, and the layout every model reads (`[channels, height, width]`
//! bytes, channel-major). Sources whose images already have the wanted
//! shape skip all of it.

use anyhow::{Result, bail};
use image::{DynamicImage, GrayImage, RgbImage, imageops::FilterType};
use serde::{Deserialize, Serialize};

use super::ImageShape;

/// The filter of `data.resize`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeFilter {
    Nearest,
    /// Bilinear (a triangle kernel scaled to the reduction, so downscaling averages).
    #[default]
    Triangle,
    CatmullRom,
    Gaussian,
    Lanczos3,
}

impl ResizeFilter {
    fn filter_type(self) -> FilterType {
        match self {
            ResizeFilter::Nearest => FilterType::Nearest,
            ResizeFilter::Triangle => FilterType::Triangle,
            ResizeFilter::CatmullRom => FilterType::CatmullRom,
            ResizeFilter::Gaussian => FilterType::Gaussian,
            ResizeFilter::Lanczos3 => FilterType::Lanczos3,
        }
    }
}

/// How a source's images are read: the `data.*` image options.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOptions {
    /// Convert colour images to one grey channel (ITU-R 601 luma, the image crate's).
    pub grey: bool,
    /// A centre crop to `[height, width]`, before any resize.
    pub crop: Option<[usize; 2]>,
    /// A resize to `[height, width]`, after any crop.
    pub resize: Option<[usize; 2]>,
    pub filter: ResizeFilter,
    /// Read at most this many images of each split of the source.
    pub max_images: Option<usize>,
    /// The share of a source without its own test split held out as test
    /// images (a seeded split, the same for every run).
    pub test_fraction: f64,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            grey: false,
            crop: None,
            resize: None,
            filter: ResizeFilter::default(),
            max_images: None,
            test_fraction: 0.1,
        }
    }
}

impl ImageOptions {
    /// Whether an image of `shape` would be changed (grey, crop or resize).
    pub fn changes(&self, shape: ImageShape) -> bool {
        (self.grey && shape.channels != 1)
            || self.crop.is_some_and(|c| c != [shape.height, shape.width])
            || self
                .resize
                .is_some_and(|r| r != [shape.height, shape.width])
    }

    /// The shape an image of `shape` has once prepared.
    pub fn output_shape(&self, shape: ImageShape) -> ImageShape {
        let [height, width] = self
            .resize
            .or(self.crop)
            .unwrap_or([shape.height, shape.width]);
        ImageShape {
            channels: if self.grey { 1 } else { shape.channels },
            height,
            width,
        }
    }

    /// Applies the options to one decoded image, giving `channels` (1 or 3)
    /// channels in the models' layout; `what` names the image in errors.
    pub fn prepare(&self, img: DynamicImage, channels: usize, what: &str) -> Result<Vec<u8>> {
        let mut img = if self.grey {
            DynamicImage::ImageLuma8(img.to_luma8())
        } else {
            img
        };
        if let Some([h, w]) = self.crop {
            let (iw, ih) = (img.width() as usize, img.height() as usize);
            if h > ih || w > iw {
                bail!(
                    "{what}: {iw}x{ih} (width x height) is smaller than data.crop = [{h}, {w}]; crop to at most its size or resize instead"
                );
            }
            img = img.crop_imm(
                ((iw - w) / 2) as u32,
                ((ih - h) / 2) as u32,
                w as u32,
                h as u32,
            );
        }
        if let Some([h, w]) = self.resize
            && (img.height() as usize, img.width() as usize) != (h, w)
        {
            img = img.resize_exact(w as u32, h as u32, self.filter.filter_type());
        }
        Ok(if channels == 1 {
            img.to_luma8().into_raw()
        } else {
            channels_first(&img.to_rgb8())
        })
    }
}

/// An RGB image's bytes channel by channel (`[3, height, width]`).
pub fn channels_first(img: &RgbImage) -> Vec<u8> {
    let plane = (img.width() * img.height()) as usize;
    let mut out = vec![0u8; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = px[c];
        }
    }
    out
}

/// One image of `shape` in the models' layout back as an image (grey or RGB).
pub fn to_dynamic(bytes: &[u8], shape: ImageShape) -> DynamicImage {
    let (w, h) = (shape.width as u32, shape.height as u32);
    let plane = shape.height * shape.width;
    if shape.channels == 1 {
        DynamicImage::ImageLuma8(
            GrayImage::from_raw(w, h, bytes[..plane].to_vec()).expect("one plane"),
        )
    } else {
        let mut rgb = Vec::with_capacity(3 * plane);
        for i in 0..plane {
            for c in 0..3 {
                rgb.push(bytes[c * plane + i]);
            }
        }
        DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, rgb).expect("three planes"))
    }
}

/// Applies `opts` to images of `shape` already in the models' layout
/// (`count` of them in `pixels`), returning the new shape and bytes; when
/// nothing changes, the bytes are returned as they are.
pub fn prepare_all(
    pixels: Vec<u8>,
    shape: ImageShape,
    opts: &ImageOptions,
    what: &str,
) -> Result<(ImageShape, Vec<u8>)> {
    if !opts.changes(shape) {
        return Ok((shape, pixels));
    }
    use rayon::prelude::*;
    let out_shape = opts.output_shape(shape);
    let per = shape.pixels();
    let images: Vec<Vec<u8>> = pixels
        .par_chunks_exact(per)
        .enumerate()
        .map(|(i, img)| {
            opts.prepare(
                to_dynamic(img, shape),
                out_shape.channels,
                &format!("{what}, image {i}"),
            )
        })
        .collect::<Result<_>>()?;
    Ok((out_shape, images.concat()))
}
