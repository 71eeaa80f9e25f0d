/* experts.c - the expert feed-forward nets E_i(x) = relu(x W1_i + b1_i) W2_i + b2_i, run on the
 * rows the dispatcher grouped per expert: 2 BLAS products forward, 4 backward, per expert.
 *
 * Threads: experts are spread over the threads, largest first, each product single-threaded
 * (measured fastest here from n = 4 up); or, with MOE_PAR_BLAS, experts run in turn and each
 * product is split over the threads by moe_sgemm. An expert with few rows (the regime of
 * thousands of experts) runs its products on libxsmm's small-matrix kernels where the build has
 * them (base/gemm.h). Weights stored in bfloat16 are widened to float32 one matrix at a time
 * into the thread's scratch: the arithmetic is float32 either way. */
#include "base/bf16.h"
#include "base/internal.h"
#include "moe/layer_ops.h"
#include "moe/placement.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

int experts_pick_strategy(int strategy, int R, int n, int nthreads) {
    (void)R;
    if (strategy == EXPERTS_PAR_BLAS || strategy == EXPERTS_PAR_EXPERTS) return strategy;
    /* measured on 2 cores (BENCHMARKS.md): experts over threads wins from n = 4 to 1024; with
     * fewer experts than twice the threads, split each product instead */
    return (nthreads > 1 && n >= 2 * nthreads) ? EXPERTS_PAR_EXPERTS : EXPERTS_PAR_BLAS;
}

/* One dense product of an expert over its c rows: Y [c,m] = X [c,kd] W [kd,m] (+ b [m] on every
 * row when b is not NULL). Both of an expert's products are one of these. */
static void dense_fwd(float *Y, const float *X, const float *W, const float *b, int c, int kd, int m) {
    float beta = 0.0f;
    if (b) {
        for (int r = 0; r < c; r++) memcpy(Y + (size_t)r * m, b, sizeof(float) * m);
        beta = 1.0f;
    }
    if (c <= MOE_GEMM_FEW_ROWS) moe_sgemm_few_nn(c, m, kd, X, kd, W, m, beta, Y, m);
    else moe_sgemm(0, 0, c, m, kd, 1.0f, X, kd, W, m, beta, Y, m);
}

/* The backward of dense_fwd. forward: Y = X W + b;  so dW = beta dW + X^T dY (beta 1: added to
 * the gradient tensor; 0: written into a fused update's scratch), db += colsum(dY) (when b has a
 * gradient), dX = dY W^T (overwritten, not accumulated: the rows belong to this expert). */
static void dense_bwd(float *dX, float *dW, float *db, const float *dY, const float *X, const float *W, int c,
                      int kd, int m, float beta, float *work) {
    const int few = c <= MOE_GEMM_FEW_ROWS;
    if (few) moe_sgemm_few_tn(kd, m, c, X, kd, dY, m, beta, dW, m);
    else moe_sgemm(1, 0, kd, m, c, 1.0f, X, kd, dY, m, beta, dW, m);
    if (db)
        for (int r = 0; r < c; r++)
            for (int j = 0; j < m; j++) db[j] += dY[(size_t)r * m + j];
    if (few) moe_sgemm_few_nt(c, kd, m, dY, m, W, m, 0.0f, dX, kd, work);
    else moe_sgemm(0, 1, c, kd, m, 1.0f, dY, m, W, m, 0.0f, dX, kd);
}

/* Expert e's weight matrix W1 (which 0) or W2 (1) as float32: in the weights, or widened from
 * bfloat16 into buf [d*h] */
static const float *weight(const expert_weights *w, int which, int e, size_t dh, float *buf) {
    const uint16_t *hw = which ? w->h2 : w->h1;
    if (!hw) return (which ? w->w2 : w->w1) + (size_t)e * dh;
    bf16_widen(buf, hw + (size_t)e * dh, dh);
    return buf;
}

/* One thread's scratch: the few-row input-gradient products' transposed copies, under fused
 * updates one expert's gradients (w1, w2, b1, b2), and with bfloat16 weights one matrix
 * widened to float32 */
typedef struct {
    float *work, *grads, *wide;
} thread_scratch;

static size_t scratch_parts(int d, int h, int fused, int half, size_t *p_grads, size_t *p_wide) {
    const size_t dh = (size_t)d * h, few = MOE_ARENA_PAD(moe_sgemm_few_nt_work(MOE_GEMM_FEW_ROWS, d, h));
    const size_t grads = fused ? MOE_ARENA_PAD(2 * dh + (size_t)d + (size_t)h) : 0;
    if (p_grads) *p_grads = few;
    if (p_wide) *p_wide = few + grads;
    return few + grads + (half ? MOE_ARENA_PAD(dh) : 0);
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static thread_scratch mine(float *scratch, int d, int h, const expert_weights *w) {
    size_t pg, pw;
    const size_t per = scratch_parts(d, h, w->up != NULL, w->h1 != NULL, &pg, &pw);
    float *s = scratch + (size_t)thread_id() * per;
    return (thread_scratch){s, s + pg, s + pw};
}

size_t experts_scratch_floats(int d, int h, int nthreads, int fused, int half) {
    return (size_t)nthreads * scratch_parts(d, h, fused, half, NULL, NULL);
}

moe_status experts_scratch_reserve(float **scratch, size_t *cap, int d, int h, const expert_weights *w) {
    const size_t need = experts_scratch_floats(d, h, moe_threads(), w->up != NULL, w->h1 != NULL);
    if (*scratch && need <= *cap) return MOE_OK;
    float *s = moe_alloc_floats(need);
    if (!s) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the experts' scratch (%zu floats)", need);
    moe_free_aligned(*scratch);
    *scratch = s;
    *cap = need;
    return MOE_OK;
}

static void expert_fwd(int e, float *A, float *Ys, const float *Xs, const expert_weights *w, const int *offsets,
                       int d, int h, float *scratch) {
    int r0 = offsets[e], c = offsets[e + 1] - r0;
    if (c == 0) return;
    const size_t dh = (size_t)d * h;
    const float *X = Xs + (size_t)r0 * d;
    float *Ae = A + (size_t)r0 * h, *Y = Ys + (size_t)r0 * d, *wide = mine(scratch, d, h, w).wide;
    dense_fwd(Ae, X, weight(w, 0, e, dh, wide), w->b1 ? w->b1 + (size_t)e * h : NULL, c, d, h);
    for (size_t i = 0; i < (size_t)c * h; i++) Ae[i] = Ae[i] > 0.0f ? Ae[i] : 0.0f;
    dense_fwd(Y, Ae, weight(w, 1, e, dh, wide), w->b2 ? w->b2 + (size_t)e * d : NULL, c, h, d);
}

/* Expert e's backward into dw1, db1, dw2, db2 (beta: 1 adds to them, 0 writes the weight
 * gradients) */
static void expert_bwd(int e, float *dXs, float *dw1, float *db1, float *dw2, float *db2, float *dA, const float *dYs,
                       const float *Xs, const float *A, const expert_weights *w, const int *offsets, int d, int h,
                       float beta, thread_scratch t) {
    int r0 = offsets[e], c = offsets[e + 1] - r0;
    const size_t dh = (size_t)d * h;
    const float *X = Xs + (size_t)r0 * d, *Ae = A + (size_t)r0 * h, *dY = dYs + (size_t)r0 * d;
    float *dAe = dA + (size_t)r0 * h, *dX = dXs + (size_t)r0 * d;
    /* forward: Y = A W2 + b2 */
    dense_bwd(dAe, dw2, db2, dY, Ae, weight(w, 1, e, dh, t.wide), c, h, d, beta, t.work);
    /* forward: A = relu(pre);  so dpre = dA * (A > 0) */
    for (size_t i = 0; i < (size_t)c * h; i++)
        if (!(Ae[i] > 0.0f)) dAe[i] = 0.0f;
    /* forward: pre = X W1 + b1. dX may alias dY: every read of this expert's dY rows is above */
    dense_bwd(dX, dw1, db1, dAe, X, weight(w, 0, e, dh, t.wide), c, d, h, beta, t.work);
}

/* Expert e's backward: into the gradient tensors, or (fused) into this thread's scratch, which
 * the updater applies at once; the weights are not read after their gradients are made */
static moe_status expert_bwd_any(int e, float *dXs, const expert_weights *w, float *dA, const float *dYs,
                                 const float *Xs, const float *A, const int *offsets, int d, int h, float *scratch) {
    if (offsets[e + 1] == offsets[e]) return MOE_OK;
    const size_t dh = (size_t)d * h;
    const thread_scratch t = mine(scratch, d, h, w);
    if (!w->up) {
        expert_bwd(e, dXs, w->g1 + e * dh, w->gb1 ? w->gb1 + (size_t)e * h : NULL, w->g2 + e * dh,
                   w->gb2 ? w->gb2 + (size_t)e * d : NULL, dA, dYs, Xs, A, w, offsets, d, h, 1.0f, t);
        return MOE_OK;
    }
    float *g1 = t.grads, *g2 = g1 + dh;
    float *gb1 = w->b1 ? g2 + dh : NULL, *gb2 = w->b2 ? g2 + dh + h : NULL;
    /* the weight gradients are written (beta 0), only the biases are summed into */
    memset(g2 + dh, 0, sizeof(float) * ((size_t)d + (size_t)h));
    expert_bwd(e, dXs, g1, gb1, g2, gb2, dA, dYs, Xs, A, w, offsets, d, h, 0.0f, t);
    return w->up->apply(w->up->ctx, e, g1, gb1, g2, gb2);
}

/* Experts ordered by descending row count, so the dynamic schedule balances the threads. */
static int *order_by_rows(const int *offsets, int n) {
    int *ord = malloc(sizeof(int) * (size_t)n);
    if (!ord) return NULL;
    for (int e = 0; e < n; e++) ord[e] = e;
    /* counting sort on row counts, descending */
    int maxc = 0;
    for (int e = 0; e < n; e++) {
        int c = offsets[e + 1] - offsets[e];
        if (c > maxc) maxc = c;
    }
    int *bucket = calloc((size_t)maxc + 2, sizeof(int));
    if (!bucket) return ord; /* unsorted order still correct, just less balanced */
    for (int e = 0; e < n; e++) bucket[maxc - (offsets[e + 1] - offsets[e]) + 1]++;
    for (int i = 1; i <= maxc + 1; i++) bucket[i] += bucket[i - 1];
    for (int e = 0; e < n; e++) ord[bucket[maxc - (offsets[e + 1] - offsets[e])]++] = e;
    free(bucket);
    return ord;
}

void experts_forward(float *A, float *Ys, const float *Xs, const expert_weights *w, const int *offsets, int n, int d,
                     int h, int strategy, float *scratch) {
    int *ord = NULL;
    if (strategy == EXPERTS_PAR_EXPERTS) ord = order_by_rows(offsets, n);
    if (!ord) {
        for (int e = 0; e < n; e++) expert_fwd(e, A, Ys, Xs, w, offsets, d, h, scratch);
        return;
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n; i++) expert_fwd(ord[i], A, Ys, Xs, w, offsets, d, h, scratch);
    free(ord);
}

moe_status experts_backward(float *dXs, const expert_weights *w, float *dA, const float *dYs, const float *Xs,
                            const float *A, const int *offsets, int n, int d, int h, int strategy, float *scratch) {
    int *ord = NULL;
    if (strategy == EXPERTS_PAR_EXPERTS) ord = order_by_rows(offsets, n);
    moe_status st = MOE_OK;
    if (!ord) {
        for (int e = 0; e < n && !st; e++) st = expert_bwd_any(e, dXs, w, dA, dYs, Xs, A, offsets, d, h, scratch);
        return st;
    }
    /* a worker's failure: its status and message (the message is per thread) */
    char msg[256] = "";
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n; i++) {
        int f;
#pragma omp atomic read
        f = failed;
        if (f) continue;
        const moe_status s1 = expert_bwd_any(ord[i], dXs, w, dA, dYs, Xs, A, offsets, d, h, scratch);
        if (!s1) continue;
#pragma omp critical
        if (!st) {
            snprintf(msg, sizeof msg, "%s", moe_last_error());
            st = s1;
        }
#pragma omp atomic write
        failed = 1;
    }
    free(ord);
    return st ? moe_fail(st, "%s", msg) : MOE_OK;
}
