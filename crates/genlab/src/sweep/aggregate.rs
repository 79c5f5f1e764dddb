//! A sweep's results over seeds: its runs grouped by preset and swept
//! values (runs of a group differ only in their seed), each figure as mean
//! and sample standard deviation, and plots of each figure against each
//! swept value. `genlab compare` and `genlab report` use it for any sweep
//! directory they are given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::manifest::{self, Manifest};
use crate::eval::compare::{Table, run_figures};
use crate::viz::plot::{Series, error_plot};

/// Mean and sample standard deviation of a figure over a group's runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub mean: f64,
    /// 0 for a single run.
    pub sd: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Stat {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        let sd = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Stat { mean, sd, n }
    }
}

/// Digits a figure is shown with.
fn digits(figure: &str) -> usize {
    match figure {
        "samples/s" | "classes >= 5%" => 0,
        "training s" => 1,
        "KID" => 4,
        "precision" | "recall" | "recon error" => 3,
        _ => 2,
    }
}

/// (swept value, mean, sd) of one point of a plot.
type MeanPoint = (f64, f64, f64);

/// One group of runs.
#[derive(Debug, Clone)]
pub struct Group {
    /// Preset and swept values, as the manifest says it.
    pub label: String,
    pub preset: String,
    pub values: BTreeMap<String, toml::Value>,
    /// The group's runs that have trained, and their seeds.
    pub runs: Vec<PathBuf>,
    pub seeds: Vec<u64>,
    /// Every figure that at least one of its runs has.
    pub figures: Vec<(String, Stat)>,
}

/// A sweep's aggregate.
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub dir: PathBuf,
    pub swept: Vec<String>,
    pub groups: Vec<Group>,
    /// Every run that has trained, in manifest order.
    pub runs: Vec<PathBuf>,
    /// Runs of the manifest not trained yet.
    pub unfinished: usize,
}

/// Whether `dir` is a sweep directory.
pub fn is_sweep(dir: &Path) -> bool {
    dir.join(manifest::FILE).is_file()
}

/// Reads the sweep directory `dir` and aggregates its trained runs.
pub fn load(dir: &Path) -> Result<Aggregate> {
    let manifest = Manifest::read(dir)?;
    let mut groups: Vec<Group> = Vec::new();
    let mut per_group: Vec<Vec<Vec<(&'static str, f64)>>> = Vec::new();
    let mut runs = Vec::new();
    let mut unfinished = 0;
    for entry in &manifest.run {
        let run = dir.join(super::RUNS_DIR).join(&entry.name);
        if !run.join("weights.safetensors").is_file() {
            unfinished += 1;
            continue;
        }
        let figures = run_figures(&run)?;
        let g = match groups.iter().position(|g| g.label == entry.group) {
            Some(g) => g,
            None => {
                groups.push(Group {
                    label: entry.group.clone(),
                    preset: entry.preset.clone(),
                    values: entry.overrides.clone(),
                    runs: Vec::new(),
                    seeds: Vec::new(),
                    figures: Vec::new(),
                });
                per_group.push(Vec::new());
                groups.len() - 1
            }
        };
        groups[g].runs.push(run.clone());
        groups[g].seeds.push(entry.seed);
        per_group[g].push(figures);
        runs.push(run);
    }
    for (group, rows) in groups.iter_mut().zip(&per_group) {
        let mut names: Vec<&'static str> = Vec::new();
        for row in rows {
            for (name, _) in row {
                if !names.contains(name) {
                    names.push(name);
                }
            }
        }
        for name in names {
            let values: Vec<f64> = rows
                .iter()
                .filter_map(|row| row.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
                .collect();
            group.figures.push((name.to_string(), Stat::of(&values)));
        }
    }
    Ok(Aggregate {
        dir: dir.to_path_buf(),
        swept: manifest.swept,
        groups,
        runs,
        unfinished,
    })
}

/// Splits `paths` into plain runs and sweep directories, which stand for
/// their trained runs; returns every run and the sweeps' aggregates.
pub fn expand(paths: &[&Path]) -> Result<(Vec<PathBuf>, Vec<Aggregate>)> {
    let mut runs = Vec::new();
    let mut sweeps = Vec::new();
    for p in paths {
        if is_sweep(p) {
            let a = load(p)?;
            if a.runs.is_empty() {
                crate::usage_bail!(
                    "{}: no run of this sweep has finished training yet; see `genlab sweep status {}`",
                    p.display(),
                    p.display()
                );
            }
            runs.extend(a.runs.iter().cloned());
            sweeps.push(a);
        } else {
            runs.push(p.to_path_buf());
        }
    }
    Ok((runs, sweeps))
}

impl Aggregate {
    /// The figures any group has, in the order the first group that has each shows it.
    fn figure_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for g in &self.groups {
            for (name, _) in &g.figures {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        names
    }

    /// "preset" and the swept keys, then `last`.
    fn key_header(&self, last: &str) -> Vec<String> {
        let mut header = vec!["preset".to_string()];
        header.extend(self.swept.iter().cloned());
        header.push(last.into());
        header
    }

    /// A group's preset and swept values (`missing` where it has none).
    fn key_cells(&self, g: &Group, missing: &str) -> Vec<String> {
        let mut row = vec![g.preset.clone()];
        for key in &self.swept {
            row.push(g.values.get(key).map_or(missing.into(), |v| v.to_string()));
        }
        row
    }

    /// One row per group: preset, swept values, seeds, and every figure as mean +- sd.
    pub fn table(&self) -> Table {
        let figures = self.figure_names();
        let mut header = self.key_header("seeds");
        header.extend(figures.iter().cloned());
        let mut table = Table {
            header,
            ..Table::default()
        };
        for g in &self.groups {
            let mut row = self.key_cells(g, "-");
            row.push(
                g.seeds
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
            for f in &figures {
                row.push(match g.figures.iter().find(|(n, _)| n == f) {
                    Some((_, s)) => {
                        let d = digits(f);
                        if s.n > 1 {
                            format!("{:.d$} +- {:.d$}", s.mean, s.sd)
                        } else {
                            format!("{:.d$}", s.mean)
                        }
                    }
                    None => "-".into(),
                });
            }
            table.rows.push(row);
        }
        table.notes.push(format!(
            "{}: mean +- sample standard deviation over each group's seeds{}.",
            self.dir.display(),
            if self.unfinished > 0 {
                format!("; {} runs not trained yet are left out", self.unfinished)
            } else {
                String::new()
            }
        ));
        table
    }

    /// The groups' figures with separate mean and sd columns (for spreadsheets).
    pub fn to_csv(&self) -> String {
        let figures = self.figure_names();
        let mut header = self.key_header("runs");
        for f in &figures {
            header.push(format!("{f} mean"));
            header.push(format!("{f} sd"));
        }
        let mut table = Table {
            header,
            ..Table::default()
        };
        for g in &self.groups {
            let mut row = self.key_cells(g, "");
            row.push(g.runs.len().to_string());
            for f in &figures {
                match g.figures.iter().find(|(n, _)| n == f) {
                    Some((_, s)) => {
                        row.push(s.mean.to_string());
                        row.push(s.sd.to_string());
                    }
                    None => row.extend([String::new(), String::new()]),
                }
            }
            table.rows.push(row);
        }
        table.to_csv()
    }

    /// Draws each figure against each numeric swept key (one line per
    /// preset and other swept values, error bars one sd) into `dir`;
    /// returns (file stem, caption) of every plot.
    pub fn plots(&self, dir: &Path) -> Result<Vec<(String, String)>> {
        let mut made = Vec::new();
        for key in &self.swept {
            let numeric = self.groups.iter().all(|g| {
                g.values
                    .get(key)
                    .is_some_and(|v| v.as_float().or(v.as_integer().map(|i| i as f64)).is_some())
            });
            if !numeric {
                continue;
            }
            let x_of = |g: &Group| {
                let v = &g.values[key];
                v.as_float()
                    .unwrap_or_else(|| v.as_integer().unwrap_or(0) as f64)
            };
            let mut xs: Vec<f64> = self.groups.iter().map(x_of).collect();
            xs.sort_by(f64::total_cmp);
            xs.dedup();
            if xs.len() < 2 {
                continue;
            }
            for figure in self.figure_names() {
                // A line per preset and values of the other swept keys.
                let mut lines: Vec<(String, Vec<MeanPoint>)> = Vec::new();
                for g in &self.groups {
                    let Some((_, s)) = g.figures.iter().find(|(n, _)| *n == figure) else {
                        continue;
                    };
                    let mut name = g.preset.clone();
                    for (k, v) in &g.values {
                        if k != key {
                            name += &format!(", {k} = {v}");
                        }
                    }
                    match lines.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, points)) => points.push((x_of(g), s.mean, s.sd)),
                        None => lines.push((name, vec![(x_of(g), s.mean, s.sd)])),
                    }
                }
                if lines.iter().all(|(_, p)| p.len() < 2) {
                    continue;
                }
                let mut series = Vec::new();
                let mut errors = Vec::new();
                for (name, mut points) in lines {
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    errors.push(points.iter().map(|p| p.2).collect());
                    series.push(Series {
                        name,
                        points: points.iter().map(|p| (p.0, p.1)).collect(),
                    });
                }
                let slug: String = format!("{key}-{figure}")
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                error_plot(
                    &dir.join(&slug),
                    &format!("{figure} against {key}"),
                    key,
                    &figure,
                    &series,
                    &errors,
                )?;
                made.push((
                    slug,
                    format!("{figure} against {key}: mean over seeds, bars one standard deviation"),
                ));
            }
        }
        Ok(made)
    }
}

/// What `genlab compare` writes for a list of runs and sweep directories.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Each sweep's groups (mean +- sd), then the individual runs.
    pub markdown: String,
    /// The individual runs.
    pub csv: String,
    /// The groups of every sweep, with mean and sd columns; None without sweeps.
    pub groups_csv: Option<String>,
}

/// The comparison of `paths`, each a run or a sweep directory.
pub fn comparison(paths: &[&Path]) -> Result<Comparison> {
    let (runs, sweeps) = expand(paths)?;
    let refs: Vec<&Path> = runs.iter().map(PathBuf::as_path).collect();
    let table = crate::eval::compare::compare(&refs)?;
    if sweeps.is_empty() {
        return Ok(Comparison {
            markdown: table.to_markdown(),
            csv: table.to_csv(),
            groups_csv: None,
        });
    }
    let mut markdown = String::new();
    let mut groups_csv = String::new();
    for a in &sweeps {
        markdown += &format!("## Sweep {}: groups over seeds\n\n", a.dir.display());
        markdown += &a.table().to_markdown();
        markdown += "\n";
        groups_csv += &a.to_csv();
    }
    markdown += "## Individual runs\n\n";
    markdown += &table.to_markdown();
    Ok(Comparison {
        markdown,
        csv: table.to_csv(),
        groups_csv: Some(groups_csv),
    })
}

/// Writes `compare.md`, `compare.csv` and (for sweeps) `groups.csv` into `out`.
pub fn write_comparison(c: &Comparison, out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = vec![out.join("compare.md"), out.join("compare.csv")];
    crate::atomic::write_atomic(&written[0], c.markdown.as_bytes())?;
    crate::atomic::write_atomic(&written[1], c.csv.as_bytes())?;
    if let Some(g) = &c.groups_csv {
        written.push(out.join("groups.csv"));
        crate::atomic::write_atomic(&written[2], g.as_bytes())?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_the_sample_mean_and_standard_deviation() {
        let s = Stat::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.n, 4);
        assert!((s.mean - 2.5).abs() < 1e-12);
        // sqrt(((1.5^2 + 0.5^2) * 2) / 3)
        assert!((s.sd - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(Stat::of(&[7.0]).sd, 0.0);
    }
}
