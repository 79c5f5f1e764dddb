"""One training epoch of a seed VAE preset in PyTorch, on MNIST, timed the
way genlab's metrics.jsonl times its own (the batches only: no data loading,
no validation). Usage: vae_torch.py PRESET THREADS DATA_DIR [SEED] [DEVICE]
(DEVICE: a torch device, cpu by default, e.g. cuda) [COMPILE].

vae-2 / vae-16: Dense 784-256 relu, heads 256->L; decoder L-256-784 sigmoid;
loss = sum of squared errors over pixels + KL, mean over the batch; Adam
(lr 1e-3, eps 1e-7); batch 128, 60,000 images, shuffled.
conv-vae: SPEC section 3 (two stride-2 'same' convolutions, dense 16, heads
to 2; dense 2->3136, transposed convolutions 64, 32, 1); RMSprop (lr 1e-3,
alpha 0.9, eps 1e-7); batch 32, the first 10,000 images. Glorot-uniform
kernels and zero biases, as Keras (and genlab) initialise.
With COMPILE=1 the batch's loss runs through torch.compile (its forward and
backward graphs), compiled on warm-up batches of both sizes (no update, the
random state put back) before the timed epoch.
Prints: seconds <s> loss <mean train loss over the epoch>."""
import gzip
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

preset, threads, data = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
device = torch.device(sys.argv[5] if len(sys.argv) > 5 else "cpu")
compiled = len(sys.argv) > 6 and sys.argv[6] == "1"
torch.set_num_threads(threads)
torch.manual_seed(seed)


def images(path):
    raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 784)


name = "train-images-idx3-ubyte"
path = os.path.join(data, "mnist", name + ".gz")
if not os.path.exists(path):
    path = os.path.join(data, "mnist", name)
x_all = torch.from_numpy(images(path).astype(np.float32) / 255.0).to(device)


class MlpVae(nn.Module):
    def __init__(self, latent):
        super().__init__()
        self.h = nn.Linear(784, 256)
        self.mean = nn.Linear(256, latent)
        self.logvar = nn.Linear(256, latent)
        self.d1 = nn.Linear(latent, 256)
        self.d2 = nn.Linear(256, 784)

    def forward(self, x):
        h = F.relu(self.h(x))
        mean, logvar = self.mean(h), self.logvar(h)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        return torch.sigmoid(self.d2(F.relu(self.d1(z)))), mean, logvar


class ConvVae(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.h = nn.Linear(3136, 16)
        self.mean = nn.Linear(16, 2)
        self.logvar = nn.Linear(16, 2)
        self.d = nn.Linear(2, 3136)
        self.t1 = nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1)
        self.t2 = nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1)
        self.t3 = nn.ConvTranspose2d(32, 1, 3, stride=1, padding=1)

    def forward(self, x):
        b = x.shape[0]
        h = F.relu(self.c2(F.relu(self.c1(x.view(b, 1, 28, 28)))))
        h = F.relu(self.h(h.reshape(b, 3136)))
        mean, logvar = self.mean(h), self.logvar(h)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        d = F.relu(self.d(z)).view(b, 64, 7, 7)
        d = F.relu(self.t2(F.relu(self.t1(d))))
        return torch.sigmoid(self.t3(d)).view(b, 784), mean, logvar


def keras_init(module):
    # Keras's defaults, as genlab uses: Glorot-uniform kernels, zero biases.
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


if preset == "conv-vae":
    model, batch, x_all = ConvVae(), 32, x_all[:10000]
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
else:
    model, batch = MlpVae(int(preset.split("-")[1])), 128
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)

model.apply(keras_init)
model.to(device)


def batch_loss(x):
    x_hat, mean, logvar = model(x)
    recon = ((x - x_hat) ** 2).sum(1)
    kl = -0.5 * (1 + logvar - mean**2 - logvar.exp()).sum(1)
    return (recon + kl).mean()


if compiled:
    batch_loss = torch.compile(batch_loss)
    state = torch.get_rng_state()
    last = x_all.shape[0] % batch or batch
    for rows in (batch, last):
        batch_loss(x_all[:rows]).backward()
    opt.zero_grad(set_to_none=True)
    torch.set_rng_state(state)
order = torch.randperm(x_all.shape[0]).to(device)
total, n = 0.0, 0
start = time.perf_counter()
for i in range(0, x_all.shape[0], batch):
    x = x_all[order[i : i + batch]]
    loss = batch_loss(x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    # .item() waits for the step, so the timing covers the work on a GPU too.
    total += loss.item() * x.shape[0]
    n += x.shape[0]
seconds = time.perf_counter() - start
print(f"seconds {seconds:.3f} loss {total / n:.3f}")
