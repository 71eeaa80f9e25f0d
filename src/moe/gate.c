/* gate.c - noisy top-k gating and the two balancing losses (SPEC 1.3, 1.4), forward and backward.
 *
 * Per token b:  clean = x Wg,  sigma = softplus(x Wn) + noise_eps,  H = clean + eps * sigma
 *               ranking of H (k+1 best, ties to the lower index) -> G = softmax(kept k values)
 *               P(b,i) = Phi((clean_i - thr_i) / sigma_i), thr_i = H of rank k+1 if i is kept,
 *                        else H of rank k   (the k-th largest of H with i removed)
 * The thresholds are entries of H, so their gradient flows back into clean and sigma of the
 * expert that holds them.
 *
 * At thousands of experts the B*n elementwise work (softplus, Phi, the normal density, sigmoid)
 * rivals the gate's matrix products, so each token's row is handled in one pass while it is in
 * cache, and the functions below are branch-free float code that the compiler vectorises
 * (glibc's expf, log1pf and erfcf are scalar calls). */
#include "moe/layer_ops.h"
#include "base/vmath.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* float versions: P enters the loss through sums kept in double */
static inline float norm_cdf(float z) { return 0.5f * erfc_f(-z * 0.70710678118654752440f); }
static inline float norm_pdf(float z) { return 0.39894228040143267794f * exp_f(-0.5f * z * z); }

/* Keeps the K1 largest values of row h[n] in descending order; equal values keep index order,
 * because a later (higher-index) value must be strictly greater to move ahead. */
static inline void topk_insert(int *ti, float *tv, int *m, int K1, float v, int i) {
    int p = (*m < K1) ? (*m)++ : K1 - 1;
    while (p > 0 && v > tv[p - 1]) {
        tv[p] = tv[p - 1];
        ti[p] = ti[p - 1];
        p--;
    }
    tv[p] = v;
    ti[p] = i;
}

static void topk_row(int *ti, float *tv, const float *h, int n, int K1) {
    int m = 0, i = 0;
    for (; i < n && m < K1; i++) topk_insert(ti, tv, &m, K1, h[i], i);
    /* The list is full: a value enters only if it beats the last kept one, which only rises.
     * Blocks of 16 in which none does are skipped with one vector test. */
    for (; i + 16 <= n; i += 16) {
        const float last = tv[K1 - 1];
        int any = 0;
        for (int j = 0; j < 16; j++) any |= h[i + j] > last;
        if (!any) continue;
        for (int j = i; j < i + 16; j++)
            if (h[j] > tv[K1 - 1]) topk_insert(ti, tv, &m, K1, h[j], j);
    }
    for (; i < n; i++)
        if (h[i] > tv[K1 - 1]) topk_insert(ti, tv, &m, K1, h[i], i);
}

/* 1 if expert i (logit hi) is among the k kept. O(1): the ranking orders equal values by index,
 * so among logits equal to the k-th value exactly those up to the k-th's index are kept.
 * (hk, ik) = (tv[k-1], ti[k-1]). */
static inline int in_topk(float hk, int ik, int i, float hi) {
    return (hi > hk) | ((hi == hk) & (i <= ik));
}

void gate_forward(const gate_bufs *gb, const float *x, const float *wg, const float *wn, int train,
                  float noise_eps, int B, int d, int n, int k) {
    float *clean = gb->clean, *raw = gb->raw, *sigma = gb->sigma, *H = gb->H, *P = gb->P, *topv = gb->topv;
    float *gk = gb->gk;
    int *topi = gb->topi;
    const float *eps = gb->eps;
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
            /* t = e^-|r|:  softplus(r) = max(r, 0) + log1p(t),
             * sigmoid(r) = 1 / (1 + t) for r >= 0, t / (1 + t) below (kept in raw for backward) */
            float *r = raw + (size_t)b * n, *s = sigma + (size_t)b * n;
            const float *e = eps + (size_t)b * n;
            for (int i = 0; i < n; i++) {
                float ri = r[i], t = exp_f(-fabsf(ri));
                s[i] = (sel(ri > 0.0f, ri, 0.0f) + log1p_01(t)) + noise_eps;
                hrow[i] = c[i] + e[i] * s[i];
                r[i] = sel(ri >= 0.0f, 1.0f, t) / (1.0f + t);
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
        if (P) {
            const float *s = sigma + (size_t)b * n;
            float *p = P + (size_t)b * n;
            const float hk = tv[k - 1], thr_in = tv[k], thr_out = tv[k - 1];
            const int ik = ti[k - 1];
            for (int i = 0; i < n; i++) {
                float thr = sel(in_topk(hk, ik, i, hrow[i]), thr_in, thr_out);
                p[i] = norm_cdf((c[i] - thr) / s[i]);
            }
        }
    }
}

void gate_importance_load(double *importance, double *load, const float *P, const int *topi,
                          const float *gk, int smooth, int B, int n, int k) {
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
    /* column sums, each column in token order by one thread: the same result for any number
     * of threads. A thread sweeps its own range of columns row by row. */
    const int nt = moe_threads();
    const int cw = ((n + nt - 1) / nt + 15) & ~15;
#pragma omp parallel for schedule(static) if (n >= 64)
    for (int i0 = 0; i0 < n; i0 += cw) {
        const int i1 = i0 + cw < n ? i0 + cw : n;
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

void gate_backward(float *dx, float *dwg, float *dwn, const gate_bufs *gb, const float *dgk,
                   const double *dload, const float *x, const float *wg, const float *wn, int train,
                   int smooth, int B, int d, int n, int k) {
    float *dclean = gb->dclean, *draw = gb->draw;
    const float *H = gb->H, *clean = gb->clean, *sgraw = gb->raw, *sigma = gb->sigma, *eps = gb->eps;
    const float *topv = gb->topv, *gk = gb->gk;
    const int *topi = gb->topi;
    const int K1 = k < n ? k + 1 : n;
    /* Per token: dL/dH is nonzero only at the k kept experts (softmax) and at the two
     * threshold holders ti[k-1], ti[k] (load). Every other entry gets only the direct terms
     * of the load estimator, so one dense pass writes those and a pass over the K1 ranked
     * experts completes the rest. */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        const int *ti = topi + (size_t)b * K1;
        const float *g = gk + (size_t)b * k, *dg = dgk + (size_t)b * k;
        float *dcl = dclean + (size_t)b * n;
        /* forward: g = softmax(v);  so dv_j = g_j (dg_j - sum_l g_l dg_l) */
        float dot = 0.0f;
        for (int j = 0; j < k; j++) dot += g[j] * dg[j];
        if (!train) {
            memset(dcl, 0, sizeof(float) * (size_t)n);
            for (int j = 0; j < k; j++) dcl[ti[j]] += g[j] * (dg[j] - dot);
            continue;
        }
        const float *c = clean + (size_t)b * n, *s = sigma + (size_t)b * n, *hrow = H + (size_t)b * n;
        const float *e = eps + (size_t)b * n, *sg = sgraw + (size_t)b * n, *tv = topv + (size_t)b * K1;
        float *dr = draw + (size_t)b * n;
        float sum_out = 0.0f, sum_in = 0.0f;
        const float hk = tv[k - 1];
        const int ik = ti[k - 1];
        if (smooth) {
            /* forward: P_i = Phi(z_i), z_i = (clean_i - H_m) / sigma_i, H_m the threshold.
             * so with dz = dload_i phi(z_i):  dclean_i += dz / sigma_i,
             * dsigma_i -= dz z_i / sigma_i,  dH_m -= dz / sigma_i;
             * and (below) draw = dsigma * sigmoid(raw) */
            const float thr_in = tv[k], thr_out = tv[k - 1];
            for (int i = 0; i < n; i++) {
                float z = (c[i] - sel(in_topk(hk, ik, i, hrow[i]), thr_in, thr_out)) / s[i];
                float dzs = (float)dload[i] * norm_pdf(z) / s[i];
                dcl[i] = dzs;
                dr[i] = (-dzs * z) * sg[i];
            }
            /* sum_in, sum_out: the dz / sigma of the kept / other experts, for dH_m; eight
             * partial sums in a fixed order */
            float so[8] = {0}, si[8] = {0};
            int i = 0;
            for (; i + 8 <= n; i += 8)
                for (int l = 0; l < 8; l++) {
                    int inside = in_topk(hk, ik, i + l, hrow[i + l]);
                    so[l] += sel(inside, 0.0f, dcl[i + l]);
                    si[l] += sel(inside, dcl[i + l], 0.0f);
                }
            for (int l = 0; i < n; i++, l++) {
                int inside = in_topk(hk, ik, i, hrow[i]);
                so[l] += sel(inside, 0.0f, dcl[i]);
                si[l] += sel(inside, dcl[i], 0.0f);
            }
            sum_out = ((so[0] + so[1]) + (so[2] + so[3])) + ((so[4] + so[5]) + (so[6] + so[7]));
            sum_in = ((si[0] + si[1]) + (si[2] + si[3])) + ((si[4] + si[5]) + (si[6] + si[7]));
        } else {
            for (int i = 0; i < n; i++) {
                dcl[i] = 0.0f;
                dr[i] = 0.0f * sg[i];
            }
        }
        /* forward: H = clean + eps sigma, sigma = softplus(raw) + noise_eps;
         * so dclean = dH (+ direct), dsigma = dH eps (+ direct), draw = dsigma * sigmoid(raw) */
        for (int j = 0; j < K1; j++) {
            const int i = ti[j];
            float dh = j < k ? g[j] * (dg[j] - dot) : 0.0f;
            float dzs = 0.0f, dsd = 0.0f;
            if (smooth) {
                if (j == k - 1) dh -= sum_out;
                if (j == k) dh -= sum_in;
                float z = (c[i] - (in_topk(hk, ik, i, hrow[i]) ? tv[k] : tv[k - 1])) / s[i];
                dzs = dcl[i];
                dsd = -dzs * z;
            }
            float dsig = dh * e[i] + dsd;
            dcl[i] = dh + dzs;
            dr[i] = dsig * sg[i];
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
