/* lstm.c - the language model's LSTM layer, embedding and dropout (declared in lstm.h).
 *
 * LSTM forward: one sgemm projects the inputs of all T steps at once (x [T*B,D] W_ih^T); the
 * recurrence then adds h_{t-1} W_hh^T per step and applies the gate nonlinearities in place,
 * so the pre-activation buffer becomes the cache of activations. Backward walks the steps in
 * reverse, writing each step's gate gradients da_t into a [T,B,4H] buffer and carrying dh, dc
 * to the step before; the products that do not feed the recurrence (dW_ih, dx, dW_hh, biases)
 * then run once over all steps. */
#include "nn/lstm.h"
#include "base/internal.h"

#include "base/gemm.h"
#include "base/rng.h"
#include "base/vmath.h"
#include <cblas.h>
#include <math.h>
#include <string.h>

/* Elementwise loops over fewer values than this stay on one thread: below it the fork/join of
 * a parallel region costs more than the work. */
#define LSTM_OMP_MIN 16384
/* Columns per task in the column sums (bias and embedding gradients): a 256-byte slice of
 * each row, so a task reads contiguous memory and owns its outputs (no races, fixed order). */
#define COLS_PER_TASK 64

/* Rows of the batch per recurrence task; fixed, so results do not depend on the thread count. */
#define LSTM_ROW_BLOCK 16
/* Below this many multiply-adds in the whole recurrence one thread runs it. */
#define LSTM_OMP_MIN_REC (1 << 20)

/* One row of one step: a [4H] pre-activations -> i, f, g, o in place; c_t, h_t [H]. */
static inline void lstm_cell_forward(float *a, float *restrict ct, float *restrict ht, const float *restrict cp,
                                     int H) {
    float *restrict ai = a, *restrict af = a + H, *restrict ag = a + 2 * H, *restrict ao = a + 3 * H;
    for (int j = 0; j < H; j++) {
        const float ig = sigmoid_f(ai[j]), fg = sigmoid_f(af[j]);
        const float gg = tanh_f(ag[j]), og = sigmoid_f(ao[j]);
        ai[j] = ig;
        af[j] = fg;
        ag[j] = gg;
        ao[j] = og;
        ct[j] = fg * cp[j] + ig * gg;
        ht[j] = og * tanh_f(ct[j]);
    }
}

/* One row of one step backward: da [4H] from the activations a, c_t, c_{t-1}, the output's
 * gradient dht and the running dhn, dcn [H] (dh_t and dc_t arriving from step t+1); dcn
 * becomes dc_{t-1}. */
static inline void cell_backward(float *restrict di, float *restrict df, float *restrict dg, float *restrict dout,
                                 const float *restrict dhn, float *restrict dcn, const float *restrict ai,
                                 const float *restrict af, const float *restrict ag, const float *restrict ao,
                                 const float *restrict ct, const float *restrict cp, const float *restrict dht,
                                 int H) {
    for (int j = 0; j < H; j++) {
        const float ig = ai[j], fg = af[j], gg = ag[j], og = ao[j];
        /* h_t feeds the loss directly and the next step: both gradients add up */
        const float dhk = dht[j] + dhn[j];
        /* forward: h_t = o * tanh(c_t);  so do = dh tanh(c_t),
         * dc_t = dc (from step t+1) + dh o (1 - tanh(c_t)^2) */
        const float tc = tanh_f(ct[j]);
        const float dog = dhk * tc;
        const float dc = dcn[j] + dhk * og * (1.0f - tc * tc);
        /* forward: c_t = f * c_{t-1} + i * g;  so di = dc g, df = dc c_{t-1}, dg = dc i,
         * dc_{t-1} = dc f */
        const float dig = dc * gg, dfg = dc * cp[j], dgg = dc * ig;
        dcn[j] = dc * fg;
        /* forward: i, f, o = sigmoid(a), g = tanh(a);  so da = d(gate) s (1 - s) for the
         * sigmoids and dg (1 - g^2) for the tanh */
        di[j] = dig * ig * (1.0f - ig);
        df[j] = dfg * fg * (1.0f - fg);
        dg[j] = dgg * (1.0f - gg * gg);
        dout[j] = dog * og * (1.0f - og);
    }
}
static inline void lstm_cell_backward(float *da, const float *dhn, float *dcn, const float *a, const float *ct,
                                      const float *cp, const float *dht, int H) {
    cell_backward(da, da + H, da + 2 * H, da + 3 * H, dhn, dcn, a, a + H, a + 2 * H, a + 3 * H, ct, cp, dht, H);
}

size_t lstm_cache_floats(int T, int B, int H) {
    return (size_t)T * B * 5 * H + 2 * (size_t)B * H;
}

size_t lstm_scratch_floats(int T, int B, int H) {
    return (size_t)T * B * 4 * H + 2 * (size_t)B * H;
}

void lstm_forward(float *h, float *hT, float *cT, float *cache, const float *x, const float *h0,
                  const float *c0, const float *w_ih, const float *w_hh, const float *b_ih,
                  const float *b_hh, int T, int B, int D, int H) {
    const size_t BH = (size_t)B * H, G = 4 * (size_t)H, N = (size_t)T * B;
    float *acts = cache;          /* [T,B,4H] */
    float *cs = acts + N * G;     /* [T,B,H] */
    float *hinit = cs + N * H;    /* [B,H] */
    float *cinit = hinit + BH;    /* [B,H] */
    /* copies first: h0 may be the very buffer that hT overwrites below */
    if (h0) memcpy(hinit, h0, sizeof(float) * BH);
    else memset(hinit, 0, sizeof(float) * BH);
    if (c0) memcpy(cinit, c0, sizeof(float) * BH);
    else memset(cinit, 0, sizeof(float) * BH);

    if (N > 0) {
        /* a [T*B,4H] = (b_ih + b_hh) + x W_ih^T for every step in one product */
        for (size_t j = 0; j < G; j++) acts[j] = b_ih[j] + b_hh[j];
        for (size_t r = 1; r < N; r++) memcpy(acts + r * G, acts, sizeof(float) * G);
        moe_sgemm(0,  1, (int)N, (int)G, D, 1.0f, x, D, w_ih,
                    D, 1.0f, acts, (int)G);
    }
    /* Batch rows never interact in the recurrence, so fixed blocks of rows run all T steps on
     * their own: no barrier per step, and the same products whatever the thread count. */
    const int nblk = (B + LSTM_ROW_BLOCK - 1) / LSTM_ROW_BLOCK;
#pragma omp parallel for schedule(static) if (nblk > 1 && (size_t)T * BH * G >= LSTM_OMP_MIN_REC)
    for (int blk = 0; blk < nblk; blk++) {
        const int b0 = blk * LSTM_ROW_BLOCK, nb = B - b0 < LSTM_ROW_BLOCK ? B - b0 : LSTM_ROW_BLOCK;
        const size_t r0 = (size_t)b0 * H; /* offset of row b0 in a [B,H] buffer */
        for (int t = 0; t < T; t++) {
            const float *hp = (t ? h + (size_t)(t - 1) * BH : hinit) + r0; /* h_{t-1} [nb,H] */
            const float *cp = (t ? cs + (size_t)(t - 1) * BH : cinit) + r0; /* c_{t-1} [nb,H] */
            float *a = acts + ((size_t)t * B + b0) * G, *ct = cs + (size_t)t * BH + r0;
            float *ht = h + (size_t)t * BH + r0;
            /* a_t [nb,4H] += h_{t-1} [nb,H] W_hh^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, (int)G, H, 1.0f, hp, H, w_hh, H, 1.0f, a, (int)G);
            for (int b = 0; b < nb; b++)
                lstm_cell_forward(a + (size_t)b * G, ct + (size_t)b * H, ht + (size_t)b * H, cp + (size_t)b * H, H);
        }
    }
    const float *hlast = T ? h + (size_t)(T - 1) * BH : hinit;
    const float *clast = T ? cs + (size_t)(T - 1) * BH : cinit;
    if (hT && hT != hlast) memcpy(hT, hlast, sizeof(float) * BH);
    if (cT) memcpy(cT, clast, sizeof(float) * BH);
}

/* db1 [G] += sum over rows of m [R,G], and db2 [G] += the same sums (b_ih and b_hh enter the
 * pre-activation identically). Each task owns a slice of columns and adds rows in order. */
static void colsum2(float *db1, float *db2, const float *m, size_t R, size_t G) {
    const long ntask = (long)((G + COLS_PER_TASK - 1) / COLS_PER_TASK);
#pragma omp parallel for schedule(static) if (R * G >= LSTM_OMP_MIN)
    for (long task = 0; task < ntask; task++) {
        const size_t j0 = (size_t)task * COLS_PER_TASK;
        const size_t nj = G - j0 < COLS_PER_TASK ? G - j0 : COLS_PER_TASK;
        float acc[COLS_PER_TASK] = {0};
        for (size_t r = 0; r < R; r++) {
            const float *row = m + r * G + j0;
            for (size_t j = 0; j < nj; j++) acc[j] += row[j];
        }
        for (size_t j = 0; j < nj; j++) {
            db1[j0 + j] += acc[j];
            db2[j0 + j] += acc[j];
        }
    }
}

void lstm_backward(float *dx, float *dw_ih, float *dw_hh, float *db_ih, float *db_hh, float *dh0,
                   float *dc0, float *scratch, const float *dh, const float *dhT,
                   const float *dcT, const float *x, const float *h, const float *cache,
                   const float *w_ih, const float *w_hh, int T, int B, int D, int H) {
    const size_t BH = (size_t)B * H, G = 4 * (size_t)H, N = (size_t)T * B;
    const float *acts = cache, *cs = acts + N * G, *hinit = cs + N * H, *cinit = hinit + BH;
    float *da = scratch;      /* [T,B,4H] dL/da_t */
    float *dhn = da + N * G;  /* [B,H] dL/dh_t arriving from step t+1 (dhT at the last step) */
    float *dcn = dhn + BH;    /* [B,H] dL/dc_t arriving from step t+1 (dcT at the last step) */
    if (dhT) memcpy(dhn, dhT, sizeof(float) * BH);
    else memset(dhn, 0, sizeof(float) * BH);
    if (dcT) memcpy(dcn, dcT, sizeof(float) * BH);
    else memset(dcn, 0, sizeof(float) * BH);

    const int nblk = (B + LSTM_ROW_BLOCK - 1) / LSTM_ROW_BLOCK;
#pragma omp parallel for schedule(static) if (nblk > 1 && (size_t)T * BH * G >= LSTM_OMP_MIN_REC)
    for (int blk = 0; blk < nblk; blk++) {
        const int b0 = blk * LSTM_ROW_BLOCK, nb = B - b0 < LSTM_ROW_BLOCK ? B - b0 : LSTM_ROW_BLOCK;
        const size_t r0 = (size_t)b0 * H;
        for (int t = T - 1; t >= 0; t--) {
            const float *a = acts + ((size_t)t * B + b0) * G, *ct = cs + (size_t)t * BH + r0;
            const float *cp = (t ? cs + (size_t)(t - 1) * BH : cinit) + r0; /* c_{t-1} */
            const float *dht = dh + (size_t)t * BH + r0;
            float *dat = da + ((size_t)t * B + b0) * G;
            for (int b = 0; b < nb; b++) {
                const size_t o = (size_t)b * H;
                lstm_cell_backward(dat + (size_t)b * G, dhn + r0 + o, dcn + r0 + o, a + (size_t)b * G, ct + o,
                                   cp + o, dht + o, H);
            }
            /* forward: a_t += h_{t-1} W_hh^T;  so dh_{t-1} [nb,H] = da_t [nb,4H] W_hh [4H,H] */
            if (t > 0 || dh0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, H, (int)G, 1.0f, dat, (int)G, w_hh, H, 0.0f,
                            dhn + r0, H);
        }
    }
    if (dh0) memcpy(dh0, dhn, sizeof(float) * BH);
    if (dc0) memcpy(dc0, dcn, sizeof(float) * BH);
    if (T == 0) return;

    /* forward: a_t += h_{t-1} W_hh^T;  so dW_hh [4H,H] += sum_t da_t^T h_{t-1}: steps 1..T-1
     * read h_0..h_{T-2} straight from the output, step 0 reads the saved h0 */
    if (T > 1)
        moe_sgemm(1,  0, (int)G, H, (T - 1) * B, 1.0f,
                    da + (size_t)B * G, (int)G, h, H, 1.0f, dw_hh, H);
    moe_sgemm(1,  0, (int)G, H, B, 1.0f, da, (int)G, hinit, H,
                1.0f, dw_hh, H);
    /* forward: a = x W_ih^T + b_ih + b_hh (+ ...);  so dW_ih [4H,D] += da^T x, dx [T*B,D] +=
     * da W_ih, db_ih += colsum(da), db_hh += colsum(da) */
    moe_sgemm(1,  0, (int)G, D, (int)N, 1.0f, da, (int)G, x, D,
                1.0f, dw_ih, D);
    if (dx)
        moe_sgemm(0,  0, (int)N, D, (int)G, 1.0f, da, (int)G,
                    w_ih, D, 1.0f, dx, D);
    colsum2(db_ih, db_hh, da, N, G);
}

/* ---- embedding ---------------------------------------------------------------------------- */

moe_status embedding_forward(float *out, const int32_t *tokens, const float *w_emb, int N, int V,
                             int E) {
    for (int r = 0; r < N; r++)
        if (tokens[r] < 0 || tokens[r] >= V)
            return moe_fail(MOE_ERR_INVALID_ARG, "token %d at position %d is outside [0, %d)",
                            (int)tokens[r], r, V);
#pragma omp parallel for schedule(static) if ((size_t)N * E >= LSTM_OMP_MIN)
    for (int r = 0; r < N; r++)
        memcpy(out + (size_t)r * E, w_emb + (size_t)tokens[r] * E, sizeof(float) * (size_t)E);
    return MOE_OK;
}

void embedding_backward(float *dw_emb, const float *dout, const int32_t *tokens, int N, int E) {
    /* forward: out[r] = W_emb[tokens[r]];  so dW_emb[tokens[r]] += dout[r]. A token can repeat,
     * so tasks split the columns, not the rows. */
    const long ntask = (long)(((size_t)E + COLS_PER_TASK - 1) / COLS_PER_TASK);
#pragma omp parallel for schedule(static) if ((size_t)N * E >= LSTM_OMP_MIN)
    for (long task = 0; task < ntask; task++) {
        const size_t j0 = (size_t)task * COLS_PER_TASK;
        const size_t nj = (size_t)E - j0 < COLS_PER_TASK ? (size_t)E - j0 : COLS_PER_TASK;
        for (int r = 0; r < N; r++) {
            float *dst = dw_emb + (size_t)tokens[r] * E + j0;
            const float *src = dout + (size_t)r * E + j0;
            for (size_t j = 0; j < nj; j++) dst[j] += src[j];
        }
    }
}

/* ---- dropout ------------------------------------------------------------------------------ */

void dropout_forward(float *out, const float *x, size_t count, float p, uint64_t seed,
                     uint64_t counter) {
    if (p <= 0.0f) {
        if (out != x) memcpy(out, x, sizeof(float) * count);
        return;
    }
    /* selected, not multiplied: at p >= 1 the scale is inf (or negative) and no element is kept */
    const float scale = 1.0f / (1.0f - p);
    const uint64_t key = rng_key(seed);
#pragma omp parallel for schedule(static) if (count >= LSTM_OMP_MIN)
    for (size_t j = 0; j < count; j++) out[j] = sel(rng_uniform_key(key, counter + j) >= p, x[j] * scale, 0.0f);
}

void dropout_backward(float *dx, const float *dout, size_t count, float p, uint64_t seed,
                      uint64_t counter) {
    if (p <= 0.0f) {
        for (size_t j = 0; j < count; j++) dx[j] += dout[j];
        return;
    }
    const float scale = 1.0f / (1.0f - p);
    /* forward: out = x * mask / (1-p);  so dx += dout * mask / (1-p), the mask recomputed */
    const uint64_t key = rng_key(seed);
#pragma omp parallel for schedule(static) if (count >= LSTM_OMP_MIN)
    for (size_t j = 0; j < count; j++) dx[j] += sel(rng_uniform_key(key, counter + j) >= p, dout[j] * scale, 0.0f);
}

void dropout_rows(int fwd, float *out, const float *x, int T, int B, int Bg, int b0, int d, float p, uint64_t seed,
                  uint64_t counter) {
    void (*f)(float *, const float *, size_t, float, uint64_t, uint64_t) = fwd ? dropout_forward : dropout_backward;
    const size_t Bd = (size_t)B * d;
    if (Bg == B) {
        f(out, x, (size_t)T * Bd, p, seed, counter);
        return;
    }
    for (int t = 0; t < T; t++)
        f(out + (size_t)t * Bd, x + (size_t)t * Bd, Bd, p, seed, counter + ((size_t)t * Bg + (size_t)b0) * d);
}
