#!/usr/bin/python3
"""gen_golden_lstm.py - golden files for PyTorch parity of the LSTM layer (src/nn/lstm.c).

Usage:  /usr/bin/python3 tests/gen_golden_lstm.py [outdir]        (default: tests/golden)

Writes one float32 safetensors file per case, lstm_<case>.safetensors, holding
  inputs    x [T,B,D]; w_ih [4H,D], w_hh [4H,H], b_ih [4H], b_hh [4H] (torch.nn.LSTM's
            weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0; gate order i, f, g, o);
            dh [T,B,H]; and only in cases with a carried state: h0, c0, dhT, dcT [B,H]
            (absent means zero: the C test then passes NULL)
  expected  h [T,B,H], hT [B,H], cT [B,H]; grad.x, grad.h0, grad.c0, grad.w_ih, grad.w_hh,
            grad.b_ih, grad.b_hh
  metadata  T, B, D, H   (D is the input size, torch's input_size)
The gradients are those of  L = sum(h * dh) + sum(hT * dhT) + sum(cT * dcT).

The reference is torch.nn.LSTM in float64 with autograd (float32 inputs cast to double, results
rounded to float32). Each case has a fixed seed (crc32 of its name), so the files come out the
same on every run. Checks done here: the forward is recomputed by a naive numpy loop of the
LSTM equations; a few coordinates of every gradient are compared with central differences of
that loop in float64; every file is read back and compared bit for bit. The same loop run in
float32 shows how far float32 arithmetic lands from the reference (the C test allows 1e-5).
Needs Debian's python3 (torch 1.13, numpy 1.24); the first python3 on PATH lacks them.
"""
import os
import sys
import zlib

import numpy as np
import torch

sys.dont_write_bytecode = True  # no __pycache__ left in tests/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_golden import fd_max_err, rel_err, st_read, st_write  # noqa: E402  (numpy-only safetensors IO)

# name, T, B, D, H, carried state (h0, c0, dhT, dcT nonzero), weight scale, input scale
CASES = [
    ("t7_b4_d5_h8", 7, 4, 5, 8, False, 0.5, 1.0),          # zero state, NULL paths in C
    ("t5_b3_d10_h6_state", 5, 3, 10, 6, True, 0.5, 1.0),   # D != H, carried state
    ("t1_b2_d3_h4_sat", 1, 2, 3, 4, True, 2.0, 2.0),      # one step; saturated gates
]
INPUTS = ["x", "w_ih", "w_hh", "b_ih", "b_hh", "dh", "h0", "c0", "dhT", "dcT"]
EXPECTED = ["h", "hT", "cT", "grad.x", "grad.h0", "grad.c0", "grad.w_ih", "grad.w_hh",
            "grad.b_ih", "grad.b_hh"]


def draw(T, B, D, H, state, wscale, xscale, seed):
    rng = np.random.default_rng(seed)
    f32 = lambda a: np.asarray(a, dtype=np.float32)
    d = {"x": f32(xscale * rng.standard_normal((T, B, D))),
         "w_ih": f32(wscale * rng.standard_normal((4 * H, D)) / np.sqrt(D)),
         "w_hh": f32(wscale * rng.standard_normal((4 * H, H)) / np.sqrt(H)),
         "b_ih": f32(0.3 * rng.standard_normal(4 * H)),
         "b_hh": f32(0.3 * rng.standard_normal(4 * H)),
         "dh": f32(rng.standard_normal((T, B, H)))}
    zero = np.zeros((B, H), dtype=np.float32)
    for name in ("h0", "c0", "dhT", "dcT"):
        d[name] = f32(rng.standard_normal((B, H))) if state else zero
    return d


def reference(d):
    """torch.nn.LSTM in float64; returns dict of float64 arrays (outputs and gradients)."""
    T, B, D = d["x"].shape
    H = d["w_hh"].shape[1]
    lstm = torch.nn.LSTM(D, H).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(d["w_ih"].astype(np.float64)))
        lstm.weight_hh_l0.copy_(torch.from_numpy(d["w_hh"].astype(np.float64)))
        lstm.bias_ih_l0.copy_(torch.from_numpy(d["b_ih"].astype(np.float64)))
        lstm.bias_hh_l0.copy_(torch.from_numpy(d["b_hh"].astype(np.float64)))
    t = lambda name: torch.tensor(d[name].astype(np.float64), requires_grad=True)
    x, h0, c0 = t("x"), t("h0"), t("c0")
    h, (hT, cT) = lstm(x, (h0[None], c0[None]))
    g = lambda name: torch.from_numpy(d[name].astype(np.float64))
    loss = (h * g("dh")).sum() + (hT[0] * g("dhT")).sum() + (cT[0] * g("dcT")).sum()
    loss.backward()
    res = {"h": h, "hT": hT[0], "cT": cT[0], "grad.x": x.grad, "grad.h0": h0.grad,
           "grad.c0": c0.grad, "grad.w_ih": lstm.weight_ih_l0.grad,
           "grad.w_hh": lstm.weight_hh_l0.grad, "grad.b_ih": lstm.bias_ih_l0.grad,
           "grad.b_hh": lstm.bias_hh_l0.grad}
    return {k: v.detach().numpy().astype(np.float64) for k, v in res.items()}


def naive(d, dtype):
    """The LSTM equations as plain loops over steps, in `dtype`.
    Returns (h, hT, cT, loss, largest |pre-activation|)."""
    cast = {k: v.astype(dtype) for k, v in d.items()}
    T = cast["x"].shape[0]
    H = cast["w_hh"].shape[1]
    sig = lambda a: 1 / (1 + np.exp(-a))
    hp, cp = cast["h0"], cast["c0"]
    hs, amax = [], 0.0
    for t in range(T):
        a = cast["x"][t] @ cast["w_ih"].T + cast["b_ih"] + hp @ cast["w_hh"].T + cast["b_hh"]
        amax = max(amax, float(np.abs(a).max()))
        i, f = sig(a[:, :H]), sig(a[:, H:2 * H])
        g, o = np.tanh(a[:, 2 * H:3 * H]), sig(a[:, 3 * H:])
        cp = f * cp + i * g
        hp = o * np.tanh(cp)
        hs.append(hp)
    h = np.stack(hs) if hs else np.zeros((0,) + hp.shape, dtype)
    loss = (h * cast["dh"]).sum() + (hp * cast["dhT"]).sum() + (cp * cast["dcT"]).sum()
    return h, hp, cp, loss, amax


def fd_check(d, ref, rng, count=4, step=1e-6):
    """Central differences of the naive float64 loss at a few coordinates of every input."""
    return fd_max_err(lambda dd: naive(dd, np.float64)[3], d, ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"),
                      ref, rng, count, 1e-7, step)


def make_case(outdir, name, T, B, D, H, state, wscale, xscale):
    seed = zlib.crc32(name.encode())
    d = draw(T, B, D, H, state, wscale, xscale, seed)
    ref = reference(d)

    h, hT, cT, _, amax = naive(d, np.float64)
    for key, val in (("h", h), ("hT", hT), ("cT", cT)):
        err = float(np.max(np.abs(val - ref[key])))
        assert err < 1e-12, (name, key, err)
    fd_worst = fd_check(d, ref, np.random.default_rng(seed))
    h32, hT32, cT32, _, _ = naive(d, np.float32)
    f32_err = max(rel_err(h32, ref["h"]), rel_err(hT32, ref["hT"]), rel_err(cT32, ref["cT"]))

    inputs = [nm for nm in INPUTS if state or nm not in ("h0", "c0", "dhT", "dcT")]
    tensors = [(nm, d[nm]) for nm in inputs] + [(k, ref[k].astype(np.float32)) for k in EXPECTED]
    meta = {"T": str(T), "B": str(B), "D": str(D), "H": str(H)}
    path = os.path.join(outdir, "lstm_%s.safetensors" % name)
    st_write(path, tensors, meta)
    back, bmeta = st_read(path)
    assert bmeta == meta, path
    assert list(back) == [nm for nm, _ in tensors], path
    for nm, arr in tensors:
        arr = np.asarray(arr, dtype=np.float32)
        assert back[nm].shape == arr.shape and back[nm].tobytes() == arr.tobytes(), (path, nm)
    size = os.path.getsize(path)
    print("%-20s T=%d B=%d D=%d H=%d state=%d |a|max=%.3g |h|max=%.3g |grad.x|max=%.3g "
          "fd_err=%.1e f32_naive_err=%.1e %dB"
          % (name, T, B, D, H, state, amax, np.abs(ref["h"]).max(),
             np.abs(ref["grad.x"]).max(), fd_worst, f32_err, size))
    return size


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "golden")
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    total = sum(make_case(outdir, *case) for case in CASES)
    print("%d files, %d bytes in %s" % (len(CASES), total, outdir))


if __name__ == "__main__":
    main()
