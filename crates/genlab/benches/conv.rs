//! The conv VAE's patch passes on the CPU: for each of its layers, the time
//! of one im2col and one col2im over 16 images (a thread's half of a batch of
//! 32, as the training step runs them) against the time of the matrix
//! products that layer runs in a training step, all on one thread.
//!
//! Run: `cargo bench --bench conv`.

use std::time::Instant;

use genlab::bench_util::median;
use genlab::cpu::matmul;
use genlab::nn::conv::{Geometry, Padding};

/// Median seconds of `f` over 15 timings of `reps` calls each, per call.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..reps {
        f();
    }
    let mut samples: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    median(&mut samples)
}

fn main() {
    let images = 16;
    // (name, geometry, filters on the grid side): the seed's conv VAE.
    let s2 = [2, 2];
    let layers = [
        (
            "conv 1->32",
            Geometry::conv(1, [28, 28], [3, 3], s2, Padding::Same),
            32,
        ),
        (
            "conv 32->64",
            Geometry::conv(32, [14, 14], [3, 3], s2, Padding::Same),
            64,
        ),
        (
            "convT 64->64",
            Geometry::transposed(64, [7, 7], [3, 3], s2, Padding::Same),
            64,
        ),
        (
            "convT 64->32",
            Geometry::transposed(32, [14, 14], [3, 3], s2, Padding::Same),
            64,
        ),
        (
            "convT 32->1",
            Geometry::transposed(1, [28, 28], [3, 3], [1, 1], Padding::Same),
            32,
        ),
    ];
    let (mut patch_total, mut product_total) = (0.0, 0.0);
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool")
        .install(|| {
            for (name, g, grid_channels) in layers {
                let g = g.expect("the seed's geometry");
                let (rows, q) = (images * g.positions(), g.patch());
                let image: Vec<f32> = (0..images * g.image_len())
                    .map(|i| (i % 97) as f32 / 97.0)
                    .collect();
                let mut cols = vec![0.0f32; rows * q];
                let mut back = vec![0.0f32; images * g.image_len()];
                let reps = (2_000_000 / (rows * q)).max(3);
                let im2col = time(reps, || g.im2col_rows(&image, &mut cols, images));
                let col2im = time(reps, || g.col2im_rows(&cols, &mut back, images));
                // The step's three products on this layer: patches x weights,
                // the weight gradient, and the input side's gradient.
                let w = vec![0.01f32; q * grid_channels];
                let grid = vec![0.5f32; rows * grid_channels];
                let mut out = vec![0.0f32; rows * grid_channels];
                let mut gw = vec![0.0f32; q * grid_channels];
                let products = time(reps, || {
                    matmul(&mut out, &cols, &w, (rows, q, grid_channels), false, false, 0.0, 1.0);
                    matmul(&mut gw, &cols, &grid, (q, rows, grid_channels), true, false, 0.0, 1.0);
                    matmul(&mut cols, &grid, &w, (rows, grid_channels, q), false, true, 0.0, 1.0);
                });
                patch_total += im2col + col2im;
                product_total += products;
                println!(
                    "{name:13} {rows:6} x {q:4} patches: im2col {:7.1} us  col2im {:7.1} us  ({:5.2} ns a value)  three products {:8.1} us",
                    im2col * 1e6,
                    col2im * 1e6,
                    (im2col + col2im) * 1e9 / (2 * rows * q) as f64,
                    products * 1e6
                );
            }
        });
    println!(
        "patches {:.1} us, products {:.1} us a half-batch step ({:.0}% in patches)",
        patch_total * 1e6,
        product_total * 1e6,
        100.0 * patch_total / (patch_total + product_total)
    );
}
