#!/usr/bin/env bash
# Own data against MNIST's IDX files, on one machine, alternating:
#  1. `cargo bench --bench image_cache`: MNIST written as 70,000 PNGs, the
#     time to decode them all and write the cache, and to open it again;
#  2. one epoch of PRESET (vae-2) on mnist and on folder:mnist-png (the
#     same 60,000 training images, from the mapped cache), ROUNDS times
#     in alternation, the epoch's own seconds from metrics.jsonl;
#  3. peak RSS (GNU time) of that epoch on mnist, on the folder, and on
#     npy:mnist-x10.npy (600,000 images, 470 MB, mapped), which shows
#     whether memory follows the dataset or the batch.
#   bench/own_data.sh
# Environment: PRESET (vae-2), ROUNDS (3), THREADS (2), GENLAB_DATA
# (../shared/data), BENCH_DATA (target/bench-data), CSV
# (bench/results/own_data.csv).
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-vae-2}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
export GENLAB_DATA=${GENLAB_DATA:-$(cd .. && pwd)/shared/data}
export BENCH_DATA=${BENCH_DATA:-$(pwd)/target/bench-data}
export RAYON_NUM_THREADS=$THREADS
if [ ! -x /usr/bin/time ]; then
  echo "bench/own_data.sh needs GNU time (/usr/bin/time; Debian package 'time')" >&2
  exit 2
fi
cargo bench -q --bench image_cache
cargo build --release -q -p genlab-cli
GENLAB=target/release/genlab
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p bench/results
CSV=${CSV:-bench/results/own_data.csv}
echo "dataset,round,epoch_seconds,peak_rss_mib" > "$CSV"
FOLDER="folder:$BENCH_DATA/mnist-png"
X10="npy:$BENCH_DATA/mnist-x10.npy,$BENCH_DATA/mnist-x10-labels.npy"
# Build the caches before timing (the first load of each decodes).
"$GENLAB" data info --dataset "$FOLDER" > /dev/null
"$GENLAB" data info --dataset "$X10" > /dev/null
run() { # dataset label round
  local out="$TMP/$2-$3"
  /usr/bin/time -f "%M" -o "$TMP/time" "$GENLAB" train "$PRESET" --epochs 1 \
    --dataset "$1" --out "$out" > "$TMP/log" 2>&1 || { cat "$TMP/log" >&2; exit 1; }
  local secs mib
  secs=$(head -1 "$out/metrics.jsonl" | sed 's/.*"seconds":\([0-9.e+-]*\).*/\1/')
  mib=$(awk -v k="$(cat "$TMP/time")" 'BEGIN { printf "%.0f", k / 1024 }')
  echo "$2,$3,$secs,$mib" >> "$CSV"
  echo "$2 round $3: epoch $secs s, peak RSS $mib MiB"
}
for r in $(seq 1 "$ROUNDS"); do
  run mnist mnist "$r"
  run "$FOLDER" folder "$r"
done
run "$X10" npy-x10 1
echo
echo "| data | epoch s (median) | peak RSS MiB (median) |"
echo "|---|---|---|"
for d in mnist folder npy-x10; do
  grep "^$d," "$CSV" | awk -F, '{ print $3, $4 }' | sort -n | awk -v d="$d" '
    { s[NR] = $1; m[NR] = $2 } END { i = int((NR + 1) / 2); printf "| %s | %s | %s |\n", d, s[i], m[i] }'
done
