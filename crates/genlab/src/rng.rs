//! Seeded random streams. Every random draw genlab makes comes from a ChaCha8
//! stream derived from the run's seed and a purpose, so runs repeat exactly and
//! one purpose (say, shuffling) never shifts another's draws.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The generator genlab uses everywhere.
pub type GenRng = ChaCha8Rng;

/// What a stream is for; each purpose gets its own ChaCha stream id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Purpose {
    Init = 1,
    Shuffle = 2,
    Binarise = 3,
    Train = 4,
    Corrupt = 5,
    Sample = 6,
    Eval = 7,
    Fixed = 8,
    /// Importance sampling, one stream per evaluated image.
    Importance = 9,
    /// Decoder AIS and BDMC: the chains' starts, momenta and acceptances.
    DecoderAis = 10,
    /// The seeded train/test split of a source without its own test split.
    DataSplit = 11,
}

/// A stream for `purpose`, further split by `index` (an epoch, say), from `seed`.
pub fn stream(seed: u64, purpose: Purpose, index: u32) -> GenRng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((purpose as u64) << 32) | index as u64);
    rng
}

/// The full state of a [`GenRng`], for checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte key as hex.
    pub key: String,
    pub stream: u64,
    /// Position in the stream in 32-bit words (a u128, as a decimal string).
    pub word_pos: String,
}

impl RngState {
    pub fn capture(rng: &GenRng) -> Self {
        RngState {
            key: rng.get_seed().iter().map(|b| format!("{b:02x}")).collect(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    pub fn restore(&self) -> anyhow::Result<GenRng> {
        let bad = || anyhow::anyhow!("corrupt RNG state in checkpoint: {self:?}");
        if self.key.len() != 64 {
            return Err(bad());
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&self.key[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos.parse().map_err(|_| bad())?);
        Ok(rng)
    }
}

/// Fills `out` with independent standard normal draws (Box-Muller, both
/// values of each pair used; computed in f64).
pub fn fill_standard_normal(rng: &mut GenRng, out: &mut [f32]) {
    use rand::RngExt;
    for pair in out.chunks_mut(2) {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        pair[0] = (r * c) as f32;
        if pair.len() > 1 {
            pair[1] = (r * s) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    #[test]
    fn state_round_trip_continues_the_same_stream() {
        let mut a = stream(7, Purpose::Train, 3);
        for _ in 0..13 {
            let _: u32 = a.random();
        }
        let mut b = RngState::capture(&a).restore().unwrap();
        let xa: Vec<f32> = (0..100).map(|_| a.random()).collect();
        let xb: Vec<f32> = (0..100).map(|_| b.random()).collect();
        assert_eq!(xa, xb);
    }

    #[test]
    fn purposes_and_indices_give_different_streams() {
        let mut a = stream(7, Purpose::Train, 0);
        let mut b = stream(7, Purpose::Shuffle, 0);
        let mut c = stream(7, Purpose::Train, 1);
        let (x, y, z): (u64, u64, u64) = (a.random(), b.random(), c.random());
        assert!(x != y && x != z && y != z);
    }

    #[test]
    fn normal_draws_have_unit_moments() {
        let mut v = vec![0.0f32; 200_001];
        fill_standard_normal(&mut stream(1, Purpose::Train, 0), &mut v);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        // Standard errors: 1/sqrt(n) = 0.0022 for the mean, sqrt(2/n) = 0.0032 for the variance.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "variance {var}");
    }
}
