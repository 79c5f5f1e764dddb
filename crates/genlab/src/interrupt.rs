//! Graceful interruption: the CLI's Ctrl-C / SIGTERM handler calls
//! [`request`]; training loops poll [`requested`] after every batch, write a
//! checkpoint and stop with [`Interrupted`].

use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks running loops to stop after their current batch. Returns whether a
/// stop had already been requested.
pub fn request() -> bool {
    REQUESTED.swap(true, Ordering::SeqCst)
}

/// Whether a stop has been requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
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

/// Whether an error (or anything in its chain) is an interruption.
pub fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Interrupted>())
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
    }
}
