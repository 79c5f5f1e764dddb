#!/usr/bin/env bash
# The README's "On data no one here made" table and figures, on data no one here made:
# scikit-learn's 8x8 digits (npy), 16x16 colour patches of its two sample
# photographs (a PNG folder with one class per photograph) and Fashion-MNIST
# (IDX). For each: an evaluator trained with `genlab evaluator train`, the
# RBM, an MLP VAE with a 2-D latent and the GAN trained, evaluated with that
# evaluator and compared; each model's samples and the VAE's manifold are
# copied to docs/figures/.
#   bash docs/own_data.sh     (about 25 minutes on 2 cores)
# Needs python3 with scikit-learn, numpy and Pillow (pip install scikit-learn
# pillow), and Fashion-MNIST where genlab finds it (apt-get install
# dataset-fashion-mnist). Environment: OUT (runs/own-data); finished runs
# and evaluations are reused, so delete OUT to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/own-data}"
cargo build --release -q -p genlab-cli
genlab=target/release/genlab
mkdir -p "$OUT" docs/figures
[ -f "$OUT/data/digits.npy" ] || python3 docs/own_data.py "$OUT/data"

# Lighter than `genlab eval`'s defaults, the same for every run.
EVAL=(--ais-steps 5000 --raise-images 20 --raise-steps 5000 --k 1000
      --decoder-ais-images 20 --bdmc-images 5 -n 5000)

train() { # name dataset family-or-preset [train options]
  local name=$1 dataset=$2 model=$3
  shift 3
  local run="$OUT/$name"
  if [ ! -f "$run/weights.safetensors" ]; then
    if [ -f "$run/config.toml" ]; then
      "$genlab" train --resume "$run"
    else
      "$genlab" train "$model" --dataset "$dataset" --out "$run" "$@"
    fi
  fi
}

evaluate() { # name evaluator
  local run="$OUT/$1"
  [ -f "$run/eval.json" ] || "$genlab" eval "$run" --evaluator "$2" "${EVAL[@]}"
}

# dataset-name, --dataset, RBM epochs, VAE epochs, GAN epochs
for entry in "digits npy:$OUT/data/digits.npy,$OUT/data/digits_labels.npy 100 300 500" \
             "patches folder:$OUT/data/patches 30 100 200" \
             "fashion fashion-mnist 30 30 50"; do
  set -- $entry
  data=$1 dataset=$2 rbm_epochs=$3 vae_epochs=$4 gan_epochs=$5
  evaluator="$OUT/evaluator-$data.safetensors"
  [ -f "$evaluator" ] || "$genlab" evaluator train --dataset "$dataset" --out "$evaluator"
  train "$data-rbm" "$dataset" rbm-100 --epochs "$rbm_epochs"
  train "$data-vae" "$dataset" vae-2 --epochs "$vae_epochs"
  train "$data-gan" "$dataset" gan --epochs "$gan_epochs"
  for model in rbm vae gan; do
    evaluate "$data-$model" "$evaluator"
    [ -f "$OUT/$data-$model/images/sample.png" ] ||
      "$genlab" sample "$OUT/$data-$model" -n 64 --out "$OUT/$data-$model/images/sample.png"
    cp "$OUT/$data-$model/images/sample.png" "docs/figures/$data-$model-samples.png"
  done
  cp "$OUT/$data-vae/images/manifold.png" "docs/figures/$data-vae-manifold.png"
  "$genlab" compare "$OUT/$data-rbm" "$OUT/$data-vae" "$OUT/$data-gan" --out "$OUT/compare-$data"
done
