//! Pictures of a 2-D latent space: the decoded manifold with labelled axes,
//! and a scatter of encoded test digits coloured by class.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use image::ImageEncoder;
use plotters::prelude::*;

use super::grid::{GridOptions, grid_image};
use super::plot::register_font;
use crate::atomic::{write_atomic, write_atomic_with};

/// Ten colours that stay apart (matplotlib's tab10), one per class.
pub const CLASS_COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn write_png(path: &Path, rgb: &[u8], w: u32, h: u32) -> Result<()> {
    write_atomic_with(path, |file| {
        image::codecs::png::PngEncoder::new(std::io::BufWriter::new(file)).write_image(
            rgb,
            w,
            h,
            image::ExtendedColorType::Rgb8,
        )?;
        Ok(())
    })
}

/// Draws `n x n` decoded digits (row-major tiles, 784 values each; the top
/// row is the largest z[1], the left column the smallest z[0]) on axes over
/// `[-extent, extent]^2` labelled z[0] and z[1], and writes it as PNG.
pub fn manifold_plot(
    path: &Path,
    tiles: &[f32],
    shape: crate::data::ImageShape,
    n: usize,
    extent: f64,
    title: &str,
) -> Result<()> {
    register_font();
    // Small images are scaled up so the grid is at least about 600 pixels
    // wide; MNIST's 30 x 28 pixels already are.
    let side = n * shape.height.max(shape.width);
    let scale = 600usize.div_ceil(side.max(1)).clamp(1, 8) as u32;
    let grid = grid_image(
        tiles,
        shape,
        n,
        n,
        GridOptions {
            scale,
            separator: 0,
            separator_level: 0,
        },
    )?
    .to_rgb8();
    let (gw, gh) = (grid.width(), grid.height());
    let (left, bottom, top, right) = (70u32, 60u32, 44u32, 24u32);
    let (w, h) = (gw + left + right, gh + top + bottom);
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    let area = {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| anyhow!("manifold plot: {e}"))?;
        // The cells are drawn at their centres: tick z sits on the middle of its tile.
        let half = extent / (n.max(2) - 1) as f64 * 0.5;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin_right(right)
            .x_label_area_size(bottom)
            .y_label_area_size(left)
            .build_cartesian_2d(-extent - half..extent + half, -extent - half..extent + half)
            .map_err(|e| anyhow!("manifold plot: {e}"))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("z[0]")
            .y_desc("z[1]")
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .x_labels(9)
            .y_labels(9)
            .draw()
            .map_err(|e| anyhow!("manifold plot: {e}"))?;
        let (xr, yr) = chart.plotting_area().get_pixel_range();
        root.present().map_err(|e| anyhow!("manifold plot: {e}"))?;
        (xr, yr)
    };
    // Copy the digits into the plotting area, scaled to fit (nearest pixel).
    let (xr, yr) = area;
    let (pw, ph) = ((xr.end - xr.start) as u32, (yr.end - yr.start) as u32);
    if pw == 0 || ph == 0 {
        bail!("manifold plot: no room for the image");
    }
    for py in 0..ph {
        for px in 0..pw {
            let gx = (px as u64 * gw as u64 / pw as u64) as u32;
            let gy = (py as u64 * gh as u64 / ph as u64) as u32;
            let v = grid.get_pixel(gx, gy).0;
            let (x, y) = (xr.start as u32 + px, yr.start as u32 + py);
            let o = ((y * w + x) * 3) as usize;
            rgb[o..o + 3].copy_from_slice(&v);
        }
    }
    write_png(path, &rgb, w, h)
}

fn draw_scatter<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    points: &[(f32, f32)],
    labels: &[u8],
    title: &str,
    axes: (&str, &str),
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("latent scatter: {e}");
    let finite = points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in finite {
        x0 = x0.min(x as f64);
        x1 = x1.max(x as f64);
        y0 = y0.min(y as f64);
        y1 = y1.max(y as f64);
    }
    if x0 > x1 {
        bail!("latent scatter: no finite points");
    }
    let (px, py) = (((x1 - x0) * 0.05).max(1e-3), ((y1 - y0) * 0.05).max(1e-3));
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(x0 - px..x1 + px, y0 - py..y1 + py)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(axes.0)
        .y_desc(axes.1)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(err)?;
    for class in 0..10u8 {
        let color = CLASS_COLORS[class as usize];
        let pts: Vec<(f64, f64)> = points
            .iter()
            .zip(labels)
            .filter(|(p, l)| **l == class && p.0.is_finite() && p.1.is_finite())
            .map(|(p, _)| (p.0 as f64, p.1 as f64))
            .collect();
        chart
            .draw_series(
                pts.iter()
                    .map(|&p| Circle::new(p, 2, color.mix(0.6).filled())),
            )
            .map_err(err)?
            .label(class.to_string())
            .legend(move |(x, y)| Circle::new((x + 6, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Scatter of 2-D points coloured by class (0-9) with a legend; writes
/// `<stem>.png` and `<stem>.svg`.
pub fn latent_scatter(
    stem: &Path,
    points: &[(f32, f32)],
    labels: &[u8],
    title: &str,
    axes: (&str, &str),
) -> Result<()> {
    register_font();
    let (w, h) = (760u32, 680u32);
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw_scatter(root, points, labels, title, axes)?;
    }
    write_png(&stem.with_extension("png"), &rgb, w, h)?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        draw_scatter(root, points, labels, title, axes)?;
    }
    write_atomic(&stem.with_extension("svg"), svg.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifold_and_scatter_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let n = 5;
        let tiles: Vec<f32> = (0..n * n * 784).map(|i| (i % 784) as f32 / 784.0).collect();
        let path = dir.path().join("manifold.png");
        let mnist = crate::data::ImageShape::MNIST;
        manifold_plot(&path, &tiles, mnist, n, 3.0, "manifold").unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert!(img.width() > (n * 28) as u32 && img.height() > (n * 28) as u32);

        let points: Vec<(f32, f32)> = (0..100).map(|i| (i as f32, (i * i) as f32)).collect();
        let labels: Vec<u8> = (0..100).map(|i| (i % 10) as u8).collect();
        let stem = dir.path().join("scatter");
        latent_scatter(&stem, &points, &labels, "latent means", ("z[0]", "z[1]")).unwrap();
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        for text in ["latent means", "z[0]", "z[1]", "\n9\n</text>"] {
            assert!(svg.contains(text), "svg lacks {text}");
        }
        assert!(stem.with_extension("png").is_file());
    }
}
