#!/usr/bin/env bash
# Before/after speed of two genlab binaries, alternating them ROUNDS times on
# the same machine: `genlab train WORKLOAD --epochs 2 [extra]`, the faster of
# the two epochs' `seconds` from metrics.jsonl, medians per workload.
#   bench/ab.sh OLD_BINARY NEW_BINARY ROUNDS WORKLOAD[:extra args]...
#   e.g. bench/ab.sh /tmp/genlab-old target/release/genlab 5 vae-2 conv-vae 'gan:--train-limit 30000'
# Environment: THREADS (2), GENLAB_DATA (../shared/data), OUT (a temporary directory).
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: bench/ab.sh OLD_BINARY NEW_BINARY ROUNDS WORKLOAD[:extra args]..." >&2
  exit 2
fi
cd "$(dirname "$0")/.."
OLD=$1; NEW=$2; ROUNDS=$3; shift 3
export GENLAB_DATA=${GENLAB_DATA:-$(cd .. && pwd)/shared/data}
export RAYON_NUM_THREADS=${THREADS:-2}
OUT=${OUT:-$(mktemp -d)}
echo "round,build,workload,epoch_seconds" > "$OUT/results.csv"
for round in $(seq 1 "$ROUNDS"); do
  for build in old new; do
    bin=$OLD; [ "$build" = new ] && bin=$NEW
    for spec in "$@"; do
      w=${spec%%:*}; extra=(); [ "$spec" != "$w" ] && read -r -a extra <<< "${spec#*:}"
      run="$OUT/$round-$build-$w"
      rm -rf "$run"
      "$bin" train "$w" --epochs 2 "${extra[@]}" --out "$run" > /dev/null
      s=$(python3 -c 'import json,sys; print(min(json.loads(l)["seconds"] for l in open(sys.argv[1])))' "$run/metrics.jsonl")
      echo "$round,$build,$w,$s" >> "$OUT/results.csv"
    done
  done
done
python3 - "$OUT/results.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for w in dict.fromkeys(r["workload"] for r in rows):
    o = [float(r["epoch_seconds"]) for r in rows if r["workload"] == w and r["build"] == "old"]
    n = [float(r["epoch_seconds"]) for r in rows if r["workload"] == w and r["build"] == "new"]
    print(f"{w:9} before {statistics.median(o):7.3f} s  after {statistics.median(n):7.3f} s  "
          f"ratio {statistics.median(n) / statistics.median(o):.3f}  "
          f"(before {' '.join(f'{x:.3f}' for x in o)}; after {' '.join(f'{x:.3f}' for x in n)})")
PY
