"""lm.py - a trained language model (SPEC 2) from a `moe train` checkpoint: evaluation,
sampling and next-token log-probabilities, over libmoe's moe_lm_ckpt."""
import ctypes
import math

import numpy as np

from . import _lib
from ._lib import check, lib

SPLITS = {"train": 0, "valid": 1, "test": 2}


def _take_text(ptr, length):
    """bytes from a malloc'ed C string, freed here"""
    try:
        return ctypes.string_at(ptr, length)
    finally:
        _lib.libc.free(ptr)


class LanguageModel:
    """LanguageModel.load(path): the model and tokenizer of a checkpoint of `moe train` (any
    size: a model of billions of parameters loads in the memory of its weights)."""

    def __init__(self, handle, path):
        self._owner = _lib.Handle(handle, lib.moe_lm_ckpt_free)
        self._c = handle
        self._m = lib.moe_lm_ckpt_model(handle)
        self.path = path
        c = lib.moe_lm_get_config(self._m)
        self.config = {f: getattr(c, f) for f, _ in _lib.LmConfig._fields_}
        self.config["ffn"] = {0: "moe", 1: "dense", 2: "none"}.get(c.ffn, c.ffn)
        self.vocab = c.vocab
        total, active = ctypes.c_int64(), ctypes.c_int64()
        lib.moe_lm_param_counts(self._m, ctypes.byref(total), ctypes.byref(active))
        self.num_params, self.active_params = total.value, active.value

    @classmethod
    def load(cls, path):
        h = ctypes.c_void_p()
        check(lib.moe_lm_ckpt_load(ctypes.byref(h), str(path).encode()), str(path))
        return cls(h, str(path))

    def __repr__(self):
        return "moe.LanguageModel(%r: vocab %d, d %d, %s, %d parameters)" % (
            self.path, self.vocab, self.config["d"], self.config["ffn"], self.num_params)

    @property
    def meta(self):
        """The checkpoint's stored settings and progress (dict of strings)."""
        out = {}
        k, v = ctypes.c_char_p(), ctypes.c_char_p()
        for i in range(lib.moe_lm_ckpt_meta_count(self._c)):
            check(lib.moe_lm_ckpt_meta_at(self._c, i, ctypes.byref(k), ctypes.byref(v)), "meta")
            out[k.value.decode()] = v.value.decode(errors="replace")
        return out

    # ---- text <-> ids ----
    def encode(self, text):
        """str or bytes -> int32 ids with the checkpoint's tokenizer"""
        data = text.encode() if isinstance(text, str) else bytes(text)
        ids, n = ctypes.POINTER(ctypes.c_int32)(), ctypes.c_size_t()
        check(lib.moe_lm_ckpt_encode(self._c, data, len(data), ctypes.byref(ids), ctypes.byref(n)), "encode")
        try:
            return np.ctypeslib.as_array(ids, (n.value,)).copy() if n.value else np.zeros(0, np.int32)
        finally:
            _lib.libc.free(ids)

    def decode(self, ids):
        ids = np.ascontiguousarray(ids, dtype=np.int32).ravel()
        txt, n = ctypes.c_void_p(), ctypes.c_size_t()
        check(lib.moe_lm_ckpt_decode(self._c, ids.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), ids.size,
                                     ctypes.byref(txt), ctypes.byref(n)), "decode")
        return _take_text(txt, n.value).decode(errors="replace")

    # ---- the model ----
    def eval(self, data, split="test", batch=32, bptt=64, max_batches=0):
        """Mean cross-entropy of a text file's split ('train', 'valid', 'test': the same 90/5/5
        blocks as `moe train`): {'loss': nats per token, 'ppl', 'bits_per_token', 'tokens'}."""
        if split not in SPLITS:
            raise _lib.ConfigError(1, "split must be one of %s, got %r" % (sorted(SPLITS), split), "eval")
        loss, tokens = ctypes.c_double(), ctypes.c_uint64()
        check(_lib.threaded(lib.moe_lm_ckpt_eval, self._c, str(data).encode(), SPLITS[split], int(batch), int(bptt),
                                   int(max_batches), ctypes.byref(loss), ctypes.byref(tokens)), str(data))
        return {"loss": loss.value, "ppl": math.exp(loss.value), "bits_per_token": loss.value / math.log(2),
                "tokens": tokens.value}

    def sample(self, prompt="\n", length=200, temperature=1.0, top_k=0, seed=1):
        """The prompt and `length` drawn tokens as text: the same text as `moe sample` with the
        same settings and seed."""
        data = prompt.encode() if isinstance(prompt, str) else bytes(prompt)
        txt, n = ctypes.c_void_p(), ctypes.c_size_t()
        check(_lib.threaded(lib.moe_lm_ckpt_sample, self._c, data, len(data), int(length), float(temperature), int(top_k),
                                     int(seed), ctypes.byref(txt), ctypes.byref(n)), "sample")
        return _take_text(txt, n.value).decode(errors="replace")

    def reset_state(self):
        """Zero the carried LSTM state (before next_logits on a new text)."""
        lib.moe_lm_reset_state(self._m)

    def next_logits(self, tokens):
        """Feeds one token per stream (tokens [B] ints) and returns the next-token
        log-probabilities [B, vocab]; the state is carried from call to call."""
        t = np.ascontiguousarray(np.atleast_1d(tokens), dtype=np.int32)
        if t.ndim != 1:
            raise _lib.ShapeError(3, "tokens must be [B], got shape %s" % (t.shape,), "next_logits")
        out = np.empty((t.size, self.vocab), dtype=np.float32)
        check(_lib.threaded(lib.moe_lm_next_logits, self._m, t.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), t.size,
                                     _lib.float_ptr(out)), "next_logits")
        return out
