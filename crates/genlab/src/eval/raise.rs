//! RAISE, the reverse AIS estimator (Burda, Grosse & Salakhutdinov, AISTATS
//! 2015): a log-likelihood of a binary RBM that errs low where the annealing
//! reaches the model's modes, the other side of AIS's optimistic one.
//!
//! The forward annealing chain of AIS (v_0 from the base model, then Gibbs
//! kernels T_1 .. T_K at the inverse temperatures of the path in [`ais`])
//! is itself a generative model, the *annealed model*, of its final state.
//! For a test image x, RAISE runs that chain backwards from v_K = x (kernel
//! T_K first, down to T_1) and weights it by
//! w = p_0(v_0) prod_k p*_k(v_k) / p*_k(v_{k-1}),
//! whose mean is exactly the annealed model's p(x): the log of the mean of
//! M chains is a stochastic lower bound on *its* log p(x) (Jensen), and on
//! nothing else. The annealed model is the RBM blurred by an imperfect
//! annealing: where the path visits the RBM's modes, its likelihood is below
//! the RBM's and RAISE underestimates, where AIS (which estimates log Z from
//! below) overestimates, and both meet the true value as the temperatures
//! grow. Where the path misses a mode, the annealed model can be the more
//! likely one and RAISE overestimates (see [`TwoBaseRaise`]).
//!
//! Grouping the terms by state, with p*_k as in [`ais`] (the hidden layer
//! summed out) and Z_0 the base model's partition function:
//! log w = -F(x) - log Z_0 + sum_{k<K} [log p*_k(v_k) - log p*_{k+1}(v_k)],
//! the same increments as AIS's, taken downwards.
//!
//! [`ais`]: crate::eval::ais

use crate::eval::ais::{anneal, base_log_z, log_mean_weight, schedule};
use crate::models::rbm::Rbm;
use crate::rng::GenRng;

/// RAISE's estimate of the mean log-likelihood of a set of binary images.
#[derive(Debug, Clone)]
pub struct RaiseEstimate {
    /// Mean over the images of log(mean of each image's chain weights).
    pub mean_log_likelihood: f64,
    /// Its standard error from the chains' spread (the delta method per
    /// image: sd(w) / (sqrt(M) mean(w)), combined over the images); how far
    /// another draw of the chains would move it, not the spread of images.
    pub chain_stderr: f64,
    /// Each image's estimate.
    pub per_image: Vec<f64>,
    pub chains: usize,
    pub steps: usize,
}

/// RAISE on the binary `images` (rows of the RBM's visible size): `chains`
/// reverse chains per image, over the `steps` inverse temperatures of
/// [`schedule`], towards the base model with visible biases `base`. All
/// images' chains run as one batch.
pub fn raise_log_likelihood(
    rbm: &Rbm,
    base: &[f32],
    images: &[f32],
    chains: usize,
    steps: usize,
    rng: &mut GenRng,
) -> RaiseEstimate {
    let nv = rbm.visible;
    let n = images.len() / nv;
    assert!(chains >= 1 && n >= 1, "RAISE needs images and chains");
    let betas = schedule(steps);
    // Every image repeated once per chain: its chains start at the image.
    let mut v: Vec<f32> = images
        .chunks_exact(nv)
        .flat_map(|x| std::iter::repeat_n(x, chains).flatten().copied())
        .collect();
    // (1, 1): the RBM's own Gibbs kernel T_K from x, with no weight; then
    // each state v_k gains log p*_k - log p*_{k+1} before T_k moves it on.
    let downward = std::iter::once((1.0f32, 1.0f32))
        .chain(betas.windows(2).rev().map(|b| (b[1] as f32, b[0] as f32)));
    let log_w = anneal(rbm, base, &mut v, downward, rng);
    let log_z0 = base_log_z(rbm, base);
    let neg_f = rbm.free_energy(images);
    let mut variance = 0.0;
    let per_image: Vec<f64> = log_w
        .chunks_exact(chains)
        .zip(&neg_f)
        .map(|(lw, &f)| {
            let (log_mean, var) = log_mean_weight(lw);
            variance += var;
            -f as f64 - log_z0 + log_mean
        })
        .collect();
    RaiseEstimate {
        mean_log_likelihood: per_image.iter().sum::<f64>() / n as f64,
        chain_stderr: variance.sqrt() / n as f64,
        per_image,
        chains,
        steps: betas.len() - 1,
    }
}

/// RAISE towards both of AIS's base models (see [`crate::eval::ais`]).
///
/// Each direction is a stochastic lower bound on the log-likelihood of its
/// own annealed model only. An annealing path that never reaches a mode of
/// the RBM gives an annealed model that puts that mode's mass elsewhere,
/// often on data-like images, so its RAISE can land far *above* the RBM's
/// log-likelihood: nothing bounds the RBM's figure from either direction.
/// Two directions that disagree beyond their chains' noise show that at
/// least one path missed mass; the larger of them is then no bound at all.
#[derive(Debug, Clone)]
pub struct TwoBaseRaise {
    pub from_base_rates: RaiseEstimate,
    pub from_model_biases: RaiseEstimate,
    /// The smaller of the two: the conservative figure genlab reports.
    pub mean_log_likelihood: f64,
    /// Which base gave it: "base rates" or "model biases".
    pub base: &'static str,
    /// The larger minus the smaller.
    pub disagreement: f64,
    /// Three standard errors of that difference, from both directions' chains.
    pub noise: f64,
}

impl TwoBaseRaise {
    /// Whether the two directions agree within their chains' noise.
    pub fn directions_agree(&self) -> bool {
        self.disagreement <= self.noise
    }

    /// The base that gave the larger figure.
    pub fn larger_base(&self) -> &'static str {
        match self.base {
            BASE_RATES => MODEL_BIASES,
            _ => BASE_RATES,
        }
    }

    /// Each direction's estimate minus `exact` (the exact log-likelihood of
    /// the same images): (towards the base rates, towards the model's biases).
    pub fn exact_gaps(&self, exact: f64) -> (f64, f64) {
        (
            self.from_base_rates.mean_log_likelihood - exact,
            self.from_model_biases.mean_log_likelihood - exact,
        )
    }
}

const BASE_RATES: &str = "base rates";
const MODEL_BIASES: &str = "model biases";

/// RAISE on `images` towards the base-rate model fitted to `binary_train`
/// and towards the model's own visible biases, keeping the smaller. A
/// base-rate start misses the modes of an RBM whose partition function sits
/// mostly where the data never go (the trained rbm-20, first 100 test
/// images, 14,500 temperatures: 4.4 nats above the exact value, where the
/// model-bias start is 3.9 below); the smaller of the two is then the one
/// to trust, though neither is guaranteed to be below the RBM's figure.
pub fn two_base_raise(
    rbm: &Rbm,
    binary_train: &[f32],
    images: &[f32],
    chains: usize,
    steps: usize,
    seed: u64,
) -> TwoBaseRaise {
    use crate::eval::ais::base_rate_biases;
    use crate::rng::{Purpose, stream};
    let base = base_rate_biases(binary_train, rbm.visible);
    let from_base_rates = raise_log_likelihood(
        rbm,
        &base,
        images,
        chains,
        steps,
        &mut stream(seed, Purpose::Eval, 20),
    );
    let from_model_biases = raise_log_likelihood(
        rbm,
        &rbm.vb,
        images,
        chains,
        steps,
        &mut stream(seed, Purpose::Eval, 21),
    );
    let (a, b) = (
        from_base_rates.mean_log_likelihood,
        from_model_biases.mean_log_likelihood,
    );
    let (mean_log_likelihood, base) = if a <= b {
        (a, BASE_RATES)
    } else {
        (b, MODEL_BIASES)
    };
    let noise = 3.0
        * from_base_rates
            .chain_stderr
            .hypot(from_model_biases.chain_stderr);
    TwoBaseRaise {
        from_base_rates,
        from_model_biases,
        mean_log_likelihood,
        base,
        disagreement: (a - b).abs(),
        noise,
    }
}
