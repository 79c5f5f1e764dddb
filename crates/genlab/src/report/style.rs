//! The report's look: its inline stylesheet and favicon, kept apart from the page's structure.

/// A 3x3 grid of grey pixels, the report's icon.
pub(super) const FAVICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 3 3" shape-rendering="crispEdges"><rect width="3" height="3" fill="#111"/><rect x="1" width="1" height="3" fill="#eee"/><rect y="1" x="0" width="1" height="1" fill="#888"/><rect y="2" x="2" width="1" height="1" fill="#888"/></svg>"##;

pub(super) const STYLE: &str = r#"
:root { --fg: #1d2430; --muted: #5b6473; --line: #d9dee6; --bg: #ffffff; --panel: #f5f7fa; --accent: #2a5db0; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header, main, footer { max-width: 1200px; margin: 0 auto; padding: 0 16px; }
header { padding-top: 20px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.3em; margin: 32px 0 8px; padding-top: 8px; border-top: 2px solid var(--line); }
h3 { font-size: 1.05em; margin: 20px 0 8px; }
p.meta, .muted { color: var(--muted); }
nav ul { list-style: none; padding: 0; margin: 8px 0; display: flex; flex-wrap: wrap; gap: 6px 14px; }
a { color: var(--accent); }
.scroll { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; font-size: 0.9em; min-width: 100%; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: var(--panel); position: sticky; top: 0; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
tr.reference td { font-style: italic; background: var(--panel); }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 260px), 1fr)); gap: 16px; }
.figures.wide { grid-template-columns: repeat(auto-fill, minmax(min(100%, 420px), 1fr)); }
.strip { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(45%, 150px), 1fr)); gap: 10px; }
figure { margin: 0; }
figure.wide { grid-column: 1 / -1; }
figure.wide img { max-width: 960px; }
figure img { display: block; width: 100%; height: auto; border: 1px solid var(--line); background: #000; }
figure img.chart { background: #fff; }
img.px { image-rendering: pixelated; }
figcaption { font-size: 0.85em; color: var(--muted); margin-top: 4px; }
details { margin: 8px 0; }
summary { cursor: pointer; color: var(--accent); }
pre { background: var(--panel); padding: 10px; border-radius: 6px; overflow-x: auto; font-size: 0.85em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
footer { margin-top: 40px; padding-bottom: 30px; color: var(--muted); font-size: 0.85em; }
@media (max-width: 600px) { body { font-size: 14px; } h1 { font-size: 1.3em; } }
"#;
