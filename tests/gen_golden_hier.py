#!/usr/bin/python3
"""gen_golden_hier.py - golden files for PyTorch parity of the hierarchical MoE layer (SPEC 1.6).

Usage:  /usr/bin/python3 tests/gen_golden_hier.py [outdir]        (default: tests/golden)

Same three files per case as gen_golden.py (read by tests/moe/test_golden.c), for a layer of a
groups of b = n/a experts:
  hier_<case>.params.safetensors    gate.w_gate [d,a], gate.w_noise [d,a] (the primary gate),
                                    experts.*, gate2.w_gate [a,d,b], gate2.w_noise [a,d,b] (the
                                    groups' gates); metadata as gen_golden.py plus groups, k_groups
  hier_<case>.input.safetensors     x, dy, and in training eps [B, a + n]: per token the primary
                                    gate's a draws, then group i's b draws at a + i*b
  hier_<case>.expected.safetensors  y, gates [B,n] (Gp_i * G_i,j), both losses, every gradient,
                                    stats.importance / stats.load (Importance_H, Load_H)

The reference is float64 torch autograd, written from SPEC 1.6 without looking at the C code:
each group's gate runs on the tokens the primary gate sends it; Load_H = Load_p * Load_i / |X^(i)|.
Inputs are re-drawn until both levels have a clear gap (1e-3) between the k-th and (k+1)-th
logit, and top-k recomputed in float32 must agree. One case is checked by finite differences.
"""
import os
import sys
import zlib

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_golden import (draw_gate_experts, draw_inputs, experts_and_losses, f32, layer_fd_check,  # noqa: E402
                        layer_meta, phi_cdf, softplus, write_case)

W_IMPORTANCE, W_LOAD, NOISE_EPS, MIN_GAP = 0.1, 0.05, 0.01, 1e-3


def noisy_topk(x, wg, wn, eps, k, train, noise_eps):
    """One noisy top-k gate on rows x: (dense gates, load vector, smooth?)."""
    n = wg.shape[1]
    clean = x @ wg
    if train:
        sigma = softplus(x @ wn) + noise_eps
        H = clean + eps * sigma
    else:
        H = clean
    kk = min(k + 1, n)
    vals, idx = torch.topk(H, kk, dim=1, largest=True, sorted=True)
    gates = torch.zeros_like(H).scatter(1, idx[:, :k], torch.softmax(vals[:, :k], dim=1))
    if train and k < n:
        thr = torch.where(gates > 0, vals[:, k:k + 1], vals[:, k - 1:k])
        load = phi_cdf((clean - thr) / sigma).sum(0)
    else:
        load = (gates > 0).to(torch.float64).sum(0)
    return gates, load, H


def reference(p, inp, cfg, train):
    a, n, kp, ks = cfg["groups"], cfg["n"], cfg["k_groups"], cfg["k"]
    b = n // a
    P = {name: torch.tensor(v.astype(np.float64), requires_grad=True) for name, v in p.items()}
    x = torch.tensor(inp["x"].astype(np.float64), requires_grad=True)
    dy = torch.tensor(inp["dy"].astype(np.float64))
    ne = float(np.float32(cfg["noise_eps"]))
    eps = torch.tensor(inp["eps"].astype(np.float64)) if train else None
    B = x.shape[0]
    gp, load_p, Hp = noisy_topk(x, P["gate.w_gate"], P["gate.w_noise"], eps[:, :a] if train else None, kp, train, ne)
    blocks, loads, H2s = [], [], []
    for i in range(a):
        idx = torch.nonzero(gp[:, i] > 0).flatten()
        ci = int(idx.numel())
        if ci == 0:
            blocks.append(torch.zeros(B, b, dtype=torch.float64))
            loads.append(torch.zeros(b, dtype=torch.float64))
            continue
        e2 = eps[idx, a + i * b:a + (i + 1) * b] if train else None
        gi, load_i, H2 = noisy_topk(x[idx], P["gate2.w_gate"][i], P["gate2.w_noise"][i], e2, ks, train, ne)
        H2s.append(H2.detach().numpy())
        blocks.append(torch.zeros(B, b, dtype=torch.float64).index_put((idx,), gp[idx, i:i + 1] * gi))
        loads.append(load_p[i] * load_i / ci)
    gates = torch.cat(blocks, dim=1)                     # [B, n]: expert i*b + j
    res = experts_and_losses(P, x, dy, gates, torch.cat(loads), cfg)
    res["_Hp"], res["_H2"] = Hp.detach().numpy(), H2s
    return res


def min_gap(H, k):
    if k >= H.shape[1] or H.shape[0] == 0:
        return float("inf")
    Hs = -np.sort(-H, axis=1)
    return float((Hs[:, k - 1] - Hs[:, k]).min())


def f32_routes(p, inp, cfg, train):
    """Both levels' top-k sets from float32 arithmetic, as the C code sees them."""
    a, n, kp, ks = cfg["groups"], cfg["n"], cfg["k_groups"], cfg["k"]
    b = n // a
    x = inp["x"]

    def logits(xx, wg, wn, e):
        H = xx @ wg
        if train:
            sig = (np.logaddexp(np.float32(0), xx @ wn) + np.float32(cfg["noise_eps"])).astype(np.float32)
            H = (H + e * sig).astype(np.float32)
        return H
    Hp = logits(x, p["gate.w_gate"], p["gate.w_noise"], inp["eps"][:, :a] if train else None)
    top_p = np.sort(np.argsort(-Hp, axis=1, kind="stable")[:, :kp], axis=1)
    routes = {}
    for i in range(a):
        rows = [t for t in range(x.shape[0]) if i in top_p[t]]
        if not rows:
            continue
        e = inp["eps"][rows, a + i * b:a + (i + 1) * b] if train else None
        H2 = logits(x[rows], p["gate2.w_gate"][i], p["gate2.w_noise"][i], e)
        routes[i] = (rows, np.sort(np.argsort(-H2, axis=1, kind="stable")[:, :ks], axis=1))
    return top_p, routes


def draw(cfg, train, seed):
    d, n, a = cfg["d"], cfg["n"], cfg["groups"]
    b = n // a
    for attempt in range(2000):
        rng = np.random.default_rng([seed, attempt])
        p = draw_gate_experts(rng, cfg, a, 0.7)
        p["gate2.w_gate"] = f32(0.7 * rng.standard_normal((a, d, b)))
        p["gate2.w_noise"] = f32(0.3 * rng.standard_normal((a, d, b)))
        inp = draw_inputs(rng, cfg, train, a + n)
        ref = reference(p, inp, cfg, train)
        gap = min([min_gap(ref["_Hp"], cfg["k_groups"])] + [min_gap(H2, cfg["k"]) for H2 in ref["_H2"]])
        if gap > MIN_GAP:
            return p, inp, ref, attempt + 1, gap
    raise RuntimeError("could not draw a case without near-ties")


PARAM_ORDER = ["gate.w_gate", "gate.w_noise", "experts.w1", "experts.b1", "experts.w2", "experts.b2",
               "gate2.w_gate", "gate2.w_noise"]


def make_case(outdir, name, cfg, train, do_fd=False):
    seed = zlib.crc32(name.encode())
    p, inp, ref, tries, gap = draw(cfg, train, seed)
    # the float32 routing must be the float64 one
    top_p, routes = f32_routes(p, inp, cfg, train)
    a, b = cfg["groups"], cfg["n"] // cfg["groups"]
    G = ref["gates"]
    for t in range(G.shape[0]):
        groups = sorted({e // b for e in np.nonzero(G[t] > 0)[0]})
        assert groups == list(top_p[t]), (name, t, groups, top_p[t])
    for i, (rows, top_s) in routes.items():
        for r, t in enumerate(rows):
            assert sorted(e - i * b for e in np.nonzero(G[t, i * b:(i + 1) * b] > 0)[0] + i * b) == list(top_s[r]), \
                (name, i, t)
    fd_worst = layer_fd_check(reference, p, inp, cfg, train, ref, np.random.default_rng(seed), PARAM_ORDER,
                              4) if do_fd else None
    meta_p = dict(layer_meta(cfg), groups=str(a), k_groups=str(cfg["k_groups"]))
    params = [(nm, p[nm]) for nm in PARAM_ORDER if nm in p]
    inputs = [("x", inp["x"]), ("dy", inp["dy"])] + ([("eps", inp["eps"])] if train else [])
    keys = ["y", "gates", "loss.importance", "loss.load", "grad.x"] + ["grad." + nm for nm, _ in params] + \
        ["stats.importance", "stats.load"]
    expected = [(key, ref[key].astype(np.float32)) for key in keys]
    size = write_case(outdir, name, params, meta_p, inputs, train, expected)
    print("%-28s tries=%d min_gap=%-9.3g routed=%d L_imp=%.6g L_load=%.6g %s%dB"
          % (name, tries, gap, int((G > 0).sum()), ref["loss.importance"], ref["loss.load"],
             "" if fd_worst is None else "fd_err=%.1e " % fd_worst, size))
    return size


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    common = {"w_importance": W_IMPORTANCE, "w_load": W_LOAD, "noise_eps": NOISE_EPS, "B": 40, "d": 10, "h": 12}
    cases = []
    for (a, b, kp, ks, bias) in [(4, 4, 2, 2, 1), (4, 4, 2, 2, 0), (8, 8, 2, 1, 0), (3, 5, 1, 2, 1), (2, 6, 2, 3, 0)]:
        for mode in ("train", "eval"):
            cases.append(("hier_a%d_b%d_kp%d_ks%d_bias%d_%s" % (a, b, kp, ks, bias, mode),
                          dict(common, n=a * b, groups=a, k_groups=kp, k=ks, bias=bias), mode))
    total = 0
    for name, cfg, mode in cases:
        total += make_case(outdir, name, cfg, mode == "train", do_fd=name == "hier_a4_b4_kp2_ks2_bias1_train")
    print("%d cases, %d files, %.2f MB in %s" % (len(cases), 3 * len(cases), total / 1e6, outdir))


if __name__ == "__main__":
    main()
