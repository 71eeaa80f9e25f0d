/* placement.h - the interface a placement implements: where the experts live and how the
 * expert-sorted rows reach them. Two kinds: all experts in this process (place_local.c), or split
 * over MPI ranks (place_shard.c, SPEC 1.7). The layer pipeline (pipeline.c) calls:
 *
 *   batch(B, train)     -> where this process's tokens sit in the whole batch
 *   sum_f64 / sum_f32   -> statistics and replicated gradients summed over the processes
 *   forward(Xs, offsets) -> Ys: rows sorted by expert (offsets [n+1] over all n experts) in,
 *                           the experts' outputs in the same order out
 *   backward(dYs)       -> dXs, expert weight gradients += (or each expert's gradients applied
 *                          at once: fused updates)
 *
 * The local placement's collectives do nothing, so the pipeline is the same for both. */
#ifndef MOE_PLACEMENT_H
#define MOE_PLACEMENT_H

#include "moe.h"

#include <stddef.h>
#include <stdint.h>

/* Fused updates: backward hands each held expert's gradients (this backward's, for expert e of
 * the nloc here) to apply() as soon as they are made, instead of adding them to gradient
 * tensors; apply may scale them in place and updates the weights. Called once per expert that
 * had rows, from any thread; gb1, gb2 are NULL without biases. */
typedef struct {
    moe_status (*apply)(void *ctx, int e, float *gw1, float *gb1, float *gw2, float *gb2);
    void *ctx;
} expert_updater;

/* The held experts' weights [nloc, ...] and their gradients (+=; NULL under fused updates, with
 * `up` set instead); biases may be NULL. W1 and W2 are float32 (w1, w2) or bfloat16 (h1, h2;
 * w1, w2 NULL then). */
typedef struct {
    const float *w1, *b1, *w2, *b2; /* [nloc,d,h], [nloc,h], [nloc,h,d], [nloc,d] */
    float *g1, *gb1, *g2, *gb2;
    const expert_updater *up;
    const uint16_t *h1, *h2;
} expert_weights;

typedef struct {
    /* This process's B tokens are [*first, *first + B) of *total in the whole batch; every
     * process must run the same mode. */
    moe_status (*batch)(void *ctx, int64_t *first, int64_t *total, int B, int train);
    /* v [count] summed over the processes, in place */
    moe_status (*sum_f64)(void *ctx, double *v, int count);
    moe_status (*sum_f32)(void *ctx, float *v, size_t count);
    /* Xs [R,d] sorted by expert (expert e: rows offsets[e] .. offsets[e+1]) -> Ys [R,d];
     * gcounts [n] = rows per expert over all processes. Xs and offsets stay the caller's and
     * must stay unchanged until backward. */
    moe_status (*forward)(void *ctx, float *Ys, int *gcounts, const float *Xs, const int *offsets,
                          const expert_weights *w, int strategy);
    /* dYs [R,d] -> dXs [R,d] (may be the same buffer), weight gradients += */
    moe_status (*backward)(void *ctx, float *dXs, const float *dYs, const expert_weights *w, int strategy);
    /* seconds in collectives and bytes sent/received since creation */
    void (*stats)(const void *ctx, double *seconds, uint64_t *sent, uint64_t *received);
    void (*free)(void *ctx);
} placement_i;

typedef struct {
    const placement_i *i;
    void *ctx;
    int e0, nloc; /* experts held here: [e0, e0 + nloc) */
    int ranks;    /* processes sharing the layer (1: local) */
    moe_comm *comm; /* their communicator, borrowed (NULL: local) */
} placement;

moe_status placement_local_create(placement *p, const moe_layer_config *cfg);
/* Rank r of comm's P holds experts [n*r/P, n*(r+1)/P). The comm is borrowed. */
moe_status placement_shard_create(placement *p, const moe_layer_config *cfg, moe_comm *comm);

#endif
