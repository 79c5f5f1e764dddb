//! One task of a sweep: one run taken to its end, its state recorded in the
//! manifest. The local executor starts tasks as child processes, a Slurm
//! job array as array tasks; both run `genlab sweep FILE --task INDEX`.

use anyhow::Result;

use super::Sweep;
use super::manifest::{self, Manifest, RunState};
use crate::config::one_line;
use crate::pipeline::finish_run;

/// Runs task `index` of `sweep`; `say` gets one line per thing done.
pub fn run_task(sweep: &Sweep, index: usize, say: &mut dyn FnMut(&str)) -> Result<()> {
    if index >= sweep.runs.len() {
        crate::usage_bail!(
            "--task {index}: this sweep has {} runs (tasks 0 to {})",
            sweep.runs.len(),
            sweep.runs.len().saturating_sub(1)
        );
    }
    if !sweep.dir.join(manifest::FILE).is_file() {
        crate::usage_bail!(
            "{} is not a sweep directory yet; run `genlab sweep {}` (or with --executor slurm) first",
            sweep.dir.display(),
            sweep.file.display()
        );
    }
    if let Some(why) = Manifest::read(&sweep.dir)?.differs_from(&sweep.manifest()) {
        crate::usage_bail!(
            "{} was made from another sweep file ({why}); give the sweep's own file ({}/{})",
            sweep.dir.display(),
            sweep.dir.display(),
            super::SWEEP_FILE
        );
    }
    let planned = &sweep.runs[index];
    let run = sweep.run_dir(index);
    let tag = format!("[task {index}] {}", planned.name);
    if manifest::is_busy(&run) {
        say(&format!(
            "{tag}: another genlab is working on this run; this task leaves it alone"
        ));
        return Ok(());
    }
    if sweep.is_finished(index) {
        say(&format!("{tag}: finished already ({})", run.display()));
        Manifest::record(&sweep.dir, index, RunState::Finished, None)?;
        return Ok(());
    }
    Manifest::record(&sweep.dir, index, RunState::Running, None)?;
    let result = finish_run(
        &sweep.request(index),
        &run,
        &sweep.steps(planned.seed),
        &tag,
        say,
    );
    let (state, error) = match &result {
        Ok(_) => (RunState::Finished, None),
        Err(e) if crate::interrupt::is_interrupted(e) => (RunState::Interrupted, None),
        Err(e) => (RunState::Failed, Some(one_line(&format!("{e:#}")))),
    };
    Manifest::record(&sweep.dir, index, state, error)?;
    if state == RunState::Finished {
        say(&format!("{tag}: finished ({})", run.display()));
    }
    result.map(|_| ())
}

/// Reads every run's state off its directory into the manifest of the sweep
/// directory `dir`, and returns the manifest.
pub fn refresh(dir: &std::path::Path) -> Result<Manifest> {
    if !dir.join(manifest::FILE).is_file() {
        crate::usage_bail!(
            "{} is not a genlab sweep (it has no {}); give the directory `genlab sweep` made",
            dir.display(),
            manifest::FILE
        );
    }
    Manifest::update(dir, |m| {
        let (eval, inpaint) = (m.eval != super::EvalLevel::None, m.inpaint);
        for entry in &mut m.run {
            let run = dir.join(super::RUNS_DIR).join(&entry.name);
            let finished = crate::pipeline::is_finished(&run, eval, inpaint);
            let state = manifest::observe(&run, finished, entry.state);
            if state != RunState::Failed {
                entry.error = None;
            }
            entry.state = state;
        }
        Ok(m.clone())
    })
}
