"""PyTorch's GEMM on the shapes of `zoo bench gemm` (same defaults), one JSON line per shape.

python3 experiments/scripts/torch_gemm.py --threads 2   # vs: zoo bench gemm --device flex
"""
import argparse, json, time

import torch

p = argparse.ArgumentParser()
p.add_argument("--d", type=int, default=256)
p.add_argument("--heads", type=int, default=4)
p.add_argument("--seq", type=int, default=256)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--reps", type=int, default=10)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
t, d, h = a.batch * a.seq, a.d, 8 * a.d // 3
bh, s, dh = a.batch * a.heads, a.seq, a.d // a.heads
shapes = [("qkv", 1, t, d, 3 * d), ("attn_out", 1, t, d, d), ("mlp_up", 1, t, d, h),
          ("mlp_down", 1, t, h, d), ("head", 1, t, d, 260), ("scores", bh, s, dh, s),
          ("probs_v", bh, s, s, dh)]
for name, b, m, k, n in shapes:
    x, y, dc = torch.rand(b, m, k), torch.rand(b, k, n), torch.rand(b, m, n)
    # forward, and the backward's two products with transposed operands (as `zoo bench gemm`)
    for p_, f in [("fwd", lambda: torch.matmul(x, y)), ("dA", lambda: torch.matmul(dc, y.transpose(1, 2))),
                  ("dB", lambda: torch.matmul(x.transpose(1, 2), dc))]:
        for _ in range(2):
            f()
        times = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        ms = sorted(times)[len(times) // 2]
        print(json.dumps({"framework": f"torch {torch.__version__}", "name": name, "pass": p_, "batch": b,
                          "m": m, "k": k, "n": n, "ms": ms * 1e3, "gflops": 2 * b * m * k * n / ms / 1e9}))
