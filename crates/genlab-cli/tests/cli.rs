//! The `genlab` binary as a user runs it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::genlab;

fn run(cmd: &mut Command) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A failure: non-zero exit, one line on stderr, no panic.
fn assert_clean_error(ok: bool, stderr: &str) {
    assert!(!ok, "expected failure");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(stderr.starts_with("genlab: error: "), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"));
}

#[test]
fn data_info_on_mnist() {
    let (ok, out, err) = run(&mut genlab(&["data", "info"]));
    assert!(ok, "{err}");
    assert!(out.contains("found in"), "{out}");
    assert!(out.contains("60000 images; per class: 5923 6742 5958 6131 5842 5421 5918 6265 5851 5949; mean pixel 33.318"), "{out}");
    assert!(out.contains("10000 images; per class: 980 1135"), "{out}");
}

#[test]
fn data_info_without_data_or_network_fails_cleanly() {
    let home = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(genlab(&["data", "info", "--data-dir", "/nonexistent/d"])
        .env("GENLAB_DATA", "")
        .env_remove("GENLAB_OFFLINE")
        .env("XDG_CACHE_HOME", home.path())
        .env("GENLAB_MIRRORS", "http://127.0.0.1:9/"));
    assert_clean_error(ok, &err);
    assert!(
        err.contains("/nonexistent/d/mnist") && err.contains("/usr/share/datasets/mnist"),
        "{err}"
    );
    assert!(
        err.contains("GENLAB_DATA") && err.contains("--data-dir"),
        "{err}"
    );
}

#[test]
fn bad_options_get_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let out = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["train", "rmb"], "did you mean rbm?"),
        (
            vec!["train", "rbm", "--preset", "rbm-50"],
            "did you mean rbm-500?",
        ),
        (
            vec!["train", "rbm", "--set", "model.hiden=3", "--out", out],
            "hiden",
        ),
        (
            vec!["train", "rbm", "--set", "model.k=0", "--out", out],
            "model.k = 0",
        ),
        (
            vec!["train", "rbm", "--device", "wgpu", "--out", out],
            "--features wgpu",
        ),
        (
            vec!["train", "rbm", "--config", "/nonexistent.toml"],
            "/nonexistent.toml",
        ),
    ];
    for (args, expect) in cases {
        let (ok, _, err) = run(&mut genlab(&args));
        assert_clean_error(ok, &err);
        assert!(err.contains(expect), "{args:?}: '{expect}' not in {err}");
    }
    assert!(
        !Path::new(out).exists(),
        "nothing is written when the options are bad"
    );
    // clap's own usage errors exit with 2.
    let s = genlab(&["train"]).output().unwrap().status;
    assert_eq!(s.code(), Some(2));
}

#[test]
fn presets_lists_the_seed_presets() {
    let (ok, out, _) = run(&mut genlab(&["presets"]));
    assert!(ok);
    for p in ["rbm-20", "rbm-100", "rbm-500"] {
        assert!(out.lines().any(|l| l.starts_with(p)), "{p} missing: {out}");
    }
}

#[test]
fn small_rbm_run_writes_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run");
    let (ok, out, err) = run(&mut genlab(&[
        "train",
        "rbm",
        "--preset",
        "rbm-20",
        "--epochs",
        "2",
        "--train-limit",
        "640",
        "--test-limit",
        "200",
        "--seed",
        "3",
        "--set",
        "model.k=1",
        "--set",
        "model.pl_images=20",
        "--out",
        root.to_str().unwrap(),
    ]));
    assert!(ok, "{err}");
    // Not a terminal: one plain line per epoch.
    assert_eq!(
        out.lines().filter(|l| l.starts_with("epoch ")).count(),
        2,
        "{out}"
    );
    for f in [
        "config.toml",
        "metrics.jsonl",
        "weights.safetensors",
        "checkpoints/latest.safetensors",
        "checkpoints/best.safetensors",
        "images/samples.png",
        "images/samples_epoch_002.png",
        "images/filters.png",
        "images/free_energy.png",
        "images/free_energy.svg",
    ] {
        assert!(root.join(f).is_file(), "{f} missing");
    }
    let config = std::fs::read_to_string(root.join("config.toml")).unwrap();
    assert!(
        config.contains("seed = 3")
            && config.contains("hidden = 20")
            && config.contains("train_limit = 640"),
        "{config}"
    );
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(root.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for key in [
        "epoch",
        "seconds",
        "samples_per_second",
        "recon_error_test",
        "pseudo_likelihood_test",
        "free_energy_train",
        "free_energy_test",
    ] {
        assert!(rows[1][key].is_number(), "{key} missing in {}", rows[1]);
    }
    let bytes = std::fs::read(root.join("weights.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(names, vec!["W", "hb", "vb"]);
    assert_eq!(st.tensor("W").unwrap().shape(), &[784, 20]);
    // Sampling, inpainting and evaluation read the run.
    let r = root.to_str().unwrap();
    let (ok, out, err) = run(&mut genlab(&[
        "sample", r, "-n", "9", "--steps", "20", "--from", "data",
    ]));
    assert!(ok, "{err}");
    assert!(
        root.join("images/sample_data_20steps_seed0.png").is_file(),
        "{out}"
    );
    let (ok, out, err) = run(&mut genlab(&[
        "inpaint", r, "--n", "8", "--remove", "0.3,0.6", "--steps", "20",
    ]));
    assert!(ok, "{err}");
    assert!(out.contains("30%") && out.contains("60%"), "{out}");
    assert!(root.join("images/inpaint_30.png").is_file() && root.join("inpaint.json").is_file());
    let (ok, out, err) = run(&mut genlab(&[
        "eval",
        r,
        "--ais-runs",
        "8",
        "--ais-steps",
        "300",
        "-n",
        "200",
        "--sample-steps",
        "50",
        "--raise-images",
        "10",
        "--raise-chains",
        "3",
        "--raise-steps",
        "300",
        "--json",
    ]));
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ll = &report["likelihood"];
    assert_eq!(ll["log_z_source"], "exact", "H = 20 is summed exactly");
    assert!(ll["test_log_likelihood"].as_f64().unwrap() < 0.0);
    // RAISE on the first 10 test images, beside AIS and the exact figure there.
    assert_eq!(
        (ll["raise_images"].as_u64(), ll["raise_chains"].as_u64()),
        (Some(10), Some(3))
    );
    let raise = ll["raise_test_log_likelihood"].as_f64().unwrap();
    let ais = ll["raise_ais_same_images"].as_f64().unwrap();
    assert!(raise < 0.0 && (ll["raise_ais_gap"].as_f64().unwrap() - (ais - raise)).abs() < 1e-9);
    assert!(ll["raise_exact_same_images"].as_f64().unwrap() < 0.0);
    let q = &report["sample_quality"]["model"];
    assert_eq!(q["images"], 200);
    assert!(
        q["how"]
            .as_str()
            .unwrap()
            .contains("50 Gibbs steps from random noise")
    );
    assert!(q["fid"].as_f64().unwrap().is_finite());
    assert!(root.join("eval.json").is_file());
    for (args, expect) in [
        (vec!["inpaint", r, "--remove", "1.5"], "--remove 1.5"),
        (vec!["sample", r, "--steps", "0"], "--steps 0"),
        (vec!["eval", r, "--ais-runs", "1"], "--ais-runs 1"),
        (vec!["eval", r, "--raise-chains", "1"], "--raise-chains 1"),
        (
            vec!["eval", r, "--decoder-ais-chains", "1"],
            "--decoder-ais-chains 1",
        ),
        (
            vec!["eval", r, "--decoder-ais-steps", "5"],
            "--decoder-ais-steps 5",
        ),
        (vec!["eval", r, "--hmc-leapfrog", "0"], "--hmc-leapfrog 0"),
        (vec!["eval", r, "--sigma", "0"], "--sigma 0"),
        (vec!["eval", r, "--sigma-images", "0"], "--sigma-images 0"),
        (vec!["eval", "/nonexistent/run"], "no such run directory"),
    ] {
        let (ok, _, err) = run(&mut genlab(&args));
        assert_clean_error(ok, &err);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    // A second run into the same directory is refused.
    let (ok, _, err) = run(&mut genlab(&[
        "train",
        "rbm",
        "--out",
        root.to_str().unwrap(),
    ]));
    assert_clean_error(ok, &err);
    assert!(err.contains("already a genlab run"), "{err}");
}

#[test]
fn same_seed_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let train = |name: &str| {
        let root = dir.path().join(name);
        let (ok, _, err) = run(&mut genlab(&[
            "train",
            "rbm",
            "--preset",
            "rbm-20",
            "--epochs",
            "1",
            "--train-limit",
            "320",
            "--test-limit",
            "50",
            "--seed",
            "11",
            "--set",
            "model.k=2",
            "--set",
            "model.pl_images=10",
            "--out",
            root.to_str().unwrap(),
        ]));
        assert!(ok, "{err}");
        std::fs::read(root.join("weights.safetensors")).unwrap()
    };
    assert_eq!(train("a"), train("b"));
}

#[test]
fn the_rbm_trains_alike_on_burn_tensors_and_on_the_cpu_kernels() {
    // burn's tensor path is how the RBM runs on the GPU backends;
    // GENLAB_CPU_KERNELS=0 takes it on the CPU.
    let dir = tempfile::tempdir().unwrap();
    let train = |name: &str, kernels: &str, variant: &str| {
        let root = dir.path().join(name);
        let (ok, _, err) = run(genlab(&[
            "train",
            "rbm",
            "--preset",
            "rbm-20",
            "--epochs",
            "1",
            "--train-limit",
            "640",
            "--test-limit",
            "50",
            "--set",
            "model.k=3",
            "--set",
            "model.momentum=0.5",
            "--set",
            "model.pl_images=10",
            "--set",
            variant,
            "--out",
            root.to_str().unwrap(),
        ])
        .env("GENLAB_CPU_KERNELS", kernels));
        assert!(ok, "{err}");
        let bytes = std::fs::read(root.join("weights.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut all = Vec::new();
        for name in ["W", "hb", "vb"] {
            let t = st.tensor(name).unwrap();
            all.extend(
                t.data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        all
    };
    let mut runs = Vec::new();
    let variants = [
        "model.negative_hidden=sample",
        "model.negative_hidden=probability",
        "model.centring=true",
    ];
    for (k, variant) in variants.into_iter().enumerate() {
        let kernels = train(&format!("kernels-{k}"), "1", variant);
        let tensors = train(&format!("tensors-{k}"), "0", variant);
        let initial = 0.1f32; // the biases start at 0.1: training moved them
        assert!(kernels.iter().any(|&v| (v - initial).abs() > 1e-3));
        let worst = kernels
            .iter()
            .zip(&tensors)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-3, "{variant}: largest difference {worst}");
        runs.push(kernels);
    }
    assert_ne!(
        runs[0], runs[1],
        "the negative statistics' hidden layer matters"
    );
    assert_ne!(runs[0], runs[2], "centring matters");
}

#[test]
fn a_validation_split_is_held_out_of_training_and_evaluated_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let train = |name: &str, train_limit: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let (ok, _, err) = run(&mut common::tiny_rbm_train(&out, "1", train_limit, extra));
        assert!(ok, "{err}");
        out
    };
    let held = train("held", "700", &["--set", "data.validation=60"]);
    // Training saw the first 640 images: the same weights as a run limited to 640.
    let limited = train("limited", "640", &[]);
    let weights = |run: &Path| std::fs::read(run.join("weights.safetensors")).unwrap();
    assert_eq!(weights(&held), weights(&limited));
    let eval = |run: &Path, on: &str| {
        run_json(&[
            "eval",
            run.to_str().unwrap(),
            "--on",
            on,
            "--samples",
            "0",
            "--ais-runs",
            "4",
            "--ais-steps",
            "100",
            "--raise-images",
            "5",
            "--raise-chains",
            "2",
            "--raise-steps",
            "100",
            "--json",
            "--out",
            "-",
        ])
    };
    let v = eval(&held, "validation");
    assert_eq!(v["likelihood"]["split"], "validation");
    assert_eq!(v["likelihood"]["test_images"], 60);
    let t = eval(&held, "test");
    assert_eq!(
        (
            t["likelihood"]["split"].as_str(),
            t["likelihood"]["test_images"].as_u64()
        ),
        (Some("test"), Some(100))
    );
    // A run that held out nothing says so.
    let (ok, _, err) = run(&mut genlab(&[
        "eval",
        limited.to_str().unwrap(),
        "--on",
        "validation",
        "--samples",
        "0",
    ]));
    assert_clean_error(ok, &err);
    assert!(err.contains("data.validation"), "{err}");
    // Holding out the whole training set is refused before any work.
    let out = dir.path().join("all");
    let (ok, _, err) = run(&mut genlab(&[
        "train",
        "rbm-20",
        "--train-limit",
        "50",
        "--set",
        "data.validation=50",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_clean_error(ok, &err);
    assert!(
        err.contains("data.validation = 50 leaves no training images"),
        "{err}"
    );
}

/// Runs genlab, which must succeed, and parses the JSON it prints.
fn run_json(args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = run(&mut genlab(args));
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}
