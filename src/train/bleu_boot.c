/* bleu_boot.c - paired bootstrap resampling of corpus BLEU (Koehn, 2004): whether system A's
 * corpus BLEU beats system B's on a test set, and how surely. Each resample draws the test set's
 * sentences with replacement (the same draw for both systems: the pairing), sums their
 * statistics and scores both; the fraction of resamples A wins is the probability reported, and
 * the 2.5th and 97.5th percentiles of each score and of the difference are 95% intervals.
 * The draws come from the counter-based generator: a seed fixes the result. */
#include "base/internal.h"
#include "base/rng.h"

#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* the q-quantile of sorted v [n] (linear between the two nearest ranks) */
static double quantile(const double *v, int n, double q) {
    const double pos = q * (n - 1);
    const int i = (int)pos;
    if (i >= n - 1) return v[n - 1];
    return v[i] + (pos - i) * (v[i + 1] - v[i]);
}

static void interval(double *v, int n, double *lo, double *hi) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    *lo = quantile(v, n, 0.025);
    *hi = quantile(v, n, 0.975);
}

static moe_status check_args(const moe_bleu_stats *a, size_t n, int resamples, moe_bleu_smoothing sm,
                             const moe_bleu_bootstrap *out) {
    if (!a || !out) return moe_fail(MOE_ERR_INVALID_ARG, "a and out must not be NULL");
    if (n < 1) return moe_fail(MOE_ERR_INVALID_ARG, "no sentences to resample");
    if (resamples < 2 || resamples > 10000000)
        return moe_fail(MOE_ERR_INVALID_ARG, "resamples=%d is outside [2, 10000000]", resamples);
    if ((int)sm < MOE_BLEU_NONE || (int)sm > MOE_BLEU_PLUS1)
        return moe_fail(MOE_ERR_INVALID_ARG, "unknown smoothing %d", (int)sm);
    return MOE_OK;
}

moe_status moe_bleu_bootstrap_pair(const moe_bleu_stats *a, const moe_bleu_stats *b, size_t n, int resamples,
                                   moe_bleu_smoothing sm, uint64_t seed, moe_bleu_bootstrap *out) {
    moe_status st = check_args(a, n, resamples, sm, out);
    if (st) return st;
    memset(out, 0, sizeof *out);
    double *sa = malloc(sizeof(double) * (size_t)resamples), *sb = b ? malloc(sizeof(double) * (size_t)resamples) : NULL;
    double *dd = b ? malloc(sizeof(double) * (size_t)resamples) : NULL;
    if (!sa || (b && (!sb || !dd))) {
        free(sa), free(sb), free(dd);
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate %d resamples", resamples);
    }
    moe_bleu_stats ta, tb;
    memset(&ta, 0, sizeof ta);
    memset(&tb, 0, sizeof tb);
    for (size_t i = 0; i < n; i++) {
        moe_bleu_stats_add(&ta, &a[i]);
        if (b) moe_bleu_stats_add(&tb, &b[i]);
    }
    out->bleu_a = moe_bleu_score(&ta, sm);
    out->bleu_b = b ? moe_bleu_score(&tb, sm) : 0.0;
    const uint64_t key = rng_key(seed);
    int64_t wins = 0, losses = 0;
    for (int r = 0; r < resamples; r++) {
        moe_bleu_stats ra, rb;
        memset(&ra, 0, sizeof ra);
        memset(&rb, 0, sizeof rb);
        for (size_t i = 0; i < n; i++) {
            /* 64 random bits reduced to [0, n): a bias below n / 2^64 */
            const size_t j = (size_t)(rng_u64_key(key, (uint64_t)r * n + i) % n);
            moe_bleu_stats_add(&ra, &a[j]);
            if (b) moe_bleu_stats_add(&rb, &b[j]);
        }
        sa[r] = moe_bleu_score(&ra, sm);
        if (b) {
            sb[r] = moe_bleu_score(&rb, sm);
            dd[r] = sa[r] - sb[r];
            wins += dd[r] > 0.0;
            losses += dd[r] < 0.0;
        }
    }
    out->resamples = resamples;
    interval(sa, resamples, &out->a_lo, &out->a_hi);
    if (b) {
        interval(sb, resamples, &out->b_lo, &out->b_hi);
        interval(dd, resamples, &out->delta_lo, &out->delta_hi);
        out->p_a_better = (double)wins / resamples;
        out->p_b_better = (double)losses / resamples;
    }
    free(sa), free(sb), free(dd);
    return moe_ok();
}
