//! What a hostile user tries against the binary: special files as outputs,
//! directories genlab did not make, exploding learning rates, two processes
//! on one run, impossible sizes, endless inputs, signals outside training,
//! file modes and the exact words of errors.

mod common;

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::genlab;

/// `genlab train` of a tiny RBM (10 CD-1 batches of 640 images an epoch,
/// well under a second each) into `out`, with `extra` arguments after.
fn tiny_rbm_command(out: &Path, epochs: &str, extra: &[&str]) -> std::process::Command {
    common::tiny_rbm_train(out, epochs, "640", extra)
}

fn tiny_rbm(out: &Path, epochs: &str) -> Output {
    tiny_rbm_command(out, epochs, &[]).output().unwrap()
}

fn trained(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    let out = tiny_rbm(&run, "1");
    assert!(out.status.success(), "{}", stderr(&out));
    run
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A refusal: exit 2, one line `genlab: error: ...` containing `needle`.
fn assert_refused(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(lines[0].starts_with("genlab: error: "), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with(".genlab-tmp-") {
                found.push(e.path());
            }
        }
    }
    found
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

#[test]
fn outputs_that_are_special_files_are_written_through_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained(dir.path());

    // A FIFO: written in place, still a FIFO, the reader gets the PNG.
    let fifo = dir.path().join("pipe.png");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let out = genlab(&[
        "sample",
        s(&run),
        "-n",
        "4",
        "--steps",
        "2",
        "--out",
        s(&fifo),
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(reader.join().unwrap().starts_with(PNG_MAGIC));
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );

    // A symlink: its target gets the file, the link stays a link.
    let target = dir.path().join("real.png");
    std::fs::write(&target, b"old").unwrap();
    let link = dir.path().join("link.png");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = genlab(&[
        "sample",
        s(&run),
        "-n",
        "4",
        "--steps",
        "2",
        "--out",
        s(&link),
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(std::fs::read(&target).unwrap().starts_with(PNG_MAGIC));

    // A directory is refused and left alone.
    let sub = dir.path().join("adir");
    std::fs::create_dir(&sub).unwrap();
    let out = genlab(&[
        "sample",
        s(&run),
        "-n",
        "4",
        "--steps",
        "2",
        "--out",
        s(&sub),
    ])
    .output()
    .unwrap();
    assert_refused(&out, "is a directory");
    assert!(sub.is_dir());

    // `-` is standard output.
    let out = genlab(&["sample", s(&run), "-n", "4", "--steps", "2", "--out", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let png = image::load_from_memory(&out.stdout).expect("standard output is one PNG");
    assert!(png.width() >= 2 * 28 && png.height() >= 2 * 28);
    let out = genlab(&[
        "eval",
        s(&run),
        "--samples",
        "0",
        "--ais-runs",
        "4",
        "--ais-steps",
        "100",
        "--raise-images",
        "0",
        "--out",
        "-",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("standard output is JSON");
    assert!(json["likelihood"]["test_log_likelihood"].is_number());
    assert!(!run.join("eval.json").exists());
    assert!(temporaries(dir.path()).is_empty());
}

#[test]
fn reproduce_refuses_a_directory_it_did_not_make_and_leaves_none_when_data_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("compare.md"), "my notes").unwrap();
    std::fs::write(mine.join("compare.csv"), "a,b").unwrap();
    std::fs::write(mine.join("mine.txt"), "mine").unwrap();
    let out = genlab(&["reproduce", "--quick", "--only", "gan", "--out", s(&mine)])
        .output()
        .unwrap();
    assert_refused(
        &out,
        "is not a genlab reproduction (it holds compare.csv, compare.md, mine.txt)",
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("compare.md")).unwrap(),
        "my notes"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("compare.csv")).unwrap(),
        "a,b"
    );
    let mut names: Vec<String> = std::fs::read_dir(&mine)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["compare.csv", "compare.md", "mine.txt"]);

    // No dataset: the error names it, and no empty output directory is left.
    let fresh = dir.path().join("fresh");
    let out = genlab(&["reproduce", "--quick", "--only", "gan", "--out", s(&fresh)])
        .env("GENLAB_DATA", dir.path().join("nowhere"))
        .env("HOME", dir.path())
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("mnist"), "{}", stderr(&out));
    assert!(
        !fresh.exists(),
        "a failed reproduce left {}",
        fresh.display()
    );
}

/// `genlab reproduce --quick --only gan --out OUT` with no dataset anywhere:
/// a refusal of OUT comes before the data is looked for.
fn reproduce_without_data(dir: &Path, out: &Path) -> Output {
    genlab(&["reproduce", "--quick", "--only", "gan", "--out", s(out)])
        .env("GENLAB_DATA", dir.join("nowhere"))
        .env("GENLAB_OFFLINE", "1")
        .env("HOME", dir)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .output()
        .unwrap()
}

/// Every file under `dir` with its bytes, for checking that nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                found.push((e.path(), Vec::new()));
                stack.push(e.path());
            } else {
                found.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn reproduce_takes_no_lone_file_for_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[(&str, &str)]); 5] = [
        ("compare.md", &[("compare.md", "precious\n")]),
        ("compare.csv", &[("compare.csv", "run,model\n1,2\n")]),
        ("report", &[("report/index.html", "<html>my page</html>\n")]),
        (
            "reproduction.toml",
            &[("reproduction.toml", "title = \"my own file\"\n")],
        ),
        // A seed preset's name with a config.toml that is not a genlab run's.
        ("gan", &[("gan/config.toml", "mine = true\n")]),
    ];
    for (k, (named, files)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("user-{k}"));
        for (file, text) in *files {
            let path = out.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let before = snapshot(&out);
        let result = reproduce_without_data(dir.path(), &out);
        let err = stderr(&result);
        assert_eq!(result.status.code(), Some(2), "{named}: {err}");
        assert_eq!(err.lines().count(), 1, "{named}: {err}");
        assert!(
            err.contains("is not a genlab reproduction") && err.contains(named),
            "{named}: {err}"
        );
        assert_eq!(snapshot(&out), before, "{named}: something was touched");
    }

    // An empty directory is accepted: the run gets as far as the missing data,
    // and leaves the directory empty again.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let result = reproduce_without_data(dir.path(), &empty);
    let err = stderr(&result);
    assert!(!result.status.success());
    assert!(
        err.contains("mnist") && !err.contains("not a genlab reproduction"),
        "{err}"
    );
    assert!(snapshot(&empty).is_empty(), "{:?}", snapshot(&empty));
}

#[test]
fn an_exploding_gan_never_saves_non_finite_weights_and_f32_overflow_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "train",
        "gan",
        "--epochs",
        "2",
        "--train-limit",
        "640",
        "--test-limit",
        "100",
        "--on-nan",
        "skip-batch",
    ];
    let mut args = base.to_vec();
    let run = dir.path().join("overflow");
    args.extend(["--set", "model.lr_d=1e39", "--set", "model.lr_g=1e39"]);
    args.extend(["--out", s(&run)]);
    let out = genlab(&args).output().unwrap();
    assert_refused(&out, "model.lr_d = 1e39: beyond the range of f32");
    assert!(!run.exists());

    // The largest learning rate f32 holds: updates overflow the parameters.
    let run = dir.path().join("explodes");
    let mut args = base.to_vec();
    args.extend(["--set", "model.lr_d=3e38", "--set", "model.lr_g=3e38"]);
    args.extend(["--out", s(&run)]);
    let out = genlab(&args).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("was skipped"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!run.join("weights.safetensors").exists());
    // Whatever checkpoint was written holds finite numbers only.
    if run.join("checkpoints/latest.safetensors").exists() {
        let bytes = std::fs::read(run.join("checkpoints/latest.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, t) in st.tensors() {
            assert!(
                t.data()
                    .chunks_exact(4)
                    .all(|c| f32::from_le_bytes(c.try_into().unwrap()).is_finite()),
                "{name}"
            );
        }
    }
    // No epoch mean over zero steps was written as a number or a null.
    if let Ok(text) = std::fs::read_to_string(run.join("metrics.jsonl")) {
        assert!(!text.contains("null"), "{text}");
    }
}

fn spawn(args: &[&str]) -> Child {
    genlab(args).stdout(Stdio::null()).spawn().unwrap()
}

fn wait_for(cond: impl Fn() -> bool, what: &str) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "waited too long for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_run_in_use_is_refused_to_a_second_process_and_a_dead_holder_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // Long enough to be caught in training: 300 epochs of the tiny run.
    let mut first = tiny_rbm_command(&run, "300", &[])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let lock = run.join(".genlab-lock");
    wait_for(
        || std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("training")),
        "the lock",
    );
    let holder = format!("pid {}, training", first.id());
    for args in [
        vec!["train", "--resume", s(&run)],
        vec!["eval", s(&run), "--samples", "0"],
        vec!["inpaint", s(&run), "--n", "4"],
    ] {
        let out = genlab(&args).output().unwrap();
        assert_refused(&out, "is in use by another genlab");
        assert!(stderr(&out).contains(&holder), "{}", stderr(&out));
    }
    // SIGKILL leaves the lock file behind; the lock itself died with its holder.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(lock.exists());
    let out = genlab(&["train", "--resume", s(&run), "--epochs", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let epochs: Vec<u64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let mut sorted = epochs.clone();
    sorted.dedup();
    assert_eq!(epochs, sorted, "no epoch twice");
}

#[test]
fn sizes_that_cannot_fit_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    for (model, set, needle) in [
        ("rbm", "model.hidden=100000000", "model.hidden"),
        ("vae", "model.hidden=50000000", "model.hidden"),
        ("gan", "model.latent=100000000", "model.latent"),
    ] {
        let out_dir = dir.path().join(model);
        let out = genlab(&["train", model, "--set", set, "--out", s(&out_dir)])
            .output()
            .unwrap();
        assert_refused(&out, "of memory and this machine has");
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
        assert!(
            !out_dir.exists(),
            "{model}: {} was created",
            out_dir.display()
        );
    }
    let run = trained(dir.path());
    for (args, needle) in [
        (
            vec!["sample", s(&run), "-n", "100000000"],
            "-n 100000000: at most",
        ),
        (
            vec!["eval", s(&run), "--ais-runs", "100000000"],
            "--ais-runs 100000000: at most",
        ),
        (
            vec!["eval", s(&run), "--k", "1000000000"],
            "--k 1000000000: at most",
        ),
        (
            vec!["eval", s(&run), "--raise-images", "100000000"],
            "--raise-images 100000000: at most",
        ),
        (
            vec!["eval", s(&run), "--decoder-ais-images", "100000000"],
            "--decoder-ais-images 100000000: at most",
        ),
        (
            vec!["eval", s(&run), "--samples", "100000000"],
            "--samples 100000000: at most",
        ),
        (
            vec!["inpaint", s(&run), "--steps", "1000000000"],
            "--steps 1000000000: at most",
        ),
    ] {
        assert_refused(&genlab(&args).output().unwrap(), needle);
    }
    assert!(!run.join("eval.json").exists());
}

#[test]
fn endless_inputs_are_refused_at_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let out = genlab(&[
        "train",
        "rbm",
        "--config",
        "/dev/zero",
        "--out",
        s(&dir.path().join("r")),
    ])
    .output()
    .unwrap();
    assert_refused(&out, "longer than");
    let run = trained(dir.path());
    let out = genlab(&[
        "eval",
        s(&run),
        "--evaluator",
        "/dev/zero",
        "--samples",
        "50",
    ])
    .output()
    .unwrap();
    assert_refused(&out, "--evaluator /dev/zero is longer than");
    let out = genlab(&["sample", s(&run), "-n", "4", "--steps", "2"])
        .output()
        .unwrap();
    assert!(out.status.success());

    // A gzip whose header claims 10 labels but that inflates to 64 MiB.
    let idx = dir.path().join("idx");
    std::fs::create_dir(&idx).unwrap();
    let mnist = common::shared_data().join("mnist");
    for f in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
    ] {
        let src = mnist.join(format!("{f}.gz"));
        let src = if src.exists() { src } else { mnist.join(f) };
        std::fs::copy(&src, idx.join(src.file_name().unwrap())).unwrap();
    }
    let mut body = vec![0u8, 0, 8, 1, 0, 0, 0, 10];
    body.resize(64 << 20, 0);
    std::fs::write(idx.join("t10k-labels-idx1-ubyte.gz"), gzip(&body)).unwrap();
    let start = Instant::now();
    let out = genlab(&["data", "info", "--dataset", &format!("idx:{}", s(&idx))])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("t10k-labels-idx1-ubyte.gz: longer than its header says (18 bytes)"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(20));
}

/// Starts `args`, waits until `ready` holds, sends `signal`, and returns the
/// exit status and how long the process took to stop.
fn stop_with(args: &[&str], ready: impl Fn() -> bool, signal: i32) -> (Option<i32>, Duration) {
    let mut child = spawn(args);
    wait_for(ready, "the command to start working");
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    // SAFETY: kill sends a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
    let status = child.wait().unwrap();
    (status.code(), sent.elapsed())
}

#[test]
fn commands_that_are_not_training_stop_at_once_on_the_first_signal() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained(dir.path());
    let lock = run.join(".genlab-lock");
    let evaluating = || std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("evaluating"));
    let (code, took) = stop_with(
        &["eval", s(&run), "--ais-steps", "1000000", "--samples", "0"],
        evaluating,
        libc::SIGTERM,
    );
    assert_eq!(code, Some(130));
    assert!(took < Duration::from_secs(2), "eval took {took:?} to stop");
    assert!(!run.join("eval.json").exists());

    let png = dir.path().join("s.png");
    let started = Instant::now();
    let (code, took) = stop_with(
        &[
            "sample",
            s(&run),
            "-n",
            "10000",
            "--steps",
            "1000000",
            "--out",
            s(&png),
        ],
        || started.elapsed() > Duration::from_millis(700),
        libc::SIGINT,
    );
    assert_eq!(code, Some(130));
    assert!(
        took < Duration::from_secs(2),
        "sample took {took:?} to stop"
    );
    assert!(!png.exists());

    let inpainting = || std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("inpainting"));
    let (code, took) = stop_with(
        &["inpaint", s(&run), "--n", "100", "--steps", "1000000"],
        inpainting,
        libc::SIGTERM,
    );
    assert_eq!(code, Some(130));
    assert!(
        took < Duration::from_secs(2),
        "inpaint took {took:?} to stop"
    );
    assert!(!run.join("inpaint.json").exists());
    assert!(temporaries(dir.path()).is_empty());
}

#[test]
fn reproduce_stops_during_an_evaluation_without_starting_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("repro");
    let first = genlab(&[
        "reproduce",
        "--quick",
        "--only",
        "rbm-20",
        "--out",
        s(&out_dir),
    ])
    .output()
    .unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    std::fs::remove_file(out_dir.join("rbm-20/eval.json")).unwrap();
    std::fs::remove_file(out_dir.join("compare.md")).unwrap();
    let mut child = genlab(&[
        "reproduce",
        "--quick",
        "--only",
        "rbm-20,gan",
        "--out",
        s(&out_dir),
    ])
    .spawn()
    .unwrap();
    // Read stdout until the evaluation starts.
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut byte = [0u8; 1];
    while !seen.contains("rbm-20: evaluating") {
        assert_eq!(stdout.read(&mut byte).unwrap(), 1, "{seen}");
        seen.push(byte[0] as char);
    }
    // SAFETY: kill sends a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(!out_dir.join("gan").exists(), "the next run was started");
    assert!(!out_dir.join("rbm-20/eval.json").exists());
    assert!(!out_dir.join("compare.md").exists());
}

#[test]
fn written_files_get_the_mode_the_umask_gives() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut cmd = tiny_rbm_command(&run, "1", &[]);
    // SAFETY: umask is async-signal-safe and only affects the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    assert!(cmd.output().unwrap().status.success());
    for f in [
        "weights.safetensors",
        "config.toml",
        "images/filters.png",
        "checkpoints/latest.safetensors",
    ] {
        let mode = std::fs::metadata(run.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{f}: {mode:o}");
    }
}

#[test]
fn errors_say_what_is_true_and_bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("three");
    assert!(tiny_rbm(&run, "3").status.success());
    let out = genlab(&["train", "--resume", s(&run), "--epochs", "2"])
        .output()
        .unwrap();
    assert_refused(
        &out,
        "has already trained 3 epochs, so --epochs 2 adds none",
    );

    // A preset that does not exist cannot be written into config.toml.
    let out = genlab(&[
        "train",
        "rbm",
        "--set",
        "preset=nonexistent",
        "--out",
        s(&dir.path().join("p")),
    ])
    .output()
    .unwrap();
    assert_refused(&out, "preset = \"nonexistent\" is not a rbm preset");

    // compare --out FILE.
    let file = dir.path().join("afile");
    std::fs::write(&file, "x").unwrap();
    let out = genlab(&["compare", s(&run), "--out", s(&file)])
        .output()
        .unwrap();
    assert_refused(&out, "is a file; give a directory");

    // Damaged weights are called damaged, not missing.
    let damaged = dir.path().join("damaged");
    assert!(tiny_rbm(&damaged, "1").status.success());
    std::fs::write(damaged.join("weights.safetensors"), b"garbage").unwrap();
    let out = genlab(&["sample", s(&damaged)]).output().unwrap();
    assert_refused(&out, "its weights file is damaged");

    // A damaged config.toml is bad input for every command alike.
    std::fs::write(damaged.join("config.toml"), "family = [").unwrap();
    for args in [
        vec!["sample", s(&damaged)],
        vec!["train", "--resume", s(&damaged)],
    ] {
        assert_refused(&genlab(&args).output().unwrap(), "config.toml");
    }

    // Weights full of NaN are refused, not sampled into nulls.
    let nan = dir.path().join("nan");
    assert!(tiny_rbm(&nan, "1").status.success());
    let bytes = std::fs::read(nan.join("weights.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = Vec::new();
    for (name, t) in st.tensors() {
        let n = t.data().len() / 4;
        let data: Vec<u8> = std::iter::repeat_n(f32::NAN.to_le_bytes(), n)
            .flatten()
            .collect();
        tensors.push((name, t.shape().to_vec(), data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, shape, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    std::fs::write(
        nan.join("weights.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    let out = genlab(&["eval", s(&nan), "--samples", "10"])
        .output()
        .unwrap();
    assert_refused(&out, "the weights hold NaN or infinite values");
    assert!(!nan.join("eval.json").exists());

    // Divergence before the first checkpoint says there is none.
    let out = tiny_rbm_command(
        &dir.path().join("diverges"),
        "1",
        &["--set", "model.lr=3e38"],
    )
    .output()
    .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no checkpoint had been written yet"), "{err}");
    assert!(!err.contains("last good checkpoint"), "{err}");
}
