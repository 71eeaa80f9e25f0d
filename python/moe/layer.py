"""layer.py - the sparsely-gated MoE layer (SPEC 1) as a numpy object over libmoe's moe_layer.

Parameters and gradients are numpy views of the layer's own memory: writing one changes what
the C layer computes, and they stay valid (they keep the layer alive) as long as they exist.
"""
import ctypes

import numpy as np

from . import _lib
from ._lib import check, lib

PARALLEL = {"auto": 0, "blas": 1, "experts": 2}


def _f32(a, name, shape=None):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if shape is not None and a.shape != tuple(shape):
        raise _lib.ShapeError(3, "%s has shape %s, expected %s" % (name, a.shape, tuple(shape)), name)
    return a


class Layer:
    """Layer(d, h, n, k, *, groups=0, k_groups=0, bias=False, w_importance=0.1, w_load=0.1,
    noise_eps=0.01, seed=0): y [B,d] = MoE(x [B,d]), noisy top-k gating (SPEC 1.1-1.4), flat or
    hierarchical (groups > 0: k_groups of `groups` groups, k experts in each, SPEC 1.6)."""

    def __init__(self, d=512, h=1024, n=16, k=4, *, groups=0, k_groups=0, bias=False, w_importance=0.1,
                 w_load=0.1, noise_eps=0.01, seed=0, _handle=None):
        handle = ctypes.c_void_p()
        self._x = None  # the last forward's input: the C layer borrows it until the next forward
        self._B = 0
        self.serial = 0  # counts forwards: which one the layer's backward state belongs to
        if _handle is None:
            cfg = _lib.LayerConfig(d=int(d), h=int(h), n=int(n), k=int(k), bias=int(bool(bias)),
                                   w_importance=float(w_importance), w_load=float(w_load),
                                   noise_eps=float(noise_eps), groups=int(groups), k_groups=int(k_groups))
            if not 0 <= int(seed) < 2**64:
                raise _lib.ConfigError(1, "seed %r must be in [0, 2^64)" % (seed,), "Layer")
            check(lib.moe_layer_create(ctypes.byref(handle), ctypes.byref(cfg), int(seed)), "Layer")
        else:
            handle = _handle
        self._owner = _lib.Handle(handle, lib.moe_layer_free)
        self._h = handle
        c = lib.moe_layer_get_config(self._h)
        self.config = {f: getattr(c, f) for f, _ in _lib.LayerConfig._fields_}
        self.config["bias"] = bool(self.config["bias"])
        self.d, self.h, self.n, self.k = c.d, c.h, c.n, c.k
        self.groups, self.k_groups = c.groups, c.k_groups
        # noise draws per token: the primary gate's `groups`, then every group's n/groups
        self.noise_width = c.n + (c.groups if c.groups else 0)
        self.params, self.grads = {}, {}
        for i in range(lib.moe_layer_num_params(self._h)):
            p = _lib.Param()
            check(lib.moe_layer_param(self._h, i, ctypes.byref(p)), "Layer")
            shape = tuple(p.shape[j] for j in range(p.ndim))
            name = p.name.decode()
            self.params[name] = _lib.view(p.data, shape, self._owner)
            self.grads[name] = _lib.view(p.grad, shape, self._owner)
        self.stats = None

    def __repr__(self):
        kind = " groups=%d k_groups=%d" % (self.groups, self.k_groups) if self.groups else ""
        return "moe.Layer(d=%d, h=%d, n=%d, k=%d%s, bias=%s)" % (self.d, self.h, self.n, self.k, kind,
                                                                 self.config["bias"])

    # ---- files ----
    def save(self, path):
        """Writes the SPEC 1.5 safetensors file (atomically): the same file as `moe layer`."""
        check(lib.moe_layer_save(self._h, str(path).encode()), str(path))

    @classmethod
    def load(cls, path):
        h = ctypes.c_void_p()
        check(lib.moe_layer_load(ctypes.byref(h), str(path).encode()), str(path))
        return cls(_handle=h)

    # ---- compute ----
    def forward(self, x, train=False, noise=None):
        """y [B,d] (float32) for x [B,d]. train=True adds the gate noise: `noise` [B, noise_width]
        of standard normal draws, or None to draw them from the layer's seeded stream. The
        statistics of the pass land in self.stats."""
        x = _f32(x, "x")
        if x.ndim != 2 or x.shape[1] != self.d:
            raise _lib.ShapeError(3, "x has shape %s, expected [B, %d]" % (x.shape, self.d), "forward")
        B = x.shape[0]
        if noise is not None:
            noise = _f32(noise, "noise", (B, self.noise_width))
        y = np.empty((B, self.d), dtype=np.float32)
        st = _lib.LayerStats()
        check(_lib.threaded(lib.moe_layer_forward, self._h, _lib.float_ptr(y), _lib.float_ptr(x), B, 1 if train else 0,
                                    _lib.float_ptr(noise) if train else None, ctypes.byref(st)), "forward")
        self._x, self._B = x, B  # kept alive: backward reads it
        self.serial += 1
        self.stats = {f: getattr(st, f) for f, _ in _lib.LayerStats._fields_}
        return y

    def backward(self, dy, aux_grad=1.0, dx=None):
        """Backward of the last forward for sum(y*dy) + aux_grad * (L_importance + L_load):
        parameter gradients are added into self.grads; returns dx [B,d] (added into `dx` when
        one is given, a C-contiguous float32 array)."""
        dy = _f32(dy, "dy", (self._B, self.d)) if self._x is not None else _f32(dy, "dy")
        if dx is None:
            dx = np.zeros((self._B, self.d), dtype=np.float32)
        elif dx.dtype != np.float32 or not dx.flags.c_contiguous or dx.shape != (self._B, self.d):
            raise _lib.ShapeError(3, "dx must be a C-contiguous float32 array [%d, %d]" % (self._B, self.d), "backward")
        check(_lib.threaded(lib.moe_layer_backward_aux, self._h, _lib.float_ptr(dx), _lib.float_ptr(dy),
                                float(aux_grad)),
              "backward")
        return dx

    __call__ = forward

    def zero_grad(self):
        lib.moe_layer_zero_grad(self._h)

    # ---- what the last forward saw ----
    def gates(self):
        """[B, n]: each token's gate values, zero off its chosen experts."""
        g = np.empty((self._B, self.n), dtype=np.float32)
        check(lib.moe_layer_gates(self._h, _lib.float_ptr(g)), "gates")
        return g

    def counts(self):
        """[n] int32: tokens routed to each expert."""
        c = np.empty(self.n, dtype=np.int32)
        check(lib.moe_layer_counts(self._h, c.ctypes.data_as(ctypes.POINTER(ctypes.c_int))), "counts")
        return c

    def importance(self):
        v = np.empty(self.n, dtype=np.float32)
        check(lib.moe_layer_importance(self._h, _lib.float_ptr(v)), "importance")
        return v

    def load_vec(self):
        v = np.empty(self.n, dtype=np.float32)
        check(lib.moe_layer_load_vec(self._h, _lib.float_ptr(v)), "load")
        return v

    # ---- settings ----
    @property
    def rng(self):
        """(seed, counter) of the noise stream: set it back to replay a training forward."""
        s, c = ctypes.c_uint64(), ctypes.c_uint64()
        lib.moe_layer_get_rng(self._h, ctypes.byref(s), ctypes.byref(c))
        return s.value, c.value

    @rng.setter
    def rng(self, value):
        seed, counter = value
        lib.moe_layer_set_rng(self._h, int(seed), int(counter))

    def set_parallel(self, how):
        """'auto', 'blas' (experts in turn, threaded products) or 'experts' (one thread an
        expert): the same bits each way."""
        if how not in PARALLEL:
            raise _lib.ConfigError(1, "parallel must be one of %s, got %r" % (sorted(PARALLEL), how), "set_parallel")
        check(lib.moe_layer_set_parallel(self._h, PARALLEL[how]), "set_parallel")
