/* layer.c - the moe_layer handle: parameter arena, forward/backward workspace, and the public
 * layer API that strings gate.c, dispatch.c and experts.c together (see layer_ops.h). */
#include "base/internal.h"
#include "moe/layer_impl.h"
#include "moe/layer_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const PARAM_NAMES[P_COUNT] = {"gate.w_gate", "gate.w_noise", "experts.w1",   "experts.b1",
                                                 "experts.w2",  "experts.b2",   "gate2.w_gate", "gate2.w_noise"};

int g_moe_strategy = EXPERTS_PAR_AUTO;

moe_layer_config moe_layer_config_default(void) {
    moe_layer_config c = {.d = 512, .h = 1024, .n = 16, .k = 4, .bias = 0,
                          .w_importance = 0.1f, .w_load = 0.1f, .noise_eps = 0.01f};
    return c;
}

moe_status moe_layer_config_check(const moe_layer_config *c) {
    if (!c) return moe_fail(MOE_ERR_INVALID_ARG, "config is NULL");
    if (c->d < 1 || c->h < 1 || c->n < 1)
        return moe_fail(MOE_ERR_CONFIG, "sizes must be positive (d=%d h=%d n=%d)", c->d, c->h, c->n);
    if (c->k < 1) return moe_fail(MOE_ERR_CONFIG, "k=%d: each token needs at least one expert", c->k);
    if (c->k > c->n)
        return moe_fail(MOE_ERR_CONFIG, "k=%d exceeds the number of experts n=%d", c->k, c->n);
    if (c->bias != 0 && c->bias != 1)
        return moe_fail(MOE_ERR_CONFIG, "bias must be 0 or 1, got %d", c->bias);
    if (c->groups < 0) return moe_fail(MOE_ERR_CONFIG, "groups=%d must be >= 0 (0: not hierarchical)", c->groups);
    if (c->groups > 0) {
        if (c->n % c->groups)
            return moe_fail(MOE_ERR_CONFIG, "n=%d experts do not split into %d groups of equal size", c->n, c->groups);
        if (c->k_groups < 1 || c->k_groups > c->groups)
            return moe_fail(MOE_ERR_CONFIG, "k_groups=%d: each token needs 1 to %d groups", c->k_groups, c->groups);
        if (c->k > c->n / c->groups)
            return moe_fail(MOE_ERR_CONFIG, "k=%d exceeds the %d experts of a group", c->k, c->n / c->groups);
    }
    if (!(c->w_importance >= 0.0f) || !isfinite(c->w_importance) || !(c->w_load >= 0.0f) ||
        !isfinite(c->w_load))
        return moe_fail(MOE_ERR_CONFIG, "balancing weights must be finite and >= 0 (w_importance=%g w_load=%g)",
                        c->w_importance, c->w_load);
    if (!(c->noise_eps >= 0.0f) || !isfinite(c->noise_eps))
        return moe_fail(MOE_ERR_CONFIG, "noise_eps must be finite and >= 0, got %g", c->noise_eps);
    /* every per-expert block and B*n product must stay addressable */
    double big = (double)c->n * c->d * c->h;
    if (big > 4e12 || (double)c->d * c->h > 2e9)
        return moe_fail(MOE_ERR_CONFIG, "layer too large: n*d*h = %.3g parameters per weight", big);
    return MOE_OK;
}

static void ws_free(workspace *w) {
    float *fs[] = {w->clean, w->raw, w->sigma, w->H, w->eps, w->P, w->dclean, w->draw,
                   w->topv, w->gk, w->dgk, w->Xs, w->Ys, w->dYs, w->A, w->dA};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++) moe_free_aligned(fs[i]);
    free(w->topi);
    free(w->tok);
    free(w->pos);
    memset(w, 0, sizeof *w);
}

static moe_status ws_reserve(moe_layer *l, int B) {
    workspace *w = &l->ws;
    if (B <= w->capB) return MOE_OK;
    ws_free(w);
    const moe_layer_config *c = &l->cfg;
    size_t Bn = (size_t)B * c->n, K1 = c->k < c->n ? c->k + 1 : c->n, R = (size_t)B * c->k;
    w->clean = moe_alloc_floats(Bn);
    w->raw = moe_alloc_floats(Bn);
    w->sigma = moe_alloc_floats(Bn);
    w->H = moe_alloc_floats(Bn);
    w->eps = moe_alloc_floats(Bn);
    w->P = moe_alloc_floats(Bn);
    w->dclean = moe_alloc_floats(Bn);
    w->draw = moe_alloc_floats(Bn);
    w->topi = malloc(sizeof(int) * (size_t)B * K1);
    w->topv = moe_alloc_floats((size_t)B * K1);
    w->gk = moe_alloc_floats(R);
    w->dgk = moe_alloc_floats(R);
    w->tok = malloc(sizeof(int) * R);
    w->pos = malloc(sizeof(int) * R);
    w->Xs = moe_alloc_floats(R * c->d);
    w->Ys = moe_alloc_floats(R * c->d);
    w->dYs = moe_alloc_floats(R * c->d);
    w->A = moe_alloc_floats(R * c->h);
    w->dA = moe_alloc_floats(R * c->h);
    if (!w->clean || !w->raw || !w->sigma || !w->H || !w->eps || !w->P || !w->dclean ||
        !w->draw || !w->topi || !w->topv || !w->gk || !w->dgk || !w->tok || !w->pos || !w->Xs ||
        !w->Ys || !w->dYs || !w->A || !w->dA) {
        ws_free(w);
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate the workspace for a batch of %d tokens", B);
    }
    w->capB = B;
    return MOE_OK;
}

/* A layer holding experts [e0, e0 + nloc) of cfg->n (all of them unless sharded). */
static moe_status layer_create(moe_layer **out, const moe_layer_config *cfg, uint64_t seed, int e0, int nloc) {
    moe_layer *l = calloc(1, sizeof *l);
    if (!l) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the layer");
    l->cfg = *cfg;
    l->e0 = e0;
    l->nloc = nloc;
    const int64_t d = cfg->d, h = cfg->h, n = cfg->n, nl = nloc, a = cfg->groups, gn = a ? a : n;
    const int64_t b = a ? n / a : 0;
    const int64_t shapes[P_COUNT][3] = {{d, gn, 0}, {d, gn, 0}, {nl, d, h}, {nl, h, 0},
                                        {nl, h, d}, {nl, d, 0}, {a, d, b},  {a, d, b}};
    const int ndims[P_COUNT] = {2, 2, 3, 2, 3, 2, 3, 3};
    size_t off = 0;
    for (int p = 0; p < P_COUNT; p++) {
        param_slot *s = &l->slots[p];
        s->present = (p == P_B1 || p == P_B2) ? cfg->bias : (p == P_WG2 || p == P_WN2) ? cfg->groups > 0 : 1;
        if (!s->present) continue;
        s->ndim = ndims[p];
        s->numel = 1;
        for (int i = 0; i < s->ndim; i++) {
            s->shape[i] = shapes[p][i];
            s->numel *= (size_t)shapes[p][i];
        }
        s->offset = off;
        off += MOE_ARENA_PAD(s->numel);
    }
    l->arena_count = off;
    moe_alloc_arena(&l->params, &l->grads, off); /* zeroed; NULL checked below */
    l->counts = calloc((size_t)n, sizeof(int));
    l->offsets = calloc((size_t)n + 1, sizeof(int));
    l->importance = calloc((size_t)n, sizeof(double));
    l->load = calloc((size_t)n, sizeof(double));
    l->dimp = calloc((size_t)n, sizeof(double));
    l->dload = calloc((size_t)n, sizeof(double));
    if (!l->params || !l->grads || !l->counts || !l->offsets || !l->importance || !l->load ||
        !l->dimp || !l->dload) {
        moe_layer_free(l);
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate %zu parameters", off);
    }
    /* gate weights stay zero (balanced load at the start, SPEC 1.3); experts uniform
     * in +-1/sqrt(fan_in), each value a pure function of (seed, position). */
    float *w1 = l->params + l->slots[P_W1].offset, *w2 = l->params + l->slots[P_W2].offset;
    float a1 = 1.0f / sqrtf((float)d), a2 = 1.0f / sqrtf((float)h);
    /* expert e's values are those of position e in the full stack, wherever e lives */
    size_t nw = l->slots[P_W1].numel, g0 = (size_t)e0 * (size_t)(d * h);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < nw; i++) {
        w1[i] = a1 * (2.0f * moe_rng_uniform(seed ^ 0x5731ULL, g0 + i) - 1.0f);
        w2[i] = a2 * (2.0f * moe_rng_uniform(seed ^ 0x5732ULL, g0 + i) - 1.0f);
    }
    l->seed = seed;
    l->counter = 0;
    *out = l;
    return MOE_OK;
}

moe_status moe_layer_create(moe_layer **out, const moe_layer_config *cfg, uint64_t seed) {
    if (!out) return moe_fail(MOE_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    moe_status st = moe_layer_config_check(cfg);
    if (st) return st;
    return layer_create(out, cfg, seed, 0, cfg->n);
}

moe_status moe_layer_create_sharded(moe_layer **out, const moe_layer_config *cfg, uint64_t seed, moe_comm *comm) {
    if (!out || !comm) return moe_fail(MOE_ERR_INVALID_ARG, "out and comm must not be NULL");
    *out = NULL;
    moe_status st = moe_layer_config_check(cfg);
    if (st) return st;
    if (cfg->groups > 0)
        return moe_fail(MOE_ERR_UNSUPPORTED, "a hierarchical layer cannot be split over ranks yet: use groups = 0");
    const int P = moe_comm_size(comm), r = moe_comm_rank(comm);
    if (P > cfg->n)
        return moe_fail(MOE_ERR_CONFIG, "%d ranks but only n=%d experts: each rank needs at least one expert (use at most %d ranks)",
                        P, cfg->n, cfg->n);
    /* every rank must build the same layer: a mismatch would exchange garbage */
    const int64_t sig[] = {cfg->d, cfg->h, cfg->n, cfg->k, cfg->bias, (int64_t)seed};
    const char *what[] = {"the layer's d", "the layer's h", "the layer's n", "the layer's k", "bias", "the seed"};
    for (int i = 0; i < 6; i++)
        if ((st = moe_comm_check_same(comm, sig[i], what[i]))) return st;
    const int e0 = shard_first(cfg->n, P, r), e1 = shard_first(cfg->n, P, r + 1);
    if ((st = layer_create(out, cfg, seed, e0, e1 - e0))) return st;
    (*out)->comm = comm;
    return MOE_OK;
}

moe_status moe_layer_set_noise_layout(moe_layer *l, int rows, int stride, int first) {
    if (!l) return moe_fail(MOE_ERR_INVALID_ARG, "layer is NULL");
    if (rows < 0 || (rows > 0 && (stride < rows || first < 0 || first + rows > stride)))
        return moe_fail(MOE_ERR_INVALID_ARG, "noise layout rows=%d stride=%d first=%d is impossible", rows, stride, first);
    l->nz_rows = rows;
    l->nz_stride = stride;
    l->nz_first = first;
    return MOE_OK;
}

void moe_layer_shard(const moe_layer *l, int *first, int *count) {
    if (first) *first = l ? l->e0 : 0;
    if (count) *count = l ? l->nloc : 0;
}

void moe_layer_free(moe_layer *l) {
    if (!l) return;
    ws_free(&l->ws);
    shard_free(&l->sw);
    hier_free(&l->hw);
    moe_free_aligned(l->params);
    moe_free_aligned(l->grads);
    free(l->counts);
    free(l->offsets);
    free(l->importance);
    free(l->load);
    free(l->dimp);
    free(l->dload);
    free(l);
}

moe_layer_config moe_layer_get_config(const moe_layer *l) { return l->cfg; }

void moe_set_parallel(moe_parallel p) { g_moe_strategy = (int)p; }


void layer_finish_forward(moe_layer *l, const int *counts, int64_t rows, double li, double ll, const float *x, int B,
                          int train, int smooth) {
    const int n = l->cfg.n;
    int maxc = 0;
    for (int e = 0; e < n; e++)
        if (counts[e] > maxc) maxc = counts[e];
    l->stats.loss_importance = (float)li;
    l->stats.loss_load = (float)ll;
    l->stats.cv_importance = (float)cv_of(l->importance, n);
    l->stats.cv_load = (float)cv_of(l->load, n);
    l->stats.max_mean_load = (float)(maxc / ((double)rows / n));
    l->stats.B = B;
    l->ws.x = x;
    l->ws.B = B;
    l->ws.train = train;
    l->ws.smooth = smooth;
    l->ws.valid = 1;
}

moe_status moe_layer_forward(moe_layer *l, float *y, const float *x, int B, moe_mode mode,
                             const float *noise, moe_layer_stats *stats) {
    if (!l || !y || !x) return moe_fail(MOE_ERR_INVALID_ARG, "layer, y and x must not be NULL");
    if (B < 1) return moe_fail(MOE_ERR_SHAPE, "batch size B=%d must be at least 1", B);
    if (mode != MOE_EVAL && mode != MOE_TRAIN)
        return moe_fail(MOE_ERR_INVALID_ARG, "mode must be MOE_EVAL or MOE_TRAIN");
    const moe_layer_config *c = &l->cfg;
    const int d = c->d, n = c->n, k = c->k, h = c->h;
    if (!moe_all_finite(x, (size_t)B * d))
        return moe_fail(MOE_ERR_NONFINITE, "input x [%d,%d] contains NaN or Inf", B, d);
    const int train = mode == MOE_TRAIN;
    const int nw = c->groups ? c->groups + n : n; /* noise draws per token */
    if (train && noise && !moe_all_finite(noise, (size_t)B * nw))
        return moe_fail(MOE_ERR_NONFINITE, "noise [%d,%d] contains NaN or Inf", B, nw);
    workspace *w = &l->ws;
    w->valid = 0;
    moe_status st;
    if (c->groups) { /* its own buffers (hier.c) */
        if ((st = hier_forward(l, y, x, B, train, noise))) return st;
        if (stats) *stats = l->stats;
        return MOE_OK;
    }
    if ((st = ws_reserve(l, B))) return st;
    if (l->comm) {
        if ((st = shard_forward(l, y, x, B, train, noise))) return st;
        if (stats) *stats = l->stats;
        return MOE_OK;
    }
    if (train) {
        if (noise) {
            memcpy(w->eps, noise, sizeof(float) * (size_t)B * n);
        } else {
            const size_t Bn = (size_t)B * n;
            moe_rng_normal_fill(w->eps, Bn, l->seed, l->counter);
            l->counter += Bn;
        }
    }
    const int K1 = k < n ? k + 1 : n;
    const int smooth = train && k < n;
    gate_forward(w->clean, w->raw, w->sigma, w->H, smooth ? w->P : NULL, w->topi, w->topv, w->gk,
                 x, pdata(l, P_WG), pdata(l, P_WN), w->eps, train, c->noise_eps, B, d, n, k);
    gate_importance_load(l->importance, l->load, w->P, w->topi, w->gk, smooth, B, n, k);
    double li = cv2_loss(l->dimp, l->importance, n, c->w_importance);
    double ll = cv2_loss(l->dload, l->load, n, c->w_load);
    if (!smooth) memset(l->dload, 0, sizeof(double) * (size_t)n); /* counts: no gradient */

    dispatch_build(l->counts, l->offsets, w->tok, w->pos, w->topi, B, n, k, K1);
    const int R = B * k;
    const int strat = experts_pick_strategy(g_moe_strategy, R, n, moe_threads());
    dispatch_gather(w->Xs, x, w->tok, R, d);
    experts_forward(w->A, w->Ys, w->Xs, pdata(l, P_W1), pdata(l, P_B1), pdata(l, P_W2),
                    pdata(l, P_B2), l->offsets, n, d, h, strat);
    dispatch_combine(y, w->Ys, w->gk, w->pos, B, d, k);

    layer_finish_forward(l, l->counts, R, li, ll, x, B, train, smooth);
    if (stats) *stats = l->stats;
    return MOE_OK;
}

moe_status moe_layer_backward(moe_layer *l, float *dx, const float *dy) {
    if (!l || !dy) return moe_fail(MOE_ERR_INVALID_ARG, "layer and dy must not be NULL");
    workspace *w = &l->ws;
    if (!w->valid) return moe_fail(MOE_ERR_STATE, "backward called without a successful forward");
    const moe_layer_config *c = &l->cfg;
    const int d = c->d, n = c->n, k = c->k, h = c->h, B = w->B, R = B * k;
    if (!moe_all_finite(dy, (size_t)B * d))
        return moe_fail(MOE_ERR_NONFINITE, "grad_output dy [%d,%d] contains NaN or Inf", B, d);
    if (l->comm) return shard_backward(l, dx, dy);
    if (c->groups) return hier_backward(l, dx, dy);
    const int K1 = k < n ? k + 1 : n;
    const int strat = experts_pick_strategy(g_moe_strategy, R, n, moe_threads());
    dispatch_combine_backward(w->dgk, w->dYs, dy, w->Ys, w->gk, w->pos, B, d, k);
    /* forward: Importance_e = sum_b G[b,e];  so dG[b,e] += dL_imp/dImportance_e */
    for (int b = 0; b < B; b++)
        for (int j = 0; j < k; j++)
            w->dgk[(size_t)b * k + j] += (float)l->dimp[w->topi[(size_t)b * K1 + j]];
    experts_backward(w->dYs, pgrad(l, P_W1), pgrad(l, P_B1), pgrad(l, P_W2), pgrad(l, P_B2),
                     w->dA, w->dYs, w->Xs, w->A, pdata(l, P_W1), pdata(l, P_W2), l->offsets, n,
                     d, h, strat);
    if (dx) dispatch_gather_backward(dx, w->dYs, w->pos, B, d, k);
    gate_backward(dx, pgrad(l, P_WG), pgrad(l, P_WN), w->dclean, w->draw, w->dgk,
                  l->dload, w->x, pdata(l, P_WG), pdata(l, P_WN), w->H, w->clean, w->raw, w->sigma,
                  w->eps, w->topi, w->topv, w->gk, w->train, w->smooth, B, d, n, k);
    return MOE_OK;
}

moe_status moe_layer_gates(const moe_layer *l, float *gates) {
    if (!l || !gates) return moe_fail(MOE_ERR_INVALID_ARG, "layer and gates must not be NULL");
    const workspace *w = &l->ws;
    if (!w->valid) return moe_fail(MOE_ERR_STATE, "no forward pass yet");
    const int n = l->cfg.n, k = l->cfg.k, K1 = k < n ? k + 1 : n;
    memset(gates, 0, sizeof(float) * (size_t)w->B * n);
    if (l->cfg.groups) { /* the combined gates Gp_i * G_i,j of each token's kp*ks experts */
        const int kk = l->cfg.k_groups * k;
        for (int b = 0; b < w->B; b++)
            for (int j = 0; j < kk; j++)
                gates[(size_t)b * n + l->hw.topf[(size_t)b * kk + j]] = l->hw.gkf[(size_t)b * kk + j];
        return MOE_OK;
    }
    for (int b = 0; b < w->B; b++)
        for (int j = 0; j < k; j++)
            gates[(size_t)b * n + w->topi[(size_t)b * K1 + j]] = w->gk[(size_t)b * k + j];
    return MOE_OK;
}

moe_status moe_layer_counts(const moe_layer *l, int *counts) {
    if (!l || !counts) return moe_fail(MOE_ERR_INVALID_ARG, "layer and counts must not be NULL");
    if (!l->ws.valid) return moe_fail(MOE_ERR_STATE, "no forward pass yet");
    if (l->comm) { /* over all ranks' tokens */
        memcpy(counts, l->sw.gcounts, sizeof(int) * (size_t)l->cfg.n);
        return MOE_OK;
    }
    /* dispatch_build leaves the per-expert cursors equal to the counts */
    for (int e = 0; e < l->cfg.n; e++) counts[e] = l->offsets[e + 1] - l->offsets[e];
    return MOE_OK;
}

moe_status moe_layer_importance(const moe_layer *l, float *v) {
    if (!l || !v) return moe_fail(MOE_ERR_INVALID_ARG, "layer and output must not be NULL");
    if (!l->ws.valid) return moe_fail(MOE_ERR_STATE, "no forward pass yet");
    for (int e = 0; e < l->cfg.n; e++) v[e] = (float)l->importance[e];
    return MOE_OK;
}

moe_status moe_layer_load_vec(const moe_layer *l, float *v) {
    if (!l || !v) return moe_fail(MOE_ERR_INVALID_ARG, "layer and output must not be NULL");
    if (!l->ws.valid) return moe_fail(MOE_ERR_STATE, "no forward pass yet");
    for (int e = 0; e < l->cfg.n; e++) v[e] = (float)l->load[e];
    return MOE_OK;
}

/* ---- parameters ---- */

int moe_layer_num_params(const moe_layer *l) {
    if (!l) return 0;
    int c = 0;
    for (int p = 0; p < P_COUNT; p++) c += l->slots[p].present;
    return c;
}

/* i-th present parameter -> slot index */
static int slot_of(const moe_layer *l, int i) {
    for (int p = 0; p < P_COUNT; p++)
        if (l->slots[p].present && i-- == 0) return p;
    return -1;
}

static void fill_param(moe_layer *l, int p, moe_param *out) {
    const param_slot *s = &l->slots[p];
    out->name = PARAM_NAMES[p];
    out->ndim = s->ndim;
    for (int i = 0; i < 3; i++) out->shape[i] = i < s->ndim ? s->shape[i] : 0;
    out->numel = s->numel;
    out->data = l->params + s->offset;
    out->grad = l->grads + s->offset;
}

moe_status moe_layer_param(moe_layer *l, int i, moe_param *out) {
    if (!l || !out) return moe_fail(MOE_ERR_INVALID_ARG, "layer and out must not be NULL");
    int p = slot_of(l, i);
    if (p < 0) return moe_fail(MOE_ERR_INVALID_ARG, "parameter index %d out of range", i);
    fill_param(l, p, out);
    return MOE_OK;
}

static int find_slot(const moe_layer *l, const char *name) {
    if (!name) return -1;
    for (int p = 0; p < P_COUNT; p++)
        if (l->slots[p].present && strcmp(PARAM_NAMES[p], name) == 0) return p;
    return -1;
}

moe_status moe_layer_find_param(moe_layer *l, const char *name, moe_param *out) {
    if (!l || !out) return moe_fail(MOE_ERR_INVALID_ARG, "layer and out must not be NULL");
    int p = find_slot(l, name);
    if (p < 0) return moe_fail(MOE_ERR_MISSING, "the layer has no parameter '%s'", name ? name : "(null)");
    fill_param(l, p, out);
    return MOE_OK;
}

moe_status moe_layer_arena(moe_layer *l, float **params, float **grads, size_t *count) {
    if (!l) return moe_fail(MOE_ERR_INVALID_ARG, "layer is NULL");
    if (params) *params = l->params;
    if (grads) *grads = l->grads;
    if (count) *count = l->arena_count;
    return MOE_OK;
}

void moe_layer_zero_grad(moe_layer *l) {
    if (l) memset(l->grads, 0, sizeof(float) * l->arena_count);
}

moe_status moe_layer_get_param(const moe_layer *l, const char *name, float *dst, size_t count) {
    if (!l || !dst) return moe_fail(MOE_ERR_INVALID_ARG, "layer and dst must not be NULL");
    int p = find_slot(l, name);
    if (p < 0) return moe_fail(MOE_ERR_MISSING, "the layer has no parameter '%s'", name ? name : "(null)");
    if (count != l->slots[p].numel)
        return moe_fail(MOE_ERR_SHAPE, "'%s' has %zu values, not %zu", name, l->slots[p].numel, count);
    memcpy(dst, l->params + l->slots[p].offset, sizeof(float) * count);
    return MOE_OK;
}

moe_status moe_layer_set_param(moe_layer *l, const char *name, const float *src, size_t count) {
    if (!l || !src) return moe_fail(MOE_ERR_INVALID_ARG, "layer and src must not be NULL");
    int p = find_slot(l, name);
    if (p < 0) return moe_fail(MOE_ERR_MISSING, "the layer has no parameter '%s'", name ? name : "(null)");
    if (count != l->slots[p].numel)
        return moe_fail(MOE_ERR_SHAPE, "'%s' has %zu values, not %zu", name, l->slots[p].numel, count);
    if (!moe_all_finite(src, count))
        return moe_fail(MOE_ERR_NONFINITE, "values for '%s' contain NaN or Inf", name);
    memcpy(l->params + l->slots[p].offset, src, sizeof(float) * count);
    l->ws.valid = 0; /* a cached forward no longer matches the weights */
    return MOE_OK;
}

void moe_layer_get_rng(const moe_layer *l, uint64_t *seed, uint64_t *counter) {
    if (seed) *seed = l->seed;
    if (counter) *counter = l->counter;
}

void moe_layer_set_rng(moe_layer *l, uint64_t seed, uint64_t counter) {
    l->seed = seed;
    l->counter = counter;
}
