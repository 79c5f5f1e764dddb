"""The seed RBM's CD-30 update (784x500, batch 64) in PyTorch, timed the way
genlab's `cargo bench --bench rbm` times its own: median over 40 updates after
5 warm-up updates. Same algorithm as SPEC section 1: both layers sampled at
every Gibbs step, the final sampled v_k, h_k in the negative statistics.
Written the fast way: a unit is sampled as `p > uniform` (the same chain
statistics as torch.bernoulli, in a fraction of its time), in place, with no
autograd. Usage: rbm_torch.py [THREADS] [DEVICE] [COMPILE] (a torch device,
cpu by default; COMPILE=1 times the update through torch.compile)."""
import statistics
import sys
import time

import torch

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
device = torch.device(sys.argv[2] if len(sys.argv) > 2 else "cpu")
compiled = len(sys.argv) > 3 and sys.argv[3] == "1"
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


def sample(p):
    return (p > torch.rand_like(p)).to(p.dtype)


def update(W, hb, vb):
    ph0 = torch.sigmoid(torch.addmm(hb, v0, W))
    h = sample(ph0)
    for _ in range(k):
        v = sample(torch.sigmoid(torch.addmm(vb, h, W.t())))
        h = sample(torch.sigmoid(torch.addmm(hb, v, W)))
    W.add_(v0.t() @ ph0 - v.t() @ h, alpha=lr / b)
    hb.add_((ph0 - h).mean(0), alpha=lr)
    vb.add_((v0 - v).mean(0), alpha=lr)


step = torch.compile(update) if compiled else update
with torch.no_grad():
    for _ in range(5):
        step(W, hb, vb)
    times = []
    for _ in range(40):
        sync()
        t = time.perf_counter()
        step(W, hb, vb)
        sync()
        times.append((time.perf_counter() - t) * 1e3)
mode = "compiled" if compiled else "eager"
print(f"pytorch {torch.__version__} ({mode}) rbm-500 CD-{k} update, batch {b}, {threads} threads, {device}: median {statistics.median(times):.2f} ms")
