/* router_flat.c - the flat router: one noisy top-k gate over all n experts (SPEC 1.3), its
 * Importance and smooth Load (SPEC 1.4) as sums over tokens. Statistics: sums = [Importance n |
 * Load n]. */
#include "base/internal.h"
#include "moe/layer_ops.h"
#include "moe/router.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int d, n, k, K1;
    float noise_eps;
    int capB, B, train, smooth;
    gate_bufs g;
    float *dgk; /* [B,k] */
    void *block;
} flat;

static moe_status flat_reserve(void *ctx, int B) {
    flat *f = ctx;
    if (B <= f->capB) return MOE_OK;
    const size_t Bn = (size_t)B * f->n, BK = (size_t)B * f->K1, Bk = (size_t)B * f->k;
    gate_bufs g = {0};
    float *dgk;
    const moe_buf list[] = {MOE_BUF(g.clean, Bn), MOE_BUF(g.raw, Bn),    MOE_BUF(g.sigma, Bn), MOE_BUF(g.H, Bn),
                            MOE_BUF(g.P, Bn),     MOE_BUF(g.dclean, Bn), MOE_BUF(g.draw, Bn),  MOE_BUF(g.topi, BK),
                            MOE_BUF(g.topv, BK),  MOE_BUF(g.gk, Bk),     MOE_BUF(dgk, Bk)};
    void *block = moe_bufs_alloc(list, (int)(sizeof list / sizeof list[0]));
    if (!block) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the gate's buffers for a batch of %d tokens", B);
    moe_free_aligned(f->block);
    f->block = block;
    f->g = g;
    f->dgk = dgk;
    f->capB = B;
    return MOE_OK;
}

static void flat_forward(void *ctx, int *expert, float *gate, double *sums, const float *x, const noise_src *noise,
                         const router_weights *w, int B, int train) {
    flat *f = ctx;
    const int n = f->n, k = f->k, K1 = f->K1;
    f->B = B;
    f->train = train;
    f->smooth = train && k < n;
    f->g.eps = train ? noise->given : NULL; /* every logit has its draw: all of them given */
    gate_bufs g = f->g; /* without P the gate skips the load estimator */
    if (!f->smooth) g.P = NULL;
    gate_forward(&g, x, w->wg, w->wn, train, f->noise_eps, B, f->d, n, k);
    gate_importance_load(sums, sums + n, f->g.P, f->g.topi, f->g.gk, f->smooth, B, n, k);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < k; j++) {
            expert[(size_t)b * k + j] = f->g.topi[(size_t)b * K1 + j];
            gate[(size_t)b * k + j] = f->g.gk[(size_t)b * k + j];
        }
}

static int flat_finish(void *ctx, double *load, const double *sums) {
    flat *f = ctx;
    memcpy(load, sums + f->n, sizeof(double) * (size_t)f->n);
    return f->smooth;
}

static void flat_backward(void *ctx, float *dx, const float *dgate, const double *dload, const float *x,
                          const router_weights *w) {
    flat *f = ctx;
    gate_backward(dx, w->gwg, w->gwn, &f->g, dgate, dload, x, w->wg, w->wn, f->train, f->smooth, f->B, f->d, f->n,
                  f->k);
}

static void flat_free(void *ctx) {
    flat *f = ctx;
    if (!f) return;
    moe_free_aligned(f->block);
    free(f);
}

static const router_i FLAT = {flat_reserve, flat_forward, flat_finish, flat_backward, flat_free};

moe_status router_flat_create(router *r, const moe_layer_config *c) {
    flat *f = calloc(1, sizeof *f);
    if (!f) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the router");
    f->d = c->d;
    f->n = c->n;
    f->k = c->k;
    f->K1 = c->k < c->n ? c->k + 1 : c->n;
    f->noise_eps = c->noise_eps;
    *r = (router){.i = &FLAT, .ctx = f, .kk = c->k, .nw = c->n, .nsum = 2 * c->n};
    return MOE_OK;
}
