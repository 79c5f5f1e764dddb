"""One training epoch of the seed RBM (rbm-500, SPEC section 1) in PyTorch,
on MNIST, timed the way genlab's metrics.jsonl times its own (the batches
only: no data loading, no per-epoch metrics). Usage: rbm_torch.py THREADS
DATA_DIR [SEED] [DEVICE] [COMPILE] (DEVICE: a torch device, cpu by default).

784x500, W ~ truncated normal(0, 0.1), both biases 0.1; batch 64 of the
60,000 shuffled images (the last partial batch dropped), CD-30 with lr 0.1
and no momentum: h ~ p(h|v0), then 30 times v ~ p(v|h), h ~ p(h|v), the
final sampled v_k, h_k in the negative statistics. Written the fast way: a
unit is sampled as `p > uniform` (the same chain statistics as
torch.bernoulli, in a fraction of its time), in place, with no autograd.
With COMPILE=1 the update runs through torch.compile, compiled on a warm-up
update of a copy of the parameters before the timed epoch.
Prints: seconds <s> loss <mean-field reconstruction error on the 10,000 test
images after the epoch, per pixel> (genlab's recon_error_test)."""
import gzip
import os
import sys
import time

import numpy as np
import torch

threads, data = int(sys.argv[1]), sys.argv[2]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
device = torch.device(sys.argv[4] if len(sys.argv) > 4 else "cpu")
compiled = len(sys.argv) > 5 and sys.argv[5] == "1"
torch.set_num_threads(threads)
torch.manual_seed(seed)
nv, nh, b, k, lr = 784, 500, 64, 30, 0.1


def images(name):
    path = os.path.join(data, "mnist", name + ".gz")
    if not os.path.exists(path):
        path = os.path.join(data, "mnist", name)
    raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    x = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 784)
    return torch.from_numpy(x.astype(np.float32) / 255.0).to(device)


x_train = images("train-images-idx3-ubyte")
x_test = images("t10k-images-idx3-ubyte")
W = torch.nn.init.trunc_normal_(torch.empty(nv, nh), std=0.1, a=-0.2, b=0.2).to(device)
hb = torch.full((nh,), 0.1, device=device)
vb = torch.full((nv,), 0.1, device=device)


def sample(p):
    return (p > torch.rand_like(p)).to(p.dtype)


def update(W, hb, vb, v0):
    ph0 = torch.sigmoid(torch.addmm(hb, v0, W))
    h = sample(ph0)
    for _ in range(k):
        v = sample(torch.sigmoid(torch.addmm(vb, h, W.t())))
        h = sample(torch.sigmoid(torch.addmm(hb, v, W)))
    W.add_(v0.t() @ ph0 - v.t() @ h, alpha=lr / b)
    hb.add_((ph0 - h).mean(0), alpha=lr)
    vb.add_((v0 - v).mean(0), alpha=lr)


def sync():
    # GPU work is queued: wait for it, so the timing covers it.
    if device.type == "cuda":
        torch.cuda.synchronize()


with torch.no_grad():
    step = update
    if compiled:
        step = torch.compile(update)
        state = torch.get_rng_state()
        step(W.clone(), hb.clone(), vb.clone(), x_train[:b])
        torch.set_rng_state(state)
    order = torch.randperm(x_train.shape[0]).to(device)
    sync()
    start = time.perf_counter()
    for i in range(0, x_train.shape[0] - b + 1, b):
        step(W, hb, vb, x_train[order[i : i + b]])
    sync()
    seconds = time.perf_counter() - start
    recon = torch.sigmoid(torch.addmm(vb, torch.sigmoid(torch.addmm(hb, x_test, W)), W.t()))
    error = ((x_test - recon) ** 2).mean().item()
print(f"seconds {seconds:.3f} loss {error:.5f}")
