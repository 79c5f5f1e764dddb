//! The first dense layer of the MLP VAEs on MNIST rows, one thread: its
//! forward product `x @ W` (64 x 784 x 256, a thread's half of a batch of
//! 128) and its weight gradient `x' dy`, each by `gemm` and by the sparse
//! product over the input's nonzeros (indexing and transposing included),
//! with the rows' fraction of nonzeros.
//!
//! Run: `cargo bench --bench sparse` (reads MNIST's training images from
//! `$GENLAB_DATA/mnist`, default `../shared/data/mnist`).

use std::path::PathBuf;
use std::time::Instant;

use genlab::bench_util::median;
use genlab::cpu::{SparseRows, matmul, sparse_product};

/// Median seconds per call of `f` over 15 timings of `reps` calls, each call
/// on the next batch.
fn time(reps: usize, mut f: impl FnMut(usize)) -> f64 {
    for b in 0..reps {
        f(b);
    }
    let mut samples: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for b in 0..reps {
                f(b);
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    median(&mut samples)
}

fn main() {
    let dir = genlab::data::locate::env_dir("GENLAB_DATA")
        .unwrap_or_else(|| PathBuf::from("../../../shared/data"))
        .join("mnist");
    let file = genlab::data::idx::find_file(&dir, "train-images-idx3-ubyte")
        .unwrap_or_else(|| panic!("no MNIST training images in {}", dir.display()));
    let images = genlab::data::idx::read_images(&file).expect("MNIST images");
    let (rows, k, n, batches) = (64, 784, 256, 50);
    let x: Vec<f32> = images.pixels[..batches * rows * k]
        .iter()
        .map(|&p| p as f32 / 255.0)
        .collect();
    let batch = |b: usize| &x[(b % batches) * rows * k..][..rows * k];
    let w: Vec<f32> = (0..k * n)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-4 - 0.05)
        .collect();
    let dy: Vec<f32> = (0..rows * n)
        .map(|i| ((i * 31) % 1000) as f32 * 1e-5 - 0.005)
        .collect();
    let (mut out, mut gw) = (vec![0.0f32; rows * n], vec![0.0f32; k * n]);
    let (mut index, mut transposed) = (SparseRows::default(), SparseRows::default());
    let density = (0..batches).map(|b| index.index(batch(b), k)).sum::<f32>() / batches as f32;
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool")
        .install(|| {
            let reps = 200;
            let dense_fwd = time(reps, |b| {
                matmul(&mut out, batch(b), &w, (rows, k, n), false, false, 0.0, 1.0)
            });
            let dense_gw = time(reps, |b| {
                matmul(&mut gw, batch(b), &dy, (k, rows, n), true, false, 0.0, 1.0)
            });
            let sparse_fwd = time(reps, |b| {
                index.index(batch(b), k);
                sparse_product(&mut out, &index, &w, n);
            });
            let sparse_gw = time(reps, |b| {
                index.index(batch(b), k);
                index.transpose_into(&mut transposed);
                sparse_product(&mut gw, &transposed, &dy, n);
            });
            let index_only = time(reps, |b| {
                index.index(batch(b), k);
            });
            let transpose_only = time(reps, |_| index.transpose_into(&mut transposed));
            println!(
                "indexing {:.1} us, transposing {:.1} us (included below)",
                index_only * 1e6,
                transpose_only * 1e6
            );
            println!("MNIST rows: {:.1}% nonzero", density * 100.0);
            for (what, dense, sparse) in [
                ("x @ W", dense_fwd, sparse_fwd),
                ("x' dy (with the index)", dense_gw, sparse_gw),
            ] {
                println!(
                    "{what:24} gemm {:7.1} us  sparse {:7.1} us  ({:.2}x)",
                    dense * 1e6,
                    sparse * 1e6,
                    sparse / dense
                );
            }
        });
}
