"""moe - sparsely-gated mixture-of-experts layers and models (Shazeer et al., 2017) in C, from
Python: numpy in and out, parameters as views of the library's own memory.

    import moe
    layer = moe.Layer(d=64, h=128, n=16, k=2, seed=1)
    y = layer.forward(x, train=True)          # x: float32 [B, 64]
    dx = layer.backward(dy)                   # gradients into layer.grads (numpy views)
    lm = moe.LanguageModel.load("runs/lm/model.safetensors")
    print(lm.sample("The ", length=100))
    moe.bleu(["a cat sat"], ["a cat sat"])    # 1.0

moe.torch.MoE is the layer as a torch.nn.Module (import moe.torch; needs PyTorch).
"""
from ._lib import (LIBRARY_PATH, ConfigError, FileFormatError, LibIOError, MoeError, NonFiniteError,
                   OutOfMemoryError, ShapeError, StateError, lib)
from . import _lib
from .bleu import bleu, bleu_bootstrap, sentence_bleu
from .layer import Layer
from .lm import LanguageModel

__version__ = lib.moe_version().decode()


def set_threads(n):
    """Threads of the library's compute calls (<= 0: all cores). Independent of
    torch.set_num_threads and of other OpenMP users in the process: each call runs on this count
    and leaves theirs as it was."""
    _lib.set_threads(n)


def get_threads():
    return lib.moe_get_threads()


__all__ = ["Layer", "LanguageModel", "bleu", "bleu_bootstrap", "sentence_bleu", "set_threads", "get_threads", "MoeError",
           "ConfigError", "ShapeError", "NonFiniteError", "FileFormatError", "LibIOError", "OutOfMemoryError",
           "StateError", "LIBRARY_PATH", "__version__"]
