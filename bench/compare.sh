#!/usr/bin/env bash
# Side-by-side speed of genlab and PyTorch on the same machine and thread
# count, alternating the two several times. Needs PyTorch:
#   python3 -m venv .venv && .venv/bin/pip install -r bench/requirements.txt
#   PYTHON=.venv/bin/python bench/compare.sh [rounds]
# Writes bench/results/rbm.csv and prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ROUNDS=${1:-5}
THREADS=${THREADS:-2}
export RAYON_NUM_THREADS=$THREADS
cargo bench --bench rbm --no-run 2>/dev/null
BIN=$(ls -t target/release/deps/rbm-* | grep -v '\.d$' | head -n 1)
mkdir -p bench/results
CSV=bench/results/rbm.csv
echo "round,workload,genlab_ms,pytorch_ms" > "$CSV"
for r in $(seq 1 "$ROUNDS"); do
  g=$("$BIN" | sed -n 's/.*CD-30 update.*median \([0-9.]*\) ms.*/\1/p')
  t=$("$PYTHON" bench/rbm_torch.py "$THREADS" | sed -n 's/.*median \([0-9.]*\) ms.*/\1/p')
  echo "$r,rbm-500 CD-30 update,$g,$t" >> "$CSV"
  echo "round $r: genlab $g ms, pytorch $t ms"
done
"$PYTHON" - "$CSV" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
g = statistics.median(float(r["genlab_ms"]) for r in rows)
t = statistics.median(float(r["pytorch_ms"]) for r in rows)
print()
print("| workload | genlab ms (median) | PyTorch ms (median) | genlab / PyTorch |")
print("|---|---|---|---|")
print(f"| rbm-500 CD-30 update, batch 64 | {g:.1f} | {t:.1f} | {g / t:.2f}x |")
PY
