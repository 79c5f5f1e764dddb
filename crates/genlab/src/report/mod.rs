//! `genlab report RUN...`: a static, self-contained HTML report of runs.
//!
//! The report is a directory: `index.html` (inline CSS, no script, no font,
//! nothing fetched from a network) and a copy of every picture and raw file
//! it shows under `runs/<name>/`, so it opens straight from the file system
//! and can be moved or mailed as a whole. The page is written as XHTML-style
//! HTML5 (every element closed) so that a strict XML parser can check it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::atomic::{TEMP_PREFIX, write_atomic};
use crate::eval::compare::{Table, compare};
use crate::models::family::{self, FigureSpec};
use crate::run::RunDir;

mod server;
mod style;
mod sweep;
pub use server::serve;
use style::{FAVICON, STYLE};

/// Marks a directory as a genlab report (the only kind `report` replaces).
const GENERATOR: &str = "genlab report";

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What [`write_report`] made.
#[derive(Debug, Clone)]
pub struct ReportSummary {
    pub index: PathBuf,
    pub runs: usize,
    pub images: usize,
}

/// One picture of a run (what its family lists for the report).
type Figure = FigureSpec;

/// A run as the report sees it.
struct RunInfo {
    root: PathBuf,
    slug: String,
    family: String,
    preset: String,
    config_text: String,
    config: toml::Value,
    metrics: Vec<serde_json::Map<String, Value>>,
    eval: Option<Value>,
    inpaint: Option<Value>,
}

impl RunInfo {
    fn load(root: &Path, slug: String) -> Result<Self> {
        let run = RunDir::open(root).map_err(crate::error::usage)?;
        let config_text = std::fs::read_to_string(run.config_path())
            .with_context(|| format!("cannot read {}", run.config_path().display()))?;
        let config: toml::Value =
            crate::config::parse_toml_text(&run.config_path().display().to_string(), &config_text)?;
        let text_of = |v: &toml::Value, key: &str| {
            v.get(key)
                .and_then(|x| x.as_str())
                .unwrap_or("?")
                .to_string()
        };
        let read_json = |name: &str| -> Result<Option<Value>> {
            let path = root.join(name);
            if !path.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let value = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not valid JSON; delete it and rerun the command that wrote it",
                    path.display()
                )
            })?;
            Ok(Some(value))
        };
        Ok(RunInfo {
            root: root.to_path_buf(),
            slug,
            family: text_of(&config, "family"),
            preset: text_of(&config, "preset"),
            metrics: run.metrics().read()?,
            eval: read_json("eval.json")?,
            inpaint: read_json("inpaint.json")?,
            config_text,
            config,
        })
    }

    fn model(&self, key: &str) -> Option<&toml::Value> {
        self.config.get("model").and_then(|m| m.get(key))
    }

    fn has_image(&self, file: &str) -> bool {
        self.root.join("images").join(file).is_file()
    }

    /// Title words: "MLP VAE, latent 2".
    fn kind(&self) -> String {
        family::find(&self.family).map_or(self.family.clone(), |f| f.title(&self.config))
    }

    /// Epochs whose per-epoch sample grid exists, thinned to at most `keep`.
    fn epoch_grids(&self, prefix: &str, keep: usize) -> Vec<(usize, String)> {
        let mut all: Vec<(usize, String)> = (1..=self.metrics.len().max(1))
            .map(|e| (e, format!("{prefix}{e:03}.png")))
            .filter(|(_, f)| self.has_image(f))
            .collect();
        if all.len() > keep {
            let last = all.len() - 1;
            let picks: BTreeSet<usize> = (0..keep).map(|i| i * last / (keep - 1)).collect();
            all = picks.into_iter().map(|i| all[i].clone()).collect();
        }
        all
    }

    /// The figures of this run, in reading order: its family's groups,
    /// with the samples over training after the first two.
    fn figures(&self) -> Vec<(String, Vec<Figure>)> {
        let Some(family) = family::find(&self.family) else {
            return Vec::new();
        };
        let mut groups = family.report_figures(&self.config);
        let over_epochs: Vec<Figure> = self
            .epoch_grids(family.epoch_grid_prefix(), 6)
            .into_iter()
            .map(|(e, f)| FigureSpec::grid(&f, format!("after epoch {e}")))
            .collect();
        groups.insert(
            groups.len().min(2),
            ("Samples over training".to_string(), over_epochs),
        );
        groups
            .into_iter()
            .map(|(title, figs)| {
                (
                    title,
                    figs.into_iter()
                        .filter(|f| self.has_image(&f.file))
                        .collect(),
                )
            })
            .collect()
    }
}

/// Turns run directory names into unique, URL-safe names.
fn slugs(runs: &[&Path]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    runs.iter()
        .map(|root| {
            let base: String = root
                .canonicalize()
                .unwrap_or_else(|_| root.to_path_buf())
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".to_string())
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            let base = base.trim_start_matches('.').to_string();
            let base = if base.is_empty() { "run".into() } else { base };
            let mut slug = base.clone();
            let mut n = 2;
            while !seen.insert(slug.clone()) {
                slug = format!("{base}-{n}");
                n += 1;
            }
            slug
        })
        .collect()
}

/// Writes the report of `runs` into the directory `out` (created, or
/// replaced if it holds an earlier genlab report) and returns what it wrote.
pub fn write_report(paths: &[&Path], out: &Path, title: &str) -> Result<ReportSummary> {
    if paths.is_empty() {
        crate::usage_bail!("genlab report: give one or more run directories");
    }
    check_replaceable(out)?;
    // A sweep directory stands for its runs, with its groups shown first.
    let (expanded, sweeps) = crate::sweep::aggregate::expand(paths)?;
    let runs: Vec<&Path> = expanded.iter().map(PathBuf::as_path).collect();
    let runs = runs.as_slice();
    let table = compare(runs)?;
    let infos = slugs(runs)
        .into_iter()
        .zip(runs)
        .map(|(slug, root)| RunInfo::load(root, slug))
        .collect::<Result<Vec<_>>>()?;

    // Build beside the destination, then swap, so a reader never sees half a report.
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    let _pending = crate::atomic::Pending::new(staging.path());
    let mut images = 0;
    let mut html = String::new();
    html += &head(title);
    html += &header(title, &infos, &sweeps);
    html += "<main>\n";
    for (k, a) in sweeps.iter().enumerate() {
        html += &sweep::section(a, k, staging.path())?;
    }
    html += &comparison(&table, &infos);
    for info in &infos {
        let dest = staging.path().join("runs").join(&info.slug);
        images += copy_run_files(info, &dest)?;
        html += &run_section(info);
    }
    html += "</main>\n";
    let _ = write!(
        html,
        "<footer><p>Written by genlab {} from the run directories listed above. Every picture is a copy \
         of the run's own file; the raw files (config.toml, metrics.jsonl, eval.json) sit beside them. \
         Metrics definitions: the README's evaluation section.</p></footer>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    // Its own icon, so that a browser asking for /favicon.ico is not left with an error.
    write_atomic(&staging.path().join("favicon.svg"), FAVICON.as_bytes())?;
    write_atomic(&staging.path().join("index.html"), html.as_bytes())?;
    let staged = staging.keep();
    swap_into_place(&staged, out)?;
    Ok(ReportSummary {
        index: out.join("index.html"),
        runs: infos.len(),
        images,
    })
}

/// Refuses to replace anything but an empty directory or an earlier report.
fn check_replaceable(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        crate::usage_bail!(
            "{} is a file; give --out a directory for the report",
            out.display()
        );
    }
    let empty = std::fs::read_dir(out)
        .with_context(|| format!("cannot read {}", out.display()))?
        .next()
        .is_none();
    if empty || is_report(out) {
        return Ok(());
    }
    crate::usage_bail!(
        "{} exists and is not a genlab report; choose another --out (genlab replaces only its own reports)",
        out.display()
    )
}

/// Whether `dir` holds a report written by genlab.
pub fn is_report(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("index.html"))
        .is_ok_and(|t| t.contains(&format!("<meta name=\"generator\" content=\"{GENERATOR}\"")))
}

fn swap_into_place(staged: &Path, out: &Path) -> Result<()> {
    let old = if out.exists() {
        let name = format!(
            "{TEMP_PREFIX}old-{}",
            out.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let old = out.with_file_name(name);
        if old.exists() {
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("cannot remove {}", old.display()))?;
        }
        std::fs::rename(out, &old)
            .with_context(|| format!("cannot move the old report {} aside", out.display()))?;
        Some(old)
    } else {
        None
    };
    std::fs::rename(staged, out)
        .with_context(|| format!("cannot move the new report into {}", out.display()))?;
    if let Some(old) = old {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove the old report {}", old.display()))?;
    }
    Ok(())
}

/// Copies what the report shows and links; returns the number of pictures.
fn copy_run_files(info: &RunInfo, dest: &Path) -> Result<usize> {
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    for raw in ["config.toml", "metrics.jsonl", "eval.json", "inpaint.json"] {
        let src = info.root.join(raw);
        if src.is_file() {
            copy(&src, &dest.join(raw))?;
        }
    }
    let mut files: BTreeSet<String> = info
        .figures()
        .into_iter()
        .flat_map(|(_, figs)| figs.into_iter().map(|f| f.file))
        .collect();
    files.extend(inpaint_rows(info).into_iter().map(|r| r.file));
    for file in &files {
        copy(&info.root.join("images").join(file), &dest.join(file))?;
    }
    Ok(files.len())
}

fn copy(src: &Path, dest: &Path) -> Result<()> {
    std::fs::copy(src, dest)
        .with_context(|| format!("cannot copy {} to {}", src.display(), dest.display()))?;
    Ok(())
}

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\" />\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\" />\n\
         <meta name=\"generator\" content=\"{GENERATOR}\" />\n<title>{}</title>\n\
         <link rel=\"icon\" type=\"image/svg+xml\" href=\"favicon.svg\" />\n\
         <style>{STYLE}</style>\n</head>\n<body>\n",
        escape(title)
    )
}

fn header(title: &str, infos: &[RunInfo], sweeps: &[crate::sweep::aggregate::Aggregate]) -> String {
    let now = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
        .unwrap_or_default();
    let datasets: BTreeSet<String> = infos
        .iter()
        .map(|i| {
            i.config
                .get("data")
                .and_then(|d| d.get("dataset"))
                .and_then(|d| d.as_str())
                .unwrap_or("mnist")
                .to_string()
        })
        .collect();
    let mut s = format!(
        "<header>\n<h1>{}</h1>\n<p class=\"meta\">{} run{} on {} &#183; written {} by genlab {}</p>\n<nav><ul>\n\
         {}<li><a href=\"#comparison\">Comparison</a></li>\n",
        escape(title),
        infos.len(),
        if infos.len() == 1 { "" } else { "s" },
        escape(&datasets.into_iter().collect::<Vec<_>>().join(", ")),
        now,
        env!("CARGO_PKG_VERSION"),
        (0..sweeps.len())
            .map(|k| format!("<li><a href=\"#sweep-{k}\">Sweep {}</a></li>\n", k + 1))
            .collect::<String>(),
    );
    for i in infos {
        let _ = writeln!(
            s,
            "<li><a href=\"#run-{}\">{}</a></li>",
            escape(&i.slug),
            escape(&i.slug)
        );
    }
    s += "</ul></nav>\n</header>\n";
    s
}

fn comparison(table: &Table, infos: &[RunInfo]) -> String {
    let mut s = String::from(
        "<section id=\"comparison\">\n<h2>Comparison</h2>\n\
         <p class=\"muted\">One row per run; every figure comes from the run's metrics.jsonl and eval.json. \
         \"seed's figure\" is what <code>SPEC.md</code> publishes for the preset's reference run after its full \
         training.</p>\n<h3>Training</h3>\n",
    );
    // Two tables that fit a laptop screen rather than one that scrolls far sideways.
    let split = table
        .header
        .iter()
        .position(|h| h.starts_with("test log-likelihood"))
        .unwrap_or(table.header.len());
    let training: Vec<usize> = (0..split).collect();
    let evaluation: Vec<usize> = std::iter::once(0)
        .chain(split..table.header.len())
        .collect();
    s += &table_html(table, infos, &training, false);
    s += "<h3>Evaluation</h3>\n<p class=\"muted\">Likelihoods in nats per test image (RBM: AIS estimate of log Z; \
          VAE: importance-sampled log p(x) and the ELBO). The sample metrics compare generated images with the test \
          set in the feature space of genlab's evaluator network; the last row measures real training images the \
          same way, the best a model can hope for.</p>\n";
    s += &table_html(table, infos, &evaluation, true);
    for note in &table.notes {
        let _ = writeln!(s, "<p class=\"muted\">{}</p>", escape(note));
    }
    s += "</section>\n";
    s
}

/// The columns `columns` of `table`; rows past the runs (the reference row) only if `reference`.
fn table_html(table: &Table, infos: &[RunInfo], columns: &[usize], reference: bool) -> String {
    let text_column = |c: usize| {
        let h = &table.header[c];
        (c < 4 || h.contains("training") || h.contains("figure")) && !h.ends_with(" s")
    };
    let mut s = String::from("<div class=\"scroll\"><table>\n<thead><tr>");
    for &c in columns {
        let class = if text_column(c) {
            " class=\"text\""
        } else {
            ""
        };
        let _ = write!(s, "<th{class}>{}</th>", escape(&table.header[c]));
    }
    s += "</tr></thead>\n<tbody>\n";
    for (k, row) in table.rows.iter().enumerate() {
        let is_reference = k >= infos.len();
        if is_reference && !reference {
            continue;
        }
        s += if is_reference {
            "<tr class=\"reference\">"
        } else {
            "<tr>"
        };
        for &c in columns {
            let class = if text_column(c) {
                " class=\"text\""
            } else {
                ""
            };
            if c == 0 && !is_reference {
                let slug = escape(&infos[k].slug);
                let _ = write!(s, "<td{class}><a href=\"#run-{slug}\">{slug}</a></td>");
            } else {
                // "+-" is how the Markdown table writes an uncertainty.
                let _ = write!(
                    s,
                    "<td{class}>{}</td>",
                    escape(&row[c]).replace(" +- ", " &#177; ")
                );
            }
        }
        s += "</tr>\n";
    }
    s += "</tbody>\n</table></div>\n";
    s
}

fn facts(info: &RunInfo) -> String {
    let get = |k: &str| {
        info.config.get(k).map(|v| match v.as_str() {
            Some(s) => s.to_string(),
            None => v.to_string(),
        })
    };
    let epochs_done = info.metrics.len();
    let configured = info
        .model("epochs")
        .map_or("?".to_string(), ToString::to_string);
    let seconds: f64 = info
        .metrics
        .iter()
        .filter_map(|r| r.get("seconds").and_then(Value::as_f64))
        .sum();
    let data = info.config.get("data");
    let limit = |k: &str| {
        data.and_then(|d| d.get(k))
            .and_then(|v| v.as_integer())
            .map(|n| format!("first {n}"))
            .unwrap_or_else(|| "all".into())
    };
    let mut rows = vec![
        ("model", info.kind()),
        (
            "preset",
            format!(
                "{} ({})",
                info.preset,
                get("description").unwrap_or_default()
            ),
        ),
        ("epochs", format!("{epochs_done} of {configured}")),
        ("training time", format!("{seconds:.0} s")),
        (
            "data",
            format!(
                "{}: {} training, {} test images",
                data.and_then(|d| d.get("dataset"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("mnist"),
                limit("train_limit"),
                limit("test_limit")
            ),
        ),
        ("seed", get("seed").unwrap_or_default()),
        ("device", get("device").unwrap_or_default()),
        ("run directory", info.root.display().to_string()),
    ];
    if let Some(figure) = crate::presets::find(&info.preset).and_then(|p| p.seed_figure) {
        rows.push(("seed's figure (SPEC)", figure.to_string()));
    }
    let mut s = String::from("<dl class=\"facts\">\n");
    for (k, v) in rows {
        let _ = writeln!(s, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(&v));
    }
    s += "</dl>\n";
    s
}

fn figure_html(slug: &str, f: &Figure) -> String {
    format!(
        "<figure{wide}><a href=\"runs/{slug}/{file}\"><img src=\"runs/{slug}/{file}\" alt=\"{alt}\" class=\"{class}\" /></a>\
         <figcaption>{alt}</figcaption></figure>\n",
        slug = escape(slug),
        file = escape(&f.file),
        alt = escape(&f.caption),
        class = if f.pixels { "px" } else { "chart" },
        wide = if f.wide { " class=\"wide\"" } else { "" },
    )
}

struct InpaintFigure {
    file: String,
    fraction: f64,
    removed_pixels: u64,
    images: u64,
    mse_free: f64,
    mse_clamped: f64,
}

fn inpaint_rows(info: &RunInfo) -> Vec<InpaintFigure> {
    let Some(report) = &info.inpaint else {
        return Vec::new();
    };
    report["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| {
                    let file = Path::new(r["picture"].as_str()?)
                        .file_name()?
                        .to_string_lossy()
                        .into_owned();
                    info.has_image(&file).then(|| InpaintFigure {
                        file,
                        fraction: r["fraction"].as_f64().unwrap_or(f64::NAN),
                        removed_pixels: r["removed_pixels"].as_u64().unwrap_or(0),
                        images: r["images"].as_u64().unwrap_or(0),
                        mse_free: r["mse_free_chain"].as_f64().unwrap_or(f64::NAN),
                        mse_clamped: r["mse_clamped"].as_f64().unwrap_or(f64::NAN),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn inpainting(info: &RunInfo) -> String {
    let rows = inpaint_rows(info);
    if rows.is_empty() {
        return String::new();
    }
    let report = info.inpaint.as_ref().expect("rows come from it");
    let method = |k: &str| report[k].as_str().unwrap_or("").to_string();
    let mut s = format!(
        "<h3>Inpainting</h3>\n<p class=\"muted\">Part of each test digit's ink removed; rows of each picture, \
         top to bottom: original, corrupted, {}, {}. Error: mean squared error on the removed pixels (0-1 scale).</p>\n\
         <div class=\"scroll\"><table>\n<thead><tr><th class=\"text\">removed</th><th>digits</th><th>pixels removed</th>\
         <th>error, free</th><th>error, clamped</th></tr></thead>\n<tbody>\n",
        escape(&method("free_method")),
        escape(&method("clamped_method")),
    );
    for r in &rows {
        let _ = writeln!(
            s,
            "<tr><td class=\"text\">{:.0}%</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td></tr>",
            r.fraction * 100.0,
            r.images,
            r.removed_pixels,
            r.mse_free,
            r.mse_clamped
        );
    }
    s += "</tbody>\n</table></div>\n<div class=\"figures wide\">\n";
    for r in &rows {
        s += &figure_html(
            &info.slug,
            &FigureSpec::grid(
                &r.file,
                format!(
                    "{:.0}% removed: error {:.4} free, {:.4} clamped",
                    r.fraction * 100.0,
                    r.mse_free,
                    r.mse_clamped
                ),
            ),
        );
    }
    s += "</div>\n";
    s
}

fn run_section(info: &RunInfo) -> String {
    let slug = escape(&info.slug);
    let mut s = format!(
        "<section class=\"run\" id=\"run-{slug}\">\n<h2>{slug}: {}</h2>\n",
        escape(&info.kind())
    );
    s += &facts(info);
    if info.eval.is_none() {
        let _ = writeln!(
            s,
            "<p class=\"muted\">Not evaluated yet: <code>genlab eval {}</code> adds its metrics.</p>",
            escape(&info.root.display().to_string())
        );
    }
    for (title, figs) in info.figures() {
        if figs.is_empty() {
            continue;
        }
        let class = if title == "Samples over training" {
            "strip"
        } else if title == "Training curves" {
            "figures wide"
        } else {
            "figures"
        };
        let _ = writeln!(s, "<h3>{}</h3>\n<div class=\"{class}\">", escape(&title));
        for f in &figs {
            s += &figure_html(&info.slug, f);
        }
        s += "</div>\n";
    }
    s += &inpainting(info);
    s += "<h3>Files</h3>\n";
    let _ = writeln!(
        s,
        "<details><summary>config.toml</summary><pre>{}</pre></details>",
        escape(&info.config_text)
    );
    if let Some(eval) = &info.eval {
        let _ = writeln!(
            s,
            "<details><summary>eval.json</summary><pre>{}</pre></details>",
            escape(&serde_json::to_string_pretty(eval).unwrap_or_default())
        );
    }
    let mut links = vec!["config.toml", "metrics.jsonl"];
    if info.eval.is_some() {
        links.push("eval.json");
    }
    if info.inpaint.is_some() {
        links.push("inpaint.json");
    }
    let links: Vec<String> = links
        .into_iter()
        .filter(|f| info.root.join(f).is_file())
        .map(|f| format!("<a href=\"runs/{slug}/{f}\">{f}</a>"))
        .collect();
    let _ = writeln!(s, "<p>Raw files: {}</p>", links.join(" &#183; "));
    s += "</section>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_characters() {
        assert_eq!(
            escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn slugs_are_unique_and_url_safe() {
        let a = Path::new("/tmp/x/vae 2");
        let b = Path::new("/tmp/y/vae 2");
        let c = Path::new("/tmp/z/.hidden");
        assert_eq!(slugs(&[a, b, c]), vec!["vae-2", "vae-2-2", "hidden"]);
    }
}
