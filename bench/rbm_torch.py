"""The seed RBM's CD-30 update (784x500, batch 64) in PyTorch, timed the way
genlab's `cargo bench --bench rbm` times its own: median over 40 updates after
5 warm-up updates. Same algorithm as SPEC section 1: both layers sampled at
every Gibbs step, the final sampled v_k, h_k in the negative statistics.
Usage: rbm_torch.py [THREADS] [DEVICE] (a torch device, cpu by default)."""
import statistics
import sys
import time

import torch

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
device = torch.device(sys.argv[2] if len(sys.argv) > 2 else "cpu")
torch.set_num_threads(threads)
torch.manual_seed(0)
nv, nh, b, k, lr = 784, 500, 64, 30, 0.01
W = torch.nn.init.trunc_normal_(torch.empty(nv, nh), std=0.1, a=-0.2, b=0.2).to(device)
hb = torch.full((nh,), 0.1, device=device)
vb = torch.full((nv,), 0.1, device=device)
v0 = torch.rand(b, nv).to(device)


def sync():
    # GPU work is queued: wait for it, so the timing covers it.
    if device.type == "cuda":
        torch.cuda.synchronize()


def update():
    global W, hb, vb
    ph0 = torch.sigmoid(v0 @ W + hb)
    h = torch.bernoulli(ph0)
    for _ in range(k):
        v = torch.bernoulli(torch.sigmoid(h @ W.t() + vb))
        h = torch.bernoulli(torch.sigmoid(v @ W + hb))
    W += lr * (v0.t() @ ph0 - v.t() @ h) / b
    hb += lr * (ph0 - h).mean(0)
    vb += lr * (v0 - v).mean(0)


with torch.no_grad():
    for _ in range(5):
        update()
    times = []
    for _ in range(40):
        sync()
        t = time.perf_counter()
        update()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
print(f"pytorch {torch.__version__} rbm-500 CD-{k} update, batch {b}, {threads} threads, {device}: median {statistics.median(times):.2f} ms")
