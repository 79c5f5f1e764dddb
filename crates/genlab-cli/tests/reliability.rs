//! Interruption, resume, divergence, bad input and determinism, on real runs
//! of the `genlab` binary: nothing a user made is lost.

mod common;

use std::path::Path;
use std::process::Command;

use common::genlab;
use std::time::Duration;

/// A small RBM run: 6 epochs of 100 CD-5 batches, a second or two in all.
const SMALL: &[&str] = &[
    "train",
    "rbm",
    "--preset",
    "rbm-20",
    "--epochs",
    "6",
    "--train-limit",
    "6400",
    "--test-limit",
    "200",
    "--seed",
    "5",
    "--set",
    "model.k=5",
    "--set",
    "model.pl_images=20",
    "--set",
    "model.sample_steps=20",
];

fn train_small(out: &Path) -> std::process::Output {
    let mut args = SMALL.to_vec();
    args.extend(["--out", out.to_str().unwrap()]);
    genlab(&args).output().unwrap()
}

/// metrics.jsonl without the timing columns (which differ from run to run).
fn metrics_without_timings(run: &Path) -> Vec<serde_json::Value> {
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

/// Fails the test with the command's stderr unless it exited 0.
fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn weights(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("weights.safetensors")).unwrap()
}

/// Waits (up to 5 s) until a starting run has written its config.toml:
/// loading MNIST comes first, and signals should land during training.
fn wait_for_run(run: &Path) {
    for _ in 0..200 {
        if run.join("config.toml").exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn resume_until_done(run: &Path) {
    for _ in 0..20 {
        if run.join("weights.safetensors").exists() {
            return;
        }
        if !run.join("config.toml").exists() {
            assert!(train_small(run).status.success());
            continue;
        }
        let out = genlab(&["train", "--resume", run.to_str().unwrap()])
            .output()
            .unwrap();
        assert_succeeded(&out);
    }
    panic!("the run did not finish");
}

#[test]
fn interrupted_and_killed_runs_resume_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let out = train_small(&reference);
    assert_succeeded(&out);
    let want_weights = weights(&reference);
    let want_metrics = metrics_without_timings(&reference);
    assert_eq!(want_metrics.len(), 6);

    // SIGINT (Ctrl-C) and SIGTERM: finish the batch, write a checkpoint, exit 130 with a hint.
    for signal in ["INT", "TERM"] {
        let run = dir.path().join(format!("sig{signal}"));
        let mut args = SMALL.to_vec();
        args.extend(["--out", run.to_str().unwrap()]);
        let child = genlab(&args).spawn().unwrap();
        wait_for_run(&run);
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        let out = child.wait_with_output().unwrap();
        if out.status.code() == Some(130) {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("genlab train --resume"), "{err}");
            assert!(run.join("checkpoints/latest.safetensors").is_file());
        } else {
            assert!(
                out.status.success(),
                "SIG{signal}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        resume_until_done(&run);
        assert_eq!(
            weights(&run),
            want_weights,
            "SIG{signal}: resumed weights differ"
        );
        assert_eq!(metrics_without_timings(&run), want_metrics);
    }

    // SIGKILL at several moments: the run resumes from its last checkpoint.
    let run = dir.path().join("sigkill");
    let mut args = SMALL.to_vec();
    args.extend(["--out", run.to_str().unwrap()]);
    for delay_ms in [150u64, 450, 300, 600, 250] {
        if run.join("weights.safetensors").exists() {
            break;
        }
        // Killed before config.toml existed: the (empty) directory is simply reused.
        let mut child = if run.join("config.toml").exists() {
            genlab(&["train", "--resume", run.to_str().unwrap()])
                .spawn()
                .unwrap()
        } else {
            let child = genlab(&args).spawn().unwrap();
            // Loading MNIST comes first; kill only once the run exists.
            wait_for_run(&run);
            child
        };
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever the moment, the checkpoint on disk (if any) loads.
        let ck = run.join("checkpoints/latest.safetensors");
        if ck.exists() {
            let bytes = std::fs::read(&ck).unwrap();
            safetensors::SafeTensors::deserialize(&bytes).expect("a whole checkpoint");
        }
    }
    resume_until_done(&run);
    assert_eq!(weights(&run), want_weights, "weights after kills differ");
    assert_eq!(metrics_without_timings(&run), want_metrics);
    // No temporary files are left behind.
    for sub in ["", "checkpoints", "images"] {
        for entry in std::fs::read_dir(run.join(sub)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(".genlab-tmp"), "left over: {name}");
        }
    }
    // A finished run is not resumed again, but can be extended.
    let out = genlab(&["train", "--resume", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--epochs"));
    let out = genlab(&["train", "--resume", run.to_str().unwrap(), "--epochs", "7"])
        .output()
        .unwrap();
    assert_succeeded(&out);
    assert_eq!(metrics_without_timings(&run).len(), 7);
}

#[test]
fn same_seed_same_metrics_and_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    assert!(train_small(&a).status.success());
    assert!(train_small(&b).status.success());
    assert_eq!(weights(&a), weights(&b));
    assert_eq!(metrics_without_timings(&a), metrics_without_timings(&b));
    std::fs::remove_dir_all(&b).unwrap();
    let mut args: Vec<&str> = SMALL
        .iter()
        .map(|a| if *a == "5" { "6" } else { a })
        .collect();
    args.extend(["--out", b.to_str().unwrap()]);
    assert!(genlab(&args).output().unwrap().status.success());
    assert_ne!(weights(&a), weights(&b), "another seed, other weights");
}

#[test]
fn divergence_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("nan");
    let mut args: Vec<&str> = SMALL
        .iter()
        .map(|a| if *a == "6" { "1" } else { a })
        .collect();
    args.extend(["--out", run.to_str().unwrap()]);
    assert!(genlab(&args).output().unwrap().status.success());
    // Continue with a learning rate no RBM survives.
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    std::fs::write(
        run.join("config.toml"),
        config.replace("lr = 0.1", "lr = 1e38"),
    )
    .unwrap();
    let out = genlab(&["train", "--resume", run.to_str().unwrap(), "--epochs", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("NaN or infinite") && err.contains("epoch 2, batch 1"),
        "{err}"
    );
    assert!(
        err.contains("--on-nan skip-batch") && err.contains("last good checkpoint"),
        "{err}"
    );
    assert_eq!(
        metrics_without_timings(&run).len(),
        1,
        "no row for the failed epoch"
    );
    let bytes = std::fs::read(run.join("checkpoints/latest.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("W").unwrap();
    assert!(
        w.data()
            .chunks_exact(4)
            .all(|c| f32::from_le_bytes(c.try_into().unwrap()).is_finite()),
        "the kept checkpoint is finite"
    );

    // With --on-nan skip-batch the bad updates are undone and counted: a
    // learning rate decaying from too large to merely large fails all but a
    // few updates of each epoch.
    let run = dir.path().join("skip");
    let mut args = SMALL.to_vec();
    args.extend([
        "--out",
        run.to_str().unwrap(),
        "--set",
        "model.epochs=2",
        "--set",
        "model.lr=1.2e35",
        "--set",
        "model.schedule=linear",
        "--set",
        "model.lr_final=1e33",
        "--on-nan",
        "skip-batch",
    ]);
    let out = genlab(&args).output().unwrap();
    assert_succeeded(&out);
    // An epoch in which every update was skipped stops training instead.
    let all_bad = dir.path().join("all-skipped");
    let mut args2 = SMALL.to_vec();
    args2.extend([
        "--out",
        all_bad.to_str().unwrap(),
        "--set",
        "model.lr=1e38",
        "--on-nan",
        "skip-batch",
    ]);
    let failed = genlab(&args2).output().unwrap();
    let err = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{err}");
    assert!(
        err.contains("every batch of the epoch was skipped"),
        "{err}"
    );
    assert!(!all_bad.join("weights.safetensors").exists());
    let rows = metrics_without_timings(&run);
    let skipped: u64 = rows
        .iter()
        .map(|r| r["skipped_batches"].as_u64().unwrap())
        .sum();
    assert!(skipped > 0, "{rows:?}");
}

#[test]
fn bad_input_is_refused_before_any_work_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("new-run");
    let out = out_dir.to_str().unwrap();
    // A finished run to point the run-reading commands at.
    let run = dir.path().join("run");
    assert!(train_small(&run).status.success());
    let r = run.to_str().unwrap();
    // A run whose config no longer matches its checkpoint (another shape).
    let other = dir.path().join("other-shape");
    std::fs::create_dir(&other).unwrap();
    for f in ["config.toml", "weights.safetensors"] {
        std::fs::copy(run.join(f), other.join(f)).unwrap();
    }
    let config = std::fs::read_to_string(other.join("config.toml")).unwrap();
    std::fs::write(
        other.join("config.toml"),
        config.replace("hidden = 20", "hidden = 30"),
    )
    .unwrap();
    // A directory that is not a run, and one that is not empty.
    let not_run = dir.path().join("not-a-run");
    std::fs::create_dir(&not_run).unwrap();
    std::fs::write(not_run.join("notes.txt"), "mine").unwrap();
    let nr = not_run.to_str().unwrap();
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "[model]\nhidden = \"many\"\n").unwrap();
    let unknown_toml = dir.path().join("unknown.toml");
    std::fs::write(&unknown_toml, "[model]\nlearning_rate = 0.1\n").unwrap();
    let o = other.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["train", "rbm", "--epochs", "0", "--out", out],
            "model.epochs = 0",
        ),
        (
            vec!["train", "rbm", "--set", "model.batch_size=0", "--out", out],
            "model.batch_size = 0",
        ),
        (
            vec!["train", "rbm", "--set", "model.hidden=0", "--out", out],
            "model.hidden = 0",
        ),
        (
            vec!["train", "rbm", "--set", "model.hidden=-3", "--out", out],
            "model.hidden",
        ),
        (
            vec!["train", "rbm", "--set", "model.k=0", "--out", out],
            "model.k = 0",
        ),
        (
            vec!["train", "rbm", "--set", "model.lr=-1", "--out", out],
            "model.lr = -1",
        ),
        (
            vec!["train", "rbm", "--set", "model.momentum=1.0", "--out", out],
            "model.momentum = 1",
        ),
        (
            vec!["train", "rbm", "--set", "model.chains=256", "--out", out],
            "model.chains = 256 needs model.persistent = true",
        ),
        (
            vec![
                "train",
                "rbm",
                "--preset",
                "rbm-500-pcd",
                "--set",
                "model.chains=0",
                "--out",
                out,
            ],
            "model.chains = 0",
        ),
        (
            vec!["train", "rbm", "--train-limit", "10", "--out", out],
            "larger than the training set",
        ),
        (
            vec!["train", "rbm", "--train-limit", "0", "--out", out],
            "data.train_limit = 0",
        ),
        (
            vec!["train", "rbm", "--set", "on_nan=\"retry\"", "--out", out],
            "on_nan",
        ),
        (
            vec!["train", "rbm", "--preset", "vae-3", "--out", out],
            "no such preset",
        ),
        (
            vec!["train", "rbm", "--preset", "vae-2", "--out", out],
            "try `genlab train vae --preset vae-2`",
        ),
        (vec!["train", "rbn", "--out", out], "did you mean rbm?"),
        (
            vec![
                "train",
                "rbm",
                "--config",
                bad_toml.to_str().unwrap(),
                "--out",
                out,
            ],
            "model.hidden",
        ),
        (
            vec![
                "train",
                "rbm",
                "--config",
                unknown_toml.to_str().unwrap(),
                "--out",
                out,
            ],
            "learning_rate",
        ),
        (vec!["train", "rbm", "--out", nr], "not empty"),
        (vec!["train", "rbm", "--out", r], "already a genlab run"),
        (vec!["train", "--resume", nr], "not a genlab run"),
        (vec!["train", "--resume", r, "--seed", "3"], "only --epochs"),
        (vec!["train"], "--resume RUN"),
        (vec!["sample", nr], "not a genlab run"),
        (vec!["sample", o], "shape [784, 20]"),
        (vec!["sample", r, "-n", "0"], "-n 0"),
        (vec!["inpaint", r, "--remove", "1.0"], "--remove 1"),
        (vec!["inpaint", r, "--remove=-0.2"], "--remove -0.2"),
        (vec!["eval", r, "--ais-steps", "10"], "--ais-steps 10"),
    ];
    for (args, expect) in cases {
        let out = genlab(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
        assert!(err.contains(expect), "{args:?}: '{expect}' not in {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert!(!out_dir.exists(), "nothing was written");
    assert_eq!(
        std::fs::read_dir(&not_run).unwrap().count(),
        1,
        "the user's directory is untouched"
    );
}

/// A tiny RBM run of `epochs` on 1,280 images in `dir/name`, which must succeed.
fn train_tiny(dir: &Path, name: &str, epochs: &str, extra: &[&str]) -> std::path::PathBuf {
    let run = dir.join(name);
    let out = common::tiny_rbm_train(&run, epochs, "1280", extra)
        .output()
        .unwrap();
    assert_succeeded(&out);
    run
}

/// `genlab train --resume run --epochs epochs`, which must succeed.
fn resume_to(run: &Path, epochs: &str) {
    let out = genlab(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--epochs",
        epochs,
    ])
    .output()
    .unwrap();
    assert_succeeded(&out);
}

#[test]
fn a_centred_persistent_run_resumes_to_the_same_weights() {
    // The offsets and the persistent chains live in the checkpoint.
    let dir = tempfile::tempdir().unwrap();
    let extra = [
        "--set",
        "model.persistent=true",
        "--set",
        "model.centring=true",
        "--set",
        "model.momentum=0.5",
    ];
    let whole = train_tiny(dir.path(), "whole", "2", &extra);
    let parts = train_tiny(dir.path(), "parts", "1", &extra);
    let ck = genlab::run::Checkpoint::load(&parts.join("checkpoints/latest.safetensors")).unwrap();
    let offsets = ck.tensor("centring.visible", &[784]).unwrap();
    assert!(
        offsets.data.iter().any(|&m| (m - 0.5).abs() > 0.05),
        "the offsets moved"
    );
    resume_to(&parts, "2");
    assert_eq!(
        weights(&parts),
        weights(&whole),
        "resumed centred weights differ"
    );
}

#[test]
fn bernoulli_training_pixels_change_the_model_and_resume_to_the_same_weights() {
    // The binarising draws come from the checkpointed training generator.
    let dir = tempfile::tempdir().unwrap();
    let bernoulli = ["--set", "model.training_pixels=bernoulli"];
    let whole = train_tiny(dir.path(), "whole", "2", &bernoulli);
    let intensity = train_tiny(
        dir.path(),
        "intensity",
        "2",
        &["--set", "model.training_pixels=intensity"],
    );
    assert_ne!(
        weights(&whole),
        weights(&intensity),
        "binarised training images give another model"
    );
    let parts = train_tiny(dir.path(), "parts", "1", &bernoulli);
    resume_to(&parts, "2");
    assert_eq!(weights(&parts), weights(&whole), "resumed weights differ");
}
