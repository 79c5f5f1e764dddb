//! Grids of 28x28 images with thin separators, upscaled to be readable.

use std::path::Path;

use anyhow::{Result, bail};
use image::{GrayImage, ImageEncoder, Luma};

use crate::atomic::write_atomic_with;
use crate::data::SIDE;

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

/// Draws `rows x cols` images (values in [0,1], clamped; 784 each, row-major)
/// into one grayscale picture. Missing trailing cells stay black.
pub fn grid_image(
    images: &[f32],
    rows: usize,
    cols: usize,
    options: GridOptions,
) -> Result<GrayImage> {
    let per = SIDE * SIDE;
    if !images.len().is_multiple_of(per) {
        bail!(
            "image grid: {} values is not a whole number of 28x28 images",
            images.len()
        );
    }
    let n = images.len() / per;
    if n > rows * cols {
        bail!("image grid: {n} images do not fit in {rows}x{cols}");
    }
    let scale = if options.scale > 0 {
        options.scale
    } else {
        (640 / (SIDE * cols.max(rows).max(1)) as u32).clamp(1, 8)
    };
    let sep = options.separator;
    let cell = SIDE as u32 * scale;
    let width = cols as u32 * cell + (cols as u32 + 1) * sep;
    let height = rows as u32 * cell + (rows as u32 + 1) * sep;
    let mut img = GrayImage::from_pixel(width, height, Luma([options.separator_level]));
    for r in 0..rows {
        for c in 0..cols {
            let x0 = sep + c as u32 * (cell + sep);
            let y0 = sep + r as u32 * (cell + sep);
            let k = r * cols + c;
            for y in 0..cell {
                for x in 0..cell {
                    let v = if k < n {
                        let p =
                            images[k * per + (y / scale) as usize * SIDE + (x / scale) as usize];
                        (p.clamp(0.0, 1.0) * 255.0).round() as u8
                    } else {
                        0
                    };
                    img.put_pixel(x0 + x, y0 + y, Luma([v]));
                }
            }
        }
    }
    Ok(img)
}

/// Writes a grayscale image as PNG, atomically.
pub fn save_png(img: &GrayImage, path: &Path) -> Result<()> {
    write_atomic_with(path, |file| {
        image::codecs::png::PngEncoder::new(std::io::BufWriter::new(file)).write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::L8,
        )?;
        Ok(())
    })
}

/// Draws and saves a grid in one call.
pub fn save_grid(path: &Path, images: &[f32], rows: usize, cols: usize) -> Result<()> {
    save_png(
        &grid_image(images, rows, cols, GridOptions::default())?,
        path,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_each_image_in_its_cell_with_separators() {
        let mut images = vec![0.0f32; 3 * 784];
        images[784..2 * 784].fill(1.0); // second image white
        let opts = GridOptions {
            scale: 2,
            separator: 1,
            separator_level: 50,
        };
        let img = grid_image(&images, 2, 2, opts).unwrap();
        assert_eq!(img.width(), 2 * 56 + 3);
        assert_eq!(img.height(), 2 * 56 + 3);
        assert_eq!(img.get_pixel(0, 0)[0], 50); // separator
        assert_eq!(img.get_pixel(1, 1)[0], 0); // first image, black
        assert_eq!(img.get_pixel(1 + 56 + 1, 1)[0], 255); // second image, white
        assert_eq!(img.get_pixel(1 + 56 + 1, 1 + 56 + 1)[0], 0); // empty cell
        assert!(grid_image(&images, 1, 2, opts).is_err());
        assert!(grid_image(&images[..100], 1, 2, opts).is_err());
    }

    #[test]
    fn saved_png_decodes_to_the_same_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.png");
        let images: Vec<f32> = (0..4 * 784).map(|i| (i % 784) as f32 / 783.0).collect();
        save_grid(&path, &images, 2, 2).unwrap();
        let back = image::open(&path).unwrap().to_luma8();
        let direct = grid_image(&images, 2, 2, GridOptions::default()).unwrap();
        assert_eq!(back, direct);
        assert!(
            back.width() >= 400,
            "an 2x2 grid is upscaled to be readable"
        );
    }
}
