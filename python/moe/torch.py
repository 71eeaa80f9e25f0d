"""torch.py - the C MoE layer as a PyTorch module: moe.torch.MoE, on CPU float32 tensors.

Forward and backward are the C layer's (a torch.autograd.Function). The module's parameters
are torch tensors over the C layer's own memory, so torch.optim steps them in place and the C
layer computes with what the optimiser wrote; their .grad tensors are the C layer's gradient
buffers, into which the C backward adds directly (no copy of gradients, even at thousands of
experts). So:
  - optimizer.zero_grad() (to None or to zero) works: a .grad set to None is zeroed and bound
    again at the next backward;
  - gradients accumulate over several backward calls, as PyTorch's do;
  - hooks registered on these parameters do not see their gradients (autograd does not carry
    them), and a .grad replaced by another tensor is added into, not bound.
The layer keeps what backward needs for one forward. If another forward of the same module came
between a forward and its backward (two micro-batches, then one loss), that backward first
replays its forward, with the same input and the same noise, and then runs: correct, at the
cost of one more forward.
"""
import numpy as np
import torch
from torch import nn

from . import _lib
from .layer import Layer

__all__ = ["MoE"]


def _as_c_input(x, d):
    if not isinstance(x, torch.Tensor):
        raise TypeError("moe.torch.MoE takes a torch.Tensor, got %s" % type(x).__name__)
    if x.device.type != "cpu" or x.dtype != torch.float32:
        raise TypeError("moe.torch.MoE runs on CPU float32 tensors; got %s on %s (use x.float().cpu())"
                        % (x.dtype, x.device))
    if x.shape[-1] != d:
        raise _lib.ShapeError(3, "the input's last dimension is %d, the layer's d is %d" % (x.shape[-1], d), "MoE")
    return x.detach().reshape(-1, d).contiguous()


class _MoEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, module, x, noise, *params):
        layer = module._layer
        x2 = _as_c_input(x, layer.d)
        train = module.training
        ctx.rng = layer.rng  # where this forward's noise starts, to replay it
        xn = x2.numpy()
        nn_ = None
        if train and noise is not None:
            nn_ = noise.detach().reshape(x2.shape[0], layer.noise_width).contiguous().numpy()
        y = layer.forward(xn, train=train, noise=nn_)
        ctx.module, ctx.train, ctx.x, ctx.noise, ctx.serial = module, train, xn, nn_, layer.serial
        ctx.in_shape = x.shape
        st = layer.stats
        module.last_stats = st
        aux = torch.tensor(st["loss_importance"] + st["loss_load"], dtype=torch.float32)
        return torch.from_numpy(y).reshape(x.shape), aux

    @staticmethod
    def backward(ctx, dy, daux):
        module = ctx.module
        layer = module._layer
        if layer.serial != ctx.serial:  # another forward came between: replay this one
            rng = layer.rng
            layer.rng = ctx.rng
            layer.forward(ctx.x, train=ctx.train, noise=ctx.noise)
            layer.rng = rng
            ctx.serial = layer.serial
        B = ctx.x.shape[0]
        dy2 = np.zeros((B, layer.d), np.float32) if dy is None else dy.reshape(B, layer.d).contiguous().numpy()
        a = 0.0 if daux is None else float(daux)
        added = module._bind_grads()
        dx = layer.backward(dy2, aux_grad=a)
        for p, g in added:
            p.grad.add_(g)
            g.zero_()
        return (None, torch.from_numpy(dx).reshape(ctx.in_shape), None) + (None,) * len(module._order)


class MoE(nn.Module):
    """MoE(d, h, n, k, *, groups=0, k_groups=0, bias=False, w_importance=0.1, w_load=0.1,
    noise_eps=0.01, seed=0): the sparsely-gated MoE layer (SPEC 1; hierarchical when groups > 0).

    forward(x [..., d], noise=None) -> (y [..., d], aux): aux is the balancing loss
    L_importance + L_load (a 0-dim tensor; add it to the loss to train the gate to balance).
    In training mode (module.train()) the gate adds noise: `noise` [N, n] (hierarchical:
    [N, groups + n]) of standard normal draws for the N = x.numel() / d tokens, or None to draw
    it from the layer's seeded stream. Parameters, named as in SPEC 1.5 (gate.w_gate,
    experts.w1, ...), share memory with the C layer; state_dict() uses the same names and
    shapes as the safetensors files of save() and `moe layer`."""

    def __init__(self, d=512, h=1024, n=16, k=4, *, groups=0, k_groups=0, bias=False, w_importance=0.1,
                 w_load=0.1, noise_eps=0.01, seed=0, _layer=None):
        super().__init__()
        layer = _layer or Layer(d, h, n, k, groups=groups, k_groups=k_groups, bias=bias,
                                w_importance=w_importance, w_load=w_load, noise_eps=noise_eps, seed=seed)
        object.__setattr__(self, "_layer", layer)  # not a submodule
        self._order, self._grad_views = [], {}
        groups_ = {}
        for name, arr in layer.params.items():
            prefix, leaf = name.split(".", 1)
            if prefix not in groups_:
                groups_[prefix] = nn.Module()
                self.add_module(prefix, groups_[prefix])
            p = nn.Parameter(torch.from_numpy(arr))
            groups_[prefix].register_parameter(leaf, p)
            self._order.append((name, p))
            self._grad_views[name] = torch.from_numpy(layer.grads[name])
        self.d, self.h, self.n, self.k = layer.d, layer.h, layer.n, layer.k
        self.groups, self.k_groups = layer.groups, layer.k_groups
        self.last_stats = None

    @classmethod
    def load(cls, path):
        """A module from a safetensors file of save() or `moe layer`."""
        return cls(_layer=Layer.load(path))

    def save(self, path):
        self._layer.save(path)

    @property
    def layer(self):
        """The numpy moe.Layer underneath (the same memory)."""
        return self._layer

    def extra_repr(self):
        s = "d=%d, h=%d, n=%d, k=%d" % (self.d, self.h, self.n, self.k)
        if self.groups:
            s += ", groups=%d, k_groups=%d" % (self.groups, self.k_groups)
        return s

    def _bind_grads(self):
        """Before a backward: a parameter whose .grad is None gets the C layer's gradient buffer
        (zeroed); one whose .grad is that buffer is added into by C directly. Returns the
        parameters whose .grad is some other tensor, with the buffer to add from after C has
        computed into it (zeroed first)."""
        other = []
        for name, p in self._order:
            g = self._grad_views[name]
            if p.grad is None:
                g.zero_()
                p.grad = g
            elif p.grad.data_ptr() != g.data_ptr():
                g.zero_()
                other.append((p, g))
        return other

    def forward(self, x, noise=None):
        if noise is not None and not isinstance(noise, torch.Tensor):
            noise = torch.as_tensor(np.asarray(noise, np.float32))
        return _MoEFunction.apply(self, x, noise, *[p for _, p in self._order])

    # statistics of the last forward, as numpy arrays
    def gates(self):
        return self._layer.gates()

    def counts(self):
        return self._layer.counts()

    def importance(self):
        return self._layer.importance()

    def load_vec(self):
        return self._layer.load_vec()
