#!/usr/bin/env bash
# Regenerates the README's results tables with the build in this checkout:
# a full `genlab reproduce` (the eight seed presets, about an hour on 2 cores),
# the tuned RBM presets and the Bernoulli VAEs trained and evaluated beside
# it, then docs/results.py. Run it again after a change that moves the
# numbers; finished runs are reused, so delete OUT (default runs/reproduce)
# to start over with a new build.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/reproduce}"
cargo build --release -p genlab-cli
genlab=target/release/genlab
"$genlab" reproduce --out "$OUT"
# preset, family, what `genlab eval` skips
for entry in "rbm-500-pcd rbm --samples 0" "rbm-500-pcd10 rbm --samples 0" \
             "vae-2-bernoulli vae" "vae-16-bernoulli vae"; do
  set -- $entry
  preset=$1 family=$2
  shift 2
  if [ ! -f "$OUT/$preset/weights.safetensors" ]; then
    if [ -f "$OUT/$preset/config.toml" ]; then
      "$genlab" train --resume "$OUT/$preset"
    else
      "$genlab" train "$family" --preset "$preset" --out "$OUT/$preset"
    fi
  fi
  if [ ! -f "$OUT/$preset/eval.json" ]; then
    "$genlab" eval "$OUT/$preset" "$@"
  fi
done
python3 docs/results.py "$OUT" README.md
git --no-pager diff --stat README.md || true
