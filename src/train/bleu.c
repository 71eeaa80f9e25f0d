/* bleu.c - BLEU (SPEC 3.4) over token ids: clipped n-gram matches for n = 1..4 against one
 * reference, the brevity penalty, and the sentence-level smoothings of Chen and Cherry (2014) as
 * nltk 3.8 computes them (tests/gen_golden_bleu.py checks agreement to 1e-9), plus BLEU+1.
 * Statistics add up over sentences, so corpus BLEU is the score of the summed statistics. The
 * sentence-level score is the training reward of sequence-level training (REINFORCE, MIXER). */
#include "base/internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

static int same_gram(const int32_t *a, const int32_t *b, int n) {
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

moe_status moe_bleu_stats_sentence(moe_bleu_stats *s, const int32_t *hyp, size_t nh, const int32_t *ref, size_t nr) {
    if (!s || (nh && !hyp) || (nr && !ref)) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument to moe_bleu_stats_sentence");
    memset(s, 0, sizeof *s);
    s->hyp_len = (int64_t)nh;
    s->ref_len = (int64_t)nr;
    for (int n = 1; n <= 4; n++) {
        const int64_t th = (int64_t)nh - n + 1, tr = (int64_t)nr - n + 1;
        /* nltk divides by max(1, hypothesis n-grams) */
        s->total[n - 1] = th > 0 ? th : 1;
        if (th <= 0 || tr <= 0) continue;
        /* each distinct hypothesis n-gram, at its first occurrence: min(count in hyp, in ref) */
        for (int64_t i = 0; i < th; i++) {
            int first = 1;
            for (int64_t j = 0; j < i && first; j++) first = !same_gram(hyp + i, hyp + j, n);
            if (!first) continue;
            int64_t ch = 0, cr = 0;
            for (int64_t j = i; j < th; j++) ch += same_gram(hyp + i, hyp + j, n);
            for (int64_t j = 0; j < tr; j++) cr += same_gram(hyp + i, ref + j, n);
            s->match[n - 1] += ch < cr ? ch : cr;
        }
    }
    return moe_ok();
}

void moe_bleu_stats_add(moe_bleu_stats *acc, const moe_bleu_stats *s) {
    if (!acc || !s) return;
    for (int n = 0; n < 4; n++) {
        acc->match[n] += s->match[n];
        acc->total[n] += s->total[n];
    }
    acc->hyp_len += s->hyp_len;
    acc->ref_len += s->ref_len;
}

double moe_bleu_score(const moe_bleu_stats *s, moe_bleu_smoothing sm) {
    if (!s || s->match[0] == 0) return 0.0; /* no unigram in common (or an empty hypothesis) */
    const double c = (double)s->hyp_len, r = (double)s->ref_len;
    const double bp = c > r ? 1.0 : exp(1.0 - r / c);
    double p[4];
    int k = 1; /* method 3's exponent */
    for (int n = 0; n < 4; n++) {
        const double m = (double)s->match[n], t = (double)s->total[n];
        switch (sm) {
        case MOE_BLEU_NONE: p[n] = m > 0 ? m / t : DBL_MIN; break; /* nltk: log(0) -> log(DBL_MIN) */
        case MOE_BLEU_METHOD1: p[n] = m > 0 ? m / t : 0.1 / t; break;
        case MOE_BLEU_METHOD2: p[n] = n == 0 ? m / t : (m + 1.0) / (t + 1.0); break;
        case MOE_BLEU_METHOD3:
            if (m > 0) p[n] = m / t;
            else p[n] = 1.0 / (ldexp(1.0, k++) * t);
            break;
        case MOE_BLEU_PLUS1: p[n] = (m + 1.0) / (t + 1.0); break;
        default: return 0.0;
        }
    }
    double lsum = 0.0;
    for (int n = 0; n < 4; n++) lsum += 0.25 * log(p[n]);
    return bp * exp(lsum);
}
