//! `genlab reproduce`: every seed preset of `SPEC.md`, trained, evaluated,
//! inpainted where the model can, compared and reported, in one directory.
//!
//! Each preset's run lives in `OUT/<preset>/` and is taken to its end by
//! [`crate::pipeline::finish_run`], so running the command a second time
//! continues where the first stopped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use crate::config::Overrides;
use crate::eval::EvalOptions;
use crate::inspect::InpaintOptions;
use crate::models::{self, TrainRequest};
use crate::pipeline::{Outcome, Steps, finish_run};
use crate::presets::{self, SEED_PRESETS};

/// What `genlab reproduce` was asked to do.
#[derive(Debug, Clone)]
pub struct ReproduceOptions {
    /// One epoch of each preset on a subset, lighter evaluation: minutes, not an hour.
    pub quick: bool,
    /// Families (`rbm`, `vae`, `gan`) or seed preset names; empty: all.
    pub only: Vec<String>,
    pub out: PathBuf,
    pub seed: u64,
    /// `mnist` unless given (the SPEC's figures are MNIST's).
    pub dataset: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// The training images of a quick run (the conv VAE's own subset size).
pub const QUICK_TRAIN_IMAGES: usize = 10_000;
/// The test images of a quick run.
pub const QUICK_TEST_IMAGES: usize = 1_000;

impl ReproduceOptions {
    /// The default output directory: separate for quick and full runs, so
    /// that neither is ever taken for the other.
    pub fn default_out(quick: bool) -> PathBuf {
        PathBuf::from("runs").join(if quick {
            "reproduce-quick"
        } else {
            "reproduce"
        })
    }

    fn overrides(&self) -> Overrides {
        let mut set = vec![format!("seed={}", self.seed)];
        if let Some(d) = &self.dataset {
            set.push(format!("data.dataset=\"{d}\""));
        }
        if self.quick {
            set.push("model.epochs=1".into());
            set.push(format!("data.train_limit={QUICK_TRAIN_IMAGES}"));
            set.push(format!("data.test_limit={QUICK_TEST_IMAGES}"));
        }
        Overrides {
            config_file: None,
            set,
        }
    }

    fn request(&self, preset: &str) -> TrainRequest {
        TrainRequest {
            family: presets::find(preset).map_or("", |p| p.family).to_string(),
            preset: Some(preset.to_string()),
            overrides: self.overrides(),
            out: Some(self.out.join(preset)),
            data_dir: self.data_dir.clone(),
        }
    }

    fn eval_options(&self) -> EvalOptions {
        let full = EvalOptions {
            seed: self.seed,
            data_dir: self.data_dir.clone(),
            ..EvalOptions::default()
        };
        if self.quick { full.quick() } else { full }
    }

    fn steps(&self) -> Steps {
        Steps {
            eval: Some(self.eval_options()),
            inpaint: Some(self.inpaint_options()),
        }
    }

    fn inpaint_options(&self) -> InpaintOptions {
        InpaintOptions {
            remove: vec![0.2, 0.5, 0.8],
            n: if self.quick { 16 } else { 64 },
            steps: if self.quick { 50 } else { 200 },
            seed: self.seed,
            out: None,
            data_dir: self.data_dir.clone(),
        }
    }

    /// The seed presets picked by `--only`, in SPEC order.
    pub fn presets(&self) -> Result<Vec<&'static str>> {
        for token in &self.only {
            let known =
                models::family::find(token).is_some() || SEED_PRESETS.contains(&token.as_str());
            if !known {
                crate::usage_bail!(
                    "--only {token}: not a model family ({}) or a seed preset ({})",
                    models::family::names().join(", "),
                    SEED_PRESETS.join(", ")
                );
            }
        }
        Ok(SEED_PRESETS
            .iter()
            .copied()
            .filter(|name| {
                let family = presets::find(name).map_or("", |p| p.family);
                self.only.is_empty() || self.only.iter().any(|t| t == name || t == family)
            })
            .collect())
    }
}

/// One preset's part of a reproduction.
#[derive(Debug, Clone)]
pub struct Step {
    pub preset: &'static str,
    pub run: PathBuf,
    pub done: Outcome,
}

/// What a reproduction made.
#[derive(Debug, Clone)]
pub struct Reproduction {
    pub steps: Vec<Step>,
    pub compare_md: PathBuf,
    pub report: PathBuf,
    pub seconds: f64,
}

/// Whether the run at `run` has exactly the configuration this reproduction gives `preset`.
fn matches_plan(opts: &ReproduceOptions, preset: &str, run: &Path) -> Result<bool> {
    let planned = models::planned_config(&opts.request(preset))?;
    let path = run.join("config.toml");
    let existing = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(existing == planned)
}

/// Runs the reproduction; `say` gets one line per thing done.
pub fn reproduce(opts: &ReproduceOptions, say: &mut dyn FnMut(&str)) -> Result<Reproduction> {
    let picked = opts.presets()?;
    check_out_dir(&opts.out)?;
    let created = !opts.out.exists();
    std::fs::create_dir_all(&opts.out).map_err(|e| {
        crate::error::usage(anyhow::anyhow!(
            "cannot create {} ({e}); choose another --out",
            opts.out.display()
        ))
    })?;
    let marker = opts.out.join(MARKER);
    let wrote_marker = !marker.is_file();
    if wrote_marker {
        crate::atomic::write_atomic(&marker, MARKER_TEXT.as_bytes())?;
    }
    let result = reproduce_into(opts, &picked, say);
    // A reproduction that failed before making anything leaves the directory as it found it.
    if result.is_err() && wrote_marker && only_marker(&opts.out) {
        let _ = std::fs::remove_file(&marker);
        if created {
            let _ = std::fs::remove_dir(&opts.out);
        }
    }
    result
}

/// The file that marks a directory as a genlab reproduction.
pub const MARKER: &str = "reproduction.toml";

/// What the marker file says; a file of that name saying anything else is not genlab's.
const MARKER_TEXT: &str =
    "# This directory is a genlab reproduction: `genlab reproduce --out` reuses it.\n";

fn only_marker(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().all(|e| {
            e.file_name() == MARKER
                || e.file_name()
                    .to_string_lossy()
                    .starts_with(crate::atomic::TEMP_PREFIX)
        })
    })
}

/// Refuses an output directory that holds anything but a genlab
/// reproduction, so that no file a user made is overwritten or mixed in.
fn check_out_dir(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        crate::usage_bail!(
            "--out {} is a file, not a directory; choose another --out",
            out.display()
        );
    }
    let marker = out.join(MARKER);
    if marker.exists() {
        if std::fs::read_to_string(&marker).is_ok_and(|t| t == MARKER_TEXT) {
            return Ok(());
        }
        crate::usage_bail!(
            "{} is not the marker genlab writes, so {} is not a genlab reproduction; choose another --out",
            marker.display(),
            out.display()
        );
    }
    let mut foreign: Vec<String> = std::fs::read_dir(out)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", out.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !written_by_reproduce(out, name))
        .collect();
    if !foreign.is_empty() {
        foreign.sort_unstable();
        let shown = foreign
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        crate::usage_bail!(
            "{} exists and is not a genlab reproduction (it holds {shown}{}); choose another --out (genlab never writes into a directory it did not create)",
            out.display(),
            if foreign.len() > 3 { ", ..." } else { "" }
        );
    }
    Ok(())
}

/// Whether the entry `name` of `out` is provably what a reproduction made
/// before the marker existed: a seed preset's run directory whose
/// config.toml names that preset, compare.md or compare.csv beginning with
/// compare's own header, or a report genlab wrote. A name alone proves nothing.
fn written_by_reproduce(out: &Path, name: &str) -> bool {
    let path = out.join(name);
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    match name {
        "compare.md" | "compare.csv" => {
            path.is_file()
                && read(&path).is_some_and(|t| {
                    crate::eval::compare::written_by_compare(&t, name == "compare.csv")
                })
        }
        "report" => path.is_dir() && crate::report::is_report(&path),
        _ if SEED_PRESETS.contains(&name) => read(&path.join("config.toml"))
            .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
            .is_some_and(|c| {
                let family = presets::find(name).map(|p| p.family);
                c.get("preset").and_then(|v| v.as_str()) == Some(name)
                    && c.get("family").and_then(|v| v.as_str()) == family
            }),
        _ => false,
    }
}

fn reproduce_into(
    opts: &ReproduceOptions,
    picked: &[&'static str],
    say: &mut dyn FnMut(&str),
) -> Result<Reproduction> {
    let start = Instant::now();
    // Check every finished or half-finished run before spending any time.
    let mut plans = Vec::new();
    for &preset in picked {
        let request = opts.request(preset);
        let run = opts.out.join(preset);
        if run.join("config.toml").is_file() && !matches_plan(opts, preset, &run)? {
            crate::usage_bail!(
                "{} was made with other settings than this `genlab reproduce{}` (its config.toml differs); \
                     choose another --out or remove that run",
                run.display(),
                if opts.quick { " --quick" } else { "" }
            );
        }
        plans.push((preset, request, run));
    }
    let total = plans.len();
    let mut steps = Vec::new();
    for (k, (preset, request, run)) in plans.into_iter().enumerate() {
        let tag = format!("[{}/{total}] {preset}", k + 1);
        let done = finish_run(&request, &run, &opts.steps(), &tag, say)?;
        steps.push(Step { preset, run, done });
    }

    // The report shows every finished seed run in OUT made with these
    // settings, not only those picked by --only this time.
    let mut reported = Vec::new();
    for &preset in SEED_PRESETS {
        let run = opts.out.join(preset);
        let picked_now = steps.iter().any(|s| s.preset == preset);
        if picked_now
            || (run.join("weights.safetensors").is_file() && matches_plan(opts, preset, &run)?)
        {
            reported.push(run);
        }
    }
    let runs: Vec<&Path> = reported.iter().map(PathBuf::as_path).collect();
    let table = crate::eval::compare::compare(&runs)?;
    let compare_md = opts.out.join("compare.md");
    crate::atomic::write_atomic(&compare_md, table.to_markdown().as_bytes())?;
    crate::atomic::write_atomic(&opts.out.join("compare.csv"), table.to_csv().as_bytes())?;
    let title = if opts.quick {
        "genlab reproduce --quick: the seed presets, one epoch each on a subset"
    } else {
        "genlab reproduce: the seed presets of SPEC.md"
    };
    let report = crate::report::write_report(&runs, &opts.out.join("report"), title)?;
    Ok(Reproduction {
        steps,
        compare_md,
        report: report.index,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(only: &[&str]) -> ReproduceOptions {
        ReproduceOptions {
            quick: true,
            only: only.iter().map(|s| s.to_string()).collect(),
            out: PathBuf::from("x"),
            seed: 0,
            dataset: None,
            data_dir: None,
        }
    }

    #[test]
    fn only_picks_families_and_presets_in_spec_order() {
        assert_eq!(opts(&[]).presets().unwrap(), SEED_PRESETS);
        assert_eq!(
            opts(&["gan", "rbm"]).presets().unwrap(),
            ["rbm-20", "rbm-100", "rbm-500", "gan"]
        );
        assert_eq!(
            opts(&["conv-vae", "vae-2"]).presets().unwrap(),
            ["vae-2", "conv-vae"]
        );
        let err = opts(&["vea"]).presets().unwrap_err().to_string();
        assert!(err.contains("--only vea"), "{err}");
        assert!(crate::error::is_usage(
            &opts(&["rbm-500-pcd"]).presets().unwrap_err()
        ));
    }

    #[test]
    fn every_seed_preset_exists() {
        for p in SEED_PRESETS {
            assert!(presets::find(p).is_some(), "{p}");
        }
    }
}
