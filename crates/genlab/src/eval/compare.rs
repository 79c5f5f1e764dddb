//! `genlab compare RUN...`: one table across runs of any families, from each
//! run's config.toml, metrics.jsonl and eval.json, with the real-data
//! reference row of the sample metrics.

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use crate::models::family::{self, ModelFamily};
use crate::run::RunDir;

/// A table: a header and rows of cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Lines said below the table (missing evaluations and the like).
    pub notes: Vec<String>,
}

impl Table {
    pub fn to_markdown(&self) -> String {
        let mut s = format!("| {} |\n", self.header.join(" | "));
        s += &format!("|{}\n", "---|".repeat(self.header.len()));
        for r in &self.rows {
            s += &format!("| {} |\n", r.join(" | "));
        }
        for n in &self.notes {
            s += &format!("\n{n}\n");
        }
        s
    }

    pub fn to_csv(&self) -> String {
        let quote = |c: &str| {
            if c.contains([',', '"', '\n']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.to_string()
            }
        };
        let mut s = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            s += &r.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",");
            s.push('\n');
        }
        s
    }
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn quality_cells(q: &Value) -> Vec<String> {
    vec![
        num(&q["fid"], 2),
        if q["kid"].is_number() {
            format!("{} +- {}", num(&q["kid"], 4), num(&q["kid_std"], 4))
        } else {
            "-".into()
        },
        if q["inception_score"].is_number() {
            format!(
                "{} +- {}",
                num(&q["inception_score"], 2),
                num(&q["inception_score_std"], 2)
            )
        } else if q["fid"].is_number() {
            "n/a".into()
        } else {
            "-".into()
        },
        num(&q["precision"], 3),
        num(&q["recall"], 3),
        // Older records have no class count: their evaluators had ten.
        match q["classes_covered"].as_u64() {
            Some(c) => format!("{c}/{}", q["classes"].as_u64().unwrap_or(10)),
            None if q["fid"].is_number() => "n/a".into(),
            None => "-".into(),
        },
    ]
}

/// The last epoch's training figures, in the terms the SPEC states the seed's.
fn end_of_training(
    family: Option<&dyn ModelFamily>,
    last: Option<&serde_json::Map<String, Value>>,
) -> String {
    let (Some(family), Some(m)) = (family, last) else {
        return "-".into();
    };
    family
        .training_figures()
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f.short,
                num(m.get(f.key).unwrap_or(&Value::Null), f.digits)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a run directory says of itself: its configuration, its metrics
/// rows and its eval.json (null when it has none).
struct RunRecord {
    config: toml::Value,
    rows: Vec<serde_json::Map<String, Value>>,
    eval: Option<Value>,
}

impl RunRecord {
    fn load(root: &Path) -> Result<RunRecord> {
        let run = RunDir::open(root).map_err(crate::error::usage)?;
        let config: toml::Value = toml::from_str(&std::fs::read_to_string(run.config_path())?)?;
        let rows = run.metrics().read()?;
        let eval_path = run.root.join("eval.json");
        let eval = if eval_path.is_file() {
            Some(serde_json::from_str(&std::fs::read_to_string(&eval_path)?)?)
        } else {
            None
        };
        Ok(RunRecord { config, rows, eval })
    }

    fn family(&self) -> &str {
        self.config
            .get("family")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
    }

    fn training_seconds(&self) -> f64 {
        self.rows.iter().filter_map(|r| r["seconds"].as_f64()).sum()
    }

    fn median_rate(&self) -> Option<f64> {
        let mut rates: Vec<f64> = self
            .rows
            .iter()
            .filter_map(|r| r["samples_per_second"].as_f64())
            .collect();
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied()
    }
}

/// A run's figures as numbers (name, value), in the order the comparison
/// table shows them: what sweeps average over seeds.
pub fn run_figures(root: &Path) -> Result<Vec<(&'static str, f64)>> {
    let record = RunRecord::load(root)?;
    let mut out = vec![("training s", record.training_seconds())];
    if let Some(r) = record.median_rate() {
        out.push(("samples/s", r));
    }
    let last = record.rows.last();
    let figures = family::find(record.family()).map_or(&[][..], |f| f.training_figures());
    for f in figures {
        if let Some(v) = last.and_then(|m| m.get(f.key)).and_then(Value::as_f64) {
            out.push((f.name, v));
        }
    }
    let eval = record.eval.unwrap_or(Value::Null);
    let q = &eval["sample_quality"]["model"];
    let evaluated = [
        (
            "test log-likelihood",
            &eval["likelihood"]["test_log_likelihood"],
        ),
        ("ELBO", &eval["likelihood"]["elbo"]),
        ("test loss", &eval["loss"]["test_loss"]),
        ("FID", &q["fid"]),
        ("KID", &q["kid"]),
        ("IS", &q["inception_score"]),
        ("precision", &q["precision"]),
        ("recall", &q["recall"]),
        ("classes >= 5%", &q["classes_covered"]),
    ];
    for (name, v) in evaluated {
        if let Some(x) = v.as_f64() {
            out.push((name, x));
        }
    }
    Ok(out)
}

/// The figure SPEC.md publishes for the preset, where the run's model
/// settings are the preset's (a sweep's `model.latent = 16` on vae-2 is not
/// the seed's vae-2); its epochs may differ.
fn seed_figure(family: &str, preset: &str, config: &toml::Value) -> String {
    let Some(figure) = crate::presets::find(preset).and_then(|p| p.seed_figure) else {
        return "-".into();
    };
    let planned = crate::models::planned_config(&crate::models::TrainRequest {
        family: family.to_string(),
        preset: Some(preset.to_string()),
        ..Default::default()
    })
    .ok()
    .and_then(|text| toml::from_str::<toml::Value>(&text).ok());
    let model = |c: &toml::Value| {
        let mut m = c.get("model").cloned();
        if let Some(toml::Value::Table(t)) = &mut m {
            t.remove("epochs");
        }
        m
    };
    // The SPEC's figures are MNIST's: another dataset is not comparable.
    let dataset = |c: &toml::Value| {
        c.get("data")
            .and_then(|d| d.get("dataset"))
            .and_then(|v| v.as_str())
            .unwrap_or("mnist")
            .to_string()
    };
    match planned {
        Some(_) if dataset(config) != "mnist" => "- (other data)".into(),
        Some(p) if model(&p) == model(config) => figure.to_string(),
        _ => "- (other settings)".into(),
    }
}

/// The columns of [`compare`]'s table.
pub const COLUMNS: [&str; 17] = [
    "run",
    "model",
    "preset",
    "epochs",
    "training s",
    "samples/s",
    "end of training",
    "seed's figure (SPEC)",
    "test log-likelihood (nats)",
    "ELBO",
    "test loss",
    "FID",
    "KID",
    "IS",
    "precision",
    "recall",
    "classes >= 5%",
];

/// Whether `text` begins as [`compare`]'s table written by
/// [`Table::to_markdown`] (`csv: false`) or [`Table::to_csv`] (`csv: true`).
pub fn written_by_compare(text: &str, csv: bool) -> bool {
    let table = Table {
        header: COLUMNS.map(String::from).to_vec(),
        ..Table::default()
    };
    let header = if csv {
        table.to_csv()
    } else {
        table.to_markdown()
    };
    header
        .lines()
        .next()
        .is_some_and(|h| text.lines().next() == Some(h))
}

/// The comparison table of `runs`.
pub fn compare(runs: &[&Path]) -> Result<Table> {
    if runs.is_empty() {
        crate::usage_bail!("genlab compare: give one or more run directories");
    }
    let mut table = Table {
        header: COLUMNS.map(String::from).to_vec(),
        ..Table::default()
    };
    let mut reference: Option<(u64, Value)> = None;
    for root in runs {
        let record = RunRecord::load(root)?;
        let (seconds, rate) = (record.training_seconds(), record.median_rate());
        let family = record.family();
        let (config, rows) = (&record.config, &record.rows);
        let eval = record.eval.clone().unwrap_or_else(|| {
            table.notes.push(format!(
                "{}: no eval.json; run `genlab eval {}` for its metrics",
                root.display(),
                root.display()
            ));
            Value::Null
        });
        let found = family::find(family);
        let model = found.map_or(family.to_string(), |f| f.label(config));
        let ll = &eval["likelihood"]["test_log_likelihood"];
        let preset = config
            .get("preset")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string();
        let mut row = vec![
            root.display().to_string(),
            model,
            preset.clone(),
            rows.len().to_string(),
            format!("{seconds:.0}"),
            rate.map(|r| format!("{r:.0}"))
                .unwrap_or_else(|| "-".into()),
            end_of_training(found, rows.last()),
            seed_figure(family, &preset, config),
            num(ll, 2),
            num(&eval["likelihood"]["elbo"], 2),
            num(&eval["loss"]["test_loss"], 3),
        ];
        let q = &eval["sample_quality"];
        row.extend(quality_cells(&q["model"]));
        if reference.is_none() && q["reference_real_train_10k"].is_object() {
            // Files written before the count was recorded used 10,000 images.
            let images = q["reference_images"].as_u64().unwrap_or(10_000);
            reference = Some((images, q["reference_real_train_10k"].clone()));
        }
        table.rows.push(row);
    }
    if let Some((images, r)) = reference {
        let mut row = vec![
            format!("real training images ({})", thousands(images)),
            "reference".into(),
        ];
        row.resize(
            table.header.len() - quality_cells(&Value::Null).len(),
            "-".into(),
        );
        row.extend(quality_cells(&r));
        table.rows.push(row);
    }
    Ok(table)
}

/// `n` with commas between groups of three digits, as the tables print counts.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn counts_are_grouped_by_three_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1617), "1,617");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
