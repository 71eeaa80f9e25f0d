#!/usr/bin/python3
"""torch_moe.py - the PyTorch peer for the moe benchmarks (SPEC 5).

  /usr/bin/python3 bench/torch_moe.py --B 16384 --d 512 --h 1024 --n 64 --k 4 [--reps 3]
                                      [--bias] [--threads 2] [--json]

Times, in float32 on the CPU, a sparsely-gated MoE layer written the usual PyTorch way:
noisy top-k gating in training mode with the importance and load losses (SPEC 1.3-1.4),
dispatch by grouping token indices per expert + index_select, one nn.Linear pair per expert
(ModuleList: one Parameter per expert, SPEC 5), combine with index_add_ weighted by the gates;
forward, and forward + backward of sum(y * dy) + L_importance + L_load. In the same run it times
the dense FFN of equal active FLOPs (d -> k*h -> d, ReLU, no bias).

"fwd" is the training forward (autograd recording, as in a training step). Reported times are
medians over --reps timed runs after one warm-up run. GFLOP/s count the expert matrix products
only: forward 2*B*k*2*d*h (a multiply-add = 2), forward + backward 3x that.

Threads: torch.set_num_threads(1) and OPENBLAS_NUM_THREADS=2 (PyTorch's best setting on this
machine, SPEC 5); --threads sets OPENBLAS_NUM_THREADS. Needs Debian's python3 (torch 1.13).
"""
import argparse
import json
import os
import statistics
import sys
import time


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--B", type=int, default=16384, help="tokens per batch")
    ap.add_argument("--d", type=int, default=512, help="model width")
    ap.add_argument("--h", type=int, default=1024, help="expert hidden size")
    ap.add_argument("--n", type=int, default=64, help="number of experts")
    ap.add_argument("--k", type=int, default=4, help="experts per token")
    ap.add_argument("--reps", type=int, default=3, help="timed runs (median reported)")
    ap.add_argument("--bias", action="store_true", help="experts with biases")
    ap.add_argument("--threads", type=int, default=None,
                    help="OPENBLAS_NUM_THREADS (default: the environment's, else 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    if not (a.B > 0 and a.d > 0 and a.h > 0 and a.n > 0 and 1 <= a.k <= a.n and a.reps > 0):
        ap.error("need B, d, h, n, reps > 0 and 1 <= k <= n")
    if a.threads is not None and a.threads < 1:
        ap.error("--threads must be >= 1")
    return a


# Run as a script: the arguments, and the threads, which must be set before torch (and its
# OpenBLAS) is loaded. Imported (bench/py_binding.py imports MoE), the importer sets them.
if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.threads is not None:
        os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.threads)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)


def cv_squared(v):
    return v.var(unbiased=False) / (v.mean() ** 2 + 1e-10)


def normal_cdf(z):
    return 0.5 * torch.erfc(-z * (0.5 ** 0.5))


class MoE(nn.Module):
    """Noisy top-k gated MoE (Shazeer et al. 2017), training mode."""

    def __init__(self, d, h, n, k, bias=False, w_importance=0.1, w_load=0.1, noise_eps=0.01):
        super().__init__()
        self.d, self.h, self.n, self.k = d, h, n, k
        self.w_importance, self.w_load, self.noise_eps = w_importance, w_load, noise_eps
        # The paper initialises the gate to zero (balanced load at the start).
        self.w_gate = nn.Parameter(torch.zeros(d, n))
        self.w_noise = nn.Parameter(torch.zeros(d, n))
        self.fc1 = nn.ModuleList([nn.Linear(d, h, bias=bias) for _ in range(n)])
        self.fc2 = nn.ModuleList([nn.Linear(h, d, bias=bias) for _ in range(n)])

    def gate(self, x):
        n, k = self.n, self.k
        clean = x @ self.w_gate                                          # [B,n]
        sigma = F.softplus(x @ self.w_noise) + self.noise_eps
        H = clean + torch.randn_like(clean) * sigma
        vals, idx = H.topk(min(k + 1, n), dim=1)
        top_gates = F.softmax(vals[:, :k], dim=1)                        # [B,k]
        top_idx = idx[:, :k]
        gates = torch.zeros_like(H).scatter(1, top_idx, top_gates)       # [B,n]
        importance = gates.sum(0)
        if k < n:
            thr = torch.where(gates > 0, vals[:, k:k + 1], vals[:, k - 1:k])
            load = normal_cdf((clean - thr) / sigma).sum(0)
        else:
            load = (gates > 0).float().sum(0)
        loss = self.w_importance * cv_squared(importance) + self.w_load * cv_squared(load)
        return top_idx, top_gates, loss

    def forward(self, x):
        B, k = x.shape[0], self.k
        top_idx, top_gates, loss = self.gate(x)
        # dispatch: group the (token, expert) pairs by expert
        flat_expert = top_idx.reshape(-1)
        order = torch.argsort(flat_expert)
        tokens = torch.arange(B, device=x.device).repeat_interleave(k)[order]
        weights = top_gates.reshape(-1)[order]
        counts = torch.bincount(flat_expert, minlength=self.n).tolist()
        y = x.new_zeros(B, self.d)
        start = 0
        for i, c in enumerate(counts):
            if c == 0:
                continue
            tok = tokens[start:start + c]
            xi = x.index_select(0, tok)
            yi = self.fc2[i](F.relu(self.fc1[i](xi)))
            y.index_add_(0, tok, yi * weights[start:start + c, None])
            start += c
        return y, loss


class DenseFFN(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def timed(fn, reps):
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    a = ARGS
    torch.manual_seed(a.seed)
    x = torch.randn(a.B, a.d)
    dy = torch.randn(a.B, a.d)
    moe = MoE(a.d, a.h, a.n, a.k, bias=a.bias)
    dense = DenseFFN(a.d, a.k * a.h)

    def moe_fwd():
        y, loss = moe(x)
        return y, loss

    def moe_fwdbwd():
        moe.zero_grad(set_to_none=True)
        y, loss = moe(x)
        ((y * dy).sum() + loss).backward()

    def dense_fwd():
        return dense(x)

    def dense_fwdbwd():
        dense.zero_grad(set_to_none=True)
        (dense(x) * dy).sum().backward()

    fwd_s = timed(moe_fwd, a.reps)
    fwdbwd_s = timed(moe_fwdbwd, a.reps)
    dense_fwd_s = timed(dense_fwd, a.reps)
    dense_fwdbwd_s = timed(dense_fwdbwd, a.reps)

    flops_fwd = 2.0 * a.B * a.k * 2 * a.d * a.h
    threads = int(os.environ["OPENBLAS_NUM_THREADS"])
    r = {"impl": "pytorch", "B": a.B, "d": a.d, "h": a.h, "n": a.n, "k": a.k,
         "threads": threads, "bias": int(a.bias), "reps": a.reps,
         "fwd_s": fwd_s, "fwdbwd_s": fwdbwd_s,
         "fwd_tokens_per_s": a.B / fwd_s, "fwdbwd_tokens_per_s": a.B / fwdbwd_s,
         "fwd_gflops": flops_fwd / fwd_s / 1e9,
         "fwdbwd_gflops": 3 * flops_fwd / fwdbwd_s / 1e9,
         "dense_fwd_s": dense_fwd_s, "dense_fwdbwd_s": dense_fwdbwd_s,
         "dense_fwdbwd_tokens_per_s": a.B / dense_fwdbwd_s,
         "dense_fwdbwd_gflops": 3 * flops_fwd / dense_fwdbwd_s / 1e9}
    if a.json:
        print(json.dumps(r))
        return
    print("PyTorch %s peer: B=%d d=%d h=%d n=%d k=%d bias=%d, OPENBLAS_NUM_THREADS=%d, "
          "torch threads=%d, median of %d" % (torch.__version__, a.B, a.d, a.h, a.n, a.k,
                                               int(a.bias), threads, torch.get_num_threads(),
                                               a.reps))
    print("%-22s %10s %14s %10s" % ("", "seconds", "tokens/s", "GFLOP/s"))
    rows = [("MoE fwd", fwd_s, flops_fwd), ("MoE fwd+bwd", fwdbwd_s, 3 * flops_fwd),
            ("dense FFN fwd", dense_fwd_s, flops_fwd),
            ("dense FFN fwd+bwd", dense_fwdbwd_s, 3 * flops_fwd)]
    for name, s, fl in rows:
        print("%-22s %10.4f %14.0f %10.1f" % (name, s, a.B / s, fl / s / 1e9))
    print("MoE / dense time ratio: fwd %.2f, fwd+bwd %.2f" % (fwd_s / dense_fwd_s,
                                                              fwdbwd_s / dense_fwdbwd_s))


if __name__ == "__main__":
    sys.exit(main())
