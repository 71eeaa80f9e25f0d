/* shard.c - the MoE layer with its experts split over processes (SPEC 1.7: mixed data and model
 * parallelism). Each rank gates its own tokens with the replicated gate, sorts its (token,
 * expert) rows by expert as the plain layer does, and sends each expert's rows to the rank that
 * holds it (MPI_Alltoallv: rank s's rows for expert e are contiguous, and experts of one rank
 * are contiguous). Rows arrive grouped by source rank; a permutation puts them in expert order,
 * sources in rank order, which is exactly the order a single process would see for the
 * concatenated batch. The outputs travel back the same way. Backward sends dY the same way and
 * dX back; the gate's gradients are summed over ranks.
 *
 * Per step and rank: 2 * (rows sent + rows received) * d floats in forward and as many in
 * backward, minus the rows that stay on the rank (MPI copies those locally). */
#define _POSIX_C_SOURCE 200809L
#include "parallel/comm.h"
#include "base/internal.h"
#include "moe/layer_impl.h"
#include "moe/layer_ops.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* the buffers sized by rows (sw_rows) */
static void free_rows(shard_ws *sw) {
    free(sw->perm);
    moe_free_aligned(sw->recv);
    moe_free_aligned(sw->xe);
    moe_free_aligned(sw->ye);
    moe_free_aligned(sw->a);
    moe_free_aligned(sw->da);
}

void shard_free(shard_ws *sw) {
    free_rows(sw);
    free(sw->ball);
    free(sw->allc);
    free(sw->gcounts);
    free(sw->sc);
    free(sw->sd);
    free(sw->rc);
    free(sw->rd);
    free(sw->loff);
    moe_free_aligned(sw->dgate);
    memset(sw, 0, sizeof *sw);
}

static moe_status sw_fixed(moe_layer *l) {
    shard_ws *sw = &l->sw;
    if (sw->ball) return MOE_OK;
    const int P = moe_comm_size(l->comm), n = l->cfg.n, d = l->cfg.d;
    sw->ball = calloc(2 * (size_t)P, sizeof(int));
    sw->allc = calloc((size_t)P * n, sizeof(int));
    sw->gcounts = calloc((size_t)n, sizeof(int));
    sw->sc = calloc((size_t)P, sizeof(int));
    sw->sd = calloc((size_t)P, sizeof(int));
    sw->rc = calloc((size_t)P, sizeof(int));
    sw->rd = calloc((size_t)P, sizeof(int));
    sw->loff = calloc((size_t)l->nloc + 1, sizeof(int));
    sw->dgate = moe_alloc_floats(2 * (size_t)d * n);
    if (!sw->ball || !sw->allc || !sw->gcounts || !sw->sc || !sw->sd || !sw->rc || !sw->rd || !sw->loff || !sw->dgate) {
        shard_free(sw);
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate the expert exchange");
    }
    return MOE_OK;
}

static moe_status sw_rows(moe_layer *l, int R) {
    shard_ws *sw = &l->sw;
    if (R <= sw->capR) return MOE_OK;
    const size_t d = (size_t)l->cfg.d, h = (size_t)l->cfg.h, cap = (size_t)R + R / 4 + 16;
    free_rows(sw);
    sw->perm = malloc(sizeof(int) * cap);
    sw->recv = moe_alloc_floats(cap * d);
    sw->xe = moe_alloc_floats(cap * d);
    sw->ye = moe_alloc_floats(cap * d);
    sw->a = moe_alloc_floats(cap * h);
    sw->da = moe_alloc_floats(cap * h);
    if (!sw->perm || !sw->recv || !sw->xe || !sw->ye || !sw->a || !sw->da) {
        sw->capR = 0;
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate buffers for %d expert rows", R);
    }
    sw->capR = (int)cap;
    return MOE_OK;
}

/* The counts, displacements and permutation of this step's exchange, from every rank's
 * per-expert row counts (allc) and this rank's sorted offsets. */
static moe_status plan_exchange(moe_layer *l) {
    shard_ws *sw = &l->sw;
    const int P = moe_comm_size(l->comm), me = moe_comm_rank(l->comm), n = l->cfg.n, d = l->cfg.d;
    const int e0 = l->e0, nl = l->nloc;
    int64_t sdisp = 0, rdisp = 0;
    for (int s = 0; s < P; s++) {
        const int a = shard_first(n, P, s), b = shard_first(n, P, s + 1);
        int64_t rows_out = l->offsets[b] - l->offsets[a], rows_in = 0;
        for (int j = 0; j < nl; j++) rows_in += sw->allc[(size_t)s * n + e0 + j];
        if ((sdisp + rows_out) * d > INT_MAX || (rdisp + rows_in) * d > INT_MAX)
            return moe_fail(MOE_ERR_CONFIG, "the expert exchange exceeds 2^31 floats on rank %d: use smaller batches", me);
        sw->sc[s] = (int)(rows_out * d);
        sw->sd[s] = (int)(l->offsets[a] * (int64_t)d);
        sw->rc[s] = (int)(rows_in * d);
        sw->rd[s] = (int)(rdisp * d);
        sdisp += rows_out;
        rdisp += rows_in;
    }
    moe_status st = sw_rows(l, (int)rdisp);
    if (st) return st;
    sw->Rloc = (int)rdisp;
    /* expert-major order: for local expert j, the rows from rank 0, then rank 1, ... */
    sw->loff[0] = 0;
    for (int j = 0; j < nl; j++) {
        int c = 0;
        for (int s = 0; s < P; s++) c += sw->allc[(size_t)s * n + e0 + j];
        sw->loff[j + 1] = sw->loff[j] + c;
    }
    int q = 0;
    for (int j = 0; j < nl; j++)
        for (int s = 0; s < P; s++) {
            int start = sw->rd[s] / d; /* rank s's block; its experts in order inside */
            for (int jj = 0; jj < j; jj++) start += sw->allc[(size_t)s * n + e0 + jj];
            const int c = sw->allc[(size_t)s * n + e0 + j];
            for (int i = 0; i < c; i++) sw->perm[q++] = start + i;
        }
    return MOE_OK;
}

/* rows in = src rows gathered by perm (dst[q] = src[perm[q]]), or scattered back */
static void permute_rows(float *dst, const float *src, const int *perm, int R, int d, int scatter) {
#pragma omp parallel for schedule(static) if ((size_t)R * d >= 65536)
    for (int q = 0; q < R; q++) {
        if (scatter) memcpy(dst + (size_t)perm[q] * d, src + (size_t)q * d, sizeof(float) * (size_t)d);
        else memcpy(dst + (size_t)q * d, src + (size_t)perm[q] * d, sizeof(float) * (size_t)d);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* bytes of an alltoallv that leave and enter this rank (its own block is a local copy) */
static void count_bytes(moe_layer *l, const int *out, const int *in) {
    const int P = moe_comm_size(l->comm), me = moe_comm_rank(l->comm);
    for (int s = 0; s < P; s++)
        if (s != me) {
            l->sw.sent += 4 * (uint64_t)out[s];
            l->sw.received += 4 * (uint64_t)in[s];
        }
}

/* sorted local rows -> the experts' ranks -> expert order in `xe` (through sw->recv) */
static moe_status send_to_experts(moe_layer *l, float *xe, const float *rows) {
    shard_ws *sw = &l->sw;
    double t0 = now_s();
    moe_status st = comm_alltoallv_f32(l->comm, rows, sw->sc, sw->sd, sw->recv, sw->rc, sw->rd);
    sw->comm_s += now_s() - t0;
    count_bytes(l, sw->sc, sw->rc);
    if (st) return st;
    permute_rows(xe, sw->recv, sw->perm, sw->Rloc, l->cfg.d, 0);
    return MOE_OK;
}

/* expert-order rows `ye` -> back to the ranks their tokens live on, into sorted local `rows` */
static moe_status send_back(moe_layer *l, float *rows, const float *ye) {
    shard_ws *sw = &l->sw;
    permute_rows(sw->recv, ye, sw->perm, sw->Rloc, l->cfg.d, 1);
    double t0 = now_s();
    moe_status st = comm_alltoallv_f32(l->comm, sw->recv, sw->rc, sw->rd, rows, sw->sc, sw->sd);
    sw->comm_s += now_s() - t0;
    count_bytes(l, sw->rc, sw->sc);
    return st;
}

moe_status shard_forward(moe_layer *l, float *y, const float *x, int B, int train, const float *noise) {
    const moe_layer_config *c = &l->cfg;
    const int d = c->d, n = c->n, k = c->k, h = c->h, P = moe_comm_size(l->comm), me = moe_comm_rank(l->comm);
    workspace *w = &l->ws;
    shard_ws *sw = &l->sw;
    moe_status st = sw_fixed(l);
    if (st) return st;
    /* where this rank's tokens sit in the whole batch, and each rank's mode (one collective) */
    double t0 = now_s();
    const int mine[2] = {B, train};
    if ((st = comm_allgather_int(l->comm, mine, 2, sw->ball))) return st;
    sw->comm_s += now_s() - t0;
    int64_t off = 0, Btot = 0;
    for (int s = 0; s < P; s++) {
        if (s < me) off += sw->ball[2 * s];
        Btot += sw->ball[2 * s];
        /* the collectives below would not match up */
        if (sw->ball[2 * s + 1] != train)
            return moe_fail(MOE_ERR_COMM, "rank %d runs the layer in %s mode and rank %d in %s mode", me,
                            train ? "training" : "evaluation", s, sw->ball[2 * s + 1] ? "training" : "evaluation");
    }
    if (train) {
        if (noise) memcpy(w->eps, noise, sizeof(float) * (size_t)B * n);
        else if (l->nz_rows == 0) moe_rng_normal_fill(w->eps, (size_t)B * n, l->seed, l->counter + (uint64_t)off * n);
        else { /* blocks of nz_rows tokens at t * nz_stride + nz_first of the whole batch */
            if (B % l->nz_rows) return moe_fail(MOE_ERR_SHAPE, "B=%d is not a multiple of the noise layout's %d rows", B, l->nz_rows);
            for (int t = 0; t < B / l->nz_rows; t++)
                moe_rng_normal_fill(w->eps + (size_t)t * l->nz_rows * n, (size_t)l->nz_rows * n, l->seed,
                                    l->counter + ((uint64_t)t * l->nz_stride + (uint64_t)l->nz_first) * n);
        }
        l->counter += (uint64_t)Btot * n;
    }
    const int K1 = k < n ? k + 1 : n, smooth = train && k < n;
    gate_forward(w->clean, w->raw, w->sigma, w->H, smooth ? w->P : NULL, w->topi, w->topv, w->gk, x,
                 pdata(l, P_WG), pdata(l, P_WN), w->eps, train, c->noise_eps, B, d, n, k);
    gate_importance_load(l->importance, l->load, w->P, w->topi, w->gk, smooth, B, n, k);
    t0 = now_s();
    if ((st = comm_allreduce_sum_f64(l->comm, l->importance, n)) || (st = comm_allreduce_sum_f64(l->comm, l->load, n)))
        return st;
    sw->comm_s += now_s() - t0;
    double li = cv2_loss(l->dimp, l->importance, n, c->w_importance);
    double ll = cv2_loss(l->dload, l->load, n, c->w_load);
    if (!smooth) memset(l->dload, 0, sizeof(double) * (size_t)n);

    dispatch_build(l->counts, l->offsets, w->tok, w->pos, w->topi, B, n, k, K1);
    const int R = B * k;
    t0 = now_s();
    if ((st = comm_allgather_int(l->comm, l->counts, n, sw->allc))) return st;
    sw->comm_s += now_s() - t0;
    if ((st = plan_exchange(l))) return st;
    dispatch_gather(w->Xs, x, w->tok, R, d);
    if ((st = send_to_experts(l, sw->xe, w->Xs))) return st;
    const int strat = experts_pick_strategy(g_moe_strategy, sw->Rloc, l->nloc, moe_threads());
    experts_forward(sw->a, sw->ye, sw->xe, pdata(l, P_W1), pdata(l, P_B1), pdata(l, P_W2), pdata(l, P_B2), sw->loff,
                    l->nloc, d, h, strat);
    if ((st = send_back(l, w->Ys, sw->ye))) return st;
    dispatch_combine(y, w->Ys, w->gk, w->pos, B, d, k);

    for (int e = 0; e < n; e++) {
        int g = 0;
        for (int s = 0; s < P; s++) g += sw->allc[(size_t)s * n + e];
        sw->gcounts[e] = g;
    }
    layer_finish_forward(l, sw->gcounts, (int64_t)Btot * k, li, ll, x, B, train, smooth);
    return MOE_OK;
}

moe_status shard_backward(moe_layer *l, float *dx, const float *dy) {
    const moe_layer_config *c = &l->cfg;
    const int d = c->d, n = c->n, k = c->k, h = c->h;
    workspace *w = &l->ws;
    shard_ws *sw = &l->sw;
    const int B = w->B, K1 = k < n ? k + 1 : n;
    dispatch_combine_backward(w->dgk, w->dYs, dy, w->Ys, w->gk, w->pos, B, d, k);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < k; j++) w->dgk[(size_t)b * k + j] += (float)l->dimp[w->topi[(size_t)b * K1 + j]];
    moe_status st = send_to_experts(l, sw->ye, w->dYs);
    if (st) return st;
    const int strat = experts_pick_strategy(g_moe_strategy, sw->Rloc, l->nloc, moe_threads());
    experts_backward(sw->ye, pgrad(l, P_W1), pgrad(l, P_B1), pgrad(l, P_W2), pgrad(l, P_B2), sw->da, sw->ye, sw->xe,
                     sw->a, pdata(l, P_W1), pdata(l, P_W2), sw->loff, l->nloc, d, h, strat);
    if ((st = send_back(l, w->dYs, sw->ye))) return st;
    if (dx) dispatch_gather_backward(dx, w->dYs, w->pos, B, d, k);
    /* the gate's gradients from this rank's tokens, then summed over ranks */
    float *gwg = sw->dgate, *gwn = sw->dgate + (size_t)d * n;
    memset(sw->dgate, 0, sizeof(float) * 2 * (size_t)d * n);
    gate_backward(dx, gwg, gwn, w->dclean, w->draw, w->dgk, l->dload, w->x, pdata(l, P_WG), pdata(l, P_WN), w->H,
                  w->clean, w->raw, w->sigma, w->eps, w->topi, w->topv, w->gk, w->train, w->smooth, B, d, n, k);
    double t0 = now_s();
    if ((st = moe_comm_allreduce_sum(l->comm, sw->dgate, 2 * (size_t)d * n))) return st;
    sw->comm_s += now_s() - t0;
    float *g1 = pgrad(l, P_WG), *g2 = pgrad(l, P_WN);
    for (size_t i = 0; i < (size_t)d * n; i++) {
        g1[i] += gwg[i];
        g2[i] += gwn[i];
    }
    return MOE_OK;
}

void moe_layer_comm_stats(const moe_layer *l, double *seconds, uint64_t *sent, uint64_t *received) {
    if (seconds) *seconds = l ? l->sw.comm_s : 0.0;
    if (sent) *sent = l ? l->sw.sent : 0;
    if (received) *received = l ? l->sw.received : 0;
}
