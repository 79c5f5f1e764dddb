#!/usr/bin/env bash
# Side-by-side speed of genlab and PyTorch on the same machine and thread
# count, alternating the two, ROUNDS times. PyTorch runs at its best here:
# each script in its fastest idiom (bench/*_torch.py), with the allocator
# TORCH_ALLOC (default tcmalloc, the fastest for PyTorch on this machine;
# glibc-tuned: glibc's mmap and trim thresholds raised to 1 GiB, as genlab
# sets them for itself, so that large blocks stay on the heap; jemalloc;
# glibc), once eagerly and once through
# torch.compile (a second PyTorch column; its compilation happens before the
# timing). Ratios are against the faster PyTorch column. Needs PyTorch:
#   python3 -m venv .venv && .venv/bin/pip install -r bench/requirements.txt
#   PYTHON=.venv/bin/python bench/compare.sh [workload...]
# Workloads (default: all): matmul (64x784 @ 784x500), and one training
# epoch on MNIST of the presets rbm-500, vae-2, vae-16, conv-vae, gan (both
# sides also print a loss of that epoch, which must agree within noise: the
# mean training loss, or for the RBM the test reconstruction error after it). Environment: ROUNDS (5), THREADS (2), PYTHON,
# GENLAB_DATA (../shared/data), CSV (bench/results/compare.csv), TORCH_ALLOC,
# COMPILE (1; 0 leaves the compiled column out), and
# GENLAB_CPU_KERNELS=0 to time burn's generic path instead of genlab's CPU
# kernels. Prints a table of medians.
# On a GPU: DEVICE=wgpu (or cuda) builds genlab with that backend (into
# CARGO_TARGET_DIR, default target/) and runs it with --device DEVICE, and
# PyTorch on TORCH_DEVICE (default cuda); matmul (a host product) is left
# out, and the GFLOP/s column stays empty (it is against the CPU's peak).
# GENLAB_BIN: a genlab binary built beforehand (built with DEVICE's feature),
# for a machine without a Rust toolchain; nothing is built then.
# bench/summary.py CSV prints the table again from a CSV, a partial one too.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ROUNDS=${ROUNDS:-5}
THREADS=${THREADS:-2}
export GENLAB_DATA=${GENLAB_DATA:-$(cd .. && pwd)/shared/data}
export RAYON_NUM_THREADS=$THREADS
DEVICE=${DEVICE:-cpu}
case "$DEVICE" in
  cpu) TORCH_DEVICE=${TORCH_DEVICE:-cpu}; FEATURES=() ;;
  wgpu|cuda) TORCH_DEVICE=${TORCH_DEVICE:-cuda}; FEATURES=(--features "genlab/$DEVICE") ;;
  *) echo "DEVICE=$DEVICE: expected cpu, wgpu or cuda" >&2; exit 2 ;;
esac
WORKLOADS=("$@")
if [ ${#WORKLOADS[@]} -eq 0 ]; then
  WORKLOADS=(rbm-500 matmul vae-2 vae-16 conv-vae gan)
fi
for w in "${WORKLOADS[@]}"; do
  case "$w" in
    rbm-500|matmul|vae-2|vae-8|vae-16|conv-vae|gan) ;;
    *) echo "unknown workload $w (rbm-500 matmul vae-2 vae-8 vae-16 conv-vae gan)" >&2; exit 2 ;;
  esac
done
TORCH_ALLOC=${TORCH_ALLOC:-tcmalloc}
COMPILE=${COMPILE:-1}
case "$TORCH_ALLOC" in
  glibc) TORCH_ENV=() ;;
  glibc-tuned) TORCH_ENV=(MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824) ;;
  jemalloc|tcmalloc)
    lib=$(ls /usr/lib/*-linux-gnu/lib"$TORCH_ALLOC".so* 2>/dev/null | head -n 1)
    if [ -z "$lib" ]; then
      echo "TORCH_ALLOC=$TORCH_ALLOC: no lib$TORCH_ALLOC.so found (apt-get install libjemalloc2 / libgoogle-perftools4)" >&2
      exit 2
    fi
    TORCH_ENV=(LD_PRELOAD="$lib") ;;
  *) echo "TORCH_ALLOC=$TORCH_ALLOC: expected glibc, glibc-tuned, jemalloc or tcmalloc" >&2; exit 2 ;;
esac
TARGET=${CARGO_TARGET_DIR:-target}
if [ -n "${GENLAB_BIN:-}" ]; then
  GENLAB=$GENLAB_BIN
else
  cargo build --release -q -p genlab-cli "${FEATURES[@]}"
  GENLAB=$TARGET/release/genlab
fi
if [ "$DEVICE" = cpu ]; then
  cargo bench -p genlab --bench matmul --no-run 2>/dev/null
  MATMUL=$(ls -t "$TARGET"/release/deps/matmul-* | grep -v '\.d$' | head -n 1)
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p bench/results
CSV=${CSV:-bench/results/compare.csv}
echo "round,workload,unit,genlab,pytorch,pytorch_compiled,genlab_loss,pytorch_loss,pytorch_compiled_loss,genlab_device,pytorch_device,torch_alloc" > "$CSV"
echo "genlab on $DEVICE, PyTorch on $TORCH_DEVICE (allocator $TORCH_ALLOC), $THREADS threads"
# The machine's measured f32 peak on these threads, for the GFLOP/s column
# (CPU runs only).
PEAK=0
if [ "$DEVICE" = cpu ]; then
  PEAK=$("$MATMUL" | sed -n 's/^peak: \([0-9.]*\) GFLOP.*/\1/p')
  echo "peak: $PEAK GFLOP/s f32 on $THREADS threads"
fi
# One side of one workload: sets g (genlab) or t (PyTorch), and the losses
# gl / tl for training workloads. Every process is waited for to its exit
# (`out=$(...)`), not only to its line of output: a PyTorch process still
# tearing down after printing (`read < <(...)` returns at the line) ran
# into the next side's timed epoch, which made genlab's vae-2 epoch after
# it 0.98-1.23 s instead of 0.64-0.71 s.
genlab_side() {
  case "$1" in
    rbm-500)
      rm -rf "$TMP/run"
      "$GENLAB" train rbm --preset rbm-500 --epochs 1 --seed "$2" --device "$DEVICE" --out "$TMP/run" > /dev/null
      out=$("$PYTHON" -c 'import json,sys; m=json.loads(open(sys.argv[1]).readline()); print(m["seconds"], m["recon_error_test"])' "$TMP/run/metrics.jsonl")
      read -r g gl <<< "$out" ;;
    matmul)
      g=$("$MATMUL" | sed -n 's/.*median \([0-9.]*\) GFLOP.*/\1/p'); gl= ;;
    vae-*|conv-vae)
      rm -rf "$TMP/run"
      "$GENLAB" train vae --preset "$1" --epochs 1 --seed "$2" --device "$DEVICE" --out "$TMP/run" > /dev/null
      out=$("$PYTHON" -c 'import json,sys; m=json.loads(open(sys.argv[1]).readline()); print(m["seconds"], m["loss"])' "$TMP/run/metrics.jsonl")
      read -r g gl <<< "$out" ;;
    gan)
      rm -rf "$TMP/run"
      "$GENLAB" train gan --epochs 1 --seed "$2" --device "$DEVICE" --out "$TMP/run" > /dev/null
      out=$("$PYTHON" -c 'import json,sys; m=json.loads(open(sys.argv[1]).readline()); print(m["seconds"], m["d_loss"])' "$TMP/run/metrics.jsonl")
      read -r g gl <<< "$out" ;;
  esac
}
# One PyTorch run of one workload, eager (3rd argument 0) or compiled (1):
# sets t and, for training workloads, tl.
torch_run() {
  local py=(env "${TORCH_ENV[@]}" "$PYTHON")
  case "$1" in
    rbm-500)
      out=$("${py[@]}" bench/rbm_torch.py "$THREADS" "$GENLAB_DATA" "$2" "$TORCH_DEVICE" "$3")
      read -r _ t _ tl <<< "$out" ;;
    matmul)
      t=$("${py[@]}" bench/matmul_torch.py "$THREADS" | sed -n 's/.*median \([0-9.]*\) GFLOP.*/\1/p'); tl= ;;
    vae-*|conv-vae)
      out=$("${py[@]}" bench/vae_torch.py "$1" "$THREADS" "$GENLAB_DATA" "$2" "$TORCH_DEVICE" "$3")
      read -r _ t _ tl <<< "$out" ;;
    gan)
      out=$("${py[@]}" bench/gan_torch.py "$THREADS" "$GENLAB_DATA" 1 "$2" "$TORCH_DEVICE" "$3")
      read -r _ _ _ t _ tl _ <<< "$out" ;;
  esac
}
# Both PyTorch columns of one workload: t, tl (eager) and tc, tcl (compiled;
# empty for the matmul, a single product, and with COMPILE=0).
torch_side() {
  tc=; tcl=
  if [ "$COMPILE" = 1 ] && [ "$1" != matmul ]; then
    torch_run "$1" "$2" 1; tc=$t; tcl=$tl
  fi
  torch_run "$1" "$2" 0
}
# Each round starts one further along the workload list and, every other
# round, runs PyTorch first: neither side always follows the same process or
# falls at the same moment of a round (this machine's noise comes and goes).
n=${#WORKLOADS[@]}
for r in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((n - 1))); do
    w=${WORKLOADS[$(((i + r - 1) % n))]}
    if [ "$w" = matmul ] && [ "$DEVICE" != cpu ]; then
      [ "$r" = 1 ] && echo "matmul: genlab's is a host product, left out on $DEVICE"
      continue
    fi
    if [ $((r % 2)) = 1 ]; then
      genlab_side "$w" "$r"; torch_side "$w" "$r"
    else
      torch_side "$w" "$r"; genlab_side "$w" "$r"
    fi
    case "$w" in
      rbm-500) label="rbm-500 epoch (loss: test recon error)"; unit=s ;;
      matmul) label="matmul 64x784 @ 784x500"; unit=GFLOP/s ;;
      gan) label="gan epoch (loss: mean d_loss)"; unit=s ;;
      *) label="$w epoch"; unit=s ;;
    esac
    echo "$r,$label,$unit,$g,$t,$tc,$gl,$tl,$tcl,$DEVICE,$TORCH_DEVICE,$TORCH_ALLOC" >> "$CSV"
    echo "round $r: $label: genlab $g $unit${gl:+ (loss $gl)}, pytorch $t $unit${tl:+ (loss $tl)}${tc:+, compiled $tc $unit}${tcl:+ (loss $tcl)}"
  done
done
"$PYTHON" bench/summary.py "$CSV" "$PEAK"
