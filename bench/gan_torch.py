"""The seed MLP GAN (SPEC section 4) in PyTorch: EPOCHS epochs on MNIST,
each timed over its batches only. Usage: gan_torch.py THREADS DATA_DIR [EPOCHS] [SEED] [DEVICE] [COMPILE]
(DEVICE: a torch device, cpu by default, e.g. cuda). Noise is drawn on the
device (torch.rand), gradients are set to None. With COMPILE=1 both
networks run through torch.compile, compiled on warm-up batches of both
sizes (no update, the random state put back) before the timed epochs.
Prints one line per epoch: epoch <e> seconds <s> d_loss <mean> g_loss <mean>."""
import gzip
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

threads, data = int(sys.argv[1]), sys.argv[2]
epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 1
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
device = torch.device(sys.argv[5] if len(sys.argv) > 5 else "cpu")
compiled = len(sys.argv) > 6 and sys.argv[6] == "1"
torch.set_num_threads(threads)
torch.manual_seed(seed)

name = "train-images-idx3-ubyte"
path = os.path.join(data, "mnist", name + ".gz")
raw = gzip.open(path).read() if os.path.exists(path) else open(path[:-3], "rb").read()
x_all = torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0)
x_all = (x_all * 2 - 1).to(device)


class Net(nn.Module):
    def __init__(self, widths, tanh):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.drop = nn.Dropout(0.3)
        self.tanh = tanh

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = self.drop(F.leaky_relu(layer(x), 0.2))
        x = self.layers[-1](x)
        return torch.tanh(x) if self.tanh else x


D = Net([784, 128, 64, 32, 1], False).to(device)
G = Net([100, 32, 64, 128, 784], True).to(device)
d_opt = torch.optim.Adam(D.parameters(), 0.002)
g_opt = torch.optim.Adam(G.parameters(), 0.002)
bce = nn.BCEWithLogitsLoss()


def loss(logits, target):
    return bce(logits.squeeze(1), torch.full((logits.shape[0],), target, device=device))


def noise(b):
    return torch.rand(b, 100, device=device) * 2 - 1


d_net, g_net = D, G
if compiled:
    d_net, g_net = torch.compile(D), torch.compile(G)
    state = torch.get_rng_state()
    last = x_all.shape[0] % 64 or 64
    for rows in (64, last):
        (loss(d_net(x_all[:rows]), 0.9) + loss(d_net(g_net(noise(rows))), 1.0)).backward()
    d_opt.zero_grad(set_to_none=True)
    g_opt.zero_grad(set_to_none=True)
    torch.set_rng_state(state)


for epoch in range(1, epochs + 1):
    order = torch.randperm(x_all.shape[0]).to(device)
    sums = [0.0, 0.0, 0]
    start = time.perf_counter()
    for i in range(0, x_all.shape[0], 64):
        real = x_all[order[i : i + 64]]
        b = real.shape[0]
        d_opt.zero_grad(set_to_none=True)
        # The fakes are detached: the D step needs no generator gradients.
        d_loss = loss(d_net(real), 0.9) + loss(d_net(g_net(noise(b)).detach()), 0.0)
        d_loss.backward()
        d_opt.step()
        g_opt.zero_grad(set_to_none=True)
        g_loss = loss(d_net(g_net(noise(b))), 1.0)
        g_loss.backward()
        g_opt.step()
        # .item() waits for the step, so the timing covers the work on a GPU too.
        sums[0] += d_loss.item()
        sums[1] += g_loss.item()
        sums[2] += 1
    seconds = time.perf_counter() - start
    print(f"epoch {epoch} seconds {seconds:.3f} d_loss {sums[0] / sums[2]:.4f} g_loss {sums[1] / sums[2]:.4f}", flush=True)
