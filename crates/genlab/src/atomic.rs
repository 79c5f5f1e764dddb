//! Atomic file writes: every file genlab writes goes to a temporary file in the
//! destination's directory and is renamed into place, so a crash leaves either
//! the old file or the new one, never a torn one.
//!
//! What is already at the destination decides how: a regular file (or none)
//! is replaced by rename and keeps its permissions (a new file gets the ones
//! the umask gives); a symlink is followed and its target replaced the same
//! way; a character device or a FIFO is written to directly, since renaming
//! over it would put a regular file in its place; `-` is standard output;
//! a directory, a block device or a socket is refused.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::sync::Mutex;

use anyhow::{Context, Result};

/// Name prefix of the temporary files; a run directory's leftovers are recognised by it.
pub const TEMP_PREFIX: &str = ".genlab-tmp-";

/// Temporary files of writes in progress, deleted by [`remove_pending_temporaries`].
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Registers a temporary file or directory for the lifetime of the guard.
pub struct Pending(PathBuf);

impl Pending {
    pub fn new(path: &Path) -> Self {
        if let Ok(mut p) = PENDING.lock() {
            p.push(path.to_path_buf());
        }
        Pending(path.to_path_buf())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Ok(mut p) = PENDING.lock() {
            p.retain(|q| q != &self.0);
        }
    }
}

/// Deletes the temporaries of every write in progress: called by a
/// signal handler just before the process exits, which runs no destructors.
pub fn remove_pending_temporaries() {
    if let Ok(p) = PENDING.lock() {
        for path in p.iter() {
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(path);
            } else {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes).map_err(Into::into))
}

/// Where a write goes, once links are followed and special files recognised.
#[derive(Debug, PartialEq, Eq)]
enum Destination {
    /// A regular file (existing or new): temp file and rename.
    Replace(PathBuf),
    /// A character device or FIFO: opened and written in place.
    Stream(PathBuf),
    Stdout,
}

/// The mode bits a new file gets from the process's umask.
fn default_mode() -> u32 {
    // /proc/self/status reads the umask without changing it (umask(2) can
    // only be read by setting it, which races with other threads).
    let umask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022);
    0o666 & !umask
}

/// Follows `path` through symlinks (also dangling ones) to the file a write
/// should land in. Relative link targets are taken from the link's directory.
fn follow_links(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&current) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&current)
                    .with_context(|| format!("cannot read the link {}", current.display()))?;
                current = if target.is_absolute() {
                    target
                } else {
                    current
                        .parent()
                        .unwrap_or_else(|| Path::new("."))
                        .join(target)
                };
            }
            _ => return Ok(current),
        }
    }
    crate::usage_bail!(
        "{}: too many levels of symbolic links; give a plain file path",
        path.display()
    )
}

fn destination(path: &Path) -> Result<Destination> {
    if path == Path::new("-") {
        return Ok(Destination::Stdout);
    }
    let target = follow_links(path)?;
    let meta = match std::fs::metadata(&target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Destination::Replace(target));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", target.display())),
    };
    let kind = meta.file_type();
    if kind.is_file() {
        Ok(Destination::Replace(target))
    } else if kind.is_char_device() || kind.is_fifo() {
        Ok(Destination::Stream(target))
    } else {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        crate::usage_bail!(
            "{} is {what}; genlab writes files only to a file path, a character device, a FIFO or - (standard output)",
            path.display()
        )
    }
}

/// Like [`write_atomic`], with the content produced by a writer callback.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let target = match destination(path)? {
        Destination::Stdout => {
            let mut out = std::io::stdout().lock();
            fill(&mut out).context("cannot write to standard output")?;
            return out.flush().context("cannot write to standard output");
        }
        Destination::Stream(target) => {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .with_context(|| format!("cannot open {}", target.display()))?;
            fill(&mut file).with_context(|| format!("cannot write {}", path.display()))?;
            return file
                .flush()
                .with_context(|| format!("cannot write {}", path.display()));
        }
        Destination::Replace(target) => target,
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    let mode = std::fs::metadata(&target)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or_else(|_| default_mode());
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let _pending = Pending::new(tmp.path());
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the permissions of {}", target.display()))?;
    fill(tmp.as_file_mut()).with_context(|| format!("cannot write {}", path.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    tmp.persist(&target)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot move the finished file into {}", target.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_symlink_is_written_through_and_stays_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.txt");
        std::fs::write(&target, "old").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("link.txt");
        symlink("real.txt", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "an existing file keeps its mode");
    }

    #[test]
    fn a_dangling_symlink_creates_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link.png");
        symlink(dir.path().join("sub/made.png"), &link).unwrap();
        write_atomic(&link, b"x").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("sub/made.png")).unwrap(),
            b"x"
        );
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn new_files_get_the_umask_mode_not_the_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.bin");
        write_atomic(&path, b"x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, default_mode());
        assert_ne!(mode, 0o600, "the temporary file's 0600 must not carry over");
    }

    #[test]
    fn directories_are_refused_with_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomic(dir.path(), b"x").unwrap_err();
        assert!(crate::error::is_usage(&err));
        assert!(err.to_string().contains("is a directory"), "{err}");
        assert!(dir.path().is_dir());
    }

    #[test]
    fn a_fifo_is_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        write_atomic(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(kind.is_fifo(), "the FIFO is still a FIFO");
    }
}
