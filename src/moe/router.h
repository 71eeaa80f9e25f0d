/* router.h - the interface a router implements: how a layer turns its input into routes (each
 * token's kk experts and gate values) and balancing statistics, and back. Two kinds: the flat
 * noisy top-k gate (router_flat.c) and the hierarchical one (router_hier.c, SPEC 1.6). The layer
 * pipeline (pipeline.c) runs either the same way:
 *
 *   forward(x, noise) -> expert [B,kk], gate [B,kk], sums [nsum] over this process's tokens
 *   (the pipeline adds sums over ranks)
 *   finish(sums)     -> importance [n], load [n] of the whole batch
 *   backward(dgate, dload) -> dx +=, router weight gradients +=
 *
 * A router's statistics are sums over tokens, so a batch split over ranks gives the whole
 * batch's Importance and Load after one sum of `sums`. */
#ifndef MOE_ROUTER_H
#define MOE_ROUTER_H

#include "moe.h"

#include <stddef.h>
#include <stdint.h>

/* The gate noise of a training forward: token t's nw draws, given by the caller (given [B,nw])
 * or the seeded normals at counters base + row(t) * nw + j, where row(t) is t's row in the whole
 * batch (first + t; or, with a block layout of `rows` tokens every `stride`, t's block q and
 * place r: q * stride + first + r). A router draws what it uses (noise_fill): the same values
 * as drawing all. */
typedef struct {
    const float *given;
    uint64_t seed, base;
    int64_t first;
    int rows, stride, nw;
} noise_src;
/* out [len] = token t's draws [col, col + len) */
void noise_fill(const noise_src *s, int t, int col, int len, float *out);

/* The router's weights and their gradients (gradients +=). wg2/wn2: the groups' gates. */
typedef struct {
    const float *wg, *wn;   /* [d,n] flat, [d,groups] hierarchical */
    const float *wg2, *wn2; /* [groups,d,n/groups] or NULL */
    float *gwg, *gwn, *gwg2, *gwn2;
} router_weights;

typedef struct {
    /* Buffers for batches of up to B tokens (kept across calls). */
    moe_status (*reserve)(void *ctx, int B);
    /* x [B,d], noise (training; all of it given when the router is not lazy_noise) -> expert
     * [B,kk] (0..n-1), gate [B,kk], and this process's statistics sums [nsum]: sums[0..n) is
     * Importance, the rest the router's own. */
    void (*forward)(void *ctx, int *expert, float *gate, double *sums, const float *x, const noise_src *noise,
                    const router_weights *w, int B, int train);
    /* sums [nsum] over the whole batch -> load [n]; keeps what backward needs. Returns 1 if the
     * load is smooth (has a gradient), 0 if it is a count. */
    int (*finish)(void *ctx, double *load, const double *sums);
    /* dgate [B,kk] = dL/dgate (the importance term included), dload [n] = dL/dLoad ->
     * dx [B,d] += (dx may be NULL), weight gradients +=. Uses the last forward's x. */
    void (*backward)(void *ctx, float *dx, const float *dgate, const double *dload, const float *x,
                     const router_weights *w);
    void (*free)(void *ctx);
} router_i;

typedef struct {
    const router_i *i;
    void *ctx;
    int kk;   /* experts per token */
    int nw;   /* noise draws per token (training) */
    int lazy_noise; /* 1: draws only the noise it uses (noise_fill), else needs all of it given */
    int nsum; /* statistics summed over tokens */
} router;

/* cfg has been checked (moe_layer_config_check). On failure r is untouched. */
moe_status router_flat_create(router *r, const moe_layer_config *cfg);
moe_status router_hier_create(router *r, const moe_layer_config *cfg);

#endif
