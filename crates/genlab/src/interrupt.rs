//! Graceful interruption. Training runs inside a [`graceful`] scope: a first
//! Ctrl-C or SIGTERM only sets a flag, which training loops poll after every
//! batch to write a checkpoint and stop with [`Interrupted`]. Everywhere else
//! (evaluating, sampling, inpainting, reporting) nothing is worth finishing,
//! so the signal handler stops the process at once, after deleting the
//! temporary files of writes in progress (see [`crate::atomic`]): every file
//! is renamed into place whole, so nothing is left half-written.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use thiserror::Error;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static GRACEFUL_DEPTH: AtomicUsize = AtomicUsize::new(0);

/// Asks running loops to stop after their current batch. Returns whether a
/// stop had already been requested.
pub fn request() -> bool {
    REQUESTED.swap(true, Ordering::SeqCst)
}

/// Whether a stop has been requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// While alive, a first signal lets the work stop at its next checkpoint.
#[must_use = "the scope ends when this guard is dropped"]
pub struct GracefulScope(());

/// Marks the work until the guard drops as able to stop gracefully.
pub fn graceful() -> GracefulScope {
    GRACEFUL_DEPTH.fetch_add(1, Ordering::SeqCst);
    GracefulScope(())
}

impl Drop for GracefulScope {
    fn drop(&mut self) {
        GRACEFUL_DEPTH.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a signal handler should do with a Ctrl-C or SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalAction {
    /// Training will checkpoint and stop after its batch.
    Graceful,
    /// Stop now: call [`stop_now`].
    ExitNow,
}

/// Records a signal and says what to do with it.
pub fn on_signal() -> SignalAction {
    let second = request();
    if second || GRACEFUL_DEPTH.load(Ordering::SeqCst) == 0 {
        SignalAction::ExitNow
    } else {
        SignalAction::Graceful
    }
}

/// Child processes working for this one (a sweep's tasks), which run in
/// process groups of their own and so see no terminal signal.
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Registers a child process that [`stop_now`] and [`forward`] signal.
pub fn adopt(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.push(pid as i32);
    }
}

/// Forgets a child that has exited.
pub fn release(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.retain(|&p| p != pid as i32);
    }
}

/// Sends SIGTERM to every registered child: a first one lets a task
/// checkpoint and stop, a second stops it at once.
pub fn forward() {
    if let Ok(c) = CHILDREN.lock() {
        for &pid in c.iter() {
            // SAFETY: kill only sends a signal to a process we started.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

/// Deletes the temporaries of writes in progress, stops the children at
/// once, and exits with status 130.
pub fn stop_now() -> ! {
    crate::atomic::remove_pending_temporaries();
    forward();
    std::process::exit(130)
}

/// `Err(Stopped)` once a stop has been requested: for code between steps
/// of a longer job (`reproduce` after a training that ended normally).
pub fn check() -> Result<(), Stopped> {
    if requested() { Err(Stopped) } else { Ok(()) }
}

/// Training stopped on request, after writing a checkpoint.
#[derive(Debug, Error)]
#[error(
    "interrupted at epoch {epoch}, batch {batch}; checkpoint written; resume with `genlab train --resume {run}`"
)]
pub struct Interrupted {
    pub epoch: usize,
    pub batch: usize,
    pub run: String,
}

/// Work stopped on request between two steps; what was finished stays.
#[derive(Debug, Error)]
#[error("stopped on request (Ctrl-C or SIGTERM); every finished step is kept")]
pub struct Stopped;

/// Whether an error (or anything in its chain) is an interruption.
pub fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.is::<Interrupted>() || c.is::<Stopped>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interruptions_are_recognised_through_context() {
        let e: anyhow::Error = Interrupted {
            epoch: 1,
            batch: 2,
            run: "r".into(),
        }
        .into();
        assert!(is_interrupted(&e));
        let e = e.context("while training");
        assert!(is_interrupted(&e));
        assert!(!is_interrupted(&anyhow::anyhow!("other")));
        assert!(is_interrupted(&anyhow::Error::new(Stopped).context("x")));
    }
}
