//! The Slurm executor: one job array for a sweep's unfinished runs, each
//! array task running `genlab sweep SWEEP/sweep.toml --out SWEEP --task
//! $SLURM_ARRAY_TASK_ID`. genlab writes the sbatch script and, with
//! `--submit`, hands it to `sbatch`; Slurm does the scheduling.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::Sweep;
use super::manifest::Manifest;

/// The `[slurm]` section of a sweep file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSettings {
    pub partition: Option<String>,
    /// Wall-clock limit of each task, in Slurm's forms (`30`, `2:00:00`, `1-12:00:00`).
    pub time: Option<String>,
    /// CPUs of each task; genlab uses that many threads.
    pub cpus_per_task: Option<u32>,
    /// Memory of each task (`4G`).
    pub mem: Option<String>,
    /// Generic resources of each task (`gpu:1` for GPU runs).
    pub gres: Option<String>,
    pub account: Option<String>,
    /// At most this many tasks at once (`--array=...%limit`).
    pub limit: Option<usize>,
    /// Further `#SBATCH` options, one per item (`--qos=short`).
    #[serde(default)]
    pub extra: Vec<String>,
    /// The genlab program on the cluster's nodes (default: this one).
    pub genlab: Option<PathBuf>,
}

/// Whether `time` is one of Slurm's time forms.
fn is_slurm_time(time: &str) -> bool {
    let (days, rest) = match time.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, time),
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 4 && s.chars().all(|c| c.is_ascii_digit());
    if days.is_some_and(|d| !digits(d)) {
        return false;
    }
    let parts: Vec<&str> = rest.split(':').collect();
    parts.len() <= 3 && parts.iter().all(|p| digits(p))
}

impl SlurmSettings {
    pub fn check(&self) -> Result<()> {
        if let Some(t) = &self.time
            && !is_slurm_time(t)
        {
            anyhow::bail!(
                "slurm.time = \"{t}\": not a Slurm time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)"
            );
        }
        if self.cpus_per_task == Some(0) {
            anyhow::bail!("slurm.cpus_per_task = 0: a task needs at least one CPU");
        }
        if self.limit == Some(0) {
            anyhow::bail!("slurm.limit = 0: let at least one task run at a time");
        }
        let fields = [
            ("partition", &self.partition),
            ("time", &self.time),
            ("mem", &self.mem),
            ("gres", &self.gres),
            ("account", &self.account),
        ];
        for (key, value) in fields {
            if let Some(v) = value
                && (v.is_empty() || v.contains(char::is_whitespace))
            {
                anyhow::bail!("slurm.{key} = \"{v}\": give one word without spaces");
            }
        }
        for line in &self.extra {
            if line.contains('\n') || !line.trim_start().starts_with('-') {
                anyhow::bail!(
                    "slurm.extra: \"{line}\" is not one sbatch option (write it as \"--qos=short\")"
                );
            }
        }
        Ok(())
    }
}

/// The path of the sweep's sbatch script.
pub fn script_path(sweep: &Sweep) -> PathBuf {
    sweep.dir.join("sweep.sbatch")
}

/// An absolute form of `path` (the script runs on other nodes and directories).
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// Quotes a word for bash.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// `1,3-5,7`: Slurm's list of array indices.
fn index_list(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut k = 0;
    while k < indices.len() {
        let mut j = k;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        parts.push(if j == k {
            indices[k].to_string()
        } else {
            format!("{}-{}", indices[k], indices[j])
        });
        k = j + 1;
    }
    parts.join(",")
}

/// Writes the sbatch script for the runs `indices` of `sweep`; `exe` is
/// the genlab program the tasks run unless the sweep file names another.
pub fn write_script(sweep: &Sweep, indices: &[usize], exe: &Path) -> Result<PathBuf> {
    let s = &sweep.spec.slurm;
    let dir = absolute(&sweep.dir)?;
    let exe = match &s.genlab {
        Some(p) => p.clone(),
        None => absolute(exe)?,
    };
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!(
            "# genlab sweep {}: {} runs, written by genlab {}",
            sweep.dir.display(),
            indices.len(),
            env!("CARGO_PKG_VERSION")
        ),
        format!("#SBATCH --job-name=genlab-{}", sweep.manifest().sweep),
        format!(
            "#SBATCH --array={}{}",
            index_list(indices),
            s.limit.map(|l| format!("%{l}")).unwrap_or_default()
        ),
        format!(
            "#SBATCH --output={}/%x-%A_%a.out",
            dir.join(super::LOGS_DIR).display()
        ),
        format!("#SBATCH --chdir={}", dir.display()),
        "#SBATCH --ntasks=1".to_string(),
    ];
    let options = [
        ("partition", s.partition.clone()),
        ("time", s.time.clone()),
        ("cpus-per-task", s.cpus_per_task.map(|c| c.to_string())),
        ("mem", s.mem.clone()),
        ("gres", s.gres.clone()),
        ("account", s.account.clone()),
    ];
    for (key, value) in options {
        if let Some(v) = value {
            lines.push(format!("#SBATCH --{key}={v}"));
        }
    }
    for extra in &s.extra {
        lines.push(format!("#SBATCH {}", extra.trim()));
    }
    lines.push("set -euo pipefail".into());
    // A relative GENLAB_DATA would be read from the task's directory: pass it resolved.
    if let Some(data) = crate::data::locate::env_dir("GENLAB_DATA") {
        lines.push(format!(
            "export GENLAB_DATA={}",
            quote(&data.display().to_string())
        ));
    }
    lines.push("# As many threads as Slurm gave this task CPUs.".into());
    lines.push("export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"".into());
    let mut command = format!(
        "exec {} sweep {} --out {} --task \"$SLURM_ARRAY_TASK_ID\"",
        quote(&exe.display().to_string()),
        quote(&dir.join(super::SWEEP_FILE).display().to_string()),
        quote(&dir.display().to_string())
    );
    if let Some(d) = &sweep.data_dir {
        command += &format!(" --data-dir {}", quote(&absolute(d)?.display().to_string()));
    }
    lines.push(command);
    let path = script_path(sweep);
    let mut text = lines.join("\n");
    text.push('\n');
    crate::atomic::write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// Whether a program is on PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Submits `script` with sbatch and returns the job id.
pub fn submit(script: &Path) -> Result<String> {
    if !on_path("sbatch") {
        crate::usage_bail!(
            "--submit: sbatch is not on PATH (Slurm's client tools are needed); submit {} yourself on a machine that has them, or drop --submit",
            script.display()
        );
    }
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(script)
        .output()
        .context("cannot run sbatch")?;
    if !out.status.success() {
        anyhow::bail!(
            "sbatch refused {}: {}",
            script.display(),
            crate::config::one_line(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        anyhow::bail!("sbatch printed no job id (it printed \"{}\")", text.trim());
    }
    Ok(id)
}

/// `JOB_TASK|STATE` lines (squeue's and sacct's) as states by array index;
/// a later job's line wins, so a task submitted again shows its newest state.
fn parse_states(text: &str, states: &mut BTreeMap<usize, String>) {
    for line in text.lines() {
        let Some((id, state)) = line.split_once('|') else {
            continue;
        };
        if let Some((_, task)) = id.split_once('_')
            && let Ok(k) = task.parse::<usize>()
        {
            let state = state.split_whitespace().next().unwrap_or("").to_lowercase();
            states.insert(k, state);
        }
    }
}

/// Runs a Slurm client and returns its output, `None` if it is missing or fails.
fn slurm_query(program: &str, args: &[&str], jobs: &[String]) -> Option<String> {
    if jobs.is_empty() || !on_path(program) {
        return None;
    }
    let out = Command::new(program)
        .args(args)
        .arg(jobs.join(","))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The Slurm states of a sweep's array tasks still known to squeue (pending,
/// running), by array index; `None` where squeue is not reachable.
pub fn queue_states(manifest: &Manifest) -> Option<BTreeMap<usize, String>> {
    if manifest.slurm_jobs.is_empty() || !on_path("squeue") {
        return None;
    }
    let mut states = BTreeMap::new();
    // squeue fails on job ids it no longer knows: then none are queued.
    if let Some(text) = slurm_query(
        "squeue",
        &["-h", "-r", "-o", "%i|%T", "-j"],
        &manifest.slurm_jobs,
    ) {
        parse_states(&text, &mut states);
    }
    Some(states)
}

/// Every array task's state that Slurm knows: sacct's record (completed,
/// failed, timeout, cancelled) where the cluster keeps accounting, then what
/// squeue says of those still queued.
pub fn task_states(manifest: &Manifest) -> Option<BTreeMap<usize, String>> {
    let mut states = BTreeMap::new();
    let accounted = slurm_query(
        "sacct",
        &["-n", "-X", "-P", "-o", "JobID,State", "-j"],
        &manifest.slurm_jobs,
    );
    if let Some(text) = &accounted {
        parse_states(text, &mut states);
    }
    let queued = queue_states(manifest);
    if let Some(q) = &queued {
        states.extend(q.clone());
    }
    (accounted.is_some() || queued.is_some()).then_some(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_read_per_array_task_newest_job_last() {
        let mut states = BTreeMap::new();
        parse_states("7_0|COMPLETED\n7_1|FAILED\n7_[2-3]|PENDING\n", &mut states);
        parse_states("9_1|RUNNING\n9_2|CANCELLED by 0\n", &mut states);
        assert_eq!(states[&0], "completed");
        assert_eq!(states[&1], "running");
        assert_eq!(states[&2], "cancelled");
        assert!(
            !states.contains_key(&3),
            "a pending range names no one task"
        );
    }

    #[test]
    fn index_lists_use_ranges() {
        assert_eq!(index_list(&[0, 1, 2, 3]), "0-3");
        assert_eq!(index_list(&[1, 3, 4, 5, 9]), "1,3-5,9");
        assert_eq!(index_list(&[7]), "7");
    }

    #[test]
    fn slurm_times_are_checked() {
        for ok in ["30", "30:00", "2:00:00", "1-12", "1-12:00", "1-12:00:00"] {
            assert!(is_slurm_time(ok), "{ok}");
        }
        for bad in ["", "an hour", "1:2:3:4", "x-1", "1h"] {
            assert!(!is_slurm_time(bad), "{bad}");
        }
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
