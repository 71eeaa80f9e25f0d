#!/usr/bin/python3
"""py_binding.py - moe.torch.MoE (the C layer through the Python binding) against the usual
PyTorch MoE (bench/torch_moe.py: index_select/index_add_ dispatch, one nn.Linear pair per
expert) in the same process, and against `moe bench layer` (the C layer without Python).

  /usr/bin/python3 bench/py_binding.py [--B 16384 --d 512 --h 1024 --n 64 --k 4] [--rounds 3]
                                       [--reps 2] [--threads 2] [--no-cli] [--no-torch] [--json]

Both modules run one training step's forward and backward of sum(y * dy) + aux (noisy gating,
both balancing losses, zero_grad(set_to_none=True) first, as a training loop does). Rounds
alternate the implementations (C binding, PyTorch, CLI); each round times --reps runs after a
warm-up, and the medians over all rounds are reported with the ratios. Threads: the binding
and the CLI use --threads OpenMP threads; PyTorch its best setting here (SPEC 5):
torch.set_num_threads(1) with OPENBLAS_NUM_THREADS=--threads. At n = 1024 (4.3 GB of expert
weights per module, and their gradients) use --no-cli: three copies do not fit in 24 GB.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
for name, default in (("B", 16384), ("d", 512), ("h", 1024), ("n", 64), ("k", 4), ("rounds", 3), ("reps", 2),
                      ("threads", 2)):
    ap.add_argument("--" + name, type=int, default=default)
ap.add_argument("--moe", default=os.path.join(ROOT, "build", "moe"), help="the moe binary (for --cli)")
ap.add_argument("--no-cli", action="store_true", help="skip `moe bench layer`")
ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch MoE")
ap.add_argument("--json", action="store_true")
A = ap.parse_args()
os.environ["OPENBLAS_NUM_THREADS"] = str(A.threads)  # before torch's OpenBLAS loads

import torch  # noqa: E402

sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
os.environ.setdefault("MOE_LIBRARY", os.path.join(ROOT, "build", "libmoe.so"))
import moe  # noqa: E402
import moe.torch as mt  # noqa: E402
from torch_moe import MoE as TorchMoE  # noqa: E402

torch.set_num_threads(1)
moe.set_threads(A.threads)


def time_module(m, x, dy):
    def step():
        m.zero_grad(set_to_none=True)
        y, aux = m(x)
        ((y * dy).sum() + aux).backward()

    step()  # warm-up
    ts = []
    for _ in range(A.reps):
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
    return ts


def time_cli():
    out = subprocess.run([A.moe, "bench", "layer", "--B", str(A.B), "--d", str(A.d), "--h", str(A.h), "--experts",
                          str(A.n), "--k", str(A.k), "--threads", str(A.threads), "--reps", str(A.reps), "--no-dense",
                          "--json"], check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return [A.B / r["fwdbwd_tokens_per_s"]]


def main():
    torch.manual_seed(0)
    x, dy = torch.randn(A.B, A.d), torch.randn(A.B, A.d)
    c = mt.MoE(A.d, A.h, A.n, A.k, seed=1)
    c.train()
    t = None if A.no_torch else TorchMoE(A.d, A.h, A.n, A.k)
    times = {"binding": [], "pytorch": [], "cli": []}
    for r in range(A.rounds):
        now = {"binding": time_module(c, x, dy)}
        if t is not None:
            now["pytorch"] = time_module(t, x, dy)
        if not A.no_cli:
            now["cli"] = time_cli()
        for k, v in now.items():
            times[k] += v
        print("round %d: %s" % (r + 1, {k: ["%.3f" % s for s in v] for k, v in now.items()}), file=sys.stderr,
              flush=True)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    res = {"B": A.B, "d": A.d, "h": A.h, "n": A.n, "k": A.k, "threads": A.threads, "rounds": A.rounds,
           "reps": A.reps, "torch": torch.__version__, "moe": moe.__version__,
           "seconds": times, "median_s": med,
           "tokens_per_s": {k: A.B / v for k, v in med.items()}}
    if "pytorch" in med:
        res["pytorch_over_binding"] = med["pytorch"] / med["binding"]
    if "cli" in med:
        res["binding_over_cli"] = med["binding"] / med["cli"]
    if A.json:
        print(json.dumps(res))
        return
    print("B=%d d=%d h=%d n=%d k=%d, %d threads, forward+backward, median of %d rounds x %d" %
          (A.B, A.d, A.h, A.n, A.k, A.threads, A.rounds, A.reps))
    for k, v in med.items():
        print("  %-8s %8.3f s  %9.0f tokens/s" % (k, v, A.B / v))
    if "pytorch_over_binding" in res:
        print("  moe.torch.MoE is %.2fx faster than the PyTorch MoE" % res["pytorch_over_binding"])
    if "binding_over_cli" in res:
        print("  the binding takes %.3fx the time of moe bench layer" % res["binding_over_cli"])


if __name__ == "__main__":
    main()
