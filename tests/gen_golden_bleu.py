#!/usr/bin/python3
"""gen_golden_bleu.py - the golden file of tests/train/test_bleu.c: sentence and corpus BLEU from nltk.

Usage:  /usr/bin/python3 tests/gen_golden_bleu.py [out]      (default tests/golden/bleu_nltk.txt)

1500 random (hypothesis, reference) pairs over small vocabularies (so that n-grams match, and
often do not), lengths 0 to 30, half of the hypotheses edited copies of their reference. For
each pair, nltk 3.8's sentence_bleu with weights (0.25,)*4 and smoothing none, method1, method2,
method3, and BLEU+1 (a smoothing that adds 1 to the matches and totals of every order); then
corpus_bleu over all pairs and over the first 100 with each smoothing. Lines:
  S <tab> hyp ids <tab> ref ids <tab> none m1 m2 m3 plus1
  C <tab> count <tab> none m1 m2 m3 plus1
ids are space-separated integers (word i is "w<i>" for nltk); scores are %.17g. Needs Debian's
python3-nltk (under /usr/bin/python3).
"""
import os
import random
import sys
import warnings
from fractions import Fraction

from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu, sentence_bleu

warnings.filterwarnings("ignore")
SM = SmoothingFunction()


def plus1(p_n, *args, **kwargs):
    return [Fraction(p.numerator + 1, p.denominator + 1, _normalize=False) for p in p_n]


SMOOTHINGS = [None, SM.method1, SM.method2, SM.method3, plus1]


def words(ids):
    return ["w%d" % i for i in ids]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden",
                                                               "bleu_nltk.txt")
    rng = random.Random(20261201)
    pairs = []
    for case in range(1500):
        vocab = rng.choice([3, 5, 8, 20])
        ref = [rng.randrange(vocab) for _ in range(rng.randrange(0, 31))]
        if case % 2 and ref:
            hyp = list(ref)
            for _ in range(rng.randrange(0, 6)):  # substitutions, deletions, insertions
                op, pos = rng.randrange(3), rng.randrange(len(hyp) + 1)
                if op == 0 and pos < len(hyp):
                    hyp[pos] = rng.randrange(vocab)
                elif op == 1 and pos < len(hyp):
                    del hyp[pos]
                else:
                    hyp.insert(pos, rng.randrange(vocab))
        else:
            hyp = [rng.randrange(vocab) for _ in range(rng.randrange(0, 31))]
        pairs.append((hyp, ref))
    lines = []
    for hyp, ref in pairs:
        scores = [sentence_bleu([words(ref)], words(hyp), smoothing_function=s) for s in SMOOTHINGS]
        lines.append("S\t%s\t%s\t%s" % (" ".join(map(str, hyp)), " ".join(map(str, ref)),
                                         " ".join("%.17g" % float(v) for v in scores)))
    for count in (100, len(pairs)):
        refs = [[words(r)] for _, r in pairs[:count]]
        hyps = [words(h) for h, _ in pairs[:count]]
        scores = [corpus_bleu(refs, hyps, smoothing_function=s) for s in SMOOTHINGS]
        lines.append("C\t%d\t%s" % (count, " ".join("%.17g" % float(v) for v in scores)))
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    nz = sum(1 for l in lines if l.startswith("S") and float(l.split("\t")[3].split()[0]) > 0)
    print("%d pairs (%d with unsmoothed BLEU > 0) and 2 corpus lines -> %s" % (len(pairs), nz, out))


if __name__ == "__main__":
    main()
