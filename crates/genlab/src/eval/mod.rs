//! Evaluation: `genlab eval RUN`: the family's own likelihood figures
//! (each family's `eval.rs`, reached through its family interface), the
//! estimators they share ([`ais`], [`importance`]) and the sample quality
//! every family is measured by ([`quality`]).

pub mod ais;
pub mod compare;
pub mod decoder_ais;
pub mod decoder_likelihood;
pub mod evaluator;
pub mod importance;
pub mod options;
pub mod quality;
pub mod raise;
pub mod sample_metrics;

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::Value;

use crate::atomic::write_atomic;
use crate::run::RunDir;

pub use options::{
    DecoderAisOptions, DecoderAisSizes, EXACT_MAX_HIDDEN, EvalOptions, EvalSplit, MAX_AIS_RUNS,
    MAX_AIS_STEPS, MAX_CHAIN_STEPS, MAX_DECODER_AIS_CHAINS, MAX_DECODER_AIS_IMAGES,
    MAX_IMPORTANCE_SAMPLES, MAX_LEAPFROG, MAX_RAISE_CHAINS, MAX_RAISE_IMAGES, MAX_SAMPLES,
};

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
    if opts.raise_images > 0 && opts.raise_chains < 2 {
        crate::usage_bail!(
            "--raise-chains {}: at least 2 chains per image are needed for an uncertainty",
            opts.raise_chains
        );
    }
    if opts.raise_images > 0 && opts.raise_steps < 100 {
        crate::usage_bail!(
            "--raise-steps {}: use at least 100 (10,000 or more for a trustworthy estimate)",
            opts.raise_steps
        );
    }
    use crate::bounded::check_count;
    check_count(
        "--raise-images",
        opts.raise_images,
        MAX_RAISE_IMAGES,
        "test images",
    )?;
    check_count(
        "--raise-chains",
        opts.raise_chains,
        MAX_RAISE_CHAINS,
        "chains per image",
    )?;
    check_count(
        "--raise-steps",
        opts.raise_steps,
        MAX_AIS_STEPS,
        "inverse temperatures",
    )?;
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
    decoder_likelihood::check_options(&opts.decoder_ais)?;
    check_count("--samples", opts.samples, MAX_SAMPLES, "generated images")?;
    check_count(
        "--sample-steps",
        opts.sample_steps,
        MAX_CHAIN_STEPS,
        "Gibbs steps",
    )?;
    let run = RunDir::open(run_root)?;
    let _lock = crate::run::RunLock::acquire(&run.root, "evaluating")?;
    let family = crate::models::family::of_run(&run)?;
    let evaluator = if opts.samples > 0 {
        Some(quality::prepare(&run, opts)?)
    } else {
        None
    };
    let (mut json, mut lines) = family.evaluate(&run, opts)?;
    let evaluator = match evaluator {
        Some(Err(no_evaluator)) => {
            lines.push(no_evaluator);
            None
        }
        Some(Ok(e)) => Some(e),
        None => None,
    };
    if let Some(evaluator) = evaluator {
        let (sample_json, sample_lines) = quality::evaluate_samples(&run, family, opts, evaluator)?;
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
