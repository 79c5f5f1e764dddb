//! Presets: TOML files compiled into the binary, one per named configuration.
//! A preset holds only what differs from its model's defaults (the seed preset).

/// A named configuration of one model family.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub family: &'static str,
    pub description: &'static str,
    pub toml: &'static str,
    /// The figure `../shared/SPEC.md` publishes for this preset's reference
    /// run, where it gives one (shown beside ours by `compare` and `report`).
    pub seed_figure: Option<&'static str>,
}

macro_rules! preset {
    ($name:literal, $family:literal, $description:literal) => {
        Preset {
            name: $name,
            family: $family,
            description: $description,
            toml: include_str!(concat!("../presets/", $name, ".toml")),
            seed_figure: None,
        }
    };
    ($name:literal, $family:literal, $description:literal, seed_figure: $figure:literal) => {
        Preset {
            seed_figure: Some($figure),
            ..preset!($name, $family, $description)
        }
    };
}

/// The seed presets, the ones `../shared/SPEC.md` fixes (what `genlab reproduce` runs).
pub const SEED_PRESETS: &[&str] = &[
    "rbm-20", "rbm-100", "rbm-500", "vae-2", "vae-8", "vae-16", "conv-vae", "gan",
];

/// Every preset, in the order `genlab presets` lists them.
pub const PRESETS: &[Preset] = &[
    preset!(
        "rbm-20",
        "rbm",
        "Seed RBM, 20 hidden units: CD-30, lr 0.1, batch 64, 30 epochs"
    ),
    preset!(
        "rbm-100",
        "rbm",
        "Seed RBM, 100 hidden units: CD-30, lr 0.1, batch 64, 30 epochs"
    ),
    preset!(
        "rbm-500",
        "rbm",
        "Seed RBM, 500 hidden units: CD-30, lr 0.1, batch 64, 30 epochs"
    ),
    preset!(
        "rbm-500-pcd",
        "rbm",
        "RBM, 500 hidden units, tuned: PCD-5, lr 0.05 decaying to 0, momentum 0.5, weight decay 1e-4, 100 epochs"
    ),
    preset!(
        "rbm-500-pcd10",
        "rbm",
        "RBM, 500 hidden units, tuned on a validation split: PCD-10 with 128 persistent chains on training images binarised afresh each epoch, lr 0.05 decaying to 0, momentum 0.5, weight decay 1e-4, batch 64, 400 epochs"
    ),
    preset!(
        "vae-2",
        "vae",
        "Seed MLP VAE, latent 2: 784 x MSE + KL, Keras Adam, batch 128, 30 epochs",
        seed_figure: "val loss 38.33, train 37.97"
    ),
    preset!(
        "vae-8",
        "vae",
        "Seed MLP VAE, latent 8: 784 x MSE + KL, Keras Adam, batch 128, 30 epochs",
        seed_figure: "val loss 29.62, train 29.74"
    ),
    preset!(
        "vae-16",
        "vae",
        "Seed MLP VAE, latent 16: 784 x MSE + KL, Keras Adam, batch 128, 30 epochs",
        seed_figure: "val loss 29.53, train 29.75"
    ),
    preset!(
        "vae-2-bernoulli",
        "vae",
        "MLP VAE, latent 2, Bernoulli decoder on dynamically binarised images, otherwise the seed"
    ),
    preset!(
        "vae-16-bernoulli",
        "vae",
        "MLP VAE, latent 16, Bernoulli decoder on dynamically binarised images, otherwise the seed"
    ),
    preset!(
        "beta-vae",
        "vae",
        "beta-VAE (Higgins et al. 2017): MLP VAE, latent 10, Bernoulli decoder, loss recon + 4 x KL, otherwise the seed"
    ),
    preset!(
        "iwae",
        "vae",
        "IWAE (Burda et al. 2016): MLP 784-200-200-50, Bernoulli decoder, trained on the importance-weighted bound with k = 5 draws"
    ),
    preset!(
        "conv-vae",
        "vae",
        "Seed convolutional VAE, latent 2: 10k/1k subset, Keras RMSprop, batch 32, 30 epochs",
        seed_figure: "val loss about 39-40, train 37.05"
    ),
    preset!(
        "gan",
        "gan",
        "Seed MLP GAN: uniform noise 100, leaky ReLU + dropout 0.3, labels 0.9, two Adams lr 0.002, batch 64, 50 epochs",
        seed_figure: "d 1.2-1.4, g 0.9-1.3 over all 50 epochs"
    ),
];

/// The preset called `name`.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The closest preset name to `name`, for "did you mean" hints.
pub fn closest(
    name: &str,
    candidates: impl IntoIterator<Item = &'static str>,
) -> Option<&'static str> {
    candidates
        .into_iter()
        .map(|c| {
            let shared_prefix = name
                .chars()
                .zip(c.chars())
                .take_while(|(a, b)| a == b)
                .count();
            (
                strsim::damerau_levenshtein(name, c),
                std::cmp::Reverse(shared_prefix),
                c,
            )
        })
        .filter(|(d, _, c)| *d <= c.len().max(name.len()).div_ceil(2))
        .min()
        .map(|(_, _, c)| c)
}
