//! Evaluation: `genlab eval RUN`. For the RBM: the log partition function by
//! AIS (and exactly for small H) and the average log-likelihood of test and
//! training images.

pub mod ais;
pub mod compare;
pub mod evaluator;
pub mod importance;
pub mod quality;
pub mod sample_metrics;
pub mod vae;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde_json::{Value, json};

use crate::atomic::write_atomic;
use crate::data::PixelView;
use crate::data::batches::split_to_f32;
use crate::models::rbm;
use crate::rng::{Purpose, stream};
use crate::run::RunDir;

/// Options of `genlab eval`.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub seed: u64,
    /// AIS chains, run in parallel as one batch.
    pub ais_runs: usize,
    /// Intermediate distributions of the AIS schedule.
    pub ais_steps: usize,
    /// Importance samples per image for latent-variable models (None: the model's default).
    pub k: Option<usize>,
    /// Generated images for the sample-quality metrics (0 skips them).
    pub samples: usize,
    /// RBM: Gibbs steps of each sampling chain (from random noise).
    pub sample_steps: usize,
    /// A user's evaluator network instead of the shipped one.
    pub evaluator: Option<PathBuf>,
    /// Where eval.json goes (default: inside the run).
    pub out: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            seed: 0,
            ais_runs: 100,
            ais_steps: 14_500,
            k: None,
            samples: 10_000,
            sample_steps: 1000,
            evaluator: None,
            out: None,
            data_dir: None,
        }
    }
}

/// Limits of `genlab eval`'s work sizes: each is a hundred times its default
/// or more, and far beyond what a figure gains from.
pub const MAX_AIS_RUNS: usize = 10_000;
pub const MAX_AIS_STEPS: usize = 1_000_000;
pub const MAX_IMPORTANCE_SAMPLES: usize = 100_000;
pub const MAX_SAMPLES: usize = 100_000;
pub const MAX_CHAIN_STEPS: usize = 100_000;

/// The largest hidden layer whose partition function is summed exactly.
pub const EXACT_MAX_HIDDEN: usize = 24;

/// A report: the JSON written to eval.json, and the lines printed for a person.
pub struct Report {
    pub json: Value,
    pub lines: Vec<String>,
    pub path: PathBuf,
}

/// Evaluates a run and writes `eval.json`.
pub fn evaluate(run_root: &Path, opts: &EvalOptions) -> Result<Report> {
    if opts.ais_runs < 2 {
        crate::usage_bail!(
            "--ais-runs {}: at least 2 chains are needed for an uncertainty",
            opts.ais_runs
        );
    }
    if opts.ais_steps < 100 {
        crate::usage_bail!(
            "--ais-steps {}: use at least 100 (10,000 or more for a trustworthy estimate)",
            opts.ais_steps
        );
    }
    use crate::bounded::check_count;
    check_count("--ais-runs", opts.ais_runs, MAX_AIS_RUNS, "chains")?;
    check_count(
        "--ais-steps",
        opts.ais_steps,
        MAX_AIS_STEPS,
        "inverse temperatures",
    )?;
    check_count(
        "--k",
        opts.k.unwrap_or(0),
        MAX_IMPORTANCE_SAMPLES,
        "importance samples per image",
    )?;
    check_count("--samples", opts.samples, MAX_SAMPLES, "generated images")?;
    check_count(
        "--sample-steps",
        opts.sample_steps,
        MAX_CHAIN_STEPS,
        "Gibbs steps",
    )?;
    let run = RunDir::open(run_root)?;
    let _lock = crate::run::RunLock::acquire(&run.root, "evaluating")?;
    let family = run.family()?;
    let (mut json, mut lines) = match family.as_str() {
        "rbm" => evaluate_rbm(&run, opts)?,
        "vae" => vae::evaluate_vae(&run, opts)?,
        "gan" => (
            json!({"run": run.root.display().to_string(), "family": "gan", "seed": opts.seed}),
            vec![format!("run              {}", run.root.display())],
        ),
        other => crate::usage_bail!(
            "{}: evaluating a {other} run is not supported",
            run_root.display()
        ),
    };
    if opts.samples > 0 {
        let (sample_json, sample_lines) = quality::evaluate_samples(&run, &family, opts)?;
        if let Value::Object(map) = &mut json {
            map.extend(sample_json.as_object().cloned().unwrap_or_default());
        }
        lines.extend(sample_lines);
    }
    let path = opts
        .out
        .clone()
        .unwrap_or_else(|| run.root.join("eval.json"));
    write_atomic(&path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    Ok(Report { json, lines, path })
}

fn evaluate_rbm(run: &RunDir, opts: &EvalOptions) -> Result<(Value, Vec<String>)> {
    let loaded = rbm::load_run(run)?;
    let model = &loaded.rbm;
    let data = loaded.config.data.load(opts.data_dir.clone())?;
    // Binary data for the likelihood: one fixed-seed Bernoulli draw per pixel.
    let test = split_to_f32(
        &data.test,
        PixelView::Dynamic,
        &mut stream(opts.seed, Purpose::Eval, 10),
    );
    let train = split_to_f32(
        &data.train.head(10_000),
        PixelView::Dynamic,
        &mut stream(opts.seed, Purpose::Eval, 11),
    );
    let all_train = split_to_f32(
        &data.train,
        PixelView::Dynamic,
        &mut stream(opts.seed, Purpose::Eval, 12),
    );
    let t0 = Instant::now();
    let estimate = ais::two_base_log_z(model, &all_train, opts.ais_runs, opts.ais_steps, opts.seed);
    let ais_seconds = t0.elapsed().as_secs_f64();
    let (from_data, from_model) = (&estimate.from_base_rates, &estimate.from_model_biases);
    let exact = (model.hidden <= EXACT_MAX_HIDDEN).then(|| {
        let t = Instant::now();
        (ais::exact_log_z(model), t.elapsed().as_secs_f64())
    });
    let log_z = exact.map(|(z, _)| z).unwrap_or(estimate.log_z);
    let mean_neg_f = |v: &[f32]| -> f64 {
        let f = model.free_energy(v);
        -f.iter().map(|&x| x as f64).sum::<f64>() / f.len() as f64
    };
    let (nf_test, nf_train) = (mean_neg_f(&test), mean_neg_f(&train));
    let ll = |nf: f64, z: f64| nf - z;

    let mut lines = vec![
        format!("run              {}", run.root.display()),
        format!(
            "model            binary RBM, 784 visible x {} hidden ({})",
            model.hidden, loaded.config.preset
        ),
        format!(
            "AIS              {} chains x {} inverse temperatures (Salakhutdinov-Murray schedule), {:.1} s",
            from_model.runs, from_model.steps, ais_seconds
        ),
        format!(
            "log Z (AIS)      {:.3}  [{:.3}, {:.3}] (log of mean -/+ 3 s.e.), from the base-rate model",
            from_data.log_z, from_data.log_z_low, from_data.log_z_high
        ),
        format!(
            "log Z (AIS)      {:.3}  [{:.3}, {:.3}], from the model's visible biases",
            from_model.log_z, from_model.log_z_low, from_model.log_z_high
        ),
        format!(
            "log Z (AIS)      {:.3}  {}",
            estimate.log_z,
            if estimate.rule == "pooled" {
                "the two pooled (their intervals overlap; inverse-variance weights)"
            } else {
                "the larger (their intervals are disjoint, so one missed mass; AIS only underestimates)"
            }
        ),
    ];
    if let Some((z, s)) = exact {
        lines.push(format!(
            "log Z (exact)    {z:.3}  (sum over all 2^{} hidden states, {s:.1} s)",
            model.hidden
        ));
    }
    lines.push(format!(
        "test log-likelihood   {:.2} nats per image ({} test images binarised by a Bernoulli draw, seed {})",
        ll(nf_test, log_z),
        test.len() / model.visible,
        opts.seed
    ));
    lines.push(format!(
        "train log-likelihood  {:.2} nats per image (first {} training images, binarised the same way)",
        ll(nf_train, log_z),
        train.len() / model.visible
    ));
    if exact.is_some() {
        lines.push(format!(
            "(with the AIS log Z instead: test {:.2}, train {:.2})",
            ll(nf_test, estimate.log_z),
            ll(nf_train, estimate.log_z)
        ));
    }
    let json = json!({
        "run": run.root.display().to_string(),
        "family": "rbm",
        "preset": loaded.config.preset,
        "seed": opts.seed,
        "likelihood": {
            "binarisation": "one Bernoulli(pixel/255) draw per pixel, fixed seed",
            "log_z": log_z,
            "log_z_source": if exact.is_some() { "exact" } else { "ais" },
            "log_z_ais": estimate.log_z,
            "log_z_ais_rule": estimate.rule,
            "log_z_ais_base_rate": [from_data.log_z_low, from_data.log_z, from_data.log_z_high],
            "log_z_ais_model_biases": [from_model.log_z_low, from_model.log_z, from_model.log_z_high],
            "log_z_exact": exact.map(|(z, _)| z),
            "ais_runs": from_model.runs,
            "ais_steps": from_model.steps,
            "ais_seconds": ais_seconds,
            "test_log_likelihood": ll(nf_test, log_z),
            "train_log_likelihood": ll(nf_train, log_z),
            "test_images": test.len() / model.visible,
            "train_images": train.len() / model.visible,
        }
    });
    Ok((json, lines))
}
