/* layer_impl.h - the moe_layer handle's inside, shared by layer.c (the plain layer) and
 * shard.c (experts split over processes). Internal. */
#ifndef MOE_LAYER_IMPL_H
#define MOE_LAYER_IMPL_H

#include "moe.h"

#include <stddef.h>
#include <stdint.h>

enum { P_WG, P_WN, P_W1, P_B1, P_W2, P_B2, P_WG2, P_WN2, P_COUNT };

typedef struct {
    int present;
    int ndim;
    int64_t shape[3];
    size_t numel, offset; /* offset in floats into the arenas, 16-float aligned */
} param_slot;

/* Buffers sized for the largest batch seen; R = B*k rows after dispatch. */
typedef struct {
    int capB;
    float *clean, *raw, *sigma, *H, *eps, *P; /* [B,n]; raw ends as sigmoid(x Wn), P = Phi */
    float *dclean, *draw;                     /* [B,n] backward scratch */
    int *topi;                                /* [B,K1] */
    float *topv;                              /* [B,K1] */
    float *gk, *dgk;                          /* [B,k] */
    int *tok, *pos;                           /* [R] */
    float *Xs, *Ys, *dYs;                     /* [R,d] (dXs reuses dYs) */
    float *A, *dA;                            /* [R,h] */
    const float *x;                           /* the forward input, borrowed until backward */
    int B, train, smooth, valid;
} workspace;

/* A sharded layer's exchange: this rank's rows sorted by expert (Xs) go to the experts'
 * ranks; rows arrive grouped by source rank (recv) and are permuted to expert order (xe). */
typedef struct {
    int *ball;                 /* [P,2] tokens and mode (train) of each rank in the last forward */
    int *allc;                 /* [P,n] rows each rank sent to each expert */
    int *gcounts;              /* [n] rows per expert over all ranks */
    int *sc, *sd, *rc, *rd;    /* [P] alltoallv counts and displacements (floats, d per row) */
    int *loff;                 /* [nloc+1] row offsets of the local experts in xe */
    int *perm;                 /* [capR] xe row q came in as recv row perm[q] */
    int Rloc, capR;            /* rows held by the local experts; buffer capacity */
    float *recv, *xe, *ye;     /* [capR,d] */
    float *a, *da;             /* [capR,h] */
    float *dgate;              /* [2*d*n] this backward's gate gradients, summed over ranks */
    double comm_s;             /* seconds in collectives, since creation */
    uint64_t sent, received;   /* bytes to and from other ranks, since creation */
} shard_ws;

/* The hierarchical layer's buffers (SPEC 1.6), sized for capB tokens: a groups of b experts,
 * kp groups per token, ks experts per group; R1 = B*kp (token, group) rows, R = R1*ks. */
typedef struct {
    int capB;
    float *clean, *raw, *sigma, *H, *eps, *P, *dclean, *draw; /* [B,a] primary gate */
    int *topi;                                                /* [B,K1p] */
    float *topv, *gk, *dgk;                                   /* [B,K1p], [B,kp], [B,kp] */
    int *gcnt, *goff, *gtok, *gpos;                           /* [a], [a+1], [R1], [R1] */
    float *Xg, *dXg;                                          /* [R1,d] rows by group */
    float *clean2, *raw2, *sigma2, *H2, *eps2, *P2, *dclean2, *draw2; /* [R1,b] */
    int *topi2;                                               /* [R1,K1s] */
    float *topv2, *gk2, *dgk2;                                /* [R1,K1s], [R1,ks] x2 */
    int *topf;                                                /* [B,kp*ks] expert of each slot */
    float *gkf, *dgkf;                                        /* [B,kp*ks] combined gates */
    int *tok, *pos;                                           /* [R] */
    float *Xs, *Ys, *dYs, *A, *dA;                            /* [R,d] x3, [R,h] x2 */
    double *load_p, *dload_p, *load_s, *dload_s, *scratch;    /* [a], [a], [n], [n], [n] */
} hier_ws;

struct moe_layer {
    moe_layer_config cfg;
    param_slot slots[P_COUNT];
    float *params, *grads; /* arenas */
    size_t arena_count;
    int *counts, *offsets; /* [n], [n+1] */
    double *importance, *load, *dimp, *dload; /* [n] */
    moe_layer_stats stats;
    uint64_t seed, counter;
    workspace ws;
    moe_comm *comm; /* NULL: a plain layer, all experts here */
    int e0, nloc;   /* experts held: [e0, e0 + nloc) */
    int nz_rows, nz_stride, nz_first; /* seeded noise positions (moe_layer_set_noise_layout) */
    shard_ws sw;
    hier_ws hw;
};

extern int g_moe_strategy;

static inline float *pdata(const moe_layer *l, int p) {
    return l->slots[p].present ? l->params + l->slots[p].offset : NULL;
}
static inline float *pgrad(const moe_layer *l, int p) {
    return l->slots[p].present ? l->grads + l->slots[p].offset : NULL;
}

/* layer.c: the statistics of a finished forward (counts [n] over all tokens, rows = tokens * k)
 * and what backward needs to know about it */
void layer_finish_forward(moe_layer *l, const int *counts, int64_t rows, double li, double ll, const float *x, int B,
                          int train, int smooth);

/* hier.c */
moe_status hier_forward(moe_layer *l, float *y, const float *x, int B, int train, const float *noise);
moe_status hier_backward(moe_layer *l, float *dx, const float *dy);
void hier_free(hier_ws *hw);

/* shard.c */
moe_status shard_forward(moe_layer *l, float *y, const float *x, int B, int train, const float *noise);
moe_status shard_backward(moe_layer *l, float *dx, const float *dy);
void shard_free(shard_ws *sw);
/* the first expert of rank r of P for n experts */
static inline int shard_first(int n, int P, int r) { return (int)((int64_t)n * r / P); }

#endif
