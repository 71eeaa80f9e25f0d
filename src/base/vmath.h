/* vmath.h - branch-free float versions of exp, log1p, erfc, sigmoid and tanh for the library's
 * elementwise loops (internal). glibc's expf, tanhf and erfcf are scalar calls, so a loop that
 * uses them stays scalar; these inline into a loop that the compiler vectorises. Each is within
 * a few ulp of the exact value (tests/base/test_vmath.c measures them against double precision over
 * a dense sweep); NaN in gives NaN out, and the limits at +-inf are exact. Not -ffast-math: the
 * selections are done on the bits, so inf and NaN behave. */
#ifndef MOE_VMATH_H
#define MOE_VMATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef union {
    float f;
    uint32_t u;
} f32bits;
static inline uint32_t f2u(float f) {
    f32bits v;
    v.f = f;
    return v.u;
}
static inline float u2f(uint32_t u) {
    f32bits v;
    v.u = u;
    return v.f;
}
/* c ? a : b on the bits. Written as a float ?: the compiler may move arithmetic that follows
 * into one arm, which it then will not execute speculatively (traps), and the loop stays
 * scalar; as bit operations it is always a vector blend. */
static inline float sel(int c, float a, float b) {
    uint32_t m = 0u - (uint32_t)c;
    return u2f((f2u(a) & m) | (f2u(b) & ~m));
}

/* e^x = 2^n * p:  n = round(x / ln2), r = x - n ln2 (ln2 split in two, |r| <= ln2/2),
 * p = the degree-7 Taylor polynomial of e^r (truncation below 6e-9). n is garbage (no UB)
 * where |x| > 2^21 or x is NaN; callers select those cases away (NaN stays in p). */
static inline float exp_reduce(float x, int32_t *n) {
    const float shift = 0x1.8p23f; /* adding it rounds to an integer, kept in the low bits */
    float kf = fmaf(x, 0x1.715476p+0f, shift);
    *n = (int32_t)(f2u(kf) - 0x4b400000u);
    kf -= shift;
    float r = fmaf(kf, -0x1.62e43p-1f, x);
    r = fmaf(kf, 0x1.05c61p-29f, r);
    float p = 1.0f / 5040.0f;
    p = fmaf(p, r, 1.0f / 720.0f);
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    return fmaf(p, r, 1.0f);
}

/* e^x (within 1 ulp). x is first clamped to [-104, 88.8], where e^x rounds to 0 and overflows
 * (a NaN passes). 2^n is applied as two factors so that subnormal results come out right. */
static inline float exp_f(float x) {
    x = sel(x > 88.8f, 88.8f, x);
    x = sel(x < -104.0f, -104.0f, x);
    int32_t n;
    float p = exp_reduce(x, &n);
    int32_t j = n / 2;
    return p * u2f((uint32_t)(n - j + 127) << 23) * u2f((uint32_t)(j + 127) << 23);
}

/* log(1 + t) for 0 <= t <= 1 (within 1.2 ulp): 2 atanh(s), s = t / (2 + t) <= 1/3, by its
 * series to s^15; s is corrected for the rounding of 2 + t. */
static inline float log1p_01(float t) {
    float u = 2.0f + t, ulo = t - (u - 2.0f);
    float s = t / u;
    s += (fmaf(-s, u, t) - s * ulo) / u;
    float s2 = s * s;
    float p = 2.0f / 15.0f;
    p = fmaf(p, s2, 2.0f / 13.0f);
    p = fmaf(p, s2, 2.0f / 11.0f);
    p = fmaf(p, s2, 2.0f / 9.0f);
    p = fmaf(p, s2, 2.0f / 7.0f);
    p = fmaf(p, s2, 2.0f / 5.0f);
    p = fmaf(p, s2, 2.0f / 3.0f);
    return fmaf(p, s2 * s, 2.0f * s);
}

/* erfc(x) (within 2.9 ulp where the result is a normal float; glibc's erfcf measured the same
 * way, against long double erfcl over all floats |x| < 12: 3.1). For a = |x|:
 * (1 + 2a) e^(a^2) erfc(a) = 1 + w h(w), w = 2a / (a + 2) in [0, 2), with h a polynomial
 * (our Chebyshev interpolant of degree 11 on w in [0, 1.67], i.e. a <= 10.1; its error is
 * about 3e-9; the form is Shepherd and Laframboise's, Math. Comp. 36 (1981)). The division by
 * 1 + 2a and e^(-a^2) (with the rounding error of a^2) are carried out with their rounding
 * errors corrected; erfc(a) = 0 in float beyond a = 10.06. erfc(-a) = 2 - erfc(a). */
static inline float erfc_f(float x) {
    float a = fabsf(x);
    a = sel(a > 10.5f, 10.5f, a); /* erfc(10.5) = 0 in float; also catches a = inf */
    float w = (a + a) / (a + 2.0f);
    float v = fmaf(w, 0x1.32963ap+0f, -1.0f); /* [0, 1.67] -> [-1, 1] */
    float h = 0x1.ca548ep-19f;
    h = fmaf(h, v, 0x1.584bp-17f);
    h = fmaf(h, v, -0x1.03be82p-16f);
    h = fmaf(h, v, -0x1.f22f2p-14f);
    h = fmaf(h, v, -0x1.019d1cp-14f);
    h = fmaf(h, v, 0x1.fa57bp-11f);
    h = fmaf(h, v, 0x1.a537a6p-10f);
    h = fmaf(h, v, -0x1.2d823p-7f);
    h = fmaf(h, v, -0x1.0fc664p-6f);
    h = fmaf(h, v, 0x1.3b23bap-3f);
    h = fmaf(h, v, -0x1.7826b4p-2f);
    h = fmaf(h, v, 0x1.5ff282p-2f);
    float q = w * h; /* in [0, 0.29] */
    /* r = (1 + q) / (1 + 2a): numerator and denominator as exact sums hi + lo */
    float nh = 1.0f + q, nl = q - (nh - 1.0f);
    float t2 = a + a, d = t2 + 1.0f;
    float big = sel(t2 >= 1.0f, t2, 1.0f), small = sel(t2 >= 1.0f, 1.0f, t2);
    float dl = small - (d - big);
    float rc = 1.0f / d, r0 = nh * rc;
    float r = fmaf(fmaf(-r0, d, nh) + (nl - r0 * dl), rc, r0);
    /* times e^-(a2 + a2lo), a2 + a2lo = a^2 exactly; scaled by 2^64 until the last step */
    float a2 = a * a, a2lo = fmaf(a, a, -a2);
    int32_t n;
    float e = exp_reduce(-a2, &n);
    float y = r * (e * u2f((uint32_t)(n + 64 + 127) << 23));
    y = fmaf(-y, a2lo, y) * 0x1p-64f;
    return fmaf(sel(x < 0.0f, -1.0f, 1.0f), y, sel(x < 0.0f, 2.0f, 0.0f)); /* 2 - y for x < 0 */
}


/* 1 / (1 + e^-x) (within 2 ulp): t = e^-|x| never overflows; 1 - s for x < 0 is t / (1 + t). */
static inline float sigmoid_f(float x) {
    float t = exp_f(-fabsf(x));
    return sel(x >= 0.0f, 1.0f, t) / (1.0f + t);
}

/* tanh(x) (within 2 ulp). For |x| >= 0.55: (1 - t) / (1 + t), t = e^-2|x| <= 1/3, so 1 - t loses
 * nothing. Below, where 1 - t would cancel, its Taylor series to x^15 (the next term is below
 * 2e-8 relative at 0.55). */
static inline float tanh_f(float x) {
    float a = fabsf(x), t = exp_f(-2.0f * a);
    float big = (1.0f - t) / (1.0f + t);
    float a2 = a * a;
    float p = -929569.0f / 638512875.0f;
    p = fmaf(p, a2, 21844.0f / 6081075.0f);
    p = fmaf(p, a2, -1382.0f / 155925.0f);
    p = fmaf(p, a2, 62.0f / 2835.0f);
    p = fmaf(p, a2, -17.0f / 315.0f);
    p = fmaf(p, a2, 2.0f / 15.0f);
    p = fmaf(p, a2, -1.0f / 3.0f);
    float small = fmaf(p * a2, a, a);
    float r = sel(a < 0.55f, small, big);
    return copysignf(r, x);
}

/* sum of x[i]^2 in double, in 8 interleaved partial sums (a fixed order, so the same bits on
 * any thread count, and one that vectorises, unlike a single running sum) */
static inline double vsumsq_f64(const float *x, size_t n) {
    double a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, t = 0.0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) a[j] += (double)x[i + j] * x[i + j];
    for (; i < n; i++) t += (double)x[i] * x[i];
    return (((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))) + t;
}

#endif
