"""bleu.py - BLEU (SPEC 3.4) as nltk 3.8 computes it, over libmoe's moe_bleu_*: corpus BLEU of
hypotheses against one reference each, sentence BLEU, and the paired bootstrap of two systems."""
import ctypes

import numpy as np

from . import _lib
from ._lib import check, lib

SMOOTHING = {0: 0, None: 0, "none": 0, 1: 1, "method1": 1, 2: 2, "method2": 2, 3: 3, "method3": 3,
             "plus1": 4}


class _Vocab(dict):
    def ids(self, sentence):
        """a string (split on whitespace, as `moe bleu`), or a sequence of tokens/ints -> int32"""
        toks = sentence.split() if isinstance(sentence, str) else list(sentence)
        return np.array([self.setdefault(t, len(self)) for t in toks], dtype=np.int32)


def _smoothing(smooth):
    if smooth not in SMOOTHING:
        raise _lib.ConfigError(1, "smooth must be 0, 1, 2, 3 or 'plus1', got %r" % (smooth,), "bleu")
    return SMOOTHING[smooth]


def _stats(vocab, ref, hyp):
    r, h = vocab.ids(ref), vocab.ids(hyp)
    s = _lib.BleuStats()
    ip = ctypes.POINTER(ctypes.c_int32)
    check(lib.moe_bleu_stats_sentence(ctypes.byref(s), h.ctypes.data_as(ip), h.size, r.ctypes.data_as(ip), r.size),
          "bleu")
    return s


def bleu(refs, hyps, smooth=0):
    """Corpus BLEU in [0, 1] of hyps against refs (one reference a hypothesis; each a string,
    split on whitespace, or a sequence of tokens), nltk's corpus_bleu with weights (0.25,)*4 and
    the given smoothing (0, 1, 2, 3 for Chen and Cherry's methods, 'plus1')."""
    sm = _smoothing(smooth)
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise _lib.ShapeError(3, "%d references but %d hypotheses" % (len(refs), len(hyps)), "bleu")
    vocab, acc = _Vocab(), _lib.BleuStats()
    for r, h in zip(refs, hyps):
        s = _stats(vocab, r, h)
        lib.moe_bleu_stats_add(ctypes.byref(acc), ctypes.byref(s))
    return lib.moe_bleu_score(ctypes.byref(acc), sm)


def sentence_bleu(ref, hyp, smooth=0):
    """BLEU of one hypothesis against its reference (nltk's sentence_bleu)."""
    sm = _smoothing(smooth)
    s = _stats(_Vocab(), ref, hyp)
    return lib.moe_bleu_score(ctypes.byref(s), sm)


def bleu_bootstrap(refs, hyps, hyps2=None, resamples=1000, smooth=0, seed=1):
    """Paired bootstrap resampling (Koehn 2004) of corpus BLEU over the sentences, as
    `moe bleu --hyp2 --bootstrap`: a dict with bleu_a, bleu_b (on the whole set), a_lo/a_hi,
    b_lo/b_hi, delta_lo/delta_hi (95% intervals of each score and of A - B), p_a_better and
    p_b_better (the fractions of resamples each wins) and resamples. hyps2 None: A's interval."""
    sm = _smoothing(smooth)
    refs, hyps = list(refs), list(hyps)
    hyps2 = None if hyps2 is None else list(hyps2)
    if len(refs) != len(hyps) or (hyps2 is not None and len(hyps2) != len(refs)):
        raise _lib.ShapeError(3, "%d references but %d and %s hypotheses" % (len(refs), len(hyps),
                              "no" if hyps2 is None else len(hyps2)), "bleu_bootstrap")
    vocab, n = _Vocab(), len(refs)
    a = (_lib.BleuStats * max(n, 1))()
    b = (_lib.BleuStats * max(n, 1))() if hyps2 is not None else None
    for i, r in enumerate(refs):
        a[i] = _stats(vocab, r, hyps[i])
        if b is not None:
            b[i] = _stats(vocab, r, hyps2[i])
    out = _lib.BleuBootstrap()
    check(lib.moe_bleu_bootstrap_pair(a, b, n, int(resamples), sm, int(seed), ctypes.byref(out)), "bleu_bootstrap")
    return {f: getattr(out, f) for f, _ in _lib.BleuBootstrap._fields_}
