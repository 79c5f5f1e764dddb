"""GFLOP/s of a 64x784 @ 784x500 f32 product in PyTorch, timed like genlab's
`cargo bench --bench matmul`: 15 timings of 200 products, median."""
import statistics
import sys
import time

import torch

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
a = torch.rand(64, 784)
b = torch.rand(784, 500) * 0.2 - 0.1
flops = 2.0 * 64 * 784 * 500
with torch.no_grad():
    for _ in range(50):
        a @ b
    samples = []
    for _ in range(15):
        t = time.perf_counter()
        for _ in range(200):
            a @ b
        samples.append(flops * 200 / (time.perf_counter() - t) / 1e9)
print(f"pytorch {torch.__version__} matmul 64x784 @ 784x500 f32, {threads} threads: median {statistics.median(samples):.1f} GFLOP/s")
