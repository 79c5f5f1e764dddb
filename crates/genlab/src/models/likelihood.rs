//! The decoder's observation model, shared by the VAE's executors.

use serde::{Deserialize, Serialize};

/// The decoder's likelihood, which fixes the reconstruction term of the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Likelihood {
    /// The seed's: sum over pixels of (x - sigmoid(logit))^2 on pixel / 255.
    Mse,
    /// Bernoulli: binary cross-entropy summed over pixels, on images
    /// binarised by a fresh Bernoulli(pixel / 255) draw each epoch.
    Bernoulli,
}
