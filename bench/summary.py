"""The table of a bench/compare.sh run from its CSV: per workload the median
and range over the rounds on each side, and genlab's time over the faster
PyTorch column (for a rate, the faster PyTorch rate over genlab's, which is
the same ratio of times; the ratio of the medians, and in brackets the range
of the rounds' own ratios, which shows how much a drifting machine moved it).
Usage: summary.py CSV [PEAK_GFLOPS] (the peak only for CPU runs: it fills the
GFLOP/s column; 0 or absent leaves it empty).
A CSV cut short (a run stopped mid-round) is summarised over the rows it has.
"""
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
peak = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
# FLOPs of the matrix products (2 per multiply-add) per unit of each workload.
# MLP VAE, latent L, per image: forward F = 2*784*256 + 768 L multiply-adds;
# backward = F (weight gradients) + F - 784*256 (input gradients, none for
# the first layer); 60,000 images. Conv VAE per image: forward 6,660,928
# (conv 56,448 + 903,168, dense 50,176 + 64 + 6,272, transposed convs
# 1,806,336 + 3,612,672 + 225,792), backward 2 F - 56,448; 10,000 images.
# GAN per image: 1,136,000 (D step: G forward, D forward and weight gradients
# on real + fake, D input gradients below its first layer; G step: G and D
# forward, D input gradients, G weight and input gradients); 59,968 images.
# RBM epoch: 937 CD-30 updates of batch 64, each 61 products 64x784x500
# and one 784x128x500 as dense products (genlab's sparse Gibbs products do
# a fraction of that arithmetic; the column says the dense equivalent).
def mlp_vae(latent):
    f = 2 * 784 * 256 + 768 * latent
    return 2 * (3 * f - 784 * 256) * 60000
FLOP = {
    "rbm-500 epoch (loss: test recon error)": 937 * 2 * (61 * 64 * 784 * 500 + 784 * 128 * 500),
    "vae-2 epoch": mlp_vae(2),
    "vae-16 epoch": mlp_vae(16),
    "conv-vae epoch": 2 * (3 * 6660928 - 56448) * 10000,
    "gan epoch (loss: mean d_loss)": 2 * 1136000 * 59968,
}
if peak > 0:
    print()
    print(f"peak (measured, independent FMA chains): {peak:.0f} GFLOP/s")
print()
def spread(values, fmt):
    return f"{fmt(min(values))}-{fmt(max(values))}"


def g3(v):
    return f"{v:.3g}"


print(f"| workload | unit | genlab (median, range over {len(set(r['round'] for r in rows))} rounds) | PyTorch eager | PyTorch compiled | genlab / faster PyTorch (range by round) | genlab GFLOP/s (% of peak) | loss genlab / PyTorch |")
print("|---|---|---|---|---|---|---|---|")
for w in dict.fromkeys(r["workload"] for r in rows):
    sel = [r for r in rows if r["workload"] == w]
    gs = [float(r["genlab"]) for r in sel]
    ts = [float(r["pytorch"]) for r in sel]
    cs = [float(r["pytorch_compiled"]) for r in sel if r.get("pytorch_compiled")]
    g, t = statistics.median(gs), statistics.median(ts)
    c = statistics.median(cs) if cs else None
    # Lower is better, except for a rate (GFLOP/s).
    rate_unit = sel[0]["unit"] == "GFLOP/s"

    def time_ratio(genlab, pytorch):
        """genlab's time over the faster PyTorch side's; below 1, genlab is faster."""
        return max(pytorch) / genlab if rate_unit else genlab / min(pytorch)

    loss = ""
    if sel[0]["genlab_loss"]:
        gl = statistics.median(float(r["genlab_loss"]) for r in sel)
        tl = statistics.median(float(r["pytorch_loss"]) for r in sel)
        loss = f"{gl:.4g} / {tl:.4g}"
    if rate_unit:
        achieved = g
    elif w in FLOP:
        achieved = FLOP[w] / g / 1e9
    else:
        achieved = None
    rate = f"{achieved:.0f} ({100 * achieved / peak:.0f}%)" if achieved and peak > 0 else ""
    compiled = f"{g3(c)} ({spread(cs, g3)})" if c is not None else "-"
    # Each round's genlab against that round's faster PyTorch.
    by_round = []
    for r in sel:
        sides = [float(r["pytorch"])] + ([float(r["pytorch_compiled"])] if r.get("pytorch_compiled") else [])
        by_round.append(time_ratio(float(r["genlab"]), sides))
    medians = [t] + ([c] if c is not None else [])
    ratio = f"{time_ratio(g, medians):.2f} ({spread(by_round, lambda v: f'{v:.2f}')})"
    print(f"| {w} | {sel[0]['unit']} | {g3(g)} ({spread(gs, g3)}) | {g3(t)} ({spread(ts, g3)}) | {compiled} | {ratio} | {rate} | {loss} |")
