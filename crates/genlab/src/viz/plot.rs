//! Line plots (loss curves and the like) as PNG and SVG with plotters.

use std::path::Path;
use std::sync::Once;

use anyhow::{Result, anyhow, bail};
use image::ImageEncoder;
use plotters::prelude::*;

use crate::atomic::{write_atomic, write_atomic_with};

/// One named line.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: u32 = 800;
const HEIGHT: u32 = 500;
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// plotters draws text with a font we ship (no system fonts needed).
pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        );
    });
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    errors: &[Vec<f64>],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let error = |i: usize, j: usize| {
        errors
            .get(i)
            .and_then(|e| e.get(j))
            .copied()
            .filter(|e| e.is_finite())
            .unwrap_or(0.0)
    };
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (i, s) in series.iter().enumerate() {
        for (j, &(x, y)) in s.points.iter().enumerate() {
            if x.is_finite() && y.is_finite() {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y - error(i, j));
                y1 = y1.max(y + error(i, j));
            }
        }
    }
    if x0 > x1 {
        bail!("plot '{title}': no finite points to draw");
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot '{title}': {e}");
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        if points.len() <= 60 {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(err)?;
        }
        if errors.get(i).is_some() {
            let bars = s
                .points
                .iter()
                .enumerate()
                .filter(|(_, (x, y))| x.is_finite() && y.is_finite())
                .map(|(j, &(x, y))| {
                    let e = error(i, j);
                    ErrorBar::new_vertical(x, y - e, y, y + e, color.stroke_width(2), 10)
                });
            chart.draw_series(bars).map_err(err)?;
        }
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

/// Draws `series` and writes `<stem>.png` and `<stem>.svg`, atomically.
pub fn line_plot(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    error_plot(stem, title, x_label, y_label, series, &[])
}

/// [`line_plot`] with a vertical error bar of half-height `errors[i][j]` at
/// point `j` of series `i` (no bars for series past `errors`).
pub fn error_plot(
    stem: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    errors: &[Vec<f64>],
) -> Result<()> {
    register_font();
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        draw(root, title, x_label, y_label, series, errors)?;
    }
    write_atomic_with(&stem.with_extension("png"), |file| {
        image::codecs::png::PngEncoder::new(std::io::BufWriter::new(file)).write_image(
            &rgb,
            WIDTH,
            HEIGHT,
            image::ExtendedColorType::Rgb8,
        )?;
        Ok(())
    })?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(root, title, x_label, y_label, series, errors)?;
    }
    write_atomic(&stem.with_extension("svg"), svg.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_png_and_svg_with_the_labels() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("loss");
        let s = vec![
            Series {
                name: "train".into(),
                points: (1..=10).map(|e| (e as f64, 50.0 / e as f64)).collect(),
            },
            Series {
                name: "validation".into(),
                points: (1..=10).map(|e| (e as f64, 55.0 / e as f64)).collect(),
            },
        ];
        line_plot(&stem, "Loss", "epoch", "loss", &s).unwrap();
        let png = image::open(stem.with_extension("png")).unwrap().to_rgb8();
        assert_eq!((png.width(), png.height()), (WIDTH, HEIGHT));
        // Something other than white was drawn (lines, text).
        assert!(png.pixels().filter(|p| p.0 != [255, 255, 255]).count() > 1000);
        let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
        for text in ["Loss", "epoch", "train", "validation"] {
            assert!(svg.contains(text), "svg lacks {text}");
        }
        assert!(line_plot(&stem, "empty", "x", "y", &[]).is_err());
    }
}
