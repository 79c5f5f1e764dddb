#!/usr/bin/env bash
# Regenerates the README's sweep table with the build in this checkout: runs
# the sweep file of the README's Sweeps section (9 full VAE runs with a quick
# evaluation, about 20 minutes on 2 cores), then docs/results.py --sweep.
# Finished runs are reused: delete OUT to start over with a new build.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/sweeps/vae-latent}"
cargo build --release -p genlab-cli
genlab=target/release/genlab
mkdir -p "$(dirname "$OUT")"
python3 docs/results.py --sweep-file README.md > "$OUT.toml"
"$genlab" sweep "$OUT.toml" --out "$OUT"
"$genlab" compare "$OUT" --out "$OUT" > /dev/null
python3 docs/results.py --sweep "$OUT" README.md
git --no-pager diff --stat README.md || true
