//! A run directory is used by one genlab process at a time: training,
//! resuming, evaluating and inpainting hold an advisory lock on
//! `RUN/.genlab-lock`, which records the holder's pid and what it is doing.
//!
//! The lock is the kernel's (flock), so it dies with its holder: a lock file
//! left by a killed process is stale and simply taken over. The file is never
//! deleted, since deleting a lock file that another process has open lets
//! two processes hold "the" lock at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The lock file's name inside a run directory.
pub const LOCK_FILE: &str = ".genlab-lock";

/// Held while a process works on a run; released when dropped.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of the run at `root` for `what` ("training", ...), or
    /// refuses with a usage error naming the process that holds it.
    pub fn acquire(root: &Path, what: &str) -> Result<RunLock> {
        let path = root.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                crate::usage_bail!(
                    "{} is in use by another genlab ({}); wait for it to finish or stop it, then try again",
                    root.display(),
                    if holder.is_empty() {
                        "a process that is starting"
                    } else {
                        holder
                    }
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let stamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "pid {}, {what}, since {stamp}", std::process::id())
            .with_context(|| format!("cannot write the lock file {}", path.display()))?;
        Ok(RunLock { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_and_a_released_lock_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), "training").unwrap();
        let err = RunLock::acquire(dir.path(), "evaluating").unwrap_err();
        assert!(crate::error::is_usage(&err));
        let msg = err.to_string();
        assert!(msg.contains("in use by another genlab"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}, training", std::process::id())),
            "{msg}"
        );
        drop(first);
        let again = RunLock::acquire(dir.path(), "evaluating").unwrap();
        assert!(again.path().is_file());
    }

    #[test]
    fn a_stale_lock_file_from_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LOCK_FILE),
            "pid 999999, training, since then",
        )
        .unwrap();
        let lock = RunLock::acquire(dir.path(), "resuming").unwrap();
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert!(
            text.starts_with(&format!("pid {}, resuming", std::process::id())),
            "{text}"
        );
    }
}
