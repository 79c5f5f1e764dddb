//! Training on the user's own images: small datasets of every source made
//! on the fly (PNG and JPEG folders, grey and colour, with and without
//! classes and train/test subfolders; .npy and .npz arrays; CIFAR-10's
//! binary format), each family trained one short epoch on each, and every
//! bad input refused in one line with exit 2 before anything is written.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::genlab;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A pixel of image `k`: a pattern that depends on the class, so labels mean something.
fn pixel(k: usize, class: usize, y: usize, x: usize, c: usize) -> u8 {
    ((k * 7 + y * 13 + x * 5 + c * 40 + class * 90) % 256) as u8
}

/// Writes `n` images per class of `w x h` into `dir/<class>/` (or `dir/`
/// when `classes` is empty), alternating PNG and JPEG.
fn image_folder(dir: &Path, classes: &[&str], n: usize, (w, h): (u32, u32), colour: bool) {
    let groups: Vec<Option<&str>> = if classes.is_empty() {
        vec![None]
    } else {
        classes.iter().map(|c| Some(*c)).collect()
    };
    for (ci, class) in groups.iter().enumerate() {
        let d = class.map_or(dir.to_path_buf(), |c| dir.join(c));
        std::fs::create_dir_all(&d).unwrap();
        for k in 0..n {
            let ext = if k % 2 == 0 { "png" } else { "jpg" };
            let path = d.join(format!("{k:03}.{ext}"));
            if colour {
                image::RgbImage::from_fn(w, h, |x, y| {
                    image::Rgb([0, 1, 2].map(|c| pixel(k, ci, y as usize, x as usize, c)))
                })
                .save(&path)
                .unwrap();
            } else {
                image::GrayImage::from_fn(w, h, |x, y| {
                    image::Luma([pixel(k, ci, y as usize, x as usize, 0)])
                })
                .save(&path)
                .unwrap();
            }
        }
    }
}

/// NumPy's .npy bytes of a C-order array.
fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn u8_images(n: usize, h: usize, w: usize, c: usize) -> Vec<u8> {
    (0..n * h * w * c).map(|i| (i * 31 % 251) as u8).collect()
}

fn f32_images(n: usize, h: usize, w: usize, c: usize) -> Vec<u8> {
    (0..n * h * w * c)
        .flat_map(|i| ((i * 31 % 251) as f32 / 250.0).to_le_bytes())
        .collect()
}

fn i64_labels(n: usize, classes: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| ((i % classes) as i64).to_le_bytes())
        .collect()
}

fn npz(path: &Path, arrays: &[(&str, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in arrays {
        zip.start_file(
            format!("{name}.npy"),
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated),
        )
        .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

/// CIFAR-10's binary batches, `n` records each.
fn cifar_dir(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let names = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    for (b, name) in names.iter().enumerate() {
        let mut bytes = Vec::new();
        for k in 0..n {
            let class = (k + b) % 10;
            bytes.push(class as u8);
            for c in 0..3 {
                for y in 0..32 {
                    for x in 0..32 {
                        bytes.push(pixel(k, class, y, x, c));
                    }
                }
            }
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// `genlab train PRESET --dataset DATASET --epochs 1 --out OUT`.
fn one_epoch<'a>(preset: &'a str, dataset: &'a str, out: &'a Path) -> Vec<&'a str> {
    vec![
        "train",
        preset,
        "--dataset",
        dataset,
        "--epochs",
        "1",
        "--out",
        s(out),
    ]
}

/// One short epoch of `preset` on `dataset` with `extra` settings; returns the run.
fn train(dir: &Path, preset: &str, dataset: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("{preset}-{}", dir.read_dir().unwrap().count()));
    let mut args = one_epoch(preset, dataset, &out);
    args.extend_from_slice(&["--set", "model.batch_size=16"]);
    args.extend_from_slice(extra);
    let result = genlab(&args).output().unwrap();
    assert!(
        result.status.success(),
        "{preset} on {dataset}: {}",
        stderr(&result)
    );
    out
}

/// The (width, height) and colour type of a run's sample grid.
fn samples_png(run: &Path) -> image::DynamicImage {
    image::open(run.join("images/samples.png")).unwrap()
}

#[test]
fn every_family_trains_on_every_source() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runs = dir.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    // Colour, two classes, 16x16; grey, unlabelled, train/ and test/, 8x8.
    image_folder(&data.join("colour"), &["cats", "dogs"], 24, (16, 16), true);
    image_folder(&data.join("grey/train"), &[], 40, (8, 8), false);
    image_folder(&data.join("grey/test"), &[], 8, (8, 8), false);
    std::fs::write(
        data.join("x.npy"),
        npy_bytes("|u1", &[64, 12, 12], &u8_images(64, 12, 12, 1)),
    )
    .unwrap();
    std::fs::write(
        data.join("y.npy"),
        npy_bytes("<i8", &[64], &i64_labels(64, 4)),
    )
    .unwrap();
    npz(
        &data.join("d.npz"),
        &[
            (
                "x_train",
                npy_bytes("<f4", &[48, 8, 8, 3], &f32_images(48, 8, 8, 3)),
            ),
            (
                "x_test",
                npy_bytes("<f4", &[16, 8, 8, 3], &f32_images(16, 8, 8, 3)),
            ),
        ],
    );
    cifar_dir(&data.join("cifar"), 20);

    let sources: Vec<(String, [u32; 3])> = vec![
        (format!("folder:{}", s(&data.join("colour"))), [16, 16, 3]),
        (format!("folder:{}", s(&data.join("grey"))), [8, 8, 1]),
        (
            format!("npy:{},{}", s(&data.join("x.npy")), s(&data.join("y.npy"))),
            [12, 12, 1],
        ),
        (format!("npz:{}", s(&data.join("d.npz"))), [8, 8, 3]),
        (format!("cifar10:{}", s(&data.join("cifar"))), [32, 32, 3]),
    ];
    for (source, [h, w, c]) in &sources {
        // The conv VAE's two stride-2 convolutions need sides divisible by 4.
        let conv_ok = h % 4 == 0 && w % 4 == 0;
        for preset in ["rbm-20", "vae-2", "conv-vae", "gan"] {
            if preset == "conv-vae" && !conv_ok {
                continue;
            }
            let run = train(&runs, preset, source, &[]);
            let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
            assert!(config.contains(source.as_str()), "{config}");
            // The sample grid is drawn in the data's colours and size.
            let grid = samples_png(&run);
            assert_eq!(
                grid.color().has_color(),
                *c == 3,
                "{preset} on {source}: grid colour"
            );
            // At least one tile per side of the image's own size (no 28x28 assumption).
            assert!(grid.width() >= *w && grid.height() >= *h);
        }
    }

    // A trained run on its own data samples, inpaints and evaluates; with no
    // evaluator for the data, eval gives the likelihoods and says how to get
    // the sample metrics.
    let run = train(&runs, "vae-2", &sources[0].0, &[]);
    let out = genlab(&["sample", s(&run), "-n", "4"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = genlab(&["inpaint", s(&run), "--n", "4", "--steps", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = genlab(&["eval", s(&run), "--samples", "20", "--k", "10"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("genlab evaluator train --dataset folder:"),
        "{text}"
    );
}

#[test]
fn folder_sizes_are_unified_by_the_resize_option_and_classes_come_from_sorted_folders() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mixed");
    image_folder(&data.join("b"), &[], 6, (10, 12), false);
    image_folder(&data.join("a"), &[], 6, (14, 9), true);
    let source = format!("folder:{}", s(&data));
    let info = |extra: &[&str]| {
        let mut args = vec!["data", "info", "--dataset", source.as_str()];
        args.extend_from_slice(extra);
        genlab(&args).output().unwrap()
    };
    let refused = info(&[]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("data.resize"),
        "{}",
        stderr(&refused)
    );
    let out = info(&["--set", "data.resize=[8, 6]", "--set", "data.grey=true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("images   8 x 6 pixels, 1 channel (grey)"),
        "{text}"
    );
    assert!(text.contains("classes  2: a, b"), "{text}");
    let out = info(&["--set", "data.resize=[8, 6]"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 channels (RGB)"), "{text}");
}

/// A refusal: exit 2, one line naming `needle`, and no run directory made.
fn assert_refused(dir: &Path, dataset: &str, preset: &str, extra: &[&str], needle: &str) {
    let out = dir.join("never");
    let mut args = one_epoch(preset, dataset, &out);
    args.extend_from_slice(extra);
    let result = genlab(&args).output().unwrap();
    let err = stderr(&result);
    assert_eq!(result.status.code(), Some(2), "{dataset}: {err}");
    assert_eq!(err.lines().count(), 1, "{dataset}: {err}");
    assert!(
        err.contains(needle),
        "{dataset}: expected '{needle}' in {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "{dataset}: {} was written", out.display());
}

#[test]
fn bad_images_and_arrays_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Mixed sizes.
    image_folder(&d.join("mixed"), &[], 3, (8, 8), false);
    image_folder(&d.join("mixed2"), &[], 1, (9, 8), false);
    std::fs::rename(d.join("mixed2/000.png"), d.join("mixed/zzz.png")).unwrap();
    assert_refused(
        d,
        &format!("folder:{}", s(&d.join("mixed"))),
        "vae-2",
        &[],
        "zzz.png: 9x8",
    );
    // A truncated PNG.
    image_folder(&d.join("broken"), &[], 4, (8, 8), false);
    let png = std::fs::read(d.join("broken/000.png")).unwrap();
    std::fs::write(d.join("broken/000.png"), &png[..png.len() / 2]).unwrap();
    assert_refused(
        d,
        &format!("folder:{}", s(&d.join("broken"))),
        "vae-2",
        &[],
        "000.png: cannot decode",
    );
    // An empty folder.
    std::fs::create_dir_all(d.join("empty")).unwrap();
    assert_refused(
        d,
        &format!("folder:{}", s(&d.join("empty"))),
        "gan",
        &[],
        "no PNG or JPEG images",
    );
    // Arrays of the wrong rank and dtype, labels of the wrong length.
    std::fs::write(
        d.join("rank5.npy"),
        npy_bytes("|u1", &[2, 2, 2, 2, 2], &[0; 32]),
    )
    .unwrap();
    assert_refused(
        d,
        &format!("npy:{}", s(&d.join("rank5.npy"))),
        "rbm-20",
        &[],
        "has rank 5",
    );
    std::fs::write(d.join("c16.npy"), npy_bytes("<c16", &[2, 2, 2], &[0; 128])).unwrap();
    assert_refused(
        d,
        &format!("npy:{}", s(&d.join("c16.npy"))),
        "rbm-20",
        &[],
        "dtype",
    );
    std::fs::write(d.join("x.npy"), npy_bytes("|u1", &[10, 4, 4], &[9; 160])).unwrap();
    std::fs::write(d.join("y.npy"), npy_bytes("<i8", &[7], &i64_labels(7, 2))).unwrap();
    assert_refused(
        d,
        &format!("npy:{},{}", s(&d.join("x.npy")), s(&d.join("y.npy"))),
        "rbm-20",
        &[],
        "7 labels for 10 images",
    );
    // A truncated CIFAR batch.
    cifar_dir(&d.join("cifar"), 3);
    let b = std::fs::read(d.join("cifar/test_batch.bin")).unwrap();
    std::fs::write(d.join("cifar/test_batch.bin"), &b[..b.len() - 5]).unwrap();
    assert_refused(
        d,
        &format!("cifar10:{}", s(&d.join("cifar"))),
        "gan",
        &[],
        "test_batch.bin",
    );
    // A size the conv VAE's convolutions cannot take.
    image_folder(&d.join("odd"), &[], 40, (10, 10), false);
    assert_refused(
        d,
        &format!("folder:{}", s(&d.join("odd"))),
        "conv-vae",
        &[],
        "divisible by 2^2",
    );
    // A nonsensical option.
    assert_refused(
        d,
        &format!("folder:{}", s(&d.join("odd"))),
        "vae-2",
        &["--set", "data.resize=[0, 8]"],
        "data.resize",
    );
}

/// `genlab eval RUN --evaluator FILE --json`'s sample-quality model row.
fn sample_quality(run: &Path, evaluator: &Path) -> serde_json::Value {
    let out = genlab(&[
        "eval",
        s(run),
        "--evaluator",
        s(evaluator),
        "--samples",
        "40",
        "--k",
        "4",
        "--json",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    e["sample_quality"]["model"].clone()
}

#[test]
fn evaluators_train_on_any_class_count_and_unlabelled_data_gets_the_metrics_without_classes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runs = dir.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let names: Vec<String> = (0..12).map(|c| format!("class{c:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    image_folder(&data.join("twelve"), &names, 12, (8, 8), false);
    image_folder(&data.join("plain"), &[], 60, (8, 8), false);
    let twelve = format!("folder:{}", s(&data.join("twelve")));
    let plain = format!("folder:{}", s(&data.join("plain")));

    let evaluator = dir.path().join("twelve.safetensors");
    let out = genlab(&[
        "evaluator",
        "train",
        "--dataset",
        &twelve,
        "--out",
        s(&evaluator),
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("of 12 classes"), "{text}");
    assert!(text.contains("SHA-256"), "{text}");

    // Labelled data: every metric, the class-based ones over twelve classes.
    let run = train(&runs, "vae-2", &twelve, &[]);
    let m = sample_quality(&run, &evaluator);
    assert_eq!(m["classes"], 12);
    assert_eq!(m["class_histogram"].as_array().unwrap().len(), 12);
    assert!(m["classes_covered"].as_u64().unwrap() <= 12);
    for key in ["fid", "kid", "inception_score", "precision", "recall"] {
        assert!(m[key].as_f64().unwrap().is_finite(), "{key}: {m}");
    }
    let is = m["inception_score"].as_f64().unwrap();
    assert!(
        (1.0..=12.0 + 1e-9).contains(&is),
        "IS {is} outside [1, classes]"
    );

    // Unlabelled data: FID, KID, precision and recall on the evaluator's
    // features; the Inception Score and class coverage are not applicable.
    let run = train(&runs, "vae-2", &plain, &[]);
    let m = sample_quality(&run, &evaluator);
    for key in ["fid", "kid", "precision", "recall"] {
        assert!(m[key].as_f64().unwrap().is_finite(), "{key}: {m}");
    }
    for key in [
        "inception_score",
        "class_histogram",
        "classes_covered",
        "classes",
    ] {
        assert!(m[key].is_null(), "{key}: {m}");
    }
    let out = genlab(&[
        "eval",
        s(&run),
        "--evaluator",
        s(&evaluator),
        "--samples",
        "40",
        "--k",
        "4",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("IS and class coverage n/a (unlabelled data)"),
        "{text}"
    );

    // An unlabelled source cannot train an evaluator.
    let out = genlab(&["evaluator", "train", "--dataset", &plain])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no labels"), "{}", stderr(&out));
}

/// A dataset named by a relative path is recorded absolute in the run's
/// configuration, so the run resumes from any directory.
#[test]
fn a_relative_dataset_path_is_recorded_absolute_and_resumes_from_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("data")).unwrap();
    std::fs::write(
        tmp.path().join("data/x.npy"),
        npy_bytes("|u1", &[40, 6, 6], &u8_images(40, 6, 6, 1)),
    )
    .unwrap();
    let run = tmp.path().join("run");
    let mut args = one_epoch("vae", "npy:data/x.npy", &run);
    args.extend_from_slice(&["--set", "model.batch_size=16"]);
    let out = genlab(&args).current_dir(tmp.path()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let want = format!(
        "dataset = \"npy:{}\"",
        std::path::absolute(tmp.path().join("data/x.npy"))
            .unwrap()
            .display()
    );
    assert!(cfg.contains(&want), "{want} in {cfg}");
    // From the test's own directory, where data/x.npy does not exist.
    let out = genlab(&["train", "--resume", s(&run), "--epochs", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(run.join("weights.safetensors").is_file());
}
