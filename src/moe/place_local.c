/* place_local.c - every expert in this process: the sorted rows go straight through the grouped
 * expert products (experts.c); the collectives do nothing. */
#include "base/internal.h"
#include "moe/layer_ops.h"
#include "moe/placement.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int d, h, n;
    int capR;
    float *A, *dA; /* [R,h] the hidden activations and their gradient */
    void *block;
    float *scratch; /* the experts' (experts_scratch_reserve) */
    size_t scratch_cap;
    const float *Xs; /* borrowed from forward until backward */
    const int *offsets;
} local;

static moe_status local_batch(void *ctx, int64_t *first, int64_t *total, int B, int train) {
    *first = 0;
    *total = B;
    return MOE_OK;
}

static moe_status local_sum_f64(void *ctx, double *v, int count) { return MOE_OK; }
static moe_status local_sum_f32(void *ctx, float *v, size_t count) { return MOE_OK; }

static moe_status local_forward(void *ctx, float *Ys, int *gcounts, const float *Xs, const int *offsets,
                                const expert_weights *w, int strategy) {
    local *p = ctx;
    const int R = offsets[p->n];
    if (R > p->capR) {
        float *A, *dA;
        const moe_buf list[] = {MOE_BUF(A, (size_t)R * p->h), MOE_BUF(dA, (size_t)R * p->h)};
        void *block = moe_bufs_alloc(list, 2);
        if (!block) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the experts' activations for %d rows", R);
        moe_free_aligned(p->block);
        p->block = block;
        p->A = A;
        p->dA = dA;
        p->capR = R;
    }
    for (int e = 0; e < p->n; e++) gcounts[e] = offsets[e + 1] - offsets[e];
    const int strat = experts_pick_strategy(strategy, R, p->n, moe_threads());
    moe_status st = experts_scratch_reserve(&p->scratch, &p->scratch_cap, p->d, p->h, w);
    if (st) return st;
    experts_forward(p->A, Ys, Xs, w, offsets, p->n, p->d, p->h, strat, p->scratch);
    p->Xs = Xs;
    p->offsets = offsets;
    return MOE_OK;
}

static moe_status local_backward(void *ctx, float *dXs, const float *dYs, const expert_weights *w, int strategy) {
    local *p = ctx;
    const int strat = experts_pick_strategy(strategy, p->offsets[p->n], p->n, moe_threads());
    moe_status st = experts_scratch_reserve(&p->scratch, &p->scratch_cap, p->d, p->h, w);
    return st ? st : experts_backward(dXs, w, p->dA, dYs, p->Xs, p->A, p->offsets, p->n, p->d, p->h, strat, p->scratch);
}

static void local_stats(const void *ctx, double *seconds, uint64_t *sent, uint64_t *received) {
    *seconds = 0.0;
    *sent = *received = 0;
}

static void local_free(void *ctx) {
    local *p = ctx;
    if (!p) return;
    moe_free_aligned(p->block);
    moe_free_aligned(p->scratch);
    free(p);
}

static const placement_i LOCAL = {local_batch,    local_sum_f64, local_sum_f32, local_forward,
                                  local_backward, local_stats,   local_free};

moe_status placement_local_create(placement *pl, const moe_layer_config *c) {
    local *p = calloc(1, sizeof *p);
    if (!p) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the experts' placement");
    p->d = c->d;
    p->h = c->h;
    p->n = c->n;
    *pl = (placement){.i = &LOCAL, .ctx = p, .e0 = 0, .nloc = c->n, .ranks = 1};
    return MOE_OK;
}
