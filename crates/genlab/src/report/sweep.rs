//! The report's section for a sweep: its groups over seeds (mean and
//! standard deviation of every figure) and each figure plotted against each
//! swept value.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::escape;
use crate::sweep::aggregate::Aggregate;

/// The HTML of sweep number `k`; its plots are drawn into `staging/sweeps/<k>/`.
pub fn section(a: &Aggregate, k: usize, staging: &Path) -> Result<String> {
    let table = a.table();
    let mut s = format!(
        "<section id=\"sweep-{k}\">\n<h2>Sweep {}</h2>\n<p class=\"muted\">{} groups of runs that differ only in their seed \
         ({} runs); every figure is the mean &#177; the sample standard deviation over the group's seeds. \
         The individual runs follow below.</p>\n<div class=\"scroll\"><table>\n<thead><tr>",
        escape(&a.dir.display().to_string()),
        a.groups.len(),
        a.runs.len()
    );
    for (c, h) in table.header.iter().enumerate() {
        let class = if c == 0 { " class=\"text\"" } else { "" };
        let _ = write!(s, "<th{class}>{}</th>", escape(h));
    }
    s += "</tr></thead>\n<tbody>\n";
    for row in &table.rows {
        s += "<tr>";
        for (c, cell) in row.iter().enumerate() {
            let class = if c == 0 { " class=\"text\"" } else { "" };
            let _ = write!(
                s,
                "<td{class}>{}</td>",
                escape(cell).replace(" +- ", " &#177; ")
            );
        }
        s += "</tr>\n";
    }
    s += "</tbody>\n</table></div>\n";
    for note in &table.notes {
        let _ = writeln!(s, "<p class=\"muted\">{}</p>", escape(note));
    }
    let dir = staging.join("sweeps").join(k.to_string());
    std::fs::create_dir_all(&dir)?;
    let plots = a.plots(&dir)?;
    if plots.is_empty() {
        s += "<p class=\"muted\">No plots: no swept key takes two or more numeric values.</p>\n";
    } else {
        s += "<div class=\"figures wide\">\n";
        for (stem, caption) in &plots {
            let file = format!("sweeps/{k}/{stem}.png");
            let _ = writeln!(
                s,
                "<figure><a href=\"sweeps/{k}/{stem}.svg\"><img src=\"{}\" alt=\"{}\" class=\"chart\" /></a>\
                 <figcaption>{}</figcaption></figure>",
                escape(&file),
                escape(caption),
                escape(caption)
            );
        }
        s += "</div>\n";
    }
    s += "</section>\n";
    Ok(s)
}
