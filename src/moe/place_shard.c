/* place_shard.c - experts split over processes (SPEC 1.7: mixed data and model parallelism).
 * Each rank routes its own tokens with the replicated router and sorts its (token, expert) rows by
 * expert; each expert's rows go to the rank that holds it (MPI_Alltoallv: rank s's rows for
 * expert e are contiguous, and the experts of one rank are contiguous). Rows arrive grouped by
 * source rank; a permutation puts them in expert order, sources in rank order, which is exactly
 * the order one process would see for the concatenated batch. The outputs travel back the same
 * way. Backward sends dY the same way and dX back.
 *
 *   rank 0 rows: [e0 e0 e1 | e2 e3]        rank 1 holds e2, e3: recv = [r0: e2 e3 | r1: e2 e2 e3]
 *   rank 1 rows: [e1 | e2 e2 e3]     --->  perm -> xe = [e2: r0 r1 r1 | e3: r0 r1]
 *
 * Per step and rank: 2 * (rows sent + rows received) * d floats in forward and as many in
 * backward, minus the rows that stay on the rank (MPI copies those locally). */
#define _POSIX_C_SOURCE 200809L
#include "base/internal.h"
#include "moe/layer_ops.h"
#include "moe/placement.h"
#include "parallel/comm.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    moe_comm *comm; /* borrowed */
    int P, me, n, d, h, e0, nloc;
    int *ball;               /* [P,2] tokens and mode (train) of each rank in the last forward */
    int *allc;               /* [P,n] rows each rank sent to each expert */
    int *sc, *sd, *rc, *rd;  /* [P] alltoallv counts and displacements (floats, d per row) */
    int *loff;               /* [nloc+1] row offsets of the local experts in xe */
    void *fixed;             /* the block of the buffers above */
    int *perm;               /* [capR] xe row q came in as recv row perm[q] */
    float *recv, *xe, *ye;   /* [capR,d] */
    float *a, *da;           /* [capR,h] */
    void *rows;              /* the block of the row buffers */
    int Rloc, capR;          /* rows held by the local experts; buffer capacity */
    double comm_s;           /* seconds in collectives, since creation */
    float *scratch;          /* the experts' (experts_scratch_reserve) */
    size_t scratch_cap;
    uint64_t sent, received; /* bytes to and from other ranks, since creation */
} shard;

static moe_status reserve_rows(shard *s, int R) {
    if (R <= s->capR) return MOE_OK;
    const size_t d = (size_t)s->d, h = (size_t)s->h, cap = (size_t)R + R / 4 + 16;
    shard t = *s;
    const moe_buf list[] = {MOE_BUF(t.perm, cap),    MOE_BUF(t.recv, cap * d), MOE_BUF(t.xe, cap * d),
                            MOE_BUF(t.ye, cap * d),  MOE_BUF(t.a, cap * h),    MOE_BUF(t.da, cap * h)};
    void *block = moe_bufs_alloc(list, 6);
    if (!block) return moe_fail(MOE_ERR_NOMEM, "cannot allocate buffers for %d expert rows", R);
    moe_free_aligned(s->rows);
    t.rows = block;
    t.capR = (int)cap;
    *s = t;
    return MOE_OK;
}

static moe_status shard_batch(void *ctx, int64_t *first, int64_t *total, int B, int train) {
    shard *s = ctx;
    double t0 = moe_clock_s();
    const int mine[2] = {B, train};
    moe_status st = comm_allgather_int(s->comm, mine, 2, s->ball);
    s->comm_s += moe_clock_s() - t0;
    if (st) return st;
    *first = *total = 0;
    for (int r = 0; r < s->P; r++) {
        if (r < s->me) *first += s->ball[2 * r];
        *total += s->ball[2 * r];
        /* the collectives that follow would not match up */
        if (s->ball[2 * r + 1] != train)
            return moe_fail(MOE_ERR_COMM, "rank %d runs the layer in %s mode and rank %d in %s mode", s->me,
                            train ? "training" : "evaluation", r, s->ball[2 * r + 1] ? "training" : "evaluation");
    }
    return MOE_OK;
}

static moe_status shard_sum_f64(void *ctx, double *v, int count) {
    shard *s = ctx;
    double t0 = moe_clock_s();
    moe_status st = comm_allreduce_sum_f64(s->comm, v, count);
    s->comm_s += moe_clock_s() - t0;
    return st;
}

static moe_status shard_sum_f32(void *ctx, float *v, size_t count) {
    shard *s = ctx;
    double t0 = moe_clock_s();
    moe_status st = moe_comm_allreduce_sum(s->comm, v, count);
    s->comm_s += moe_clock_s() - t0;
    return st;
}

/* The counts, displacements and permutation of this step's exchange, from every rank's
 * per-expert row counts (allc) and this rank's sorted offsets. */
static moe_status plan_exchange(shard *s, const int *offsets) {
    const int P = s->P, n = s->n, d = s->d, e0 = s->e0, nl = s->nloc;
    int64_t sdisp = 0, rdisp = 0;
    for (int r = 0; r < P; r++) {
        const int a = comm_first(n, P, r), b = comm_first(n, P, r + 1);
        int64_t rows_out = offsets[b] - offsets[a], rows_in = 0;
        for (int j = 0; j < nl; j++) rows_in += s->allc[(size_t)r * n + e0 + j];
        if ((sdisp + rows_out) * d > INT_MAX || (rdisp + rows_in) * d > INT_MAX)
            return moe_fail(MOE_ERR_CONFIG, "the expert exchange exceeds 2^31 floats on rank %d: use smaller batches",
                            s->me);
        s->sc[r] = (int)(rows_out * d);
        s->sd[r] = (int)(offsets[a] * (int64_t)d);
        s->rc[r] = (int)(rows_in * d);
        s->rd[r] = (int)(rdisp * d);
        sdisp += rows_out;
        rdisp += rows_in;
    }
    moe_status st = reserve_rows(s, (int)rdisp);
    if (st) return st;
    s->Rloc = (int)rdisp;
    /* expert-major order: for local expert j, the rows from rank 0, then rank 1, ... */
    s->loff[0] = 0;
    for (int j = 0; j < nl; j++) {
        int c = 0;
        for (int r = 0; r < P; r++) c += s->allc[(size_t)r * n + e0 + j];
        s->loff[j + 1] = s->loff[j] + c;
    }
    int q = 0;
    for (int j = 0; j < nl; j++)
        for (int r = 0; r < P; r++) {
            int start = s->rd[r] / d; /* rank r's block; its experts in order inside */
            for (int jj = 0; jj < j; jj++) start += s->allc[(size_t)r * n + e0 + jj];
            const int c = s->allc[(size_t)r * n + e0 + j];
            for (int i = 0; i < c; i++) s->perm[q++] = start + i;
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

/* bytes of an alltoallv that leave and enter this rank (its own block is a local copy) */
static void count_bytes(shard *s, const int *out, const int *in) {
    for (int r = 0; r < s->P; r++)
        if (r != s->me) {
            s->sent += 4 * (uint64_t)out[r];
            s->received += 4 * (uint64_t)in[r];
        }
}

/* sorted local rows -> the experts' ranks -> expert order in `xe` (through s->recv) */
static moe_status send_to_experts(shard *s, float *xe, const float *rows) {
    double t0 = moe_clock_s();
    moe_status st = comm_alltoallv_f32(s->comm, rows, s->sc, s->sd, s->recv, s->rc, s->rd);
    s->comm_s += moe_clock_s() - t0;
    count_bytes(s, s->sc, s->rc);
    if (st) return st;
    permute_rows(xe, s->recv, s->perm, s->Rloc, s->d, 0);
    return MOE_OK;
}

/* expert-order rows `ye` -> back to the ranks their tokens live on, into sorted local `rows` */
static moe_status send_back(shard *s, float *rows, const float *ye) {
    permute_rows(s->recv, ye, s->perm, s->Rloc, s->d, 1);
    double t0 = moe_clock_s();
    moe_status st = comm_alltoallv_f32(s->comm, s->recv, s->rc, s->rd, rows, s->sc, s->sd);
    s->comm_s += moe_clock_s() - t0;
    count_bytes(s, s->rc, s->sc);
    return st;
}

static moe_status shard_forward(void *ctx, float *Ys, int *gcounts, const float *Xs, const int *offsets,
                                const expert_weights *w, int strategy) {
    shard *s = ctx;
    const int n = s->n;
    for (int e = 0; e < n; e++) gcounts[e] = offsets[e + 1] - offsets[e];
    double t0 = moe_clock_s();
    moe_status st = comm_allgather_int(s->comm, gcounts, n, s->allc);
    s->comm_s += moe_clock_s() - t0;
    if (st) return st;
    if ((st = plan_exchange(s, offsets))) return st;
    if ((st = send_to_experts(s, s->xe, Xs))) return st;
    const int strat = experts_pick_strategy(strategy, s->Rloc, s->nloc, moe_threads());
    if ((st = experts_scratch_reserve(&s->scratch, &s->scratch_cap, s->d, s->h, w))) return st;
    experts_forward(s->a, s->ye, s->xe, w, s->loff, s->nloc, s->d, s->h, strat, s->scratch);
    if ((st = send_back(s, Ys, s->ye))) return st;
    for (int e = 0; e < n; e++) {
        int g = 0;
        for (int r = 0; r < s->P; r++) g += s->allc[(size_t)r * n + e];
        gcounts[e] = g;
    }
    return MOE_OK;
}

static moe_status shard_backward(void *ctx, float *dXs, const float *dYs, const expert_weights *w, int strategy) {
    shard *s = ctx;
    moe_status st = send_to_experts(s, s->ye, dYs);
    if (st) return st;
    const int strat = experts_pick_strategy(strategy, s->Rloc, s->nloc, moe_threads());
    if ((st = experts_scratch_reserve(&s->scratch, &s->scratch_cap, s->d, s->h, w))) return st;
    if ((st = experts_backward(s->ye, w, s->da, s->ye, s->xe, s->a, s->loff, s->nloc, s->d, s->h, strat, s->scratch)))
        return st;
    return send_back(s, dXs, s->ye);
}

static void shard_stats(const void *ctx, double *seconds, uint64_t *sent, uint64_t *received) {
    const shard *s = ctx;
    *seconds = s->comm_s;
    *sent = s->sent;
    *received = s->received;
}

static void shard_free(void *ctx) {
    shard *s = ctx;
    if (!s) return;
    moe_free_aligned(s->rows);
    moe_free_aligned(s->fixed);
    moe_free_aligned(s->scratch);
    free(s);
}

static const placement_i SHARD = {shard_batch,    shard_sum_f64, shard_sum_f32, shard_forward,
                                  shard_backward, shard_stats,   shard_free};

moe_status placement_shard_create(placement *pl, const moe_layer_config *c, moe_comm *comm) {
    const int P = moe_comm_size(comm), me = moe_comm_rank(comm);
    if (P > c->n)
        return moe_fail(MOE_ERR_CONFIG,
                        "%d ranks but only n=%d experts: each rank needs at least one expert (use at most %d ranks)", P,
                        c->n, c->n);
    shard *s = calloc(1, sizeof *s);
    if (!s) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the expert exchange");
    *s = (shard){.comm = comm, .P = P, .me = me, .n = c->n, .d = c->d, .h = c->h, .e0 = comm_first(c->n, P, me)};
    s->nloc = comm_first(c->n, P, me + 1) - s->e0;
    const size_t Pz = (size_t)P;
    const moe_buf list[] = {MOE_BUF(s->ball, 2 * Pz), MOE_BUF(s->allc, Pz * c->n), MOE_BUF(s->sc, Pz),
                            MOE_BUF(s->sd, Pz),       MOE_BUF(s->rc, Pz),          MOE_BUF(s->rd, Pz),
                            MOE_BUF(s->loff, (size_t)s->nloc + 1)};
    if (!(s->fixed = moe_bufs_alloc(list, 7))) {
        free(s);
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate the expert exchange");
    }
    *pl = (placement){.i = &SHARD, .ctx = s, .e0 = s->e0, .nloc = s->nloc, .ranks = P, .comm = comm};
    return MOE_OK;
}
