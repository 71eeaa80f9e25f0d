/* pipeline.c - the layer's forward and backward: one pipeline over a router (flat or
 * hierarchical, router.h) and a placement (experts here or split over ranks, placement.h).
 *
 *   x [B,d] --noise--> eps [B,nw] --router--> expert, gate [B,kk]; sums --sum over ranks-->
 *     Importance, Load [n] --cv2--> L_importance, L_load
 *   expert --dispatch_build--> offsets [n+1], pos --gather--> Xs [B*kk,d] (sorted by expert)
 *     --placement--> Ys [B*kk,d] --combine(gate)--> y [B,d]
 *
 * Backward runs the chain in reverse: combine -> (+ the importance term) dgate; placement dYs ->
 * dXs -> dx; router dgate, dLoad -> dx, router gradients (summed over ranks when the batch is
 * split). */
#include "base/internal.h"
#include "moe/layer_impl.h"
#include "moe/layer_ops.h"

#include <math.h>
#include <string.h>

static moe_status reserve(moe_layer *l, int B) {
    layer_ws *w = &l->ws;
    moe_status st = l->rt.i->reserve(l->rt.ctx, B);
    if (st || B <= w->capB) return st;
    const size_t Bk = (size_t)B * l->rt.kk, d = (size_t)l->cfg.d;
    layer_ws t = *w;
    const moe_buf list[] = {MOE_BUF(t.eps, (size_t)B * l->rt.nw), MOE_BUF(t.expert, Bk), MOE_BUF(t.gate, Bk),
                            MOE_BUF(t.dgate, Bk), MOE_BUF(t.tok, Bk), MOE_BUF(t.pos, Bk), MOE_BUF(t.Xs, Bk * d),
                            MOE_BUF(t.Ys, Bk * d), MOE_BUF(t.dYs, Bk * d)};
    if (!(t.block = moe_bufs_alloc(list, (int)(sizeof list / sizeof list[0]))))
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate the workspace for a batch of %d tokens", B);
    moe_free_aligned(w->block);
    t.capB = B;
    *w = t;
    return moe_ok();
}

/* The noise of tokens [first, first + B) of the batch: given, or seeded by global position
 * (moe_layer_set_noise_layout: blocks of nz_rows tokens at t * nz_stride + nz_first). A router
 * that draws only what it uses (lazy_noise) gets the source; the others get all of it in eps. */
static moe_status noise_of(moe_layer *l, noise_src *ns, const float *noise, int B, int64_t first, int64_t total) {
    const size_t nw = (size_t)l->rt.nw;
    if (!noise && l->nz_rows && B % l->nz_rows)
        return moe_fail(MOE_ERR_SHAPE, "B=%d is not a multiple of the noise layout's %d rows", B, l->nz_rows);
    *ns = (noise_src){.given = noise, .seed = l->seed, .base = l->counter, .first = l->nz_rows ? l->nz_first : first,
                      .rows = l->nz_rows, .stride = l->nz_stride, .nw = (int)nw};
    if (!noise) l->counter += (uint64_t)total * nw;
    if (l->rt.lazy_noise) return moe_ok(); /* it copies what it uses before forward returns */
    float *eps = l->ws.eps; /* kept until backward: a caller's noise need not be */
#pragma omp parallel for schedule(static) if (B >= 64)
    for (int t = 0; t < B; t++) noise_fill(ns, t, 0, (int)nw, eps + (size_t)t * nw);
    ns->given = eps;
    return moe_ok();
}

void noise_fill(const noise_src *s, int t, int col, int len, float *out) {
    if (s->given) {
        memcpy(out, s->given + (size_t)t * s->nw + col, sizeof(float) * (size_t)len);
        return;
    }
    const int64_t row = s->rows ? (int64_t)(t / s->rows) * s->stride + s->first + t % s->rows : s->first + t;
    moe_rng_normal_fill(out, (size_t)len, s->seed, s->base + (uint64_t)row * (uint64_t)s->nw + (uint64_t)col);
}

/* The router's weights; its gradients into the layer's arena, or into `g` (laid out as
 * WG, WN, WG2, WN2) when the batch is split over ranks and they are summed first. */
static router_weights router_of(const moe_layer *l, float *g) {
    router_weights rw = {pdata(l, P_WG), pdata(l, P_WN), pdata(l, P_WG2), pdata(l, P_WN2),
                         pgrad(l, P_WG), pgrad(l, P_WN), pgrad(l, P_WG2), pgrad(l, P_WN2)};
    if (g) {
        float **gs[] = {&rw.gwg, &rw.gwn, &rw.gwg2, &rw.gwn2};
        for (int i = 0; i < 4; i++)
            if (l->slots[ROUTER_SLOTS[i]].present) {
                *gs[i] = g;
                g += l->slots[ROUTER_SLOTS[i]].numel;
            }
    }
    return rw;
}

static expert_weights experts_of(const moe_layer *l) {
    return (expert_weights){pdata(l, P_W1), pdata(l, P_B1), pdata(l, P_W2), pdata(l, P_B2),
                            pgrad(l, P_W1), pgrad(l, P_B1), pgrad(l, P_W2), pgrad(l, P_B2),
                            l->fused ? &l->up : NULL, phalf(l, P_W1), phalf(l, P_W2)};
}

/* Importance and Load of the whole batch from the router's sums, and the balancing losses */
static moe_status balance(moe_layer *l, double *li, double *ll) {
    layer_ws *w = &l->ws;
    const int n = l->cfg.n;
    moe_status st = l->pl.i->sum_f64(l->pl.ctx, w->sums, l->rt.nsum);
    if (st) return st;
    memcpy(w->importance, w->sums, sizeof(double) * (size_t)n);
    w->smooth = l->rt.i->finish(l->rt.ctx, w->load, w->sums);
    *li = cv2_loss(w->dimp, w->importance, n, l->cfg.w_importance);
    *ll = cv2_loss(w->dload, w->load, n, l->cfg.w_load);
    if (!w->smooth) memset(w->dload, 0, sizeof(double) * (size_t)n); /* counts: no gradient */
    return moe_ok();
}

static void finish_stats(moe_layer *l, int64_t rows, double li, double ll, int B) {
    const layer_ws *w = &l->ws;
    const int n = l->cfg.n;
    int maxc = 0;
    for (int e = 0; e < n; e++)
        if (w->gcounts[e] > maxc) maxc = w->gcounts[e];
    l->stats.loss_importance = (float)li;
    l->stats.loss_load = (float)ll;
    l->stats.cv_importance = (float)cv_of(w->importance, n);
    l->stats.cv_load = (float)cv_of(w->load, n);
    l->stats.max_mean_load = rows > 0 ? (float)(maxc / ((double)rows / n)) : 0.0f;
    l->stats.B = B;
}

static moe_status check_forward(const moe_layer *l, const float *y, const float *x, int B, moe_mode mode,
                                const float *noise) {
    if (!l || !y || !x) return moe_fail(MOE_ERR_INVALID_ARG, "layer, y and x must not be NULL");
    /* a rank of a layer split over ranks may have no tokens: it still takes part in the exchange */
    if (B < (l->pl.ranks > 1 ? 0 : 1))
        return moe_fail(MOE_ERR_SHAPE, "batch size B=%d must be at least %d", B, l->pl.ranks > 1 ? 0 : 1);
    if (mode != MOE_EVAL && mode != MOE_TRAIN)
        return moe_fail(MOE_ERR_INVALID_ARG, "mode must be MOE_EVAL or MOE_TRAIN");
    const int d = l->cfg.d, nw = l->rt.nw;
    if (!moe_all_finite(x, (size_t)B * d))
        return moe_fail(MOE_ERR_NONFINITE, "input x [%d,%d] contains NaN or Inf", B, d);
    if (mode == MOE_TRAIN && noise && !moe_all_finite(noise, (size_t)B * nw))
        return moe_fail(MOE_ERR_NONFINITE, "noise [%d,%d] contains NaN or Inf", B, nw);
    return moe_ok();
}

moe_status moe_layer_forward(moe_layer *l, float *y, const float *x, int B, moe_mode mode, const float *noise,
                             moe_layer_stats *stats) {
    moe_status st = check_forward(l, y, x, B, mode, noise);
    if (st) return st;
    layer_ws *w = &l->ws;
    const int d = l->cfg.d, n = l->cfg.n, kk = l->rt.kk, train = mode == MOE_TRAIN, R = B * kk;
    w->valid = 0;
    if ((st = reserve(l, B > 0 ? B : 1))) return st; /* buffers exist even for no tokens */
    int64_t first, total;
    if ((st = l->pl.i->batch(l->pl.ctx, &first, &total, B, train))) return st;
    noise_src ns = {0};
    if (train && (st = noise_of(l, &ns, noise, B, first, total))) return st;
    const router_weights rw = router_of(l, NULL);
    l->rt.i->forward(l->rt.ctx, w->expert, w->gate, w->sums, x, &ns, &rw, B, train);
    double li, ll;
    if ((st = balance(l, &li, &ll))) return st;

    dispatch_build(w->counts, w->offsets, w->tok, w->pos, w->expert, B, n, kk, kk);
    dispatch_gather(w->Xs, x, w->tok, R, d);
    const expert_weights ew = experts_of(l);
    if ((st = l->pl.i->forward(l->pl.ctx, w->Ys, w->gcounts, w->Xs, w->offsets, &ew, l->strategy))) return st;
    dispatch_combine(y, w->Ys, w->gate, w->pos, B, d, kk);

    finish_stats(l, total * kk, li, ll, B);
    w->x = x;
    w->B = B;
    w->train = train;
    w->valid = 1;
    if (stats) *stats = l->stats;
    return moe_ok();
}

/* router gradients of this backward (in ws.rgrad), summed over ranks, added to the arena */
static moe_status add_router_grads(moe_layer *l) {
    moe_status st = l->pl.i->sum_f32(l->pl.ctx, l->ws.rgrad, router_floats(l));
    if (st) return st;
    const float *g = l->ws.rgrad;
    for (int i = 0; i < 4; i++) {
        const param_slot *s = &l->slots[ROUTER_SLOTS[i]];
        if (!s->present) continue;
        float *dst = l->grads + s->offset;
        for (size_t j = 0; j < s->numel; j++) dst[j] += g[j];
        g += s->numel;
    }
    return moe_ok();
}

moe_status moe_layer_backward(moe_layer *l, float *dx, const float *dy) { return moe_layer_backward_aux(l, dx, dy, 1.0f); }

moe_status moe_layer_backward_aux(moe_layer *l, float *dx, const float *dy, float aux_grad) {
    if (!l || !dy) return moe_fail(MOE_ERR_INVALID_ARG, "layer and dy must not be NULL");
    if (!isfinite(aux_grad)) return moe_fail(MOE_ERR_NONFINITE, "aux_grad is %g: it must be finite", (double)aux_grad);
    layer_ws *w = &l->ws;
    if (!w->valid) return moe_fail(MOE_ERR_STATE, "backward called without a successful forward");
    if (l->fused && !l->up.apply) return moe_fail(MOE_ERR_STATE, "a layer of fused updates needs its updater first");
    const int d = l->cfg.d, kk = l->rt.kk, B = w->B, R = B * kk;
    if (!moe_all_finite(dy, (size_t)B * d))
        return moe_fail(MOE_ERR_NONFINITE, "grad_output dy [%d,%d] contains NaN or Inf", B, d);
    /* forward: y = sum_s gate[s] Ys[pos[s]];  so dgate = <dy, Ys>, dYs = gate dy; and
     * Importance[e] = sum of gate over e's slots: dgate += dL_imp/dImportance_e */
    dispatch_combine_backward(w->dgate, w->dYs, dy, w->Ys, w->gate, w->pos, B, d, kk);
    const double *dload = w->dload;
    if (aux_grad == 1.0f) { /* the common case, and the same bits as before aux_grad existed */
        for (int s = 0; s < R; s++) w->dgate[s] += (float)w->dimp[w->expert[s]];
    } else {
        for (int s = 0; s < R; s++) w->dgate[s] += (float)(aux_grad * w->dimp[w->expert[s]]);
        for (int e = 0; e < l->cfg.n; e++) w->dload_scaled[e] = aux_grad * w->dload[e];
        dload = w->dload_scaled;
    }
    const expert_weights ew = experts_of(l);
    moe_status st = l->pl.i->backward(l->pl.ctx, w->dYs, w->dYs, &ew, l->strategy);
    if (st) return st;
    if (dx) dispatch_gather_backward(dx, w->dYs, w->pos, B, d, kk);
    const int split = l->pl.ranks > 1;
    if (split) memset(w->rgrad, 0, sizeof(float) * router_floats(l));
    const router_weights rw = router_of(l, split ? w->rgrad : NULL);
    l->rt.i->backward(l->rt.ctx, dx, w->dgate, dload, w->x, &rw);
    return split ? add_router_grads(l) : moe_ok();
}

/* ---- what the last forward saw ---- */

moe_status moe_layer_gates(const moe_layer *l, float *gates) {
    if (!l || !gates) return moe_fail(MOE_ERR_INVALID_ARG, "layer and gates must not be NULL");
    const layer_ws *w = &l->ws;
    if (!w->valid) return moe_fail(MOE_ERR_STATE, "no forward pass yet");
    const int n = l->cfg.n, kk = l->rt.kk;
    memset(gates, 0, sizeof(float) * (size_t)w->B * n);
    for (int b = 0; b < w->B; b++)
        for (int j = 0; j < kk; j++) gates[(size_t)b * n + w->expert[(size_t)b * kk + j]] = w->gate[(size_t)b * kk + j];
    return moe_ok();
}

moe_status moe_layer_counts(const moe_layer *l, int *counts) {
    if (!l || !counts) return moe_fail(MOE_ERR_INVALID_ARG, "layer and counts must not be NULL");
    if (!l->ws.valid) return moe_fail(MOE_ERR_STATE, "no forward pass yet");
    memcpy(counts, l->ws.gcounts, sizeof(int) * (size_t)l->cfg.n);
    return moe_ok();
}

static moe_status copy_vec(const moe_layer *l, float *v, const double *src) {
    if (!l || !v) return moe_fail(MOE_ERR_INVALID_ARG, "layer and output must not be NULL");
    if (!l->ws.valid) return moe_fail(MOE_ERR_STATE, "no forward pass yet");
    for (int e = 0; e < l->cfg.n; e++) v[e] = (float)src[e];
    return moe_ok();
}

moe_status moe_layer_importance(const moe_layer *l, float *v) { return copy_vec(l, v, l ? l->ws.importance : NULL); }
moe_status moe_layer_load_vec(const moe_layer *l, float *v) { return copy_vec(l, v, l ? l->ws.load : NULL); }

void moe_layer_comm_stats(const moe_layer *l, double *seconds, uint64_t *sent, uint64_t *received) {
    double s = 0.0;
    uint64_t a = 0, b = 0;
    if (l) l->pl.i->stats(l->pl.ctx, &s, &a, &b);
    if (seconds) *seconds = s;
    if (sent) *sent = a;
    if (received) *received = b;
}
