/* gate.c - noisy top-k gating and the two balancing losses (SPEC 1.3, 1.4), forward and backward.
 *
 * Per token b:  clean = x Wg,  sigma = softplus(x Wn) + noise_eps,  H = clean + eps * sigma
 *               ranking of H (k+1 best, ties to the lower index) -> G = softmax(kept k values)
 *               P(b,i) = Phi((clean_i - thr_i) / sigma_i), thr_i = H of rank k+1 if i is kept,
 *                        else H of rank k   (the k-th largest of H with i removed)
 * The thresholds are entries of H, so their gradient flows back into clean and sigma of the
 * expert that holds them. */
#include "layer_ops.h"

#include <math.h>
#include <string.h>

static inline float softplusf(float r) { return fmaxf(r, 0.0f) + log1pf(expf(-fabsf(r))); }
static inline float sigmoidf_(float r) {
    if (r >= 0) return 1.0f / (1.0f + expf(-r));
    float e = expf(r);
    return e / (1.0f + e);
}
/* float versions: P enters the loss through sums kept in double; float keeps these loops,
 * B*n long, from dominating the gate at thousands of experts */
static inline float norm_cdf(float z) { return 0.5f * erfcf(-z * 0.70710678118654752440f); }
static inline float norm_pdf(float z) { return 0.39894228040143267794f * expf(-0.5f * z * z); }

/* Keeps the K1 largest values of row h[n] in descending order; equal values keep index order,
 * because a later (higher-index) value must be strictly greater to move ahead. */
static void topk_row(int *ti, float *tv, const float *h, int n, int K1) {
    int m = 0;
    for (int i = 0; i < n; i++) {
        float v = h[i];
        if (m == K1 && !(v > tv[K1 - 1])) continue;
        int p = (m < K1) ? m++ : K1 - 1;
        while (p > 0 && v > tv[p - 1]) {
            tv[p] = tv[p - 1];
            ti[p] = ti[p - 1];
            p--;
        }
        tv[p] = v;
        ti[p] = i;
    }
}

void gate_forward(float *clean, float *raw, float *sigma, float *H, int *topi, float *topv,
                  float *gk, const float *x, const float *wg, const float *wn, const float *eps,
                  int train, float noise_eps, int B, int d, int n, int k) {
    const int K1 = k < n ? k + 1 : n;
    moe_sgemm(0,  0, B, n, d, 1.0f, x, d, wg, n, 0.0f,
                clean, n);
    if (train)
        moe_sgemm(0,  0, B, n, d, 1.0f, x, d, wn, n, 0.0f,
                    raw, n);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        const float *c = clean + (size_t)b * n;
        float *hrow = H + (size_t)b * n;
        if (train) {
            const float *r = raw + (size_t)b * n, *e = eps + (size_t)b * n;
            float *s = sigma + (size_t)b * n;
            for (int i = 0; i < n; i++) {
                s[i] = softplusf(r[i]) + noise_eps;
                hrow[i] = c[i] + e[i] * s[i];
            }
        } else {
            memcpy(hrow, c, sizeof(float) * (size_t)n);
        }
        int *ti = topi + (size_t)b * K1;
        float *tv = topv + (size_t)b * K1;
        topk_row(ti, tv, hrow, n, K1);
        /* forward: G = softmax over the k kept values (the rest are -inf, i.e. exactly 0) */
        float *g = gk + (size_t)b * k;
        float sum = 0.0f;
        for (int j = 0; j < k; j++) {
            g[j] = expf(tv[j] - tv[0]);
            sum += g[j];
        }
        for (int j = 0; j < k; j++) g[j] /= sum;
    }
}

/* 1 if expert i (logit hi) is among the k kept. O(1): the ranking orders equal values by index,
 * so among logits equal to the k-th value exactly those up to the k-th's index are kept. */
static inline int in_topk(const int *ti, const float *tv, int k, int i, float hi) {
    return hi > tv[k - 1] || (hi == tv[k - 1] && i <= ti[k - 1]);
}

void gate_importance_load(double *importance, double *load, float *P, const int *topi,
                          const float *topv, const float *gk, const float *H, const float *clean,
                          const float *sigma, int smooth, int B, int n, int k) {
    const int K1 = k < n ? k + 1 : n;
    memset(importance, 0, sizeof(double) * (size_t)n);
    memset(load, 0, sizeof(double) * (size_t)n);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < k; j++) importance[topi[(size_t)b * K1 + j]] += gk[(size_t)b * k + j];
    if (!smooth) {
        for (int b = 0; b < B; b++)
            for (int j = 0; j < k; j++) load[topi[(size_t)b * K1 + j]] += 1.0;
        return;
    }
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        const int *ti = topi + (size_t)b * K1;
        const float *tv = topv + (size_t)b * K1;
        const float *c = clean + (size_t)b * n, *s = sigma + (size_t)b * n, *hrow = H + (size_t)b * n;
        float *p = P + (size_t)b * n;
        for (int i = 0; i < n; i++) {
            float thr = in_topk(ti, tv, k, i, hrow[i]) ? tv[k] : tv[k - 1];
            p[i] = norm_cdf((c[i] - thr) / s[i]);
        }
    }
    /* column sums, each column in token order by one thread: the same result for any number
     * of threads */
#pragma omp parallel for schedule(static) if (n >= 64)
    for (int i0 = 0; i0 < n; i0 += 16) {
        const int i1 = i0 + 16 < n ? i0 + 16 : n;
        for (int b = 0; b < B; b++) {
            const float *p = P + (size_t)b * n;
            for (int i = i0; i < i1; i++) load[i] += p[i];
        }
    }
}

double cv2_loss(double *dv, const double *v, int n, double w) {
    double mean = 0.0, var = 0.0;
    for (int i = 0; i < n; i++) mean += v[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += (v[i] - mean) * (v[i] - mean);
    var /= n;
    double den = mean * mean + 1e-10;
    if (dv) {
        /* forward: L = w * var / den;  dvar/dv_i = 2 (v_i - mean) / n,  dden/dv_i = 2 mean / n */
        for (int i = 0; i < n; i++)
            dv[i] = w * (2.0 * (v[i] - mean) / n / den - var * 2.0 * mean / n / (den * den));
    }
    return w * var / den;
}

double cv_of(const double *v, int n) {
    double mean = 0.0, var = 0.0;
    for (int i = 0; i < n; i++) mean += v[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += (v[i] - mean) * (v[i] - mean);
    var /= n;
    return mean != 0.0 ? sqrt(var) / fabs(mean) : 0.0;
}

void gate_backward(float *dx, float *dwg, float *dwn, float *dclean, float *draw, float *dcd,
                   const float *dgk, const double *dload, const float *x, const float *wg,
                   const float *wn, const float *H, const float *clean, const float *raw,
                   const float *sigma, const float *eps, const int *topi, const float *topv,
                   const float *gk, int train, int smooth, int B, int d, int n, int k) {
    const int K1 = k < n ? k + 1 : n;
    /* Pass 1 collects dL/dH in dclean and the direct dL/dsigma terms in draw; pass 2 turns
     * them into dL/dclean and dL/draw (dH must be complete before it is split). */
    memset(dclean, 0, sizeof(float) * (size_t)B * n);
    if (train) memset(draw, 0, sizeof(float) * (size_t)B * n);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        const int *ti = topi + (size_t)b * K1;
        const float *g = gk + (size_t)b * k, *dg = dgk + (size_t)b * k;
        float *dH = dclean + (size_t)b * n;
        /* forward: g = softmax(v);  so dv_j = g_j (dg_j - sum_l g_l dg_l) */
        float dot = 0.0f;
        for (int j = 0; j < k; j++) dot += g[j] * dg[j];
        for (int j = 0; j < k; j++) dH[ti[j]] += g[j] * (dg[j] - dot);
        if (!train) continue;
        const float *c = clean + (size_t)b * n, *s = sigma + (size_t)b * n, *hrow = H + (size_t)b * n;
        const float *e = eps + (size_t)b * n, *r = raw + (size_t)b * n, *tv = topv + (size_t)b * K1;
        float *ds = draw + (size_t)b * n;
        float *dcl = dcd + (size_t)b * n; /* the direct dL/dclean terms */
        if (smooth) {
            /* forward: P_i = Phi(z_i), z_i = (clean_i - H_m) / sigma_i, H_m the threshold.
             * so with dz = dload_i phi(z_i):  dclean_i += dz / sigma_i,
             * dsigma_i -= dz z_i / sigma_i,  dH_m -= dz / sigma_i */
            for (int i = 0; i < n; i++) {
                int inside = in_topk(ti, tv, k, i, hrow[i]);
                int m = inside ? ti[k] : ti[k - 1];
                float thr = inside ? tv[k] : tv[k - 1];
                float z = (c[i] - thr) / s[i];
                float dzs = (float)dload[i] * norm_pdf(z) / s[i];
                ds[i] = -dzs * z;
                dH[m] -= dzs;
                dcl[i] = dzs;
            }
        }
        /* forward: H = clean + eps sigma, sigma = softplus(raw) + noise_eps;
         * so dclean = dH (+ direct), dsigma = dH eps (+ direct), draw = dsigma * sigmoid(raw) */
        for (int i = 0; i < n; i++) {
            float dsig = dH[i] * e[i] + ds[i];
            if (smooth) dH[i] += dcl[i];
            ds[i] = dsig * sigmoidf_(r[i]);
        }
    }
    /* forward: clean = x Wg, raw = x Wn */
    moe_sgemm(1,  0, d, n, B, 1.0f, x, d, dclean, n, 1.0f,
                dwg, n);
    if (dx)
        moe_sgemm(0,  1, B, d, n, 1.0f, dclean, n, wg, n,
                    1.0f, dx, d);
    if (train) {
        moe_sgemm(1,  0, d, n, B, 1.0f, x, d, draw, n, 1.0f,
                    dwn, n);
        if (dx)
            moe_sgemm(0,  1, B, d, n, 1.0f, draw, n, wn, n,
                        1.0f, dx, d);
    }
}
