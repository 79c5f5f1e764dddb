#!/usr/bin/env bash
# Peak memory (maximum resident set size, from GNU time) of each seed
# preset's training: `genlab train PRESET --epochs EPOCHS --dataset DATASET`,
# the per-epoch figures and checkpoints included. The second epoch reuses the
# first's buffers, so two epochs show whether memory grows with training;
# a large memory-mapped DATASET shows whether it grows with the data.
#   bench/memory.sh [preset...]      (default: every seed preset)
# Environment: EPOCHS (2), THREADS (2), DATASET (mnist), GENLAB_DATA
# (../shared/data), CSV (bench/results/memory.csv), APPEND (0; 1 adds rows
# to CSV instead of starting it afresh).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-2}
THREADS=${THREADS:-2}
DATASET=${DATASET:-mnist}
export GENLAB_DATA=${GENLAB_DATA:-$(cd .. && pwd)/shared/data}
export RAYON_NUM_THREADS=$THREADS
PRESETS=("$@")
if [ ${#PRESETS[@]} -eq 0 ]; then
  PRESETS=(rbm-20 rbm-100 rbm-500 vae-2 vae-8 vae-16 conv-vae gan)
fi
if [ ! -x /usr/bin/time ]; then
  echo "bench/memory.sh needs GNU time (/usr/bin/time; Debian package 'time')" >&2
  exit 2
fi
cargo build --release -q -p genlab-cli
GENLAB=target/release/genlab
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p bench/results
CSV=${CSV:-bench/results/memory.csv}
[ "${APPEND:-0}" = 1 ] && [ -f "$CSV" ] || echo "preset,dataset,epochs,peak_rss_mib,seconds" > "$CSV"
for p in "${PRESETS[@]}"; do
  /usr/bin/time -f "%M %e" -o "$TMP/time" "$GENLAB" train "$p" --epochs "$EPOCHS" \
    --dataset "$DATASET" --out "$TMP/$p" > "$TMP/log" 2>&1 || { cat "$TMP/log" >&2; exit 1; }
  read -r kib secs < "$TMP/time"
  mib=$(awk -v k="$kib" 'BEGIN { printf "%.0f", k / 1024 }')
  echo "$p,${DATASET//,/;},$EPOCHS,$mib,$secs" >> "$CSV"
  echo "$p on $DATASET: peak RSS $mib MiB over $EPOCHS epochs ($secs s)"
done
echo
echo "| preset | dataset | epochs | peak RSS (MiB) |"
echo "|---|---|---|---|"
tail -n +2 "$CSV" | awk -F, '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }'
