//! Helpers shared by the CLI tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The directory holding `mnist/`: `$GENLAB_DATA` (relative: from the shell's directory), else `../shared/data` beside the repository.
pub fn shared_data() -> PathBuf {
    genlab::data::locate::env_dir("GENLAB_DATA")
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

/// The `genlab` binary with `args`, offline, finding MNIST beside the repository.
pub fn genlab(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_genlab"));
    c.args(args)
        .env("GENLAB_DATA", shared_data())
        .env("GENLAB_OFFLINE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// `genlab train` of a tiny RBM (CD-1, batches of 64 from the first
/// `train_limit` images, 100 test images, small per-epoch figures; well under
/// a second an epoch) into `out`, with `extra` arguments after.
#[allow(dead_code)]
pub fn tiny_rbm_train(out: &Path, epochs: &str, train_limit: &str, extra: &[&str]) -> Command {
    let mut args = vec![
        "train",
        "rbm-20",
        "--epochs",
        epochs,
        "--train-limit",
        train_limit,
        "--test-limit",
        "100",
        "--set",
        "model.k=1",
        "--set",
        "model.pl_images=10",
        "--set",
        "model.sample_steps=5",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    genlab(&args)
}

/// Whether a test must skip: prints one `SKIPPED:` line when `present` is
/// false, or panics instead where `GENLAB_REQUIRE_OPTIONAL=1` (CI).
#[allow(dead_code)]
pub fn skip_without(present: bool, what: &str, how: &str) -> bool {
    if present {
        return false;
    }
    if std::env::var_os("GENLAB_REQUIRE_OPTIONAL").is_some_and(|v| v == "1") {
        panic!("GENLAB_REQUIRE_OPTIONAL=1 but {what} is missing ({how})");
    }
    eprintln!("SKIPPED: {what} is missing ({how})");
    true
}
