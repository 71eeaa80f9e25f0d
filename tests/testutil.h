/* testutil.h - tiny test harness: CHECK counts passes and failures, test_finish() prints the
 * closing "N passed, M failed" line and returns the exit code (non-zero on any failure). */
#ifndef MOE_TESTUTIL_H
#define MOE_TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

static int t_pass, t_fail;

/* A test may define T_FAIL_DETAIL, an expression giving a string (say the library's last error),
 * before it includes this header: every FAIL line then ends with it in brackets. */
#ifdef T_FAIL_DETAIL
#define T_FAIL_TAIL() fprintf(stderr, " [%s]", T_FAIL_DETAIL)
#else
#define T_FAIL_TAIL() ((void)0)
#endif

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (cond) {                                                                            \
            t_pass++;                                                                          \
        } else {                                                                               \
            t_fail++;                                                                          \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                               \
            fprintf(stderr, __VA_ARGS__);                                                      \
            T_FAIL_TAIL();                                                                     \
            fputc('\n', stderr);                                                               \
        }                                                                                      \
    } while (0)

static inline int test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, t_pass, t_fail);
    return t_fail ? 1 : (t_pass ? 0 : 1); /* a test that checked nothing has failed too */
}

/* deterministic test data: uniform in [-a, a] or standard normal */
static inline uint64_t t_mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static inline void t_fill_uniform(float *x, size_t n, float a, uint64_t seed) {
    for (size_t i = 0; i < n; i++)
        x[i] = a * (2.0f * (float)(t_mix(seed * 1000003ULL + i) >> 40) / 16777216.0f - 1.0f);
}
static inline void t_fill_normal(float *x, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) {
        double u1 = ((double)(t_mix(seed * 7919ULL + 2 * i) >> 11) + 1.0) / 9007199254740993.0;
        double u2 = (double)(t_mix(seed * 7919ULL + 2 * i + 1) >> 11) / 9007199254740992.0;
        x[i] = (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    }
}

/* max|got - want| / max(max|want|, 1e-6): the error relative to the tensor's scale; infinite on
 * NaN. */
static inline double t_rel_err(const float *got, const float *want, size_t n) {
    double maxd = 0.0, maxw = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (isnan(d)) return INFINITY;
        maxd = fmax(maxd, d);
        maxw = fmax(maxw, fabs(want[i]));
    }
    return maxd / fmax(maxw, 1e-6);
}

/* Central finite differences (step 1e-2) of loss(ctx) at up to ~60 entries of the parameter v
 * [count] against the analytic gradient ana; an entry where only a one-sided difference agrees
 * (a top-k switch or ReLU kink inside the step) counts in *kinks instead of failing. */
static inline void t_check_grad(double (*loss)(void *), void *ctx, const char *name, float *v, const float *ana,
                                size_t count, int *kinks) {
    int bad = 0, checked = 0;
    size_t stride = count > 120 ? count / 60 : 1;
    for (size_t i = 0; i < count; i += stride) {
        float orig = v[i];
        const float h = 1e-2f;
        v[i] = orig + h;
        double lp = loss(ctx);
        v[i] = orig - h;
        double lm = loss(ctx);
        v[i] = orig;
        double l0 = loss(ctx);
        double num = (lp - lm) / (2.0 * h), a = ana[i];
        checked++;
        if (fabs(num - a) <= 2e-2 * fmax(fabs(num), fabs(a)) + 3e-4) continue;
        double f = (lp - l0) / h, b = (l0 - lm) / h;
        if (fabs(f - a) <= 4e-2 * fabs(a) + 6e-4 || fabs(b - a) <= 4e-2 * fabs(a) + 6e-4) {
            (*kinks)++;
            continue;
        }
        if (bad++ < 4) fprintf(stderr, "  %s[%zu]: analytic %.6g numeric %.6g\n", name, i, a, num);
    }
    CHECK(bad == 0 && checked > 0, "%s: %d of %d entries disagree", name, bad, checked);
}

#endif
