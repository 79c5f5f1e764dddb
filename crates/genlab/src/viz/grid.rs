//! Grids of grey or colour images with thin separators, upscaled to be readable.

use std::path::Path;

use anyhow::{Result, bail};
use image::{DynamicImage, GrayImage, ImageEncoder, RgbImage};

use crate::atomic::write_atomic_with;
use crate::data::ImageShape;

/// How a grid is drawn.
#[derive(Debug, Clone, Copy)]
pub struct GridOptions {
    /// Output pixels per image pixel; 0 picks one so the grid is about 640 px wide.
    pub scale: u32,
    /// Separator width in output pixels.
    pub separator: u32,
    /// Grey level of the separator.
    pub separator_level: u8,
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions {
            scale: 0,
            separator: 2,
            separator_level: 96,
        }
    }
}

/// Draws `rows x cols` images of `shape` (values in [0,1], clamped; each in
/// the models' `[channels, height, width]` layout, one after another) into
/// one picture: grey for one channel, RGB for three. Missing trailing cells
/// stay black.
pub fn grid_image(
    images: &[f32],
    shape: ImageShape,
    rows: usize,
    cols: usize,
    options: GridOptions,
) -> Result<DynamicImage> {
    let per = shape.pixels();
    if !images.len().is_multiple_of(per) {
        bail!(
            "image grid: {} values is not a whole number of {} images",
            images.len(),
            shape.to_meta()
        );
    }
    if shape.channels != 1 && shape.channels != 3 {
        bail!("image grid: {} channels; grids draw 1 or 3", shape.channels);
    }
    let n = images.len() / per;
    if n > rows * cols {
        bail!("image grid: {n} images do not fit in {rows}x{cols}");
    }
    let (ih, iw) = (shape.height, shape.width);
    let scale = if options.scale > 0 {
        options.scale
    } else {
        (640 / (ih.max(iw) * cols.max(rows).max(1)) as u32).clamp(1, 8)
    };
    let sep = options.separator;
    let (cell_w, cell_h) = (iw as u32 * scale, ih as u32 * scale);
    let width = cols as u32 * cell_w + (cols as u32 + 1) * sep;
    let height = rows as u32 * cell_h + (rows as u32 + 1) * sep;
    let c = shape.channels;
    let plane = ih * iw;
    let mut buf = vec![options.separator_level; (width * height) as usize * c];
    for r in 0..rows {
        for col in 0..cols {
            let x0 = sep + col as u32 * (cell_w + sep);
            let y0 = sep + r as u32 * (cell_h + sep);
            let k = r * cols + col;
            for y in 0..cell_h {
                for x in 0..cell_w {
                    let at = ((y0 + y) * width + x0 + x) as usize * c;
                    let src = (y / scale) as usize * iw + (x / scale) as usize;
                    for ch in 0..c {
                        buf[at + ch] = if k < n {
                            let p = images[k * per + ch * plane + src];
                            (p.clamp(0.0, 1.0) * 255.0).round() as u8
                        } else {
                            0
                        };
                    }
                }
            }
        }
    }
    Ok(if c == 1 {
        DynamicImage::ImageLuma8(GrayImage::from_raw(width, height, buf).expect("grey size"))
    } else {
        DynamicImage::ImageRgb8(RgbImage::from_raw(width, height, buf).expect("rgb size"))
    })
}

/// Writes a grey or RGB image as PNG, atomically.
pub fn save_png(img: &DynamicImage, path: &Path) -> Result<()> {
    let (bytes, color) = match img {
        DynamicImage::ImageLuma8(g) => (g.as_raw().as_slice(), image::ExtendedColorType::L8),
        DynamicImage::ImageRgb8(c) => (c.as_raw().as_slice(), image::ExtendedColorType::Rgb8),
        _ => bail!("save_png: only grey and RGB images are written"),
    };
    write_atomic_with(path, |file| {
        image::codecs::png::PngEncoder::new(std::io::BufWriter::new(file)).write_image(
            bytes,
            img.width(),
            img.height(),
            color,
        )?;
        Ok(())
    })
}

/// Draws and saves a grid in one call.
pub fn save_grid(
    path: &Path,
    images: &[f32],
    shape: ImageShape,
    rows: usize,
    cols: usize,
) -> Result<()> {
    save_png(
        &grid_image(images, shape, rows, cols, GridOptions::default())?,
        path,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: ImageShape = ImageShape::MNIST;

    #[test]
    fn a_colour_grid_keeps_each_channel() {
        let shape = ImageShape {
            channels: 3,
            height: 2,
            width: 3,
        };
        // One image: red plane 1, green 0, blue 0.5.
        let mut img = vec![0.0f32; 18];
        img[..6].fill(1.0);
        img[12..].fill(0.5);
        let opts = GridOptions {
            scale: 1,
            separator: 1,
            separator_level: 7,
        };
        let g = grid_image(&img, shape, 1, 1, opts).unwrap().to_rgb8();
        assert_eq!((g.width(), g.height()), (5, 4));
        assert_eq!(g.get_pixel(0, 0).0, [7, 7, 7]);
        assert_eq!(g.get_pixel(1, 1).0, [255, 0, 128]);
        assert_eq!(g.get_pixel(3, 2).0, [255, 0, 128]);
    }

    #[test]
    fn grid_places_each_image_in_its_cell_with_separators() {
        let mut images = vec![0.0f32; 3 * 784];
        images[784..2 * 784].fill(1.0); // second image white
        let opts = GridOptions {
            scale: 2,
            separator: 1,
            separator_level: 50,
        };
        let img = grid_image(&images, M, 2, 2, opts).unwrap().to_luma8();
        assert_eq!(img.width(), 2 * 56 + 3);
        assert_eq!(img.height(), 2 * 56 + 3);
        assert_eq!(img.get_pixel(0, 0)[0], 50); // separator
        assert_eq!(img.get_pixel(1, 1)[0], 0); // first image, black
        assert_eq!(img.get_pixel(1 + 56 + 1, 1)[0], 255); // second image, white
        assert_eq!(img.get_pixel(1 + 56 + 1, 1 + 56 + 1)[0], 0); // empty cell
        assert!(grid_image(&images, M, 1, 2, opts).is_err());
        assert!(grid_image(&images[..100], M, 1, 2, opts).is_err());
    }

    #[test]
    fn saved_png_decodes_to_the_same_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.png");
        let images: Vec<f32> = (0..4 * 784).map(|i| (i % 784) as f32 / 783.0).collect();
        save_grid(&path, &images, M, 2, 2).unwrap();
        let back = image::open(&path).unwrap().to_luma8();
        let direct = grid_image(&images, M, 2, 2, GridOptions::default())
            .unwrap()
            .to_luma8();
        assert_eq!(back, direct);
        assert!(
            back.width() >= 400,
            "an 2x2 grid is upscaled to be readable"
        );
    }
}
