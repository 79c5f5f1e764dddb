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
cargo bench --bench matmul --no-run 2>/dev/null
BIN=$(ls -t target/release/deps/rbm-* | grep -v '\.d$' | head -n 1)
MATMUL=$(ls -t target/release/deps/matmul-* | grep -v '\.d$' | head -n 1)
mkdir -p bench/results
CSV=bench/results/rbm.csv
echo "round,workload,unit,genlab,pytorch" > "$CSV"
for r in $(seq 1 "$ROUNDS"); do
  g=$("$BIN" | sed -n 's/.*CD-30 update.*median \([0-9.]*\) ms.*/\1/p')
  t=$("$PYTHON" bench/rbm_torch.py "$THREADS" | sed -n 's/.*median \([0-9.]*\) ms.*/\1/p')
  echo "$r,rbm-500 CD-30 update (batch 64),ms,$g,$t" >> "$CSV"
  echo "round $r: CD-30 update: genlab $g ms, pytorch $t ms"
  g=$("$MATMUL" | sed -n 's/.*median \([0-9.]*\) GFLOP.*/\1/p')
  t=$("$PYTHON" bench/matmul_torch.py "$THREADS" | sed -n 's/.*median \([0-9.]*\) GFLOP.*/\1/p')
  echo "$r,matmul 64x784 @ 784x500,GFLOP/s,$g,$t" >> "$CSV"
  echo "round $r: matmul: genlab $g GFLOP/s, pytorch $t GFLOP/s"
done
"$PYTHON" - "$CSV" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print()
print("| workload | unit | genlab (median) | PyTorch (median) | genlab / PyTorch |")
print("|---|---|---|---|---|")
for w in dict.fromkeys(r["workload"] for r in rows):
    sel = [r for r in rows if r["workload"] == w]
    g = statistics.median(float(r["genlab"]) for r in sel)
    t = statistics.median(float(r["pytorch"]) for r in sel)
    print(f"| {w} | {sel[0]['unit']} | {g:.1f} | {t:.1f} | {g / t:.2f} |")
PY
