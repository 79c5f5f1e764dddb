//! `genlab sweep`: the local executor (interrupted, resumed, aggregated),
//! the checks before any run starts, the README's sweep file, and a real
//! Slurm job array where Slurm runs on this machine.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{genlab, skip_without};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_refused(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{needle}: {err}");
    assert!(err.contains(needle), "wanted '{needle}' in: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn wait_for(cond: impl Fn() -> bool, limit: Duration, what: &str) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const SMALL_SWEEP: &str = r#"# two presets x two batch sizes x two seeds
presets = ["rbm-20", "vae-2"]
seeds = [0, 1]
epochs = 3
train_limit = 3000
test_limit = 200

[grid]
model.batch_size = [50, 100]
"#;

/// The last metrics row's value of `key` in a run.
fn last_metric(run: &Path, key: &str) -> f64 {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    last[key].as_f64().unwrap()
}

/// `groups.csv` as (header, rows).
fn groups_csv(dir: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(dir.join("groups.csv")).unwrap();
    let mut lines = text
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>());
    let header = lines.next().unwrap();
    (header, lines.collect())
}

#[test]
fn a_local_sweep_is_interrupted_resumed_and_aggregated() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small.toml");
    std::fs::write(&file, SMALL_SWEEP).unwrap();
    let out = dir.path().join("sweep");
    let args = ["sweep", s(&file), "--out", s(&out), "--jobs", "1"];

    // Stop it while the first run is training: after its first epoch.
    let first = out.join("runs/rbm-20-batch_size50-seed0");
    let mut child = genlab(&args).stdout(Stdio::null()).spawn().unwrap();
    wait_for(
        || std::fs::read_to_string(first.join("metrics.jsonl")).is_ok_and(|t| !t.is_empty()),
        Duration::from_secs(120),
        "the first epoch",
    );
    // SAFETY: kill sends a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let status_out = genlab(&["sweep", "status", s(&out)]).output().unwrap();
    assert!(status_out.status.success(), "{}", stderr(&status_out));
    let table = stdout(&status_out);
    assert!(table.contains("rbm-20-batch_size50-seed0"), "{table}");
    assert!(
        table.contains("pending"),
        "later runs never started: {table}"
    );
    assert!(!table.contains("running"), "{table}");
    let manifest = std::fs::read_to_string(out.join("manifest.toml")).unwrap();
    assert!(!manifest.contains("state = \"running\""), "{manifest}");

    // Again: finished runs are skipped, the interrupted one resumes.
    let done = genlab(&args).output().unwrap();
    assert!(done.status.success(), "{}", stderr(&done));
    let log = std::fs::read_to_string(out.join("logs/rbm-20-batch_size50-seed0.log")).unwrap();
    assert!(log.contains("resuming the interrupted run"), "{log}");
    let status_out = genlab(&["sweep", "status", s(&out)]).output().unwrap();
    assert!(
        stdout(&status_out).contains("8 runs: 8 finished"),
        "{}",
        stdout(&status_out)
    );

    // The resumed run is the run trained in one go, byte for byte.
    let threads = std::thread::available_parallelism()
        .unwrap()
        .get()
        .to_string();
    let reference = dir.path().join("reference");
    let plain = genlab(&[
        "train",
        "rbm",
        "--preset",
        "rbm-20",
        "--epochs",
        "3",
        "--train-limit",
        "3000",
        "--test-limit",
        "200",
        "--set",
        "model.batch_size=50",
        "--seed",
        "0",
        "--out",
        s(&reference),
    ])
    .env("RAYON_NUM_THREADS", &threads)
    .output()
    .unwrap();
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert_eq!(
        std::fs::read(first.join("weights.safetensors")).unwrap(),
        std::fs::read(reference.join("weights.safetensors")).unwrap(),
        "interrupted and resumed inside a sweep, the run must equal one trained in one go"
    );

    // The groups: mean and sample sd over the two seeds, computed here from the runs' own rows.
    let (header, rows) = groups_csv(&out);
    assert_eq!(rows.len(), 4, "{rows:?}");
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("{name} in {header:?}"))
    };
    for (preset, key, figure) in [
        ("rbm-20", "pseudo_likelihood_test", "pseudo-LL"),
        ("vae-2", "val_loss", "val loss"),
    ] {
        for batch in ["50", "100"] {
            let row = rows
                .iter()
                .find(|r| r[0] == preset && r[col("model.batch_size")] == batch)
                .unwrap();
            assert_eq!(row[col("runs")], "2");
            let v: Vec<f64> = [0, 1]
                .iter()
                .map(|seed| {
                    last_metric(
                        &out.join(format!("runs/{preset}-batch_size{batch}-seed{seed}")),
                        key,
                    )
                })
                .collect();
            let mean = (v[0] + v[1]) / 2.0;
            let sd = (v[0] - v[1]).abs() / 2f64.sqrt();
            let got_mean: f64 = row[col(&format!("{figure} mean"))].parse().unwrap();
            let got_sd: f64 = row[col(&format!("{figure} sd"))].parse().unwrap();
            assert!(
                (got_mean - mean).abs() < 1e-9 * mean.abs().max(1.0),
                "{preset} {batch}: {got_mean} vs {mean}"
            );
            assert!(
                (got_sd - sd).abs() < 1e-9 * sd.max(1.0),
                "{preset} {batch}: {got_sd} vs {sd}"
            );
            assert!(sd > 0.0, "two seeds give two different runs");
        }
    }

    // compare and report over the sweep directory.
    let cmp_dir = dir.path().join("cmp");
    let cmp = genlab(&["compare", s(&out), "--out", s(&cmp_dir)])
        .output()
        .unwrap();
    assert!(cmp.status.success(), "{}", stderr(&cmp));
    let md = stdout(&cmp);
    assert!(
        md.contains("groups over seeds") && md.contains("Individual runs"),
        "{md}"
    );
    assert!(md.contains(" +- "), "{md}");
    assert!(cmp_dir.join("groups.csv").is_file());
    let report = dir.path().join("report");
    let rep = genlab(&["report", s(&out), "--out", s(&report)])
        .output()
        .unwrap();
    assert!(rep.status.success(), "{}", stderr(&rep));
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("id=\"sweep-0\""), "no sweep section");
    assert!(
        html.contains("val loss against model.batch_size"),
        "no plot of a figure against the swept key"
    );
    assert!(
        report
            .join("sweeps/0/model_batch_size_val_loss.png")
            .is_file()
    );
    for k in 0..8 {
        assert!(html.contains(&format!("seed{}", k % 2)));
    }
}

#[test]
fn sweep_files_and_directories_are_checked_before_any_run_starts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let run = |file: &Path, extra: &[&str]| {
        let mut args = vec!["sweep", s(file), "--out", s(&out)];
        args.extend_from_slice(extra);
        genlab(&args).output().unwrap()
    };
    let base =
        "presets = [\"vae-2\"]\nseeds = [0, 1]\nepochs = 1\ntrain_limit = 200\ntest_limit = 100\n";
    let cases = [
        (format!("{base}epoch = 3\n"), "unknown field `epoch`"),
        (
            format!("{base}[grid]\nmodel.lrr = [0.1, 0.2]\n"),
            "unknown field `lrr`",
        ),
        (
            format!("{base}[grid]\nmodel.lr = 0.1\n"),
            "grid.model.lr = 0.1: a grid key takes a list",
        ),
        (format!("{base}[set]\nmodel.latent = -2\n"), "model.latent"),
        (format!("{base}[slurm]\ntime = \"an hour\"\n"), "slurm.time"),
        (
            format!("{base}[slurm]\npartiton = \"cpu\"\n"),
            "unknown field `partiton`",
        ),
        (base.replace("vae-2", "vea-2"), "'vea-2' is not a preset"),
        (base.replace("[0, 1]", "[0, 0]"), "a seed is listed twice"),
        (
            format!("{base}eval = \"sometimes\"\n"),
            "unknown variant `sometimes`",
        ),
    ];
    for (k, (text, needle)) in cases.iter().enumerate() {
        let file = write(&format!("bad{k}.toml"), text);
        assert_refused(&run(&file, &[]), needle);
        assert!(!out.exists(), "{needle}: nothing may be written");
    }

    let good = write("good.toml", base);
    // A dry run lists the runs and writes nothing.
    let dry = run(&good, &["--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stdout(&dry).contains("2 runs") && stdout(&dry).contains("vae-2-seed1"),
        "{}",
        stdout(&dry)
    );
    assert!(!out.exists());
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_refused(&run(&good, &["--jobs", &(cores + 1).to_string()]), "--jobs");
    assert_refused(&run(&good, &["--task", "0"]), "not a sweep directory yet");

    // Without sbatch on PATH, --submit is one line, after the script is written.
    let submit = genlab(&["sweep", s(&good), "--out", s(&out), "--submit"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_refused(&submit, "sbatch is not on PATH");
    let script = std::fs::read_to_string(out.join("sweep.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-1"), "{script}");
    assert!(
        script.contains("--task \"$SLURM_ARRAY_TASK_ID\""),
        "{script}"
    );
    assert_refused(&run(&good, &["--task", "2"]), "this sweep has 2 runs");

    // The directory now belongs to this sweep: another file is refused, as is a foreign directory.
    let other = write("other.toml", &base.replace("[0, 1]", "[0, 1, 2]"));
    assert_refused(
        &run(&other, &["--executor", "slurm"]),
        "was made from another sweep file",
    );
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let into_foreign = genlab(&["sweep", s(&good), "--out", s(&foreign)])
        .output()
        .unwrap();
    assert_refused(&into_foreign, "is not a genlab sweep");
    assert_eq!(
        std::fs::read_to_string(foreign.join("notes.txt")).unwrap(),
        "mine"
    );
    assert_refused(
        &genlab(&["sweep", "status", s(&foreign)]).output().unwrap(),
        "is not a genlab sweep",
    );
}

#[test]
fn a_failing_run_is_reported_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fail.toml");
    std::fs::write(
        &file,
        "presets = [\"vae-2\"]\nepochs = 1\ntrain_limit = 300\ntest_limit = 100\n\
         [[variants]]\nmodel.lr = 1e30\n[[variants]]\nmodel.lr = 0.001\n",
    )
    .unwrap();
    let out = dir.path().join("sweep");
    let run = genlab(&["sweep", s(&file), "--out", s(&out)])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(
        err.contains("1 of 2 runs failed") && err.contains("vae-2-lr1e30-seed0"),
        "{err}"
    );
    assert!(err.contains("NaN"), "the run's own error: {err}");
    assert!(
        out.join("runs/vae-2-lr0.001-seed0/weights.safetensors")
            .is_file()
    );
    let st = stdout(&genlab(&["sweep", "status", s(&out)]).output().unwrap());
    assert!(
        st.contains("1 failed, 1 finished") && st.contains("error: "),
        "{st}"
    );
}

/// The toml block of the README's Sweeps section.
fn readme_sweep_file() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let section = readme
        .split("\n## Sweeps")
        .nth(1)
        .expect("the README has a Sweeps section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .expect("with a toml block");
    block.split("```").next().unwrap().to_string()
}

#[test]
fn the_readme_sweep_file_is_valid_as_it_stands() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vae-latent.toml");
    std::fs::write(&file, readme_sweep_file()).unwrap();
    let dry = genlab(&[
        "sweep",
        s(&file),
        "--out",
        s(&dir.path().join("s")),
        "--dry-run",
    ])
    .output()
    .unwrap();
    assert!(dry.status.success(), "{}", stderr(&dry));
    let text = stdout(&dry);
    assert!(text.contains("9 runs"), "{text}");
    for name in [
        "vae-2-latent2-seed0",
        "vae-2-latent8-seed1",
        "vae-2-latent16-seed2",
    ] {
        assert!(text.contains(name), "{name}: {text}");
    }
}

fn slurm_is_up() -> bool {
    Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| ["idle", "mixed", "allocated"].contains(&l.trim()))
        })
}

#[test]
fn a_sweep_runs_as_a_slurm_job_array() {
    if skip_without(
        slurm_is_up(),
        "a running Slurm cluster",
        "apt-get install slurm-wlm munge, then bash .ci/slurm-up",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("array.toml");
    std::fs::write(
        &file,
        "presets = [\"rbm-20\", \"vae-2\"]\nseeds = [0, 1]\nepochs = 1\ntrain_limit = 300\ntest_limit = 100\n\
         [slurm]\ncpus_per_task = 1\ntime = \"10:00\"\nlimit = 2\n",
    )
    .unwrap();
    let out = dir.path().join("sweep");
    let submit = genlab(&["sweep", s(&file), "--out", s(&out), "--submit"])
        .output()
        .unwrap();
    assert!(submit.status.success(), "{}", stderr(&submit));
    let said = stdout(&submit);
    assert!(said.contains("submitted job array"), "{said}");
    let finished = || {
        let st = genlab(&["sweep", "status", s(&out)]).output().unwrap();
        stdout(&st).contains("4 runs: 4 finished")
    };
    wait_for(finished, Duration::from_secs(600), "the job array");
    // Every task wrote its Slurm output file; nothing is left to submit.
    let outputs: Vec<PathBuf> = std::fs::read_dir(out.join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "out"))
        .collect();
    assert_eq!(outputs.len(), 4, "{outputs:?}");
    let again = genlab(&["sweep", s(&file), "--out", s(&out), "--submit"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("nothing to submit"),
        "{}",
        stdout(&again)
    );
    let cmp = genlab(&["compare", s(&out), "--out", s(&out)])
        .output()
        .unwrap();
    assert!(cmp.status.success(), "{}", stderr(&cmp));
    let md = stdout(&cmp);
    let groups: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| rbm-20 | 0,1 |") || l.starts_with("| vae-2 | 0,1 |"))
        .collect();
    assert_eq!(groups.len(), 2, "{md}");
    assert!(groups.iter().all(|l| l.contains(" +- ")), "{md}");
}
