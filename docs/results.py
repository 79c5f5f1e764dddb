#!/usr/bin/env python3
"""Writes the README's results tables from a full `genlab reproduce` directory.

Usage: python3 docs/results.py OUT [README.md]
       python3 docs/results.py --sweep-file [README.md]    (prints the Sweeps section's file)
       python3 docs/results.py --sweep DIR [README.md]     (writes its table from DIR/groups.csv)

Reads OUT/<preset>/{config.toml,metrics.jsonl,eval.json} and OUT/compare.md
(plus OUT/rbm-500-pcd/, OUT/rbm-500-pcd10/ and the Bernoulli VAEs when
docs/results.sh trained them) and replaces each
block between `<!-- results:NAME -->` and `<!-- /results:NAME -->` in the
README. Standard library only; every figure comes from those files.
Timings are left out on purpose: they depend on what else the machine was
doing, while every other figure here is deterministic (same seed, same
build, same numbers); speed is measured by bench/compare.sh.
"""

import json
import re
import sys
from pathlib import Path


def metrics(run):
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def evaluation(run):
    return json.loads((run / "eval.json").read_text())


def rbm_table(out):
    lines = [
        "| preset | epochs | test log-likelihood | train log-likelihood | log Z "
        "| first 100 test images: AIS / RAISE (gap) |",
        "|---|---|---|---|---|---|",
    ]
    for preset in ["rbm-20", "rbm-100", "rbm-500", "rbm-500-pcd", "rbm-500-pcd10"]:
        run = out / preset
        if not (run / "eval.json").is_file():
            continue
        rows, ev = metrics(run), evaluation(run)["likelihood"]
        if ev["log_z_source"] == "exact":
            log_z = f"{ev['log_z']:.2f} exact (AIS {ev['log_z_ais']:.2f})"
        else:
            lo, mid, hi = ev["log_z_ais_base_rate"]
            lo2, mid2, hi2 = ev["log_z_ais_model_biases"]
            log_z = (
                f"{ev['log_z']:.2f} AIS ({ev['log_z_ais_rule']}; from base rates {mid:.2f}, "
                f"from the model's biases {mid2:.2f})"
            )
        if "raise_test_log_likelihood" in ev:
            exact = ev.get("raise_exact_same_images")
            raise_cell = (
                f"{ev['raise_ais_same_images']:.2f} / {ev['raise_test_log_likelihood']:.2f} "
                f"({ev['raise_ais_gap']:.2f}; RAISE from {ev['raise_base']})"
                + (f", exact {exact:.2f}" if exact is not None else "")
            )
        else:
            raise_cell = "-"
        lines.append(
            f"| `{preset}` | {len(rows)} | "
            f"{ev['test_log_likelihood']:.2f} | {ev['train_log_likelihood']:.2f} | {log_z} | {raise_cell} |"
        )
    return "\n".join(lines)


SEED_VAL_LOSS = {"vae-2": "38.33", "vae-8": "29.62", "vae-16": "29.53", "conv-vae": "about 39-40"}


def vae_table(out):
    lines = [
        "| preset | epochs | train loss | val loss | seed's val loss | ELBO | log p(x) (k) |",
        "|---|---|---|---|---|---|---|",
    ]
    for preset in ["vae-2", "vae-8", "vae-16", "conv-vae"]:
        run = out / preset
        if not (run / "eval.json").is_file():
            continue
        rows, ev = metrics(run), evaluation(run)["likelihood"]
        last = rows[-1]
        lines.append(
            f"| `{preset}` | {len(rows)} | {last['loss']:.2f} | "
            f"{last['val_loss']:.2f} | {SEED_VAL_LOSS[preset]} | {ev['elbo']:.2f} | "
            f"{ev['test_log_likelihood']:.2f} ({ev['importance_samples']:,}) |"
        )
    return "\n".join(lines)


def gan_summary(out):
    run = out / "gan"
    rows = metrics(run)
    later = rows[4:] if len(rows) > 5 else rows
    d = [r["d_loss"] for r in later]
    g = [r["g_loss"] for r in later]
    last = rows[-1]
    return (
        f"The seed preset trained for its {len(rows)} epochs (`genlab reproduce`): from epoch {min(5, len(rows))} on, the epoch "
        f"means stayed within d_loss {min(d):.2f}-{max(d):.2f} and g_loss {min(g):.2f}-{max(g):.2f}, "
        f"ending at d {last['d_loss']:.2f}, g {last['g_loss']:.2f}, D(x) {last['d_x']:.2f}, "
        f"D(G(z)) {last['d_g_z']:.2f} (the seed reported d 1.2-1.4, g 0.9-1.3)."
    )


DECODER_PRESETS = ["vae-2", "vae-8", "vae-16", "conv-vae", "vae-2-bernoulli", "vae-16-bernoulli", "gan"]


def decoder_table(out):
    lines = [
        "| preset | observation model | images | decoder AIS (s.e.) | IS, same images and model (k) "
        "| BDMC on simulated data: forward / reverse (gap) | annealing |",
        "|---|---|---|---|---|---|---|",
    ]
    for preset in DECODER_PRESETS:
        run = out / preset
        if not (run / "eval.json").is_file():
            continue
        ev = evaluation(run).get("likelihood", {}).get("decoder_ais")
        if ev is None:
            continue
        if ev["observation"] == "gaussian":
            chosen = ev["sigma_chosen_on"].split(" (")[0]
            model = f"Gaussian, sigma {ev['sigma']} (chosen on {chosen})"
        else:
            model = "Bernoulli (binarised images)"
        same = ev.get("importance_sampled_same_images")
        is_cell = f"{same['log_likelihood']:.2f} ({same['importance_samples']:,})" if same else "-"
        b = ev.get("bdmc")
        bdmc_cell = (
            f"{b['lower']:.2f} / {b['upper']:.2f} ({b['gap']:.2f}; {b['images']} images)" if b else "-"
        )
        lines.append(
            f"| `{preset}` | {model} | first {ev['images']} {ev['split']} | "
            f"{ev['log_likelihood']:.2f} ({ev['std_error']:.2f}) | {is_cell} | {bdmc_cell} | "
            f"{ev['chains']} x {ev['steps']} x {ev['leapfrog']} |"
        )
    return "\n".join(lines)


def quality_table(out):
    text = (out / "compare.md").read_text()
    rows = [[c.strip() for c in l.strip().strip("|").split("|")] for l in text.splitlines() if l.startswith("|")]
    timing = {i for i, name in enumerate(rows[0]) if name in ("training s", "samples/s")}
    kept = ["| " + " | ".join(c for i, c in enumerate(r) if i not in timing) + " |" for r in rows]
    # Runs are named by their directory inside OUT, as in the reproduction's own table.
    return "\n".join(kept).replace(f"{out}/", "")


def replace_block(readme, name, body):
    pattern = re.compile(
        rf"(<!-- results:{name} -->\n).*?(\n<!-- /results:{name} -->)", re.DOTALL
    )
    if not pattern.search(readme):
        sys.exit(f"results.py: the README has no <!-- results:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), readme)


def sweep_file(readme):
    section = readme.split("\n## Sweeps", 1)[1]
    return section.split("```toml\n", 1)[1].split("```", 1)[0]


SWEEP_FIGURES = ["val loss", "train loss", "test loss", "ELBO", "test log-likelihood", "FID"]


def sweep_table(directory):
    import csv

    with open(directory / "groups.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    swept = [k for k in rows[0] if k not in ("preset", "runs") and not k.endswith((" mean", " sd"))]
    header = ["preset", *swept, "runs (seeds)", *SWEEP_FIGURES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["preset"], *[r[k] for k in swept], r["runs"]]
        for name in SWEEP_FIGURES:
            mean, sd = r.get(f"{name} mean", ""), r.get(f"{name} sd", "")
            cells.append(f"{float(mean):.2f} +- {float(sd):.2f}" if mean else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_readme(readme_path, readme):
    tmp = readme_path.with_suffix(".md.tmp")
    tmp.write_text(readme)
    tmp.replace(readme_path)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--sweep-file":
        readme_path = Path(sys.argv[2] if len(sys.argv) == 3 else "README.md")
        sys.stdout.write(sweep_file(readme_path.read_text()))
        return
    if len(sys.argv) >= 3 and sys.argv[1] == "--sweep":
        directory = Path(sys.argv[2])
        readme_path = Path(sys.argv[3] if len(sys.argv) == 4 else "README.md")
        readme = replace_block(readme_path.read_text(), "sweep", sweep_table(directory))
        write_readme(readme_path, readme)
        print(f"sweep table of {directory} written into {readme_path}")
        return
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    readme_path = Path(sys.argv[2] if len(sys.argv) == 3 else "README.md")
    readme = readme_path.read_text()
    for name, make in [
        ("rbm", rbm_table),
        ("vae", vae_table),
        ("gan", gan_summary),
        ("decoder", decoder_table),
        ("quality", quality_table),
    ]:
        readme = replace_block(readme, name, make(out))
    write_readme(readme_path, readme)
    print(f"results tables of {out} written into {readme_path}")


if __name__ == "__main__":
    main()
