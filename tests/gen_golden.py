#!/usr/bin/python3
"""gen_golden.py - golden files for PyTorch parity of the MoE layer (SPEC 1.1-1.5).

Usage:  /usr/bin/python3 tests/gen_golden.py [outdir]        (default: tests/golden)

For every case it writes three safetensors files (SPEC 1.5 layout):
  <case>.params.safetensors    gate.w_gate [d,n], gate.w_noise [d,n], experts.w1 [n,d,h],
                               [experts.b1 [n,h]], experts.w2 [n,h,d], [experts.b2 [n,d]];
                               metadata d, h, n, k, bias, w_importance, w_load, noise_eps
  <case>.input.safetensors     x [B,d], dy [B,d], and in training eps [B,n]; metadata mode
  <case>.expected.safetensors  y [B,d], gates [B,n], loss.importance [], loss.load [],
                               grad.x [B,d], grad.<param> for every parameter, and (for
                               debugging) stats.importance [n], stats.load [n]
The gradients are those of  sum(y * dy) + L_importance + L_load.

The reference is computed in float64 with torch autograd from the float32 values that are
stored (cast to double); results are stored as float32. Every case has its own fixed seed
(crc32 of its name), so the files are reproducible and independent of each other. Inputs are
re-drawn until no row of H has a near-tie between its k-th and (k+1)-th largest entry.

Checks done here: every file is read back with an independent reader and compared bit for bit;
every case's forward (y, gates, Importance, Load, both losses) is recomputed by a naive numpy
loop; top-k is recomputed from float32 H (as the C code will see it) and must pick the same
experts; one case's gradients are checked against central finite differences.
Needs Debian's python3 (torch 1.13, numpy 1.24); the first python3 on PATH lacks them.
"""
import json
import math
import os
import struct
import sys
import zlib

import numpy as np
import torch

W_IMPORTANCE = 0.1   # different from W_LOAD so that swapped weights are caught
W_LOAD = 0.05
NOISE_EPS = 0.01
MIN_GAP = 1e-3       # required gap between k-th and (k+1)-th H per row (C works in float32)
CV_EPS = 1e-10       # CV^2 = var / (mean^2 + 1e-10)  (SPEC 1.4)


# --------------------------------------------------------------------------------------------
# safetensors, written and read with numpy only (gen_golden_lm.py writes I32 and I64 tensors too)

DTYPES = {np.dtype("<f4"): "F32", np.dtype("<i4"): "I32", np.dtype("<i8"): "I64"}


def st_write(path, tensors, metadata=None, cast="<f4"):
    """tensors: list of (name, ndarray); metadata: dict str -> str. Every array is written as
    `cast` (float32 by default, whatever it holds), or with cast=None in its own dtype, which must
    be one of DTYPES."""
    header = {}
    if metadata:
        for key, val in metadata.items():
            assert isinstance(key, str) and isinstance(val, str)
        header["__metadata__"] = dict(metadata)
    blobs, off = [], 0
    for name, arr in tensors:
        arr = np.asarray(arr, dtype=cast)  # (ascontiguousarray would make a scalar 1-d)
        dt = arr.dtype.newbyteorder("<")
        assert dt in DTYPES and name not in header, name
        raw = arr.astype(dt).tobytes(order="C")
        header[name] = {"dtype": DTYPES[dt], "shape": list(arr.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-(8 + len(hjson))) % 8)  # data area starts 8-aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def st_read(path):
    """Returns (dict name -> ndarray, metadata dict). Validates the layout strictly."""
    with open(path, "rb") as f:
        buf = f.read()
    assert len(buf) >= 8, path
    (n,) = struct.unpack("<Q", buf[:8])
    assert 8 + n <= len(buf) and (8 + n) % 8 == 0, path
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    data = buf[8 + n:]
    meta = header.pop("__metadata__", {})
    out, ranges = {}, []
    for name, info in header.items():
        assert info["dtype"] == "F32", (path, name)
        b, e = info["data_offsets"]
        shape = tuple(info["shape"])
        numel = int(np.prod(shape)) if shape else 1
        assert 0 <= b <= e <= len(data) and e - b == 4 * numel, (path, name)
        out[name] = np.frombuffer(data[b:e], dtype="<f4").reshape(shape).copy()
        ranges.append((b, e))
    ranges.sort()
    for (b0, e0), (b1, _) in zip(ranges, ranges[1:]):
        assert e0 <= b1, path + ": overlapping tensors"
    assert (ranges[-1][1] if ranges else 0) == len(data), path + ": trailing bytes"
    return out, meta


def fstr(v):
    """Shortest decimal string that parses back (strtof) to the same float32."""
    s = str(np.float32(v))
    assert np.float32(float(s)) == np.float32(v), s
    return s


# --------------------------------------------------------------------------------------------
# the reference, float64 torch with autograd

def softplus(t):
    # log(1 + exp(t)) without overflow, no threshold approximation
    return torch.clamp(t, min=0) + torch.log1p(torch.exp(-torch.abs(t)))


def phi_cdf(z):
    return 0.5 * torch.erfc(-z / math.sqrt(2.0))


def cv2(v):
    return v.var(unbiased=False) / (v.mean() ** 2 + CV_EPS)


def reference(p, inp, cfg, train):
    """p, inp: dicts of float32 ndarrays. Returns dict of float64 ndarrays (outputs and grads)."""
    n, k = cfg["n"], cfg["k"]
    P = {name: torch.tensor(a.astype(np.float64), requires_grad=True) for name, a in p.items()}
    x = torch.tensor(inp["x"].astype(np.float64), requires_grad=True)
    dy = torch.tensor(inp["dy"].astype(np.float64))
    noise_eps = float(np.float32(cfg["noise_eps"]))

    clean = x @ P["gate.w_gate"]                                   # [B,n]
    if train:
        eps = torch.tensor(inp["eps"].astype(np.float64))
        sigma = softplus(x @ P["gate.w_noise"]) + noise_eps       # [B,n]
        H = clean + eps * sigma
    else:
        H = clean
    kk = min(k + 1, n)
    vals, idx = torch.topk(H, kk, dim=1, largest=True, sorted=True)  # values keep H's graph
    top_idx = idx[:, :k]
    gates = torch.zeros_like(H).scatter(1, top_idx, torch.softmax(vals[:, :k], dim=1))
    if train and k < n:
        in_top = gates > 0  # == membership in top_idx: softmax values are > 0
        thr = torch.where(in_top, vals[:, k:k + 1], vals[:, k - 1:k])
        load = phi_cdf((clean - thr) / sigma).sum(0)
    else:
        load = (gates > 0).to(torch.float64).sum(0)  # counts, no gradient
    res = experts_and_losses(P, x, dy, gates, load, cfg)
    res["_top_idx"] = top_idx.numpy()
    return res


def experts_and_losses(P, x, dy, gates, load, cfg):
    """The rest of a layer's reference once its gates [B,n] and Load [n] are known (the flat and the
    hierarchical layer alike): y, both balancing losses, and the backward of the total loss
    sum(y*dy) + L_importance + L_load. Returns the results as float64 ndarrays, "_total" a float."""
    # experts: evaluated densely here (a gate of 0 contributes nothing, to y or to any grad)
    hid = torch.relu(torch.einsum("bd,ndh->nbh", x, P["experts.w1"])
                     + (P["experts.b1"][:, None, :] if cfg["bias"] else 0.0))
    out = torch.einsum("nbh,nhd->nbd", hid, P["experts.w2"]) \
        + (P["experts.b2"][:, None, :] if cfg["bias"] else 0.0)   # [n,B,d]
    y = torch.einsum("bn,nbd->bd", gates, out)
    importance = gates.sum(0)
    l_imp = float(np.float32(cfg["w_importance"])) * cv2(importance)
    l_load = float(np.float32(cfg["w_load"])) * cv2(load)
    total = (y * dy).sum() + l_imp + l_load
    total.backward()

    res = {"y": y, "gates": gates, "loss.importance": l_imp, "loss.load": l_load,
           "stats.importance": importance, "stats.load": load, "grad.x": x.grad}
    for name, t in P.items():
        res["grad." + name] = t.grad if t.grad is not None else torch.zeros_like(t)
    res = {key: val.detach().numpy().astype(np.float64) for key, val in res.items()}
    res["_total"] = float(total.detach())
    return res


# --------------------------------------------------------------------------------------------
# an independent naive forward (numpy, loops), to catch mistakes in the torch code

def naive_forward(p, inp, cfg, train):
    B, d = inp["x"].shape
    n, k, h = cfg["n"], cfg["k"], cfg["h"]
    nz = float(np.float32(cfg["noise_eps"]))
    w_imp, w_load = float(np.float32(cfg["w_importance"])), float(np.float32(cfg["w_load"]))
    X = inp["x"].astype(np.float64)
    Wg, Wn = p["gate.w_gate"].astype(np.float64), p["gate.w_noise"].astype(np.float64)
    W1, W2 = p["experts.w1"].astype(np.float64), p["experts.w2"].astype(np.float64)
    b1 = p["experts.b1"].astype(np.float64) if cfg["bias"] else np.zeros((n, h))
    b2 = p["experts.b2"].astype(np.float64) if cfg["bias"] else np.zeros((n, d))
    y = np.zeros((B, d))
    G = np.zeros((B, n))
    load = np.zeros(n)
    for b in range(B):
        clean = [sum(X[b, j] * Wg[j, i] for j in range(d)) for i in range(n)]
        if train:
            sig = []
            for i in range(n):
                r = sum(X[b, j] * Wn[j, i] for j in range(d))
                sig.append(math.log1p(math.exp(r)) + nz)
            Hrow = [clean[i] + float(inp["eps"][b, i]) * sig[i] for i in range(n)]
        else:
            Hrow = list(clean)
        order = sorted(range(n), key=lambda i: (-Hrow[i], i))  # ties: lower index first
        top = order[:k]
        m = max(Hrow[i] for i in top)
        ex = {i: math.exp(Hrow[i] - m) for i in top}
        s = sum(ex.values())
        for i in top:
            G[b, i] = ex[i] / s
            hid = [max(0.0, sum(X[b, j] * W1[i, j, q] for j in range(d)) + b1[i, q])
                   for q in range(h)]
            for c in range(d):
                y[b, c] += G[b, i] * (sum(hid[q] * W2[i, q, c] for q in range(h)) + b2[i, c])
        for i in range(n):
            if train and k < n:
                others = sorted((Hrow[j] for j in range(n) if j != i), reverse=True)
                z = (clean[i] - others[k - 1]) / sig[i]
                load[i] += 0.5 * math.erfc(-z / math.sqrt(2.0))
            else:
                load[i] += 1.0 if i in top else 0.0

    def cv2n(v):
        mean = sum(v) / len(v)
        var = sum((a - mean) ** 2 for a in v) / len(v)
        return var / (mean * mean + CV_EPS)
    imp = G.sum(0)
    return {"y": y, "gates": G, "stats.importance": imp, "stats.load": load,
            "loss.importance": w_imp * cv2n(imp), "loss.load": w_load * cv2n(load)}


# --------------------------------------------------------------------------------------------
# cases

def f32(a):
    return np.asarray(a, dtype=np.float32)


def draw_gate_experts(rng, cfg, width, gate_scale):
    """The first gate [d, width] and the experts of a layer, in the order that rng draws them for
    the committed files: w_gate, w_noise, w1, [b1], w2, [b2]."""
    d, h, n = cfg["d"], cfg["h"], cfg["n"]
    p = {"gate.w_gate": f32(gate_scale * rng.standard_normal((d, width))),
         "gate.w_noise": f32(0.3 * rng.standard_normal((d, width))),
         "experts.w1": f32(rng.standard_normal((n, d, h)) / math.sqrt(d))}
    if cfg["bias"]:
        p["experts.b1"] = f32(0.1 * rng.standard_normal((n, h)))
    p["experts.w2"] = f32(rng.standard_normal((n, h, d)) / math.sqrt(h))
    if cfg["bias"]:
        p["experts.b2"] = f32(0.1 * rng.standard_normal((n, d)))
    return p


def draw_inputs(rng, cfg, train, noise_width):
    """x [B,d], dy [B,d] and, for training, the gate noise eps [B,noise_width]."""
    B, d = cfg["B"], cfg["d"]
    inp = {"x": f32(rng.standard_normal((B, d))), "dy": f32(rng.standard_normal((B, d)))}
    if train:
        inp["eps"] = f32(rng.standard_normal((B, noise_width)))
    return inp


def draw(cfg, train, seed):
    """Draws params and inputs, re-drawing until top-k has a clear gap. Returns (p, inp, tries, gap)."""
    n, k = cfg["n"], cfg["k"]
    for attempt in range(1000):
        rng = np.random.default_rng([seed, attempt])
        p = draw_gate_experts(rng, cfg, n, 0.5)
        inp = draw_inputs(rng, cfg, train, n)
        H = inp["x"].astype(np.float64) @ p["gate.w_gate"].astype(np.float64)
        if train:
            r = inp["x"].astype(np.float64) @ p["gate.w_noise"].astype(np.float64)
            H = H + inp["eps"] * (np.logaddexp(0.0, r) + float(np.float32(cfg["noise_eps"])))
        if k == n:
            return p, inp, attempt + 1, float("inf")
        Hs = -np.sort(-H, axis=1)
        gap = float((Hs[:, k - 1] - Hs[:, k]).min())
        if gap > MIN_GAP:
            return p, inp, attempt + 1, gap
    raise RuntimeError("could not draw a case without near-ties")


def float32_topk(p, inp, cfg, train):
    """Top-k experts from H computed in float32 (what the C code sees), sorted index sets."""
    x, wg = inp["x"], p["gate.w_gate"]
    H = x @ wg
    if train:
        r = x @ p["gate.w_noise"]
        sig = (np.logaddexp(np.float32(0), r) + np.float32(cfg["noise_eps"])).astype(np.float32)
        H = (H + inp["eps"] * sig).astype(np.float32)
    order = np.argsort(-H, axis=1, kind="stable")
    return np.sort(order[:, :cfg["k"]], axis=1)


PARAM_ORDER = ["gate.w_gate", "gate.w_noise", "experts.w1", "experts.b1", "experts.w2",
               "experts.b2"]
EXPECTED_ORDER = ["y", "gates", "loss.importance", "loss.load", "grad.x"]


def fd_max_err(loss, arrays, names, grads, rng, count, tol, step=1e-6):
    """Central differences of loss(arrays), every array cast to float64, at `count` random
    coordinates of each named array, against grads["grad." + name]. Asserts that each relative
    error is below tol; returns the largest. Every generator's finite-difference check is this."""
    worst = 0.0
    for nm in names:
        for _ in range(count):
            j = tuple(int(rng.integers(0, s)) for s in arrays[nm].shape)
            vals = []
            for sgn in (1, -1):
                aa = {a: b.astype(np.float64) for a, b in arrays.items()}
                aa[nm][j] += sgn * step
                vals.append(loss(aa))
            fd = (vals[0] - vals[1]) / (2 * step)
            an = grads["grad." + nm][j]
            err = abs(fd - an) / max(1.0, abs(an))
            assert err < tol, (nm, j, fd, an)
            worst = max(worst, err)
    return worst


def layer_fd_check(reference, p, inp, cfg, train, ref, rng, param_order, count):
    """fd_max_err of a layer's total loss over its parameters and x (reference(p, inp, cfg, train)
    returns it as "_total"; p and inp share no name)."""
    def total(aa):
        return reference({a: aa[a] for a in p}, {a: aa[a] for a in inp}, cfg, train)["_total"]
    names = [nm for nm in param_order if nm in p] + ["x"]
    return fd_max_err(total, dict(p, **inp), names, ref, rng, count, 1e-6)


def rel_err(got, want):
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-6))


def layer_meta(cfg):
    """The metadata of a layer's .params file (SPEC 1.5)."""
    return {"d": str(cfg["d"]), "h": str(cfg["h"]), "n": str(cfg["n"]), "k": str(cfg["k"]),
            "bias": "1" if cfg["bias"] else "0", "w_importance": fstr(cfg["w_importance"]),
            "w_load": fstr(cfg["w_load"]), "noise_eps": fstr(cfg["noise_eps"])}


def write_case(outdir, name, params, meta_p, inputs, train, expected):
    """Writes a case's .params, .input and .expected files and reads each back to check it, tensor
    by tensor; returns their total size."""
    files = [(name + ".params.safetensors", params, meta_p),
             (name + ".input.safetensors", inputs, {"mode": "train" if train else "eval"}),
             (name + ".expected.safetensors", expected, None)]
    size = 0
    for fname, tensors, meta in files:
        path = os.path.join(outdir, fname)
        st_write(path, tensors, meta)
        back, bmeta = st_read(path)
        assert bmeta == (meta or {}), path
        assert list(back) == [t for t, _ in tensors], path
        for t, arr in tensors:
            a = np.asarray(arr, dtype=np.float32)
            assert back[t].shape == a.shape and back[t].tobytes() == a.tobytes(), (path, t)
        size += os.path.getsize(path)
    return size


def make_case(outdir, name, cfg, train, do_fd=False):
    seed = zlib.crc32(name.encode())
    p, inp, tries, gap = draw(cfg, train, seed)
    ref = reference(p, inp, cfg, train)

    # independent checks of the reference
    assert np.array_equal(np.sort(ref["_top_idx"], axis=1), float32_topk(p, inp, cfg, train)), \
        name + ": float32 top-k differs from float64 top-k"
    nv = naive_forward(p, inp, cfg, train)
    for key, val in nv.items():
        err = float(np.max(np.abs(np.asarray(val) - ref[key])))
        assert err < 1e-10, (name, key, err)
    fd_worst = None
    if do_fd:
        fd_worst = layer_fd_check(reference, p, inp, cfg, train, ref, np.random.default_rng(seed),
                                  PARAM_ORDER, 6)

    meta_p = layer_meta(cfg)
    params = [(nm, p[nm]) for nm in PARAM_ORDER if nm in p]
    inputs = [("x", inp["x"]), ("dy", inp["dy"])] + ([("eps", inp["eps"])] if train else [])
    keys = EXPECTED_ORDER + ["grad." + nm for nm, _ in params] + ["stats.importance",
                                                                   "stats.load"]
    expected = [(key, ref[key].astype(np.float32)) for key in keys]
    size = write_case(outdir, name, params, meta_p, inputs, train, expected)
    for key in ("w_importance", "w_load", "noise_eps"):
        assert np.float32(float(meta_p[key])) == np.float32(cfg[key])

    nrouted = int((ref["gates"] > 0).sum())
    print("%-22s B=%d d=%d h=%d tries=%d min_gap=%-9.3g routed=%d L_imp=%.6g L_load=%.6g "
          "|y|max=%.3g |grad.x|max=%.3g %s%dB"
          % (name, cfg["B"], cfg["d"], cfg["h"], tries, gap, nrouted, ref["loss.importance"],
             ref["loss.load"], np.abs(ref["y"]).max(), np.abs(ref["grad.x"]).max(),
             "" if fd_worst is None else "fd_err=%.1e " % fd_worst, size))
    return size


README = """\
# Golden files: PyTorch parity of the MoE layer

Written by `tests/gen_golden.py` (re-runnable; every case has a fixed seed, so the files come out
the same): `/usr/bin/python3 tests/gen_golden.py [outdir]` (default `tests/golden`; Debian's python3,
which has torch and numpy).

Each case `<case>` (e.g. `n16_k2_bias1_train`) has three safetensors files (SPEC 1.5 layout, float32):
- `<case>.params.safetensors`: the layer (gate.w_gate, gate.w_noise, experts.w1, [experts.b1],
  experts.w2, [experts.b2]); metadata d, h, n, k, bias, w_importance (0.1), w_load (0.05), noise_eps (0.01).
- `<case>.input.safetensors`: x [B,d], dy [B,d], and for training cases eps [B,n] (the standard normal
  draws of the gate noise); metadata mode = train | eval.
- `<case>.expected.safetensors`: y, gates (dense), loss.importance, loss.load (scalars), grad.x and
  grad.<param> for every parameter, for the total loss sum(y*dy) + L_importance + L_load;
  plus stats.importance [n] and stats.load [n] (the Importance and Load vectors) for debugging.

Cases: n in {4,16,64} x k in {1,2,4} x bias in {0,1} x {train,eval} with B=40, d=12, h=16; and
n1024_k4_bias0_{train,eval} with B=24, d=8, h=8. Inputs are drawn so that no row has a near-tie
(gap < 1e-3) between its k-th and (k+1)-th gate logit.

The reference is computed in float64 with torch autograd (float32 inputs cast to double, results
rounded to float32), checked against a naive numpy loop and, for one case, finite differences.
"""


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "golden")
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    common = {"w_importance": W_IMPORTANCE, "w_load": W_LOAD, "noise_eps": NOISE_EPS}
    cases = []
    for n in (4, 16, 64):
        for k in (1, 2, 4):
            for bias in (0, 1):
                for mode in ("train", "eval"):
                    cases.append(("n%d_k%d_bias%d_%s" % (n, k, bias, mode),
                                  dict(common, B=40, d=12, h=16, n=n, k=k, bias=bias), mode))
    for mode in ("train", "eval"):
        cases.append(("n1024_k4_bias0_%s" % mode,
                      dict(common, B=24, d=8, h=8, n=1024, k=4, bias=0), mode))
    total = 0
    for name, cfg, mode in cases:
        total += make_case(outdir, name, cfg, mode == "train",
                           do_fd=name in ("n16_k2_bias1_train", "n4_k4_bias1_train"))
    with open(os.path.join(outdir, "README.md"), "w") as f:
        f.write(README)
    print("%d cases, %d files, %.2f MB in %s" % (len(cases), 3 * len(cases), total / 1e6, outdir))


if __name__ == "__main__":
    main()
