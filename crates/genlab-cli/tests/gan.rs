//! GAN runs of the `genlab` binary: the seed's progress line, the pictures,
//! sampling, and exact resumption.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::genlab;

fn ok(args: &[&str]) -> String {
    let out = genlab(args).output().unwrap();
    assert!(
        out.status.success(),
        "genlab {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for k in ["seconds", "samples_per_second", "eval_seconds"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        })
        .collect()
}

fn weights(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("weights.safetensors")).unwrap()
}

fn small(run: &Path, epochs: &str) -> Vec<String> {
    [
        "train",
        "gan",
        "--out",
        run.to_str().unwrap(),
        "--seed",
        "4",
        "--train-limit",
        "6400",
        "--test-limit",
        "100",
        "--epochs",
        epochs,
        "--set",
        "model.print_every=40",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn small_gan_run_prints_the_seed_line_and_draws_its_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("gan");
    let out = ok(&args(&small(&run, "2")));
    assert!(out.contains("(114800 parameters)"), "{out}");
    assert!(out.contains("Epoch [    2/    2] | d_loss: "), "{out}");
    assert_eq!(out.matches("| g_loss: ").count(), 4, "{out}");
    let m = metrics(&run);
    assert_eq!(m.len(), 2);
    for key in [
        "d_loss",
        "g_loss",
        "d_loss_last",
        "g_loss_last",
        "d_x",
        "d_g_z",
    ] {
        assert!(m[1][key].as_f64().unwrap().is_finite(), "{key}");
    }
    let (dx, dgz) = (
        m[1]["d_x"].as_f64().unwrap(),
        m[1]["d_g_z"].as_f64().unwrap(),
    );
    assert!((0.0..1.0).contains(&dx) && (0.0..1.0).contains(&dgz));
    for f in [
        "fixed_epoch_001.png",
        "fixed_epoch_002.png",
        "fixed.png",
        "evolution.png",
        "samples.png",
        "loss.png",
        "loss.svg",
        "discriminator_outputs.svg",
    ] {
        assert!(run.join("images").join(f).is_file(), "missing {f}");
    }
    // One evolution row per epoch so far.
    let evo = image::open(run.join("images/evolution.png")).unwrap();
    let fixed = image::open(run.join("images/fixed.png")).unwrap();
    assert!(evo.width() > 2 * evo.height() && fixed.width() == fixed.height());

    let r = run.to_str().unwrap();
    ok(&[
        "sample",
        r,
        "-n",
        "16",
        "--out",
        dir.path().join("a.png").to_str().unwrap(),
    ]);
    ok(&[
        "sample",
        r,
        "-n",
        "16",
        "--out",
        dir.path().join("b.png").to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(dir.path().join("a.png")).unwrap(),
        std::fs::read(dir.path().join("b.png")).unwrap(),
        "same seed, same samples: no dropout when sampling"
    );
    let out = genlab(&["inpaint", r]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    // Sample quality with the shipped evaluator, beside real images.
    let eval_args = [
        "eval",
        r,
        "-n",
        "500",
        "--json",
        "--decoder-ais-images",
        "6",
        "--decoder-ais-chains",
        "4",
        "--decoder-ais-steps",
        "40",
        "--bdmc-images",
        "3",
        "--sigma-images",
        "4",
    ];
    let out = ok(&eval_args);
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The generator's likelihood on a Gaussian of pixel/255, its uniform
    // noise as the prior.
    let ais = &e["likelihood"]["decoder_ais"];
    assert_eq!(ais["prior"], "Uniform(-1, 1)");
    assert_eq!(ais["observation"], "gaussian");
    assert!(ais["sigma"].as_f64().unwrap() > 0.0);
    assert!(ais["log_likelihood"].as_f64().unwrap().is_finite());
    assert!(ais["bdmc"]["gap"].as_f64().unwrap().is_finite());
    let q = &e["sample_quality"];
    assert!(q["evaluator"].as_str().unwrap().contains("mnist evaluator"));
    let (model, real) = (&q["model"], &q["reference_real_train_10k"]);
    assert_eq!(model["images"], 500);
    for key in ["fid", "kid", "inception_score", "precision", "recall"] {
        assert!(model[key].as_f64().unwrap().is_finite(), "{key}");
    }
    // Two epochs on 6,400 images are far from real digits.
    assert!(model["fid"].as_f64().unwrap() > 5.0 * real["fid"].as_f64().unwrap());
    assert!(real["inception_score"].as_f64().unwrap() > 9.0);
    assert_eq!(real["classes_covered"], 10);

    // Same run, same seed, same numbers.
    let again: serde_json::Value = serde_json::from_str(&ok(&eval_args)).unwrap();
    assert_eq!(again["sample_quality"], e["sample_quality"]);
    for key in ["log_likelihood", "sigma", "sigma_candidates", "acceptance"] {
        assert_eq!(again["likelihood"]["decoder_ais"][key], ais[key], "{key}");
    }
    assert_eq!(
        again["likelihood"]["decoder_ais"]["bdmc"]["gap"],
        ais["bdmc"]["gap"]
    );

    // One table across families.
    let vae = dir.path().join("vae");
    let v = vae.to_str().unwrap();
    ok(&[
        "train",
        "vae",
        "--out",
        v,
        "--train-limit",
        "512",
        "--test-limit",
        "100",
        "--epochs",
        "1",
    ]);
    ok(&[
        "eval",
        v,
        "--k",
        "10",
        "-n",
        "100",
        "--decoder-ais-images",
        "0",
    ]);
    let table_dir = dir.path().join("table");
    let out = ok(&["compare", r, v, "--out", table_dir.to_str().unwrap()]);
    for text in [
        "MLP GAN",
        "MLP VAE",
        "| gan |",
        "| vae-2 |",
        "real training images (10,000)",
    ] {
        assert!(out.contains(text), "{text} not in {out}");
    }
    let csv = std::fs::read_to_string(table_dir.join("compare.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(table_dir.join("compare.md").is_file());
}

#[test]
fn gan_resume_gives_bit_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    ok(&args(&small(&reference, "3")));
    let want = weights(&reference);
    let want_metrics = metrics(&reference);

    // N epochs, then M more: both networks and both optimisers restored.
    let short = dir.path().join("short");
    ok(&args(&small(&short, "1")));
    ok(&[
        "train",
        "--resume",
        short.to_str().unwrap(),
        "--epochs",
        "3",
    ]);
    assert!(weights(&short) == want, "extended run: weights differ");
    assert_eq!(metrics(&short), want_metrics);

    // Ctrl-C in the middle of an epoch, then resume.
    let run = dir.path().join("interrupted");
    let child = genlab(&args(&small(&run, "3"))).spawn().unwrap();
    for _ in 0..200 {
        if run.join("config.toml").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    if out.status.code() == Some(130) {
        ok(&["train", "--resume", run.to_str().unwrap()]);
    } else {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(weights(&run) == want, "resumed weights differ");
    assert_eq!(metrics(&run), want_metrics);
    let evo = std::fs::read(run.join("images/evolution.png")).unwrap();
    assert_eq!(
        evo,
        std::fs::read(reference.join("images/evolution.png")).unwrap()
    );
}
