/* router_hier.c - the hierarchical router (SPEC 1.6, paper App. B): a groups of b = n/a experts.
 * A primary noisy top-k gate Gp over the groups picks kp of them; each picked group i runs its own
 * noisy top-k gate G_i over its b experts on the tokens routed to it, picking ks. Token x goes to
 * the kk = kp*ks experts (i, j) with weight Gp(x)_i * G_i(x)_j:
 *
 *   y = sum_i sum_j Gp(x)_i G_i(x)_j E_ij(x)
 *   Importance_H(X)_ij = sum_x Gp(x)_i G_i(x)_j
 *   Load_H(X)_ij = Load_p(X)_i * Load_i(X^(i))_j / |X^(i)|,  X^(i) = tokens with Gp(x)_i > 0
 *
 * Both levels reuse gate.c (each gate's smooth load estimator included). Load_H is not a sum over
 * tokens, but it is made of three that are: sums = [Importance_H n | Load_p a | Load_i n |
 * |X^(i)| a], so a batch split over ranks needs one sum of them. A token's noise draws are
 * [a primary | b for group 0 | b for group 1 | ...] (nw = a + n). */
#include "base/internal.h"
#include "moe/layer_ops.h"
#include "moe/router.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int d, n, a, b, kp, ks, K1p, K1s;
    float noise_eps;
    int capB, B, train, sm_p, sm_s;
    gate_bufs gp;            /* [B,a] the primary gate */
    gate_bufs gs;            /* [R1,b] the groups' gates, rows sorted by group */
    float *eps_p, *eps_s;    /* [B,a], [R1,b] the noise columns of each gate */
    float *dgk, *dgk2;       /* [B,kp], [R1,ks] */
    int *gcnt, *goff, *gtok, *gpos; /* [a], [a+1], [R1], [R1]: (token, group) rows sorted by group */
    float *Xg, *dXg;         /* [R1,d] the tokens of each group */
    double *load_p, *load_s, *cnt; /* [a], [n], [a]: the summed statistics, kept for backward */
    double *dload_p, *dload_s, *scratch; /* [a], [n], [a] */
    void *block;
} hier;

static moe_status hier_reserve(void *ctx, int B) {
    hier *w = ctx;
    if (B <= w->capB) return MOE_OK;
    const size_t a = (size_t)w->a, b = (size_t)w->b, n = (size_t)w->n, d = (size_t)w->d;
    const size_t Ba = (size_t)B * a, R1 = (size_t)B * w->kp, R1b = R1 * b;
    hier t = *w;
    gate_bufs *p = &t.gp, *s = &t.gs;
    const moe_buf list[] = {
        MOE_BUF(p->clean, Ba),  MOE_BUF(p->raw, Ba),     MOE_BUF(p->sigma, Ba),  MOE_BUF(p->H, Ba),
        MOE_BUF(p->P, Ba),      MOE_BUF(p->dclean, Ba),  MOE_BUF(p->draw, Ba),   MOE_BUF(p->topi, (size_t)B * w->K1p),
        MOE_BUF(p->topv, (size_t)B * w->K1p), MOE_BUF(p->gk, R1), MOE_BUF(t.dgk, R1), MOE_BUF(t.eps_p, Ba),
        MOE_BUF(s->clean, R1b), MOE_BUF(s->raw, R1b),    MOE_BUF(s->sigma, R1b), MOE_BUF(s->H, R1b),
        MOE_BUF(s->P, R1b),     MOE_BUF(s->dclean, R1b), MOE_BUF(s->draw, R1b),  MOE_BUF(s->topi, R1 * w->K1s),
        MOE_BUF(s->topv, R1 * w->K1s), MOE_BUF(s->gk, R1 * w->ks), MOE_BUF(t.dgk2, R1 * w->ks), MOE_BUF(t.eps_s, R1b),
        MOE_BUF(t.gcnt, a),     MOE_BUF(t.goff, a + 1),  MOE_BUF(t.gtok, R1),    MOE_BUF(t.gpos, R1),
        MOE_BUF(t.Xg, R1 * d),  MOE_BUF(t.dXg, R1 * d),  MOE_BUF(t.load_p, a),   MOE_BUF(t.load_s, n),
        MOE_BUF(t.cnt, a),      MOE_BUF(t.dload_p, a),   MOE_BUF(t.dload_s, n),  MOE_BUF(t.scratch, a > n ? a : n)};
    t.block = moe_bufs_alloc(list, (int)(sizeof list / sizeof list[0]));
    if (!t.block) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the hierarchical gates' buffers for %d tokens", B);
    moe_free_aligned(w->block);
    t.capB = B;
    *w = t;
    return MOE_OK;
}

/* the primary gate, then the tokens sorted by group: rows goff[i] .. goff[i+1] of Xg are X^(i) */
static void primary_forward(hier *w, double *cnt_sum, double *load_p_sum, const float *x, const noise_src *noise,
                            const router_weights *rw, int B, int train) {
    const int a = w->a, b = w->b, kp = w->kp;
    if (train)
#pragma omp parallel for schedule(static) if (B >= 256)
        for (int t = 0; t < B; t++) noise_fill(noise, t, 0, a, w->eps_p + (size_t)t * a);
    w->gp.eps = w->eps_p;
    gate_bufs g = w->gp; /* without P the gate skips the load estimator */
    if (!w->sm_p) g.P = NULL;
    gate_forward(&g, x, rw->wg, rw->wn, train, w->noise_eps, B, w->d, a, kp);
    gate_importance_load(w->scratch, load_p_sum, w->gp.P, w->gp.topi, w->gp.gk, w->sm_p, B, a, kp);
    dispatch_build(w->gcnt, w->goff, w->gtok, w->gpos, w->gp.topi, B, a, kp, w->K1p);
    dispatch_gather(w->Xg, x, w->gtok, B * kp, w->d);
    for (int i = 0; i < a; i++) cnt_sum[i] = w->gcnt[i];
    if (train) { /* token t's p-th group i, at row r of Xg, takes columns a + i*b .. of t's draws:
                  * only those. One loop over all (token, group) pairs: a group alone has too few
                  * rows to split over the threads. */
        const int R1 = B * kp;
#pragma omp parallel for schedule(static) if (R1 >= 256)
        for (int q = 0; q < R1; q++) {
            const int t = q / kp, i = w->gp.topi[(size_t)t * w->K1p + q % kp];
            noise_fill(noise, t, a + i * b, b, w->eps_s + (size_t)w->gpos[q] * b);
        }
    }
}

static void hier_forward(void *ctx, int *expert, float *gate, double *sums, const float *x, const noise_src *noise,
                         const router_weights *rw, int B, int train) {
    hier *w = ctx;
    const int n = w->n, a = w->a, b = w->b, kp = w->kp, ks = w->ks, K1p = w->K1p, K1s = w->K1s, kk = kp * ks, d = w->d;
    double *imp = sums, *load_p = sums + n, *load_s = sums + n + a, *cnt = sums + 2 * n + a;
    w->B = B;
    w->train = train;
    w->sm_p = train && kp < a;
    w->sm_s = train && ks < b;
    primary_forward(w, cnt, load_p, x, noise, rw, B, train);
    w->gs.eps = w->eps_s;
    /* each group's gate on its own tokens */
    for (int i = 0; i < a; i++) {
        const int r0 = w->goff[i], ci = w->goff[i + 1] - r0;
        double *ls = load_s + (size_t)i * b;
        if (ci == 0) {
            memset(ls, 0, sizeof(double) * (size_t)b);
            continue;
        }
        const size_t o = (size_t)r0 * b;
        const gate_bufs g = {w->gs.clean + o, w->gs.raw + o, w->gs.sigma + o, w->gs.H + o,
                             w->sm_s ? w->gs.P + o : NULL, w->gs.topi + (size_t)r0 * K1s,
                             w->gs.topv + (size_t)r0 * K1s, w->gs.gk + (size_t)r0 * ks, NULL, NULL, w->eps_s + o};
        gate_forward(&g, w->Xg + (size_t)r0 * d, rw->wg2 + (size_t)i * d * b, rw->wn2 + (size_t)i * d * b, train,
                     w->noise_eps, ci, d, b, ks);
        gate_importance_load(w->scratch, ls, w->gs.P + o, g.topi, g.gk, w->sm_s, ci, b, ks);
    }
    /* each token's kk experts and combined gates; Importance_H */
    memset(imp, 0, sizeof(double) * (size_t)n);
    for (int t = 0; t < B; t++)
        for (int p = 0; p < kp; p++) {
            const int i = w->gp.topi[(size_t)t * K1p + p], r = w->gpos[(size_t)t * kp + p];
            const float gp = w->gp.gk[(size_t)t * kp + p];
            for (int q = 0; q < ks; q++) {
                const size_t s = (size_t)t * kk + (size_t)p * ks + q;
                expert[s] = i * b + w->gs.topi[(size_t)r * K1s + q];
                gate[s] = gp * w->gs.gk[(size_t)r * ks + q];
                imp[expert[s]] += gate[s];
            }
        }
}

static int hier_finish(void *ctx, double *load, const double *sums) {
    hier *w = ctx;
    const int n = w->n, a = w->a, b = w->b;
    memcpy(w->load_p, sums + n, sizeof(double) * (size_t)a);
    memcpy(w->load_s, sums + n + a, sizeof(double) * (size_t)n);
    memcpy(w->cnt, sums + 2 * n + a, sizeof(double) * (size_t)a);
    for (int i = 0; i < a; i++) {
        const double ci = w->cnt[i];
        for (int j = 0; j < b; j++) load[i * b + j] = ci > 0 ? w->load_p[i] * w->load_s[(size_t)i * b + j] / ci : 0.0;
    }
    return w->sm_p || w->sm_s;
}

/* forward: gate = Gp * Gs;  so dGp = sum_q dgate Gs, dGs = dgate Gp.
 * forward: Load_H[i,j] = Load_p[i] Load_i[j] / c_i (c_i a count: no gradient) */
static void split_gradients(hier *w, const float *dgate, const double *dload) {
    const int a = w->a, b = w->b, kp = w->kp, ks = w->ks, kk = kp * ks;
    for (int t = 0; t < w->B; t++)
        for (int p = 0; p < kp; p++) {
            const int r = w->gpos[(size_t)t * kp + p];
            const float gp = w->gp.gk[(size_t)t * kp + p];
            float acc = 0.0f;
            for (int q = 0; q < ks; q++) {
                const size_t s = (size_t)t * kk + (size_t)p * ks + q;
                acc += dgate[s] * w->gs.gk[(size_t)r * ks + q];
                w->dgk2[(size_t)r * ks + q] = dgate[s] * gp;
            }
            w->dgk[(size_t)t * kp + p] = acc;
        }
    for (int i = 0; i < a; i++) {
        const double ci = w->cnt[i];
        double acc = 0.0;
        for (int j = 0; j < b; j++) {
            const size_t e = (size_t)i * b + j;
            acc += ci > 0 ? dload[e] * w->load_s[e] / ci : 0.0;
            w->dload_s[e] = ci > 0 ? dload[e] * w->load_p[i] / ci : 0.0;
        }
        w->dload_p[i] = acc;
    }
}

static void hier_backward(void *ctx, float *dx, const float *dgate, const double *dload, const float *x,
                          const router_weights *rw) {
    hier *w = ctx;
    const int a = w->a, b = w->b, kp = w->kp, ks = w->ks, K1s = w->K1s, d = w->d, B = w->B, R1 = B * kp;
    split_gradients(w, dgate, dload);
    /* each group's gate, its input gradient scattered back to the tokens */
    memset(w->dXg, 0, sizeof(float) * (size_t)R1 * d);
    for (int i = 0; i < a; i++) {
        const int r0 = w->goff[i], ci = w->goff[i + 1] - r0;
        if (ci == 0) continue;
        const size_t o = (size_t)r0 * b, wo = (size_t)i * d * b;
        const gate_bufs g = {w->gs.clean + o,  w->gs.raw + o,  w->gs.sigma + o, w->gs.H + o,
                             NULL,             w->gs.topi + (size_t)r0 * K1s, w->gs.topv + (size_t)r0 * K1s,
                             w->gs.gk + (size_t)r0 * ks, w->gs.dclean + o, w->gs.draw + o, w->eps_s + o};
        gate_backward(w->dXg + (size_t)r0 * d, rw->gwg2 + wo, rw->gwn2 + wo, &g, w->dgk2 + (size_t)r0 * ks,
                      w->dload_s + (size_t)i * b, w->Xg + (size_t)r0 * d, rw->wg2 + wo, rw->wn2 + wo, w->train,
                      w->sm_s, ci, d, b, ks);
    }
    if (dx) dispatch_gather_backward(dx, w->dXg, w->gpos, B, d, kp);
    gate_backward(dx, rw->gwg, rw->gwn, &w->gp, w->dgk, w->dload_p, x, rw->wg, rw->wn, w->train, w->sm_p, B, d, a,
                  kp);
}

static void hier_free(void *ctx) {
    hier *w = ctx;
    if (!w) return;
    moe_free_aligned(w->block);
    free(w);
}

static const router_i HIER = {hier_reserve, hier_forward, hier_finish, hier_backward, hier_free};

moe_status router_hier_create(router *r, const moe_layer_config *c) {
    hier *w = calloc(1, sizeof *w);
    if (!w) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the router");
    w->d = c->d;
    w->n = c->n;
    w->a = c->groups;
    w->b = c->n / c->groups;
    w->kp = c->k_groups;
    w->ks = c->k;
    w->K1p = w->kp < w->a ? w->kp + 1 : w->a;
    w->K1s = w->ks < w->b ? w->ks + 1 : w->b;
    w->noise_eps = c->noise_eps;
    *r = (router){.i = &HIER, .ctx = w, .kk = w->kp * w->ks, .nw = w->a + c->n, .lazy_noise = 1, .nsum = 2 * (c->n + w->a)};
    return MOE_OK;
}
