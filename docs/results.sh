#!/usr/bin/env bash
# Regenerates the README's results tables with the build in this checkout:
# a full `genlab reproduce` (the eight seed presets, about an hour on 2 cores),
# the rbm-500-pcd preset trained and evaluated beside it, then docs/results.py.
# Run it again after a change that moves the numbers; finished runs are reused,
# so delete OUT (default runs/reproduce) to start over with a new build.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/reproduce}"
cargo build --release -p genlab-cli
genlab=target/release/genlab
"$genlab" reproduce --out "$OUT"
if [ ! -f "$OUT/rbm-500-pcd/weights.safetensors" ]; then
  if [ -f "$OUT/rbm-500-pcd/config.toml" ]; then
    "$genlab" train --resume "$OUT/rbm-500-pcd"
  else
    "$genlab" train rbm --preset rbm-500-pcd --out "$OUT/rbm-500-pcd"
  fi
fi
if [ ! -f "$OUT/rbm-500-pcd/eval.json" ]; then
  "$genlab" eval "$OUT/rbm-500-pcd" --samples 0
fi
python3 docs/results.py "$OUT" README.md
git --no-pager diff --stat README.md || true
