//! VAE runs of the `genlab` binary: every figure, sample / inpaint / eval,
//! and exact resumption.

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

fn train(out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "train",
        "vae",
        "--out",
        out.to_str().unwrap(),
        "--seed",
        "3",
    ];
    args.extend(extra);
    ok(&args)
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

const SMALL: &[&str] = &["--train-limit", "1024", "--test-limit", "200"];

#[test]
fn small_vae_runs_write_every_figure_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("mlp");
    let mut extra = SMALL.to_vec();
    extra.extend(["--epochs", "2"]);
    let out = train(&run, &extra);
    assert!(
        out.contains("201988 encoder + 202256 decoder parameters"),
        "{out}"
    );
    let m = metrics(&run);
    assert_eq!(m.len(), 2);
    for key in ["loss", "recon", "kl", "val_loss", "val_recon", "val_kl"] {
        assert!(m[1][key].as_f64().unwrap().is_finite(), "{key}");
    }
    let l = m[1]["loss"].as_f64().unwrap();
    let parts = m[1]["recon"].as_f64().unwrap() + m[1]["kl"].as_f64().unwrap();
    assert!((l - parts).abs() < 1e-6 * l.abs());
    // Training lowers the loss on this data.
    assert!(m[1]["loss"].as_f64().unwrap() < m[0]["loss"].as_f64().unwrap());
    let images = run.join("images");
    for f in [
        "manifold.png",
        "latent_scatter.png",
        "latent_scatter.svg",
        "reconstructions.png",
        "samples.png",
        "samples_epoch_002.png",
        "interpolation.png",
        "loss.png",
        "loss.svg",
        "loss_parts.svg",
    ] {
        assert!(images.join(f).is_file(), "missing {f}");
    }
    let rec = image::open(images.join("reconstructions.png")).unwrap();
    assert!(rec.width() > 4 * rec.height(), "10 columns, 2 rows");

    let r = run.to_str().unwrap();
    let out = ok(&["sample", r, "-n", "9"]);
    assert!(out.contains("z ~ N(0, I)"), "{out}");
    assert!(images.join("sample_prior_seed0.png").is_file());

    let out = ok(&["inpaint", r, "--steps", "5", "--n", "16"]);
    assert!(out.contains("encode -> decode iterated 5 times"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("inpaint.json")).unwrap()).unwrap();
    assert_eq!(report["family"], "vae");
    assert_eq!(report["rows"].as_array().unwrap().len(), 3);
    for row in report["rows"].as_array().unwrap() {
        let e = row["mse_clamped"].as_f64().unwrap();
        assert!(e > 0.0 && e < 1.0, "{e}");
    }

    let out = ok(&[
        "eval",
        r,
        "--k",
        "200",
        "-n",
        "300",
        "--json",
        "--decoder-ais-images",
        "8",
        "--decoder-ais-chains",
        "4",
        "--decoder-ais-steps",
        "60",
        "--hmc-leapfrog",
        "5",
        "--bdmc-images",
        "4",
        "--sigma-images",
        "4",
    ]);
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    let lik = &e["likelihood"];
    // Decoder AIS on a Gaussian whose deviation was chosen on training
    // images (the run holds out none), beside importance sampling on the
    // same images and model, and its BDMC bracket.
    let ais = &lik["decoder_ais"];
    assert_eq!(ais["observation"], "gaussian");
    assert_eq!(ais["images"], 8);
    let sigma = ais["sigma"].as_f64().unwrap();
    let tried = ais["sigma_candidates"].as_array().unwrap();
    assert_eq!(tried.len(), 9);
    let best = tried
        .iter()
        .max_by(|a, b| {
            let v = |x: &serde_json::Value| x["log_likelihood"].as_f64().unwrap();
            v(a).total_cmp(&v(b))
        })
        .unwrap();
    assert_eq!(best["sigma"].as_f64().unwrap(), sigma);
    assert!(
        ais["sigma_chosen_on"]
            .as_str()
            .unwrap()
            .contains("training images")
    );
    let (a, is) = (
        ais["log_likelihood"].as_f64().unwrap(),
        ais["importance_sampled_same_images"]["log_likelihood"]
            .as_f64()
            .unwrap(),
    );
    // Both are lower bounds in expectation; the encoder, trained for the
    // seed's variance of 1/2, is a poor proposal for a narrower Gaussian,
    // so annealing finds at least as much.
    assert!(a > is - 1.0, "AIS {a} vs IS {is}");
    let bdmc = &ais["bdmc"];
    let (lo, hi) = (
        bdmc["lower"].as_f64().unwrap(),
        bdmc["upper"].as_f64().unwrap(),
    );
    assert!(
        lo.is_finite() && hi.is_finite() && (hi - lo).abs() < 0.05 * lo.abs().max(100.0),
        "BDMC {lo} .. {hi}"
    );
    let (px, elbo) = (
        lik["test_log_likelihood"].as_f64().unwrap(),
        lik["elbo"].as_f64().unwrap(),
    );
    // The importance-sampled estimate is never below the ELBO.
    assert!(px > elbo, "log p(x) {px} vs ELBO {elbo}");
    let c = lik["constant_included"].as_f64().unwrap();
    assert!((c - 392.0 * std::f64::consts::PI.ln()).abs() < 1e-9);
    // ELBO = -(seed loss) - constant, up to Monte Carlo noise.
    let loss = e["loss"]["test_loss"].as_f64().unwrap();
    assert!((elbo + loss + c).abs() < 1.0, "ELBO {elbo}, loss {loss}");
    assert!(run.join("eval.json").is_file());
    assert_eq!(e["sample_quality"]["model"]["images"], 300);

    // The weights record the image shape their networks were built for,
    // and a checkpoint built for other images is not resumed on MNIST.
    let ck = genlab::run::Checkpoint::load(&run.join("weights.safetensors")).unwrap();
    assert_eq!(ck.meta("genlab.image").unwrap(), "1x28x28");
    let latest = run.join("checkpoints/latest.safetensors");
    let mut other = genlab::run::Checkpoint::load(&latest).unwrap();
    other.set_meta("genlab.image", "3x32x32");
    other.save(&latest).unwrap();
    let out = genlab(&["train", "--resume", r, "--epochs", "3"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("built for 3x32x32 images, dataset mnist has 1x28x28"),
        "{err}"
    );
}

#[test]
fn conv_and_bernoulli_variants_run() {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("conv");
    let out = ok(&[
        "train",
        "conv-vae",
        "--out",
        conv.to_str().unwrap(),
        "--epochs",
        "1",
        "--train-limit",
        "256",
        "--test-limit",
        "64",
    ]);
    assert!(
        out.contains("69076 encoder + 65089 decoder parameters"),
        "{out}"
    );
    assert!(conv.join("images/manifold.png").is_file());
    let cfg = std::fs::read_to_string(conv.join("config.toml")).unwrap();
    assert!(cfg.contains("optimizer = \"rmsprop\"") && cfg.contains("manifold_extent = 4.0"));
    // Decoder AIS through the convolutional decoder, at the smallest sizes.
    let out = ok(&[
        "eval",
        conv.to_str().unwrap(),
        "--k",
        "5",
        "-n",
        "0",
        "--json",
        "--decoder-ais-images",
        "2",
        "--decoder-ais-chains",
        "2",
        "--decoder-ais-steps",
        "10",
        "--hmc-leapfrog",
        "2",
        "--bdmc-images",
        "1",
        "--sigma",
        "0.1",
    ]);
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ais = &e["likelihood"]["decoder_ais"];
    assert_eq!(ais["sigma"], 0.1);
    assert_eq!(ais["sigma_chosen_on"], "given (--sigma)");
    assert!(ais["log_likelihood"].as_f64().unwrap().is_finite());

    let bern = dir.path().join("bern");
    let mut extra = SMALL.to_vec();
    extra.extend(["--preset", "vae-16-bernoulli", "--epochs", "1"]);
    train(&bern, &extra);
    let svg = std::fs::read_to_string(bern.join("images/latent_scatter.svg")).unwrap();
    assert!(svg.contains("principal component 1"));
    assert!(!bern.join("images/manifold.png").exists());
    let out = ok(&[
        "eval",
        bern.to_str().unwrap(),
        "--k",
        "50",
        "-n",
        "0",
        "--json",
        "--decoder-ais-images",
        "4",
        "--decoder-ais-chains",
        "4",
        "--decoder-ais-steps",
        "40",
        "--bdmc-images",
        "2",
    ]);
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["likelihood"]["decoder"], "bernoulli");
    let ais = &e["likelihood"]["decoder_ais"];
    assert_eq!(ais["observation"], "bernoulli");
    assert!(
        ais.get("sigma").is_none(),
        "a Bernoulli decoder has no deviation"
    );
    let a = ais["log_likelihood"].as_f64().unwrap();
    assert!(a < -60.0 && a > -544.0, "{a}");
    let px = e["likelihood"]["test_log_likelihood"].as_f64().unwrap();
    // Nats per binarised MNIST digit: far below 0, far above 784 ln 2 of a coin.
    assert!(px < -60.0 && px > -544.0, "{px}");
}

#[test]
fn vae_resume_gives_bit_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    let base = ["--train-limit", "12000", "--test-limit", "200"];
    let reference = dir.path().join("reference");
    let mut extra = base.to_vec();
    extra.extend(["--epochs", "3"]);
    train(&reference, &extra);
    let want = weights(&reference);
    let want_metrics = metrics(&reference);

    // Extending a finished run restores the optimiser state exactly.
    let short = dir.path().join("short");
    let mut extra = base.to_vec();
    extra.extend(["--epochs", "1"]);
    train(&short, &extra);
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
    let mut args = vec![
        "train",
        "vae",
        "--out",
        run.to_str().unwrap(),
        "--seed",
        "3",
    ];
    args.extend(base);
    args.extend(["--epochs", "3"]);
    let child = genlab(&args).spawn().unwrap();
    for _ in 0..200 {
        if run.join("config.toml").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    std::thread::sleep(Duration::from_millis(400));
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
}

#[test]
fn divergence_stops_with_a_clear_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("diverge");
    let out = genlab(&[
        "train",
        "vae",
        "--out",
        run.to_str().unwrap(),
        "--train-limit",
        "1024",
        "--test-limit",
        "100",
        "--epochs",
        "2",
        "--set",
        "model.lr=1e30",
    ])
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("NaN or infinite") && err.contains("--on-nan skip-batch"),
        "{err}"
    );
    assert!(!err.contains("panicked"));

    // Skipping bad batches cannot rescue parameters that the first update
    // already blew up: the run stops at the epoch's validation, clearly.
    let run = dir.path().join("skip");
    let out = genlab(&[
        "train",
        "vae",
        "--out",
        run.to_str().unwrap(),
        "--train-limit",
        "1024",
        "--test-limit",
        "100",
        "--epochs",
        "1",
        "--set",
        "model.lr=1e30",
        "--on-nan",
        "skip-batch",
    ])
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("validation loss is NaN") && err.contains("lower model.lr"),
        "{err}"
    );
}

#[test]
fn a_deeper_mlp_vae_trains_resumes_exactly_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let deep = [
        "--set",
        "model.encoder=[48,24]",
        "--train-limit",
        "1024",
        "--test-limit",
        "200",
    ];
    let reference = dir.path().join("reference");
    let mut extra = deep.to_vec();
    extra.extend(["--epochs", "2"]);
    let said = train(&reference, &extra);
    assert!(said.contains("MLP VAE, latent 2"), "{said}");
    let config = std::fs::read_to_string(reference.join("config.toml")).unwrap();
    let listed: String = config.split_whitespace().collect();
    assert!(listed.contains("encoder=[48,24,]"), "{config}");
    // The layers are named after the description; the decoder mirrors the encoder.
    let ck = std::fs::read(reference.join("weights.safetensors")).unwrap();
    let names = safetensors::SafeTensors::deserialize(&ck)
        .unwrap()
        .names()
        .len();
    assert_eq!(
        names, 14,
        "3 dense layers each side, 2 heads, with weights and biases"
    );
    let st = safetensors::SafeTensors::deserialize(&ck).unwrap();
    assert_eq!(
        st.tensor("encoder.hidden1.weight").unwrap().shape(),
        [48, 24]
    );
    assert_eq!(
        st.tensor("decoder.hidden0.weight").unwrap().shape(),
        [24, 48]
    );

    assert_resumes_to(&dir.path().join("short"), &reference, &deep);
    let eval = ok(&[
        "eval",
        reference.to_str().unwrap(),
        "--k",
        "20",
        "-n",
        "100",
        "--decoder-ais-images",
        "0",
    ]);
    assert!(eval.contains("log p(x)"), "{eval}");
    assert!(!eval.contains("decoder AIS"), "{eval}");
}

/// Trains a run of `args` one epoch into `short`, resumes it to two and
/// checks it ends with the two-epoch `reference`'s weights and metrics, bit
/// for bit.
fn assert_resumes_to(short: &Path, reference: &Path, args: &[&str]) {
    let mut extra = args.to_vec();
    extra.extend(["--epochs", "1"]);
    train(short, &extra);
    ok(&[
        "train",
        "--resume",
        short.to_str().unwrap(),
        "--epochs",
        "2",
    ]);
    assert!(
        weights(short) == weights(reference),
        "{args:?}: resumed weights differ"
    );
    assert_eq!(metrics(short), metrics(reference), "{args:?}");
}

/// `genlab train PRESET --set SET` exits 2 with one line holding `needle`
/// and writes no run.
fn assert_refused(dir: &Path, preset: &str, set: &str, needle: &str) {
    let bad = dir.join("bad");
    let out = genlab(&[
        "train",
        preset,
        "--out",
        bad.to_str().unwrap(),
        "--set",
        set,
    ])
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{err}");
    assert!(!bad.join("config.toml").exists());
}

/// beta-VAE: the loss is recon + beta KL in training and validation alike,
/// the run resumes bit for bit, sampling repeats for a seed, the traversal
/// figure has a row per latent dimension, the seed's configuration keeps
/// its bytes (no `beta` key) and a nonsensical beta is refused.
#[test]
fn beta_vae_weights_the_kl_term_resumes_exactly_and_draws_traversals() {
    let dir = tempfile::tempdir().unwrap();
    let base = ["--train-limit", "1024", "--test-limit", "200"];
    let reference = dir.path().join("beta");
    let mut extra = base.to_vec();
    extra.extend(["--preset", "beta-vae", "--epochs", "2"]);
    train(&reference, &extra);
    let cfg = std::fs::read_to_string(reference.join("config.toml")).unwrap();
    assert!(
        cfg.contains("beta = 4.0") && cfg.contains("latent = 10"),
        "{cfg}"
    );
    let rows = metrics(&reference);
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let f = |k: &str| row[k].as_f64().unwrap();
        for (loss, recon, kl) in [("loss", "recon", "kl"), ("val_loss", "val_recon", "val_kl")] {
            let want = f(recon) + 4.0 * f(kl);
            assert!((f(loss) - want).abs() <= 1e-9 * want.abs(), "{row}");
            assert!(f(kl) > 0.0, "{row}");
        }
    }
    let traversal = image::open(reference.join("images/traversal.png")).unwrap();
    let (w, h) = (traversal.width() as f64, traversal.height() as f64);
    // 10 rows (latent dimensions) of 11 tiles.
    assert!((h / w - 10.0 / 11.0).abs() < 0.02, "{w} x {h}");

    let mut args = base.to_vec();
    args.extend(["--preset", "beta-vae"]);
    assert_resumes_to(&dir.path().join("short"), &reference, &args);

    let sample = |name: &str| {
        let out = dir.path().join(name);
        ok(&[
            "sample",
            reference.to_str().unwrap(),
            "--seed",
            "7",
            "--out",
            out.to_str().unwrap(),
        ]);
        std::fs::read(out).unwrap()
    };
    assert_eq!(sample("a.png"), sample("b.png"));

    let seed = dir.path().join("seed");
    let mut extra = base.to_vec();
    extra.extend(["--epochs", "1"]);
    train(&seed, &extra);
    let cfg = std::fs::read_to_string(seed.join("config.toml")).unwrap();
    for key in ["beta =", "objective =", "k ="] {
        assert!(!cfg.lines().any(|l| l.starts_with(key)), "{key}: {cfg}");
    }

    assert_refused(dir.path(), "beta-vae", "model.beta=-1", "model.beta = -1");
}

/// IWAE: trains on burn's path with k draws, resumes bit for bit, its
/// validation bound is tighter than the ELBO of the same draws' terms, eval
/// measures it like any VAE, and nonsensical settings are refused.
#[test]
fn iwae_trains_on_its_bound_resumes_exactly_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let base = ["--train-limit", "512", "--test-limit", "100"];
    let reference = dir.path().join("iwae");
    let mut extra = base.to_vec();
    extra.extend(["--preset", "iwae", "--epochs", "2"]);
    let out = train(&reference, &extra);
    assert!(out.contains("minus the IWAE bound, k = 5"), "{out}");
    let cfg = std::fs::read_to_string(reference.join("config.toml")).unwrap();
    assert!(
        cfg.contains("objective = \"iwae\"") && cfg.contains("k = 5"),
        "{cfg}"
    );
    let rows = metrics(&reference);
    for row in &rows {
        let f = |k: &str| row[k].as_f64().unwrap();
        // -log (1/k) sum w is below recon + KL for the same model.
        assert!(f("val_loss") < f("val_recon") + f("val_kl"), "{row}");
        assert!(f("loss").is_finite() && f("kl") > 0.0, "{row}");
    }

    let mut args = base.to_vec();
    args.extend(["--preset", "iwae"]);
    assert_resumes_to(&dir.path().join("short"), &reference, &args);

    let out = ok(&[
        "eval",
        reference.to_str().unwrap(),
        "--k",
        "20",
        "-n",
        "0",
        "--decoder-ais-images",
        "0",
        "--bdmc-images",
        "0",
        "--json",
    ]);
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    let px = e["likelihood"]["test_log_likelihood"].as_f64().unwrap();
    assert!(px < -60.0 && px > -544.0, "{px}");

    for (set, needle) in [
        (
            "model.beta=2",
            "model.beta = 2 with model.objective = \"iwae\"",
        ),
        ("model.k=0", "model.k = 0"),
    ] {
        assert_refused(dir.path(), "iwae", set, needle);
    }
}
