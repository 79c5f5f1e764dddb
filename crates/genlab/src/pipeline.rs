//! One run taken to its end: trained (or resumed, or reused when finished),
//! then evaluated and inpainted where asked. `reproduce` and every task of a
//! sweep go through [`finish_run`], so running either again continues where
//! it stopped: a finished run is reused, an interrupted one resumed from its
//! latest checkpoint, and an evaluation or inpainting older than the run's
//! weights is done again.

use std::path::Path;
use std::time::{Instant, SystemTime};

use anyhow::Result;

use crate::eval::{EvalOptions, evaluate};
use crate::inspect::{InpaintOptions, inpaint};
use crate::models::{self, TrainRequest};
use crate::run::RunDir;

/// What [`finish_run`] did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// "trained", "resumed" or "reused".
    pub training: &'static str,
    pub train_seconds: f64,
    /// "evaluated", "reused" or "skipped" (not asked for).
    pub evaluation: &'static str,
    pub eval_seconds: f64,
}

/// The later steps a run goes through after training.
#[derive(Debug, Clone, Default)]
pub struct Steps {
    pub eval: Option<EvalOptions>,
    /// Skipped for families that cannot inpaint (the GAN).
    pub inpaint: Option<InpaintOptions>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Whether `derived` exists and was written after the run's final weights.
pub fn up_to_date(derived: &Path, run: &Path) -> bool {
    match (
        modified(derived),
        modified(&run.join("weights.safetensors")),
    ) {
        (Some(d), Some(w)) => d >= w,
        _ => false,
    }
}

/// Whether the family of the run at `run` can inpaint.
fn inpaints(run: &Path) -> Result<bool> {
    Ok(crate::models::family::of_run(&RunDir::open(run)?)?.inpaints())
}

/// Whether every step asked for is done for the run at `run`.
pub fn is_finished(run: &Path, eval: bool, inpaint: bool) -> bool {
    run.join("weights.safetensors").is_file()
        && (!eval || up_to_date(&run.join("eval.json"), run))
        && (!inpaint
            || !inpaints(run).unwrap_or(true)
            || up_to_date(&run.join("inpaint.json"), run))
}

/// Trains, resumes or reuses the run of `request` at `run`, then does the
/// `steps`; `say` gets one line per thing done, each starting with `tag`.
pub fn finish_run(
    request: &TrainRequest,
    run: &Path,
    steps: &Steps,
    tag: &str,
    say: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    let t = Instant::now();
    let training = if run.join("weights.safetensors").is_file() {
        say(&format!("{tag}: finished run reused ({})", run.display()));
        "reused"
    } else if run.join("config.toml").is_file() {
        say(&format!(
            "{tag}: resuming the interrupted run {}",
            run.display()
        ));
        models::resume(run, None, request.data_dir.clone())?;
        "resumed"
    } else {
        say(&format!("{tag}: training into {}", run.display()));
        let mut request = request.clone();
        request.out = Some(run.to_path_buf());
        models::train(&request)?;
        "trained"
    };
    let train_seconds = t.elapsed().as_secs_f64();
    // A signal that came as training ended normally stops before the next step.
    crate::interrupt::check()?;

    let t = Instant::now();
    let eval_json = run.join("eval.json");
    let evaluation = match &steps.eval {
        None => "skipped",
        Some(_) if up_to_date(&eval_json, run) => {
            say(&format!(
                "{tag}: evaluation reused ({})",
                eval_json.display()
            ));
            "reused"
        }
        Some(options) => {
            say(&format!("{tag}: evaluating"));
            let report = evaluate(run, options)?;
            for line in &report.lines {
                say(&format!("    {line}"));
            }
            "evaluated"
        }
    };
    crate::interrupt::check()?;
    if let Some(options) = &steps.inpaint
        && inpaints(run)?
        && !up_to_date(&run.join("inpaint.json"), run)
    {
        say(&format!("{tag}: inpainting"));
        inpaint(run, options)?;
    }
    Ok(Outcome {
        training,
        train_seconds,
        evaluation,
        eval_seconds: t.elapsed().as_secs_f64(),
    })
}
