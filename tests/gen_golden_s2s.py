#!/usr/bin/python3
"""gen_golden_s2s.py - golden files for PyTorch parity of one training step of the translation
model (src/models/s2s.c): the loss and every parameter gradient, for a loss that mixes cross-entropy,
REINFORCE-like negative coefficients and masked positions.

Usage:  /usr/bin/python3 tests/gen_golden_s2s.py [outdir]        (default: tests/golden)

Writes s2s_<case>.safetensors (read by tests/models/test_s2s_parity.c):
  metadata  src_vocab, tgt_vocab, d, layers, bidir, moe, n, k, h, w_importance, w_load,
            noise_eps, dropout, B, Ts, Tt, seed (the model's: dropout masks), step (the training
            step's counter), moe0_seed, moe0_counter, moe1_seed, moe1_counter (gate noise)
  inputs    src [B,Ts], in [B,Tt], tgt [B,Tt] (I32), coef [B,Tt]; every parameter under its
            moe_s2s_param name and the MoE layers' as moe0.<name> (encoder), moe1.<name>
  expected  loss [] = sum coef * cross-entropy + the balancing losses, grad.<name> for all

The reference is the model of src/models/s2s.c in float64 torch (torch.nn.LSTM, autograd):
  xs = drop0(emb_s(src));  e1 = LSTM_enc1(xs) [+ reverse(LSTM_enc1r(reverse(xs)))]
  layers 2: e2 = LSTM_enc2(drop1(e1 [+ sigmoid(MoE0(e1))]));  enc = e2 else e1
  decoder layer l starts from encoder layer l's final (h, c) (the left-to-right LSTM's)
  xt = drop2(emb_t(in));  d1 = LSTM_dec1(xt);  layers 2: q = LSTM_dec2(drop3(d1 [+ sigmoid(MoE1(d1))]))
  a = softmax_s(q_t . (enc_s W_a));  hc = tanh([sum_s a enc_s ; q] W_c + b_c)
  logits = drop4(hc) W_o + b_o
Dropout site i of a training step with counter `step` draws its mask over the time-major [N,d]
buffer at counters step * 2^37 + i * 2^34 + j (gen_golden_lm's numpy port of src/base/rng.c); gate
noise eps [N,n] = normal(moe_seed, moe_counter + i) row-major.
Checks here: central finite differences of the float64 loss at a few coordinates of every
parameter, the float32 reference's distance, every file read back bit for bit; parameters are
re-drawn until no position has a near-tie in its top-k gate logits or a routed unit near its ReLU
kink. Needs Debian's python3 (torch, numpy).
"""
import math
import os
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_golden import fstr  # noqa: E402
from gen_golden_lm import counters, moe_forward, rng_normal, rng_uniform, write_checked  # noqa: E402

MIN_GAP, MIN_RELU = 1e-3, 1e-4
MOE = ["gate.w_gate", "gate.w_noise", "experts.w1", "experts.w2"]
SITE, STEP = 1 << 34, 1 << 37


def names(cfg):
    out = ["src_emb", "tgt_emb"]
    lst = ["enc1"] + (["enc1r"] if cfg["bidir"] else []) + (["enc2"] if cfg["layers"] == 2 else [])
    lst += ["dec1"] + (["dec2"] if cfg["layers"] == 2 else [])
    for l in lst:
        out += [l + ".w_ih", l + ".w_hh", l + ".b_ih", l + ".b_hh"]
    out += ["att.w", "comb.w", "comb.b", "out.w", "out.b"]
    if cfg["moe"]:
        out += ["moe%d.%s" % (s, nm) for s in (0, 1) for nm in MOE]
    return out


def mask(cfg, site, N):
    d, p = cfg["d"], np.float32(cfg["dropout"])
    return rng_uniform(cfg["seed"], counters(cfg["step"] * STEP + site * SITE, N * d)) >= p


def reference(P0, inp, cfg, dtype=torch.float64):
    d, B, Ts, Tt = cfg["d"], cfg["B"], cfg["Ts"], cfg["Tt"]
    p = float(np.float32(cfg["dropout"]))
    leaf = lambda a: torch.tensor(np.asarray(a, dtype=np.float64), dtype=dtype, requires_grad=True)
    P = {nm: leaf(a) for nm, a in P0.items()}
    lc = dict(n=cfg["n"], k=cfg["k"], h=cfg["h"], w_importance=cfg["w_importance"],
              w_load=cfg["w_load"], noise_eps=cfg["noise_eps"], bias=0)

    def lstm(name):
        m = torch.nn.LSTM(d, d).to(dtype)
        with torch.no_grad():
            for ours, theirs in (("w_ih", "weight_ih_l0"), ("w_hh", "weight_hh_l0"),
                                 ("b_ih", "bias_ih_l0"), ("b_hh", "bias_hh_l0")):
                getattr(m, theirs).copy_(P[name + "." + ours])
        return m

    mods = {nm: lstm(nm) for nm in ("enc1", "enc1r", "enc2", "dec1", "dec2") if nm + ".w_ih" in P}

    def drop(v, site, T):  # v [T,B,d]
        if p <= 0:
            return v
        m = torch.tensor(mask(cfg, site, T * B).reshape(T, B, d).astype(np.float64), dtype=dtype)
        return v * m / (1.0 - p)

    aux = torch.zeros((), dtype=dtype)
    gap, relu = math.inf, math.inf

    def moe(x, side, T):
        nonlocal aux, gap, relu
        N = T * B
        eps = rng_normal(cfg["moe%d_seed" % side], counters(cfg["moe%d_counter" % side], N * cfg["n"]))
        W = {nm: P["moe%d.%s" % (side, nm)] for nm in MOE}
        y, li, ll, g, r = moe_forward(x.reshape(N, d), W,
                                      torch.tensor(eps.reshape(N, cfg["n"]).astype(np.float64), dtype=dtype), lc)
        aux = aux + li + ll
        gap, relu = min(gap, g), min(relu, r)
        return torch.sigmoid(y).reshape(T, B, d)

    src = torch.tensor(inp["src"].T.astype(np.int64))  # [Ts,B]
    din = torch.tensor(inp["in"].T.astype(np.int64))   # [Tt,B]
    tgt = torch.tensor(inp["tgt"].T.astype(np.int64))
    coef = torch.tensor(inp["coef"].T.astype(np.float64), dtype=dtype)
    xs = drop(F.embedding(src, P["src_emb"]), 0, Ts)
    e1, (h1, c1) = mods["enc1"](xs)
    if cfg["bidir"]:
        eb, _ = mods["enc1r"](torch.flip(xs, [0]))
        e1 = e1 + torch.flip(eb, [0])
    enc, fin = e1, [(h1, c1)]
    if cfg["layers"] == 2:
        x2 = e1 + moe(e1, 0, Ts) if cfg["moe"] else e1
        enc, (h2, c2) = mods["enc2"](drop(x2, 1, Ts))
        fin.append((h2, c2))
    xt = drop(F.embedding(din, P["tgt_emb"]), 2, Tt)
    q, _ = mods["dec1"](xt, fin[0])
    if cfg["layers"] == 2:
        x2 = q + moe(q, 1, Tt) if cfg["moe"] else q
        q, _ = mods["dec2"](drop(x2, 3, Tt), fin[1])
    K = enc @ P["att.w"]                                    # [Ts,B,d]
    scores = torch.einsum("tbj,sbj->tbs", q, K)
    a = torch.softmax(scores, dim=2)
    ctx = torch.einsum("tbs,sbj->tbj", a, enc)
    hc = torch.tanh(torch.cat([ctx, q], dim=2) @ P["comb.w"] + P["comb.b"])
    logits = drop(hc, 4, Tt) @ P["out.w"] + P["out.b"]    # [Tt,B,V]
    nll = -torch.log_softmax(logits, dim=2).gather(2, tgt[:, :, None])[:, :, 0]
    loss = (coef * nll).sum() + aux
    loss.backward()
    grads = {nm: t.grad for nm, t in P.items()}
    for nm, m in mods.items():
        for ours, theirs in (("w_ih", "weight_ih_l0"), ("w_hh", "weight_hh_l0"),
                             ("b_ih", "bias_ih_l0"), ("b_hh", "bias_hh_l0")):
            grads[nm + "." + ours] = getattr(m, theirs).grad
    res = {"loss": loss.detach().numpy().astype(np.float64)}
    for nm in P:
        g = grads[nm]
        res["grad." + nm] = (g if g is not None else torch.zeros_like(P[nm])).detach().numpy().astype(np.float64)
    return res, gap, relu


def draw(cfg, seed, attempt):
    rng = np.random.default_rng([seed, attempt])
    f32 = lambda x: np.asarray(x, dtype=np.float32)
    d, Vs, Vt, n, h = cfg["d"], cfg["src_vocab"], cfg["tgt_vocab"], cfg["n"], cfg["h"]
    a = 1.0 / math.sqrt(d)
    P = {}
    for nm in names(cfg):
        if nm == "src_emb":
            P[nm] = f32(0.8 * rng.standard_normal((Vs, d)))
        elif nm == "tgt_emb":
            P[nm] = f32(0.8 * rng.standard_normal((Vt, d)))
        elif nm.endswith(".w_ih") or nm.endswith(".w_hh"):
            P[nm] = f32(0.8 * a * rng.standard_normal((4 * d, d)))
        elif nm.endswith(".b_ih") or nm.endswith(".b_hh"):
            P[nm] = f32(0.2 * rng.standard_normal(4 * d))
        elif nm == "att.w":
            P[nm] = f32(1.2 * a * rng.standard_normal((d, d)))
        elif nm == "comb.w":
            P[nm] = f32(a * rng.standard_normal((2 * d, d)))
        elif nm == "comb.b":
            P[nm] = f32(0.2 * rng.standard_normal(d))
        elif nm == "out.w":
            P[nm] = f32(1.5 * a * rng.standard_normal((d, Vt)))
        elif nm == "out.b":
            P[nm] = f32(0.2 * rng.standard_normal(Vt))
        elif nm.endswith("gate.w_gate"):
            P[nm] = f32(0.6 * rng.standard_normal((d, n)))
        elif nm.endswith("gate.w_noise"):
            P[nm] = f32(0.4 * rng.standard_normal((d, n)))
        elif nm.endswith("experts.w1"):
            P[nm] = f32(rng.standard_normal((n, d, h)) / math.sqrt(d))
        elif nm.endswith("experts.w2"):
            P[nm] = f32(rng.standard_normal((n, h, d)) / math.sqrt(h))
    B, Ts, Tt = cfg["B"], cfg["Ts"], cfg["Tt"]
    tgt = rng.integers(0, Vt, size=(B, Tt)).astype(np.int32)
    inp = {"src": rng.integers(0, Vs, size=(B, Ts)).astype(np.int32),
           "in": np.concatenate([np.ones((B, 1), np.int32), tgt[:, :-1]], axis=1),
           "tgt": tgt}
    coef = f32(rng.uniform(-0.3, 0.4, size=(B, Tt)))
    coef[B - 1, Tt // 2:] = 0.0  # a row that ends early: its tail is masked
    inp["coef"] = coef
    return P, inp


def make_case(outdir, name, cfg):
    seed = zlib.crc32(name.encode())
    for attempt in range(1000):
        P, inp = draw(cfg, seed, attempt)
        ref, gap, relu = reference(P, inp, cfg)
        if gap > MIN_GAP and relu > MIN_RELU:
            break
    else:
        raise RuntimeError(name + ": no draw away from routing discontinuities")
    # finite differences of the float64 loss at a few coordinates of every parameter
    rng = np.random.default_rng(seed)
    worst = 0.0
    for nm in P:
        for _ in range(2):
            i = int(rng.integers(0, P[nm].size))
            hi, lo = {k: v.astype(np.float64).copy() for k, v in P.items()}, {k: v.astype(np.float64).copy() for k, v in P.items()}
            hi[nm].flat[i] += 1e-6
            lo[nm].flat[i] -= 1e-6
            num = (reference(hi, inp, cfg)[0]["loss"] - reference(lo, inp, cfg)[0]["loss"]) / 2e-6
            ana = ref["grad." + nm].flat[i]
            err = abs(num - ana) / max(abs(ana), 1e-3)
            worst = max(worst, err)
            assert err < 1e-4, (name, nm, i, num, ana)
    r32, _, _ = reference(P, inp, cfg, torch.float32)
    f32_err = max(float(np.max(np.abs(r32[k] - ref[k]))) / max(float(np.max(np.abs(ref[k]))), 1e-6)
                  for k in ref if np.max(np.abs(ref[k])) > 0)
    order = names(cfg)
    tensors = [(k, inp[k]) for k in ("src", "in", "tgt", "coef")] + [(nm, P[nm]) for nm in order]
    tensors += [("loss", ref["loss"].astype(np.float32))]
    tensors += [("grad." + nm, ref["grad." + nm].astype(np.float32)) for nm in order]
    meta = {k: str(cfg[k]) for k in ("src_vocab", "tgt_vocab", "d", "layers", "bidir", "moe", "n", "k", "h",
                                      "B", "Ts", "Tt", "seed", "step", "moe0_seed", "moe0_counter",
                                      "moe1_seed", "moe1_counter")}
    for k in ("w_importance", "w_load", "noise_eps", "dropout"):
        meta[k] = fstr(cfg[k])
    size = write_checked(os.path.join(outdir, "s2s_%s.safetensors" % name), tensors, meta)
    print("s2s_%-7s tries=%d gap=%.3g relu=%.3g loss=%.6g fd_err=%.1e f32_err=%.1e %dB"
          % (name, attempt + 1, gap, relu, ref["loss"], worst, f32_err, size))
    return size


BASE = dict(src_vocab=9, tgt_vocab=7, d=6, n=4, k=2, h=6, w_importance=0.2, w_load=0.1, noise_eps=0.02,
            B=3, Ts=4, Tt=5, moe0_seed=11, moe0_counter=1000, moe1_seed=12, moe1_counter=(1 << 63) - 7)
CASES = [
    ("bi_moe", dict(BASE, layers=2, bidir=1, moe=1, dropout=0.2, seed=0xC0FFEE, step=5)),
    ("uni2", dict(BASE, layers=2, bidir=0, moe=0, dropout=0.3, seed=7, step=123456)),
    ("l1", dict(BASE, layers=1, bidir=1, moe=0, dropout=0.0, seed=3, step=1, Ts=6, Tt=3)),
]


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    total = sum(make_case(outdir, name, cfg) for name, cfg in CASES)
    print("%d files, %d bytes in %s" % (len(CASES), total, outdir))


if __name__ == "__main__":
    main()
