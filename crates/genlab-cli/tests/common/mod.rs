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
