//! Errors a user fixes by changing the command or its configuration (exit
//! code 2), as opposed to failures while working (exit code 1).

use thiserror::Error;

/// Bad input: an option, a configuration key, a run directory or a
/// checkpoint that does not fit. The message names the thing and the fix.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Turns any error into a usage error, keeping its message.
pub fn usage(e: anyhow::Error) -> anyhow::Error {
    if is_usage(&e) {
        return e;
    }
    anyhow::Error::new(UsageError(format!("{e:#}")))
}

/// Whether an error (or anything in its chain) is a usage error.
pub fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<UsageError>())
}

/// `bail!` for usage errors.
#[macro_export]
macro_rules! usage_bail {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::error::UsageError(format!($($arg)*))))
    };
}
