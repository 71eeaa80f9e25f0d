/* testutil.h - tiny test harness: CHECK counts passes and failures, test_finish() prints the
 * closing "N passed, M failed" line and returns the exit code (non-zero on any failure). */
#ifndef MOE_TESTUTIL_H
#define MOE_TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

static int t_pass, t_fail;

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (cond) {                                                                            \
            t_pass++;                                                                          \
        } else {                                                                               \
            t_fail++;                                                                          \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                               \
            fprintf(stderr, __VA_ARGS__);                                                      \
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

#endif
