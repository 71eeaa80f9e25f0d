#!/usr/bin/python3
"""torch_fashion_mnist.py - the Fashion-MNIST classifier of `moe classify`, written in PyTorch
with the C MoE layer as a module (moe.torch.MoE) and trained with torch.optim.Adam:

    x [B,784] -> Linear(784,256) + ReLU = h1 -> h1 + MoE(h1) -> Linear(256,10)

cross-entropy plus the layer's balancing loss, Adam at 0.002 along a cosine to 2% of it, batch
256, 10 epochs, pixels standardised by the training set's mean and deviation: the settings of
`moe classify`. The data is Debian's dataset-fashion-mnist (scripts/deps.sh installs it).

    /usr/bin/python3 examples/torch_fashion_mnist.py [--epochs 10] [--limit N] [--experts 8 --k 2]

Its last line is `test accuracy: 0.xxxx`. --limit trains on the first N examples only (a quick
check). From a source tree set PYTHONPATH=python MOE_LIBRARY=build/libmoe.so, or install with
`make install`.
"""
import argparse
import gzip
import math
import os
import time

import numpy as np
import torch
from torch import nn

import moe
import moe.torch

DATA = "/usr/share/datasets/fashion-mnist"


def idx(path):
    """an idx file (gzip-compressed or not) of unsigned bytes -> ndarray"""
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\0\0" or raw[2] != 8:
        raise ValueError("%s: not an idx file of unsigned bytes" % path)
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(raw[3])]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * len(dims))
    if data.size != int(np.prod(dims)):
        raise ValueError("%s: %d bytes of data for shape %s" % (path, data.size, dims))
    return data.reshape(dims)


def load(split, data_dir):
    def find(name):
        for p in (os.path.join(data_dir, name + ".gz"), os.path.join(data_dir, name)):
            if os.path.exists(p):
                return p
        raise SystemExit("%s/%s[.gz] not found: apt-get install dataset-fashion-mnist" % (data_dir, name))
    x = idx(find("%s-images-idx3-ubyte" % split)).reshape(-1, 784)
    y = idx(find("%s-labels-idx1-ubyte" % split)).astype(np.int64)
    return x, y


class Classifier(nn.Module):
    def __init__(self, d, h, n, k, seed):
        super().__init__()
        self.inp = nn.Linear(784, d)
        self.moe = moe.torch.MoE(d, h, n, k, seed=seed)
        self.out = nn.Linear(d, 10)

    def forward(self, x):
        h1 = torch.relu(self.inp(x))
        m, aux = self.moe(h1)
        return self.out(h1 + m), aux


def main():
    ap = argparse.ArgumentParser(description="Fashion-MNIST with moe.torch.MoE")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--lr-final", type=float, default=0.02, help="the cosine's end, a fraction of --lr")
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--h", type=int, default=256)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N examples only")
    ap.add_argument("--data", default=DATA)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    moe.set_threads(a.threads)

    xtr, ytr = load("train", a.data)
    xte, yte = load("t10k", a.data)
    if a.limit:
        xtr, ytr = xtr[:a.limit], ytr[:a.limit]
    v = xtr.astype(np.float64) / 255.0
    mean, sd = v.mean(), v.std()
    prep = lambda u8: torch.from_numpy(((u8.astype(np.float32) / 255.0 - mean) / sd).astype(np.float32))  # noqa: E731
    xtr_t, xte_t = prep(xtr), prep(xte)
    ytr_t, yte_t = torch.from_numpy(ytr), torch.from_numpy(yte)

    model = Classifier(a.d, a.h, a.experts, a.k, a.seed)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    N = xtr_t.shape[0]
    steps = a.epochs * math.ceil(N / a.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: a.lr_final + (1 - a.lr_final) * 0.5 * (1 + math.cos(math.pi * min(s, steps - 1) / max(steps - 1, 1))))
    lossf = nn.CrossEntropyLoss()
    print("moe %s (%s): %d training examples, d=%d h=%d experts=%d k=%d, batch %d, %d epochs" %
          (moe.__version__, moe.LIBRARY_PATH, N, a.d, a.h, a.experts, a.k, a.batch, a.epochs), flush=True)
    for ep in range(1, a.epochs + 1):
        model.train()
        t0, seen, hits, total = time.time(), 0, 0, 0.0
        for idx_b in torch.randperm(N).split(a.batch):
            xb, yb = xtr_t[idx_b], ytr_t[idx_b]
            opt.zero_grad()
            logits, aux = model(xb)
            loss = lossf(logits, yb)
            (loss + aux).backward()
            opt.step()
            sched.step()
            seen += len(idx_b)
            hits += int((logits.argmax(1) == yb).sum())
            total += float(loss) * len(idx_b)
        model.eval()
        with torch.no_grad():
            acc = float((model(xte_t)[0].argmax(1) == yte_t).float().mean())
        st = model.moe.last_stats
        print("epoch %d: loss %.4f, train accuracy %.4f, test %.4f, CV(load) %.2f, %.1f s" %
              (ep, total / seen, hits / seen, acc, st["cv_load"], time.time() - t0), flush=True)
    print("test accuracy: %.4f" % acc)


if __name__ == "__main__":
    main()
