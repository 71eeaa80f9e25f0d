/* layer_impl.h - the moe_layer handle's inside, shared by layer.c (creation, parameters) and
 * pipeline.c (forward and backward over the layer's router and placement). Internal. */
#ifndef MOE_LAYER_IMPL_H
#define MOE_LAYER_IMPL_H

#include "moe.h"
#include "moe/placement.h"
#include "moe/router.h"

#include <stddef.h>
#include <stdint.h>

enum { P_WG, P_WN, P_W1, P_B1, P_W2, P_B2, P_WG2, P_WN2, P_COUNT };

typedef struct {
    int present;
    int ndim;
    int64_t shape[3];
    size_t numel, offset; /* offset in floats into the arenas, 16-float aligned */
    int half;             /* 1: stored as bfloat16 in the layer's `half` buffer at hoff, not in
                             the float arena; offset is then its place in the optimiser's
                             coordinates (past the float arena) */
    size_t hoff;
} param_slot;

/* The pipeline's buffers. Per batch (capB tokens, R = B*kk rows after dispatch): */
typedef struct {
    int capB;
    float *eps;             /* [B,nw] the router's noise draws */
    int *expert;            /* [B,kk] each token's experts */
    float *gate, *dgate;    /* [B,kk] their gate values; dL/dgate */
    int *tok, *pos;         /* [R] token of each sorted row; sorted row of slot (b, j) */
    float *Xs, *Ys, *dYs;   /* [R,d] rows sorted by expert (dXs reuses dYs) */
    void *block;
    /* Per layer (allocated with it): */
    double *sums;                            /* [nsum] the router's statistics */
    double *importance, *load, *dimp, *dload; /* [n] */
    double *dload_scaled;                     /* [n]: dload times a backward's aux_grad */
    int *counts, *offsets, *gcounts;         /* [n], [n+1], [n] (gcounts: over all ranks) */
    float *rgrad;                            /* the router's gradients of one backward, when
                                                they are summed over ranks */
    void *fixed;
    const float *x; /* the forward input, borrowed until backward */
    int B, train, smooth, valid;
} layer_ws;

struct moe_layer {
    moe_layer_config cfg;
    param_slot slots[P_COUNT];
    float *params, *grads; /* arenas */
    size_t arena_count;    /* the parameters' coordinates (floats), bfloat16 tensors included */
    size_t float_count;    /* floats of params: arena_count, or less when W1 and W2 are
                              bfloat16 (they come last and live in `half`) */
    uint16_t *half;        /* the experts' W1 and W2 in bfloat16 (LAYER_BF16), or NULL */
    size_t half_count;
    size_t grad_count;     /* floats of grads: arena_count, or under fused updates the router's
                              prefix (the experts' slots come last and have no gradients) */
    int fused;
    expert_updater up;     /* fused updates: the experts' (layer_set_updater) */
    router rt;
    placement pl;
    int strategy; /* moe_parallel */
    moe_layer_stats stats;
    uint64_t seed, counter;
    int nz_rows, nz_stride, nz_first; /* seeded noise positions (moe_layer_set_noise_layout) */
    layer_ws ws;
};

static inline float *pdata(const moe_layer *l, int p) {
    return l->slots[p].present && !l->slots[p].half ? l->params + l->slots[p].offset : NULL;
}
static inline uint16_t *phalf(const moe_layer *l, int p) {
    return l->slots[p].present && l->slots[p].half ? l->half + l->slots[p].hoff : NULL;
}
static inline float *pgrad(const moe_layer *l, int p) {
    return l->slots[p].present && l->slots[p].offset < l->grad_count ? l->grads + l->slots[p].offset : NULL;
}

/* floats of the router's weights: WG, WN and, hierarchical, WG2, WN2 */
static const int ROUTER_SLOTS[4] = {P_WG, P_WN, P_WG2, P_WN2};
static inline size_t router_floats(const moe_layer *l) {
    size_t m = 0;
    for (int i = 0; i < 4; i++) m += l->slots[ROUTER_SLOTS[i]].present ? l->slots[ROUTER_SLOTS[i]].numel : 0;
    return m;
}

#endif
