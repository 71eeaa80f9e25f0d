#!/usr/bin/python3
"""gen_golden_lm.py - golden files for PyTorch parity of one training step of the language model
(src/models/lm.c, SPEC 2): the loss, the balancing losses and every parameter gradient.

Usage:  /usr/bin/python3 tests/gen_golden_lm.py [outdir]        (default: tests/golden)

Writes (read by tests/models/test_lm_parity.c):
  lm_rng.safetensors    the counter-based RNG (src/base/rng.c) ported to numpy, at (seed, counter)
                        pairs that include wrap-around: seed, counter, u64 [K] (I64 holding the
                        uint64 bits), uniform, normal [K] (F32). The C test recomputes them, so
                        the port that made the dropout masks and gate noise below is tested.
  lm_<case>.safetensors one training step, moe_lm_step(train = 1), of one model:
    metadata  vocab, d, ffn (moe | dense | none), n, k, h, w_importance, w_load, noise_eps,
              dropout, B, T, and the random streams seed, dropout_counter, moe_seed, moe_counter
              (moe_lm_rng, decimal uint64 strings)
    inputs    tokens [B,T+1] (I32); state [4,B,d] = h1, c1, h2, c2 carried in;
              every parameter under its moe_lm_param name (embedding.weight [V,d],
              lstm{1,2}.{w_ih [4d,d], w_hh [4d,d], b_ih [4d], b_hh [4d]}, softmax.w [d,V],
              softmax.b [V]) and the MoE layer's as moe.<moe_layer_param name>
    expected  loss [] (mean cross-entropy over the T*B positions), aux [] = loss.importance [] +
              loss.load [], state_out [4,B,d] (the state carried out), and grad.<name> for
              every parameter above, of  loss + aux.

The reference is the model of src/models/lm.c written in float64 torch (torch.nn.LSTM for the LSTMs,
autograd for the gradients), from float32 parameters cast to double; results are stored as
float32. It draws the dropout masks and the gate noise with the numpy port of src/base/rng.c at the
counters moe_lm_step uses:
    N = T*B positions, time-major (row t*B + b);  ctr_i = dropout_counter + i*N*d, i = 0..3
    mask_i[j] = uniform(seed, ctr_i + j) >= p, j over the [N,d] buffer, kept values * 1/(1-p)
    i = 0: embedding, 1: LSTM1 output, 2: sigmoid(MoE output), 3: LSTM2 output
    gate noise eps [N,n] row-major: eps[i] = normal(moe_seed, moe_counter + i)
The dense baseline (ffn = dense) is the MoE layer with n = 1, k = 1, hidden k*h and no balancing
losses; ffn = none drops the middle layer (and its dropout counters stay reserved).

Checks done here: the RNG port against values printed by the C library (hard-coded below); the
torch forward against a naive numpy loop (LSTM equations, gen_golden.naive_forward for the MoE);
central finite differences of the float64 loss at a few coordinates of every parameter; the same
reference in float32 (how far float32 arithmetic lands; the C test allows 1e-5); and every file
read back and compared bit for bit. Parameters are re-drawn until no position has a near-tie
between its k-th and (k+1)-th gate logit and no routed expert unit sits near its ReLU kink.
Every case has a fixed seed (crc32 of its name), so the files come out the same on every run.
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
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ left in tests/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_golden import DTYPES, cv2, fd_max_err, fstr, naive_forward, phi_cdf, rel_err, softplus, st_write  # noqa: E402,E501

MIN_GAP = 1e-3    # required gap between the k-th and (k+1)-th gate logit at every position
MIN_RELU = 1e-4   # required |pre-activation| of every routed expert unit

# ------------------------------------------------------------------------------------------
# src/base/rng.c in numpy: uint64 arithmetic wraps around, as in C

M64 = (1 << 64) - 1
U = np.uint64
GOLDEN = 0x9e3779b97f4a7c15


def _mix64(z):
    z = (z ^ (z >> U(30))) * U(0xbf58476d1ce4e5b9)
    z = (z ^ (z >> U(27))) * U(0x94d049bb133111eb)
    return z ^ (z >> U(31))


def rng_u64(seed, counters):
    """moe_rng_u64 for a Python int seed and an array of uint64 counters."""
    with np.errstate(over="ignore"):
        s = np.asarray(seed & M64, dtype=np.uint64)
        c = np.asarray(counters, dtype=np.uint64)
        return _mix64(_mix64(s + U(GOLDEN)) ^ (c * U(GOLDEN) + U(0x632be59bd9b4e019)))


def counters(start, count):
    """start, start+1, ..., start+count-1 modulo 2^64."""
    with np.errstate(over="ignore"):
        return np.asarray(start & M64, dtype=np.uint64) + np.arange(count, dtype=np.uint64)


def rng_uniform(seed, ctrs):
    """moe_rng_uniform: the top 24 bits over 2^24, exact in float32."""
    return ((rng_u64(seed, ctrs) >> U(40)).astype(np.float64) / 16777216.0).astype(np.float32)


def rng_normal(seed, ctrs):
    """moe_rng_normal: Box-Muller on two 53-bit uniforms from sub-counters 2p and 2p+1 of the
    pair p = c // 2; an even counter takes r cos(t), an odd one r sin(t). The transcendental
    functions are libm's (math module), as in C."""
    c = np.asarray(ctrs, dtype=np.uint64)
    with np.errstate(over="ignore"):
        p2 = (c >> U(1)) * U(2)
        a, b = rng_u64(seed, p2), rng_u64(seed, p2 + U(1))
    odd = (c & U(1)).ravel().tolist()
    out = np.empty(a.shape, dtype=np.float32)
    for i, (ai, bi) in enumerate(zip(a.ravel().tolist(), b.ravel().tolist())):
        u1 = (float(ai >> 11) + 1.0) * (1.0 / 9007199254740993.0)
        u2 = float(bi >> 11) * (1.0 / 9007199254740992.0)
        r, t = math.sqrt(-2.0 * math.log(u1)), 6.283185307179586 * u2
        out.flat[i] = np.float32(r * (math.sin(t) if odd[i] else math.cos(t)))
    return out


def rng_u64_int(seed, counter):
    """The same hash on Python ints (an independent check of the numpy version)."""
    def mix(z):
        z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
        z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
        return z ^ (z >> 31)
    return mix(mix((seed + GOLDEN) & M64) ^ ((counter * GOLDEN + 0x632be59bd9b4e019) & M64))


# (seed, counter, moe_rng_u64, moe_rng_uniform, moe_rng_normal) printed by the C library
C_VALUES = [
    (0, 0, 1194821194238685573, 0.0647713542, 2.3380971),
    (0, 1, 18341102154770913916, 0.994273126, -0.0841678977),
    (0, 2, 1403918956929781093, 0.0761065483, -2.26423955),
    (M64, 0xfffffffffffffff0, 16409092021533173801, 0.889538646, -0.109076545),
    (M64, (1 << 63) - 1, 14499654095809524424, 0.786027789, -0.482203841),
    (123456789012345, 987654321, 13854276376430610651, 0.75104177, -0.483397543),
]

# (seed, counter) pairs stored in lm_rng.safetensors (the C test recomputes them)
RNG_SEEDS = [0, 1, 42, M64, 0x6d6f65 ^ 7, 123456789012345]
RNG_COUNTERS = [0, 1, 2, 1000, 0xfffffffffffffff0, (1 << 63) - 1, 987654321]


def check_rng_port():
    for seed, ctr, u64, uni, nrm in C_VALUES:
        assert int(rng_u64(seed, [ctr])[0]) == u64 == rng_u64_int(seed, ctr), (seed, ctr)
        assert rng_uniform(seed, [ctr])[0] == np.float32(uni), (seed, ctr)
        assert rng_normal(seed, [ctr])[0] == np.float32(nrm), (seed, ctr)
    # wrap-around: counter ranges across 2^64 and 2*counter past 2^64
    ctr = counters(M64 - 2, 5)
    assert [int(c) for c in ctr] == [M64 - 2, M64 - 1, M64, 0, 1]
    for c in ctr:
        assert int(rng_u64(7, [c])[0]) == rng_u64_int(7, int(c))


# ------------------------------------------------------------------------------------------
# safetensors with F32, I32 and I64 tensors: written by gen_golden.st_write, read here (numpy only)

NP_OF = {v: k for k, v in DTYPES.items()}


def st_read(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    assert 8 + n <= len(buf) and (8 + n) % 8 == 0, path
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    data = buf[8 + n:]
    meta = header.pop("__metadata__", {})
    out, end = {}, 0
    for name, info in header.items():
        dt = NP_OF[info["dtype"]]
        b, e = info["data_offsets"]
        shape = tuple(info["shape"])
        assert b == end and e - b == dt.itemsize * int(np.prod(shape)), (path, name)
        out[name] = np.frombuffer(data[b:e], dtype=dt).reshape(shape).copy()
        end = e
    assert end == len(data), path + ": trailing bytes"
    return out, meta


def write_checked(path, tensors, meta):
    st_write(path, tensors, meta, cast=None)  # F32, I32 and I64 tensors as they are
    back, bmeta = st_read(path)
    assert bmeta == meta and list(back) == [nm for nm, _ in tensors], path
    for nm, arr in tensors:
        arr = np.asarray(arr)
        assert back[nm].dtype == arr.dtype and back[nm].shape == arr.shape, (path, nm)
        assert back[nm].tobytes() == arr.tobytes(), (path, nm)
    return os.path.getsize(path)


# ------------------------------------------------------------------------------------------
# the model

DENSE = ["embedding.weight", "lstm1.w_ih", "lstm1.w_hh", "lstm1.b_ih", "lstm1.b_hh",
         "lstm2.w_ih", "lstm2.w_hh", "lstm2.b_ih", "lstm2.b_hh", "softmax.w", "softmax.b"]
MOE = ["gate.w_gate", "gate.w_noise", "experts.w1", "experts.w2"]  # the layer has no biases


def layer_cfg(cfg):
    """The moe_layer settings moe_lm_create derives from the model's."""
    if cfg["ffn"] == "moe":
        return dict(n=cfg["n"], k=cfg["k"], h=cfg["h"], w_importance=cfg["w_importance"],
                    w_load=cfg["w_load"], noise_eps=cfg["noise_eps"], bias=0)
    # dense: one always-on expert of hidden k*h, no balancing losses, default noise_eps
    return dict(n=1, k=1, h=cfg["k"] * cfg["h"], w_importance=0.0, w_load=0.0, noise_eps=0.01,
                bias=0)


def streams(cfg):
    """Dropout masks [4,N*d] (bool) and gate noise eps [N,n] from the RNG port."""
    N, d = cfg["T"] * cfg["B"], cfg["d"]
    p = np.float32(cfg["dropout"])
    masks = np.stack([rng_uniform(cfg["seed"], counters(cfg["dropout_counter"] + i * N * d, N * d))
                      >= p for i in range(4)])
    eps = None
    if cfg["ffn"] != "none":
        n = layer_cfg(cfg)["n"]
        eps = rng_normal(cfg["moe_seed"], counters(cfg["moe_counter"], N * n)).reshape(N, n)
    return masks, eps


def moe_forward(x, W, eps, lc):
    """The MoE layer in training (SPEC 1.3, 1.4) as a differentiable torch function of x [N,d]
    and W (its parameters). Returns (y [N,d], L_importance, L_load, top-k gap, min |relu pre|)."""
    n, k = lc["n"], lc["k"]
    clean = x @ W["gate.w_gate"]
    sigma = softplus(x @ W["gate.w_noise"]) + float(np.float32(lc["noise_eps"]))
    H = clean + eps * sigma
    kk = min(k + 1, n)
    vals, idx = torch.topk(H, kk, dim=1, largest=True, sorted=True)
    gates = torch.zeros_like(H).scatter(1, idx[:, :k], torch.softmax(vals[:, :k], dim=1))
    pre = torch.einsum("bd,ndh->nbh", x, W["experts.w1"])
    out = torch.einsum("nbh,nhd->nbd", torch.relu(pre), W["experts.w2"])
    y = torch.einsum("bn,nbd->bd", gates, out)
    importance = gates.sum(0)
    if k < n:
        thr = torch.where(gates > 0, vals[:, k:k + 1], vals[:, k - 1:k])
        load = phi_cdf((clean - thr) / sigma).sum(0)
    else:
        load = (gates > 0).to(x.dtype).sum(0)
    l_imp = float(np.float32(lc["w_importance"])) * cv2(importance)
    l_load = float(np.float32(lc["w_load"])) * cv2(load)
    with torch.no_grad():
        gap = float((vals[:, k - 1] - vals[:, k]).min()) if k < n else math.inf
        routed = (gates > 0).t()[:, :, None].expand_as(pre)
        relu_min = float(pre.abs()[routed].min())
    return y, l_imp, l_load, gap, relu_min


def reference(params, state, tokens, cfg, dtype=torch.float64):
    """One training step in torch. params: dict name -> ndarray (MoE ones as 'moe.<name>').
    Returns dict of float64 ndarrays: loss, aux, loss.importance, loss.load, state_out, grad.*;
    plus '_gap' and '_relu' (distances of the routing from its discontinuities)."""
    V, d, B, T = cfg["vocab"], cfg["d"], cfg["B"], cfg["T"]
    N = T * B
    masks, eps = streams(cfg)
    p = float(np.float32(cfg["dropout"]))
    scale = 1.0 / (1.0 - p)
    leaf = lambda a: torch.tensor(np.asarray(a, dtype=np.float64), dtype=dtype, requires_grad=True)
    P = {nm: leaf(a) for nm, a in params.items()}
    lstms = []
    for j in (1, 2):
        lstm = torch.nn.LSTM(d, d).to(dtype)
        with torch.no_grad():
            for ours, theirs in (("w_ih", "weight_ih_l0"), ("w_hh", "weight_hh_l0"),
                                 ("b_ih", "bias_ih_l0"), ("b_hh", "bias_hh_l0")):
                getattr(lstm, theirs).copy_(P["lstm%d.%s" % (j, ours)])
        lstms.append(lstm)
    st = torch.tensor(state.astype(np.float64), dtype=dtype)  # [4,B,d]

    def drop(v, i):  # v [T,B,d]; mask i over the time-major [N,d] buffer
        if p <= 0:
            return v
        m = torch.tensor(masks[i].reshape(T, B, d).astype(np.float64), dtype=dtype)
        return v * m * scale

    inp = torch.tensor(tokens[:, :T].T.astype(np.int64))            # [T,B]
    tgt = torch.tensor(tokens[:, 1:].T.reshape(N).astype(np.int64))  # [N] time-major
    x0 = drop(F.embedding(inp, P["embedding.weight"]), 0)
    a1, (h1, c1) = lstms[0](x0, (st[0][None], st[1][None]))
    x1 = x0 + drop(a1, 1)
    l_imp = l_load = torch.zeros((), dtype=dtype)
    gap, relu_min = math.inf, math.inf
    if cfg["ffn"] != "none":
        W = {nm: P["moe." + nm] for nm in MOE}
        mo, l_imp, l_load, gap, relu_min = moe_forward(
            x1.reshape(N, d), W, torch.tensor(eps.astype(np.float64), dtype=dtype), layer_cfg(cfg))
        x2 = x1 + drop(torch.sigmoid(mo).reshape(T, B, d), 2)
    else:
        x2 = x1
    a3, (h2, c2) = lstms[1](x2, (st[2][None], st[3][None]))
    x3 = x2 + drop(a3, 3)
    logits = x3.reshape(N, d) @ P["softmax.w"] + P["softmax.b"]
    ce = F.cross_entropy(logits, tgt, reduction="mean")
    aux = l_imp + l_load
    (ce + aux).backward()

    grads = {nm: t.grad for nm, t in P.items()}
    for j, lstm in enumerate(lstms, 1):
        for ours, theirs in (("w_ih", "weight_ih_l0"), ("w_hh", "weight_hh_l0"),
                             ("b_ih", "bias_ih_l0"), ("b_hh", "bias_hh_l0")):
            grads["lstm%d.%s" % (j, ours)] = getattr(lstm, theirs).grad
    res = {"loss": ce, "aux": aux, "loss.importance": l_imp, "loss.load": l_load,
           "state_out": torch.stack([h1[0], c1[0], h2[0], c2[0]])}
    for nm, g in grads.items():
        res["grad." + nm] = g if g is not None else torch.zeros_like(P[nm])
    res = {key: val.detach().cpu().numpy().astype(np.float64) for key, val in res.items()}
    res["_gap"], res["_relu"] = gap, relu_min
    return res


def naive(params, state, tokens, cfg):
    """The forward as plain numpy loops in float64 (an independent check of the torch code).
    Returns (loss, aux, state_out)."""
    V, d, B, T = cfg["vocab"], cfg["d"], cfg["B"], cfg["T"]
    N = T * B
    masks, eps = streams(cfg)
    p = float(np.float32(cfg["dropout"]))
    P = {nm: np.asarray(a, dtype=np.float64) for nm, a in params.items()}
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))

    def drop(v, i):  # v [N,d] time-major
        return v * masks[i].reshape(N, d) / (1.0 - p) if p > 0 else v

    def lstm(x, h, c, j):  # x [N,d] time-major
        w_ih, w_hh = P["lstm%d.w_ih" % j], P["lstm%d.w_hh" % j]
        b = P["lstm%d.b_ih" % j] + P["lstm%d.b_hh" % j]
        out = np.zeros((N, d))
        for t in range(T):
            for bb in range(B):
                a = w_ih @ x[t * B + bb] + w_hh @ h[bb] + b
                i, f, g, o = sig(a[:d]), sig(a[d:2 * d]), np.tanh(a[2 * d:3 * d]), sig(a[3 * d:])
                c[bb] = f * c[bb] + i * g
                h[bb] = o * np.tanh(c[bb])
                out[t * B + bb] = h[bb]
        return out, h, c

    st = state.astype(np.float64).copy()
    emb = np.array([P["embedding.weight"][tokens[b, t]] for t in range(T) for b in range(B)])
    x0 = drop(emb, 0)
    a1, h1, c1 = lstm(x0, st[0], st[1], 1)
    x1 = x0 + drop(a1, 1)
    aux = 0.0
    if cfg["ffn"] != "none":
        lc = dict(layer_cfg(cfg), bias=False)
        pl = {nm: params["moe." + nm] for nm in MOE}
        nv = naive_forward(pl, {"x": x1, "eps": eps}, lc, True)
        aux = nv["loss.importance"] + nv["loss.load"]
        x2 = x1 + drop(sig(nv["y"]), 2)
    else:
        x2 = x1
    a3, h2, c2 = lstm(x2, st[2], st[3], 2)
    x3 = x2 + drop(a3, 3)
    logits = x3 @ P["softmax.w"] + P["softmax.b"]
    ce = 0.0
    for r in range(N):
        z = logits[r]
        zmax = z.max()
        ce += math.log(np.exp(z - zmax).sum()) - (z[tokens[r % B, r // B + 1]] - zmax)
    return ce / N, aux, np.stack([h1, c1, h2, c2])


def fd_check(params, state, tokens, cfg, ref, rng, count=3, step=1e-6):
    """Central differences of the float64 loss + aux at a few coordinates of every parameter."""
    def loss(pp):
        r = reference(pp, state, tokens, cfg)
        return r["loss"] + r["aux"]
    return fd_max_err(loss, params, list(params), ref, rng, count, 1e-7, step)


# ------------------------------------------------------------------------------------------
# cases

def draw(cfg, seed, attempt):
    V, d, B, T = cfg["vocab"], cfg["d"], cfg["B"], cfg["T"]
    rng = np.random.default_rng([seed, attempt])
    f32 = lambda a: np.asarray(a, dtype=np.float32)
    a = 1.0 / math.sqrt(d)
    p = {"embedding.weight": f32(0.8 * rng.standard_normal((V, d)))}
    for j in (1, 2):
        p["lstm%d.w_ih" % j] = f32(0.8 * a * rng.standard_normal((4 * d, d)))
        p["lstm%d.w_hh" % j] = f32(0.8 * a * rng.standard_normal((4 * d, d)))
        p["lstm%d.b_ih" % j] = f32(0.2 * rng.standard_normal(4 * d))
        p["lstm%d.b_hh" % j] = f32(0.2 * rng.standard_normal(4 * d))
    p["softmax.w"] = f32(1.5 * a * rng.standard_normal((d, V)))
    p["softmax.b"] = f32(0.2 * rng.standard_normal(V))
    if cfg["ffn"] != "none":
        lc = layer_cfg(cfg)
        n, h = lc["n"], lc["h"]
        p["moe.gate.w_gate"] = f32(0.6 * rng.standard_normal((d, n)))  # routed, not the zero init
        p["moe.gate.w_noise"] = f32(0.4 * rng.standard_normal((d, n)))
        p["moe.experts.w1"] = f32(rng.standard_normal((n, d, h)) / math.sqrt(d))
        p["moe.experts.w2"] = f32(rng.standard_normal((n, h, d)) / math.sqrt(h))
    state = np.stack([0.7 * np.tanh(rng.standard_normal((B, d))), rng.standard_normal((B, d)),
                      0.7 * np.tanh(rng.standard_normal((B, d))), rng.standard_normal((B, d))])
    tokens = rng.integers(0, V, size=(B, T + 1)).astype(np.int32)
    return p, f32(state), tokens


def make_case(outdir, name, cfg):
    seed = zlib.crc32(name.encode())
    for attempt in range(1000):
        params, state, tokens = draw(cfg, seed, attempt)
        ref = reference(params, state, tokens, cfg)
        if ref["_gap"] > MIN_GAP and ref["_relu"] > MIN_RELU:
            break
    else:
        raise RuntimeError(name + ": could not draw a case away from routing discontinuities")

    # independent checks of the reference
    loss, aux, state_out = naive(params, state, tokens, cfg)
    assert abs(loss - ref["loss"]) < 1e-12 and abs(aux - ref["aux"]) < 1e-12, (name, loss, aux)
    assert np.max(np.abs(state_out - ref["state_out"])) < 1e-12, name
    fd_worst = fd_check(params, state, tokens, cfg, ref, np.random.default_rng(seed))
    r32 = reference(params, state, tokens, cfg, torch.float32)
    f32_err = max(rel_err(r32[key], ref[key]) for key in ref
                  if not key.startswith("_") and np.max(np.abs(ref[key])) > 0)
    masks, _ = streams(cfg)

    order = [nm for nm in DENSE] + ["moe." + nm for nm in MOE if "moe." + nm in params]
    tensors = [("tokens", tokens), ("state", state)] + [(nm, params[nm]) for nm in order]
    tensors += [(key, ref[key].astype(np.float32))
                for key in ("loss", "aux", "loss.importance", "loss.load", "state_out")]
    tensors += [("grad." + nm, ref["grad." + nm].astype(np.float32)) for nm in order]
    meta = {key: str(cfg[key]) for key in ("vocab", "d", "ffn", "n", "k", "h", "B", "T", "seed",
                                           "dropout_counter", "moe_seed", "moe_counter")}
    for key in ("w_importance", "w_load", "noise_eps", "dropout"):
        meta[key] = fstr(cfg[key])
    size = write_checked(os.path.join(outdir, "lm_%s.safetensors" % name), tensors, meta)
    print("lm_%-6s V=%d d=%d n=%d k=%d h=%d B=%d T=%d p=%g tries=%d gap=%.3g relu=%.3g "
          "kept=%.2f loss=%.6g aux=%.6g fd_err=%.1e f32_err=%.1e %dB"
          % (name, cfg["vocab"], cfg["d"], cfg["n"], cfg["k"], cfg["h"], cfg["B"], cfg["T"],
             cfg["dropout"], attempt + 1, ref["_gap"], ref["_relu"], masks.mean(), ref["loss"],
             ref["aux"], fd_worst, f32_err, size))
    return size


def make_rng(outdir):
    pairs = [(s, c) for s in RNG_SEEDS for c in RNG_COUNTERS]
    u64 = np.array([int(rng_u64(s, [c])[0]) for s, c in pairs], dtype=np.uint64)
    for (s, c), u in zip(pairs, u64):
        assert int(u) == rng_u64_int(s, c)
    uni = np.array([rng_uniform(s, [c])[0] for s, c in pairs], dtype=np.float32)
    nrm = np.array([rng_normal(s, [c])[0] for s, c in pairs], dtype=np.float32)
    bits = lambda v: np.array(v, dtype=np.uint64).view(np.int64)
    tensors = [("seed", bits([s for s, _ in pairs])), ("counter", bits([c for _, c in pairs])),
               ("u64", u64.view(np.int64)), ("uniform", uni), ("normal", nrm)]
    size = write_checked(os.path.join(outdir, "lm_rng.safetensors"), tensors, {"K": str(len(pairs))})
    print("lm_rng   %d (seed, counter) pairs %dB" % (len(pairs), size))
    return size


BASE = {"w_importance": 0.1, "w_load": 0.05, "noise_eps": 0.02}
CASES = [
    # MoE; the dropout counter crosses 2^64 inside the step and 2*moe_counter wraps too
    ("moe", dict(BASE, vocab=13, d=8, ffn="moe", n=6, k=2, h=10, B=3, T=4, dropout=0.25,
                 seed=0xC0FFEE0123456789, dropout_counter=(1 << 64) - 200,
                 moe_seed=0x6d6f65 ^ 0xC0FFEE0123456789, moe_counter=(1 << 63) - 20)),
    ("dense", dict(BASE, vocab=11, d=6, ffn="dense", n=4, k=2, h=5, B=2, T=3, dropout=0.2,
                   seed=2024, dropout_counter=5000, moe_seed=77, moe_counter=123)),
    ("none", dict(BASE, vocab=9, d=5, ffn="none", n=4, k=2, h=5, B=2, T=5, dropout=0.3,
                  seed=99, dropout_counter=0, moe_seed=0, moe_counter=0)),
]


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "golden")
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    check_rng_port()
    total = make_rng(outdir)
    for name, cfg in CASES:
        total += make_case(outdir, name, cfg)
    print("%d files, %d bytes in %s" % (len(CASES) + 1, total, outdir))


if __name__ == "__main__":
    main()
