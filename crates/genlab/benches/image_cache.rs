//! The decoded-image cache on real data: MNIST written out as a folder of
//! 70,000 PNGs (`train/` and `test/`, one folder per digit), then the time
//! of `folder:` loads that decode every PNG and write the cache (cold) and
//! of loads that only map it (warm). Also writes `mnist-x10.npy` and its
//! labels (the training images ten times over, 470 MB) for
//! `bench/own_data.sh`'s memory row.
//!
//! Run: `cargo bench --bench image_cache` (reads MNIST from
//! `$GENLAB_DATA/mnist`, default `../shared/data/mnist`; writes under
//! `$BENCH_DATA`, default `target/bench-data`). Threads: rayon's default
//! (`RAYON_NUM_THREADS`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use genlab::bench_util::median;
use genlab::data::{DataSources, Dataset, DatasetName, ImageOptions};
use rayon::prelude::*;

fn write_png_folder(dir: &Path, data: &Dataset) {
    for (split, images) in [("train", &data.train), ("test", &data.test)] {
        let labels = images.labels.as_deref().expect("MNIST is labelled");
        for c in 0..10 {
            std::fs::create_dir_all(dir.join(split).join(c.to_string())).unwrap();
        }
        (0..images.len()).into_par_iter().for_each(|i| {
            let img = image::GrayImage::from_raw(28, 28, images.image(i).to_vec()).unwrap();
            img.save(
                dir.join(split)
                    .join(labels[i].to_string())
                    .join(format!("{i:05}.png")),
            )
            .unwrap();
        });
    }
    std::fs::write(dir.join(".complete"), b"").unwrap();
}

fn npy(path: &Path, descr: &str, shape: &[usize], body: impl Fn(&mut dyn Write)) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(b"\x93NUMPY\x01\x00").unwrap();
    f.write_all(&(header.len() as u16).to_le_bytes()).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    body(&mut f);
    f.flush().unwrap();
}

fn main() {
    let data_root = genlab::data::locate::env_dir("GENLAB_DATA")
        .unwrap_or_else(|| PathBuf::from("../../../shared/data"));
    let sources = DataSources {
        genlab_data: Some(data_root),
        offline: true,
        ..Default::default()
    };
    let mnist = Dataset::load(&DatasetName::Mnist, &sources, false).expect("MNIST");
    let out = genlab::data::locate::env_dir("BENCH_DATA")
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data"));
    let folder = out.join("mnist-png");
    if !folder.join(".complete").exists() {
        let t = Instant::now();
        write_png_folder(&folder, &mnist);
        println!(
            "wrote 70,000 PNGs into {} in {:.1} s",
            folder.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let x10 = out.join("mnist-x10.npy");
    if !x10.exists() {
        let n = mnist.train.len() * 10;
        npy(&x10, "|u1", &[n, 28, 28], |w| {
            for _ in 0..10 {
                w.write_all(&mnist.train.pixels).unwrap();
            }
        });
        let labels = mnist.train.labels.as_deref().unwrap();
        npy(&out.join("mnist-x10-labels.npy"), "|u1", &[n], |w| {
            for _ in 0..10 {
                w.write_all(labels).unwrap();
            }
        });
    }

    let name = DatasetName::Folder(folder.clone());
    let load = |opts: &ImageOptions| {
        let t = Instant::now();
        let d = Dataset::load_with(&name, &DataSources::default(), opts, false).unwrap();
        assert_eq!((d.train.len(), d.test.len()), (60_000, 10_000));
        assert!(d.train.pixels.is_mapped());
        (t.elapsed().as_secs_f64(), d)
    };
    let opts = ImageOptions::default();
    let mut cold: Vec<f64> = (0..3)
        .map(|_| {
            let _ = std::fs::remove_dir_all(folder.join(".genlab-cache"));
            load(&opts).0
        })
        .collect();
    let mut warm: Vec<f64> = (0..5).map(|_| load(&opts).0).collect();
    let (_, d) = load(&opts);
    // The folder lists digit by digit, each in MNIST's order.
    let labels = mnist.train.labels.as_deref().unwrap();
    let mut order: Vec<usize> = (0..mnist.train.len()).collect();
    order.sort_by_key(|&i| labels[i]);
    assert_eq!(
        *d.train.pixels,
        *mnist.train.select(&order).pixels,
        "the PNGs decode to MNIST's bytes"
    );
    let threads = rayon::current_num_threads();
    let (c, w) = (median(&mut cold), median(&mut warm));
    println!("folder:{} ({threads} threads)", folder.display());
    println!(
        "  decode 70,000 PNGs and write the cache: {c:.2} s median of 3 ({:.1} us an image)",
        c / 70_000.0 * 1e6
    );
    println!(
        "  open the cache (mapped):                {:.1} ms median of 5",
        w * 1e3
    );
}
