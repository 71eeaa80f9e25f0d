/* layer.c - the moe_layer handle: configuration check, creation over a router and a placement,
 * the parameter table and arena. Forward and backward are pipeline.c's. */
#include "base/bf16.h"
#include "base/internal.h"
#include "base/rng.h"
#include "moe/layer_impl.h"
#include "moe/layer_ops.h"
#include "moe/layer_table.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const PARAM_NAMES[P_COUNT] = {"gate.w_gate", "gate.w_noise", "experts.w1",   "experts.b1",
                                                 "experts.w2",  "experts.b2",   "gate2.w_gate", "gate2.w_noise"};


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
    return moe_ok();
}

/* The arena's layout for nloc experts here: the slots' shapes and offsets; returns its floats,
 * and in *router those of the router's weights, which come first (under fused updates the
 * gradient arena is only that prefix). half: W1 and W2 are bfloat16 and come last, after the
 * biases, at offsets past *floats (the float arena's size); their elements are counted in *halfs. */
static size_t layout(const moe_layer_config *cfg, int nloc, int half, param_slot *slots, size_t *router_end,
                     size_t *floats, size_t *halfs) {
    const int64_t d = cfg->d, h = cfg->h, n = cfg->n, nl = nloc, a = cfg->groups, gn = a ? a : n;
    const int64_t b = a ? n / a : 0;
    const int64_t shapes[P_COUNT][3] = {{d, gn, 0}, {d, gn, 0}, {nl, d, h}, {nl, h, 0},
                                        {nl, h, d}, {nl, d, 0}, {a, d, b},  {a, d, b}};
    const int ndims[P_COUNT] = {2, 2, 3, 2, 3, 2, 3, 3};
    static const int ORDER[2][P_COUNT] = {{P_WG, P_WN, P_WG2, P_WN2, P_W1, P_B1, P_W2, P_B2},
                                          {P_WG, P_WN, P_WG2, P_WN2, P_B1, P_B2, P_W1, P_W2}};
    size_t off = 0, hoff = 0;
    if (floats) *floats = 0;
    for (int o = 0; o < P_COUNT; o++) {
        const int p = ORDER[half][o];
        if (o == 4 && router_end) *router_end = off;
        param_slot *s = &slots[p];
        s->present = (p == P_B1 || p == P_B2) ? cfg->bias : (p == P_WG2 || p == P_WN2) ? cfg->groups > 0 : 1;
        if (!s->present) continue;
        s->ndim = ndims[p];
        s->numel = 1;
        for (int i = 0; i < s->ndim; i++) {
            s->shape[i] = shapes[p][i];
            s->numel *= (size_t)shapes[p][i];
        }
        s->half = half && (p == P_W1 || p == P_W2);
        if (s->half && floats && !*floats) *floats = off;
        s->offset = off;
        off += MOE_ARENA_PAD(s->numel);
        if (s->half) {
            s->hoff = hoff;
            hoff += MOE_ARENA_PAD(s->numel);
        }
    }
    if (floats && !half) *floats = off;
    if (halfs) *halfs = hoff;
    return off;
}

moe_layer_config layer_config_of(int d, int n, int k, int h, float w_importance, float w_load, float noise_eps) {
    moe_layer_config c = moe_layer_config_default();
    c.d = d;
    c.n = n;
    c.k = k;
    c.h = h;
    c.w_importance = w_importance;
    c.w_load = w_load;
    c.noise_eps = noise_eps;
    return c;
}

size_t layer_param_floats(const moe_layer_config *cfg, int nloc, size_t *factored, size_t *router_floats) {
    param_slot s[P_COUNT];
    memset(s, 0, sizeof s);
    size_t r = 0;
    const size_t all = layout(cfg, nloc, 0, s, &r, NULL, NULL);
    if (router_floats) *router_floats = r;
    size_t f = 0; /* the factored second moment: rows and columns of each matrix, vectors whole */
    for (int p = 0; p < P_COUNT; p++) {
        if (!s[p].present) continue;
        const int bias = p == P_B1 || p == P_B2; /* [n, h]: n vectors (layer_table.c) */
        if (bias || s[p].ndim < 2) f += s[p].numel;
        else if (s[p].ndim == 2) f += (size_t)(s[p].shape[0] + s[p].shape[1]);
        else f += (size_t)s[p].shape[0] * (size_t)(s[p].shape[1] + s[p].shape[2]);
    }
    if (factored) *factored = f;
    return all;
}

int layer_config_tensor(const moe_layer_config *cfg, int i, const char **name, int *ndim, int64_t shape[3]) {
    param_slot s[P_COUNT];
    memset(s, 0, sizeof s);
    layout(cfg, cfg->n, 0, s, NULL, NULL, NULL);
    for (int p = 0; p < P_COUNT; p++) /* moe_layer_param's order: the slots present */
        if (s[p].present && i-- == 0) {
            *name = PARAM_NAMES[p];
            *ndim = s[p].ndim;
            for (int j = 0; j < 3; j++) shape[j] = j < s[p].ndim ? s[p].shape[j] : 0;
            return 1;
        }
    return 0;
}

/* gate weights stay zero (balanced load at the start, SPEC 1.3); experts uniform in
 * +-1/sqrt(fan_in), each value a pure function of (seed, position): expert e's values are those
 * of position e in the full stack, wherever e lives */
static void init_experts(moe_layer *l, uint64_t seed) {
    const int64_t d = l->cfg.d, h = l->cfg.h;
    float *w1 = pdata(l, P_W1), *w2 = pdata(l, P_W2);
    uint16_t *h1 = phalf(l, P_W1), *h2 = phalf(l, P_W2); /* bfloat16: the same values, rounded */
    const float a1 = 1.0f / sqrtf((float)d), a2 = 1.0f / sqrtf((float)h);
    const size_t nw = l->slots[P_W1].numel, g0 = (size_t)l->pl.e0 * (size_t)(d * h);
    const uint64_t k1 = rng_key(seed ^ 0x5731ULL), k2 = rng_key(seed ^ 0x5732ULL);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < nw; i++) {
        const float v1 = a1 * (2.0f * rng_uniform_key(k1, g0 + i) - 1.0f);
        const float v2 = a2 * (2.0f * rng_uniform_key(k2, g0 + i) - 1.0f);
        if (h1) {
            h1[i] = f32_to_bf16(v1);
            h2[i] = f32_to_bf16(v2);
        } else {
            w1[i] = v1;
            w2[i] = v2;
        }
    }
}

/* the per-layer statistics buffers (layer_ws's second half) */
static moe_status alloc_fixed(moe_layer *l) {
    layer_ws *w = &l->ws;
    const size_t n = (size_t)l->cfg.n;
    const moe_buf list[] = {MOE_BUF(w->sums, l->rt.nsum), MOE_BUF(w->importance, n), MOE_BUF(w->load, n),
                            MOE_BUF(w->dimp, n),          MOE_BUF(w->dload, n),      MOE_BUF(w->dload_scaled, n),
                            MOE_BUF(w->counts, n),
                            MOE_BUF(w->offsets, n + 1),   MOE_BUF(w->gcounts, n),
                            MOE_BUF(w->rgrad, l->pl.ranks > 1 ? router_floats(l) : 0)};
    w->fixed = moe_bufs_alloc(list, (int)(sizeof list / sizeof list[0]));
    return w->fixed ? MOE_OK : moe_fail(MOE_ERR_NOMEM, "cannot allocate the layer's statistics");
}

/* A layer over the placement `pl` (all experts here, or a rank's share); takes pl over. flags:
 * LAYER_FUSED, no gradient tensors for the experts (fused updates, layer_set_updater);
 * LAYER_BF16, the experts' W1 and W2 in bfloat16 (fused updates only). */
static moe_status layer_create(moe_layer **out, const moe_layer_config *cfg, uint64_t seed, placement pl, int flags) {
    const int fused = (flags & LAYER_FUSED) != 0, half = (flags & LAYER_BF16) != 0;
    moe_layer *l = calloc(1, sizeof *l);
    if (!l) {
        pl.i->free(pl.ctx);
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate the layer");
    }
    l->cfg = *cfg;
    l->pl = pl;
    l->strategy = (int)MOE_PAR_AUTO;
    l->seed = seed;
    moe_status st = cfg->groups ? router_hier_create(&l->rt, cfg) : router_flat_create(&l->rt, cfg);
    if (st) {
        moe_layer_free(l);
        return st;
    }
    size_t rf = 0;
    l->arena_count = layout(&l->cfg, pl.nloc, half, l->slots, &rf, &l->float_count, &l->half_count);
    l->fused = fused;
    l->grad_count = fused ? rf : l->arena_count;
    l->params = moe_alloc_floats(l->float_count ? l->float_count : 1);
    l->grads = moe_alloc_floats(l->grad_count ? l->grad_count : 1);
    if (half) l->half = (uint16_t *)moe_alloc_floats((l->half_count + 1) / 2);
    if (!l->params || !l->grads || (half && !l->half)) {
        const size_t count = l->arena_count;
        moe_layer_free(l);
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate %zu parameters", count);
    }
    moe_zero_floats(l->params, l->float_count);
    if (half) moe_zero_floats((float *)l->half, (l->half_count + 1) / 2);
    moe_zero_floats(l->grads, l->grad_count);
    if ((st = alloc_fixed(l))) {
        moe_layer_free(l);
        return st;
    }
    init_experts(l, seed);
    *out = l;
    return moe_ok();
}

static moe_status create_local(moe_layer **out, const moe_layer_config *cfg, uint64_t seed, int flags) {
    if (!out) return moe_fail(MOE_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    moe_status st = moe_layer_config_check(cfg);
    if (st) return st;
    placement pl;
    if ((st = placement_local_create(&pl, cfg))) return st;
    return layer_create(out, cfg, seed, pl, flags);
}

static moe_status create_sharded(moe_layer **out, const moe_layer_config *cfg, uint64_t seed, moe_comm *comm,
                                 int flags) {
    if (!out || !comm) return moe_fail(MOE_ERR_INVALID_ARG, "out and comm must not be NULL");
    *out = NULL;
    moe_status st = moe_layer_config_check(cfg);
    if (st) return st;
    /* every rank must build the same layer: a mismatch would exchange garbage */
    const int64_t sig[] = {cfg->d, cfg->h, cfg->n, cfg->k, cfg->bias, cfg->groups, cfg->k_groups, (int64_t)seed};
    const char *what[] = {"the layer's d", "the layer's h", "the layer's n", "the layer's k", "bias",
                          "the layer's groups", "the layer's k_groups", "the seed"};
    for (int i = 0; i < 8; i++)
        if ((st = moe_comm_check_same(comm, sig[i], what[i]))) return st;
    placement pl;
    if ((st = placement_shard_create(&pl, cfg, comm))) return st;
    return layer_create(out, cfg, seed, pl, flags);
}

moe_status moe_layer_create(moe_layer **out, const moe_layer_config *cfg, uint64_t seed) {
    return create_local(out, cfg, seed, 0);
}

moe_status moe_layer_create_sharded(moe_layer **out, const moe_layer_config *cfg, uint64_t seed, moe_comm *comm) {
    return create_sharded(out, cfg, seed, comm, 0);
}

moe_status layer_create_opts(moe_layer **out, const moe_layer_config *cfg, uint64_t seed, moe_comm *comm, int flags) {
    if ((flags & LAYER_BF16) && !(flags & LAYER_FUSED)) {
        if (out) *out = NULL;
        return moe_fail(MOE_ERR_CONFIG, "bfloat16 expert weights are updated by fused updates only: turn those on too");
    }
    return comm ? create_sharded(out, cfg, seed, comm, flags) : create_local(out, cfg, seed, flags);
}

moe_status moe_layer_set_noise_layout(moe_layer *l, int rows, int stride, int first) {
    if (!l) return moe_fail(MOE_ERR_INVALID_ARG, "layer is NULL");
    if (rows < 0 || (rows > 0 && (stride < rows || first < 0 || first + rows > stride)))
        return moe_fail(MOE_ERR_INVALID_ARG, "noise layout rows=%d stride=%d first=%d is impossible", rows, stride, first);
    l->nz_rows = rows;
    l->nz_stride = stride;
    l->nz_first = first;
    return moe_ok();
}

void moe_layer_shard(const moe_layer *l, int *first, int *count) {
    if (first) *first = l ? l->pl.e0 : 0;
    if (count) *count = l ? l->pl.nloc : 0;
}

void moe_layer_free(moe_layer *l) {
    if (!l) return;
    if (l->rt.i) l->rt.i->free(l->rt.ctx);
    if (l->pl.i) l->pl.i->free(l->pl.ctx);
    moe_free_aligned(l->ws.block);
    moe_free_aligned(l->ws.fixed);
    moe_free_aligned(l->params);
    moe_free_aligned(l->grads);
    moe_free_aligned(l->half);
    free(l);
}

moe_layer_config moe_layer_get_config(const moe_layer *l) { return l->cfg; }

moe_status moe_layer_set_parallel(moe_layer *l, moe_parallel p) {
    if (!l) return moe_fail(MOE_ERR_INVALID_ARG, "layer is NULL");
    if (p != MOE_PAR_AUTO && p != MOE_PAR_BLAS && p != MOE_PAR_EXPERTS)
        return moe_fail(MOE_ERR_INVALID_ARG, "parallel strategy %d is not MOE_PAR_AUTO, _BLAS or _EXPERTS", (int)p);
    l->strategy = (int)p;
    return moe_ok();
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
    out->data = pdata(l, p);
    out->data_bf16 = phalf(l, p);
    out->grad = pgrad(l, p);
    const int expert = p == P_W1 || p == P_B1 || p == P_W2 || p == P_B2;
    out->expert_first = expert ? l->pl.e0 : 0;
    out->experts = expert ? l->cfg.n : 0;
}

moe_status moe_layer_param(moe_layer *l, int i, moe_param *out) {
    if (!l || !out) return moe_fail(MOE_ERR_INVALID_ARG, "layer and out must not be NULL");
    int p = slot_of(l, i);
    if (p < 0) return moe_fail(MOE_ERR_INVALID_ARG, "parameter index %d out of range", i);
    fill_param(l, p, out);
    return moe_ok();
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
    return moe_ok();
}

moe_status moe_layer_arena(moe_layer *l, float **params, float **grads, size_t *count) {
    if (!l) return moe_fail(MOE_ERR_INVALID_ARG, "layer is NULL");
    return moe_arena_out(l->params, l->fused ? NULL : l->grads, l->float_count, params, grads, count);
}

void moe_layer_zero_grad(moe_layer *l) {
    if (l) memset(l->grads, 0, sizeof(float) * l->grad_count);
}

moe_status layer_set_updater(moe_layer *l, const expert_updater *up) {
    if (!l || !up || !up->apply) return moe_fail(MOE_ERR_INVALID_ARG, "layer and updater must not be NULL");
    if (!l->fused) return moe_fail(MOE_ERR_STATE, "the layer keeps its experts' gradients: it was not made for fused updates");
    l->up = *up;
    return moe_ok();
}

moe_status moe_layer_get_param(const moe_layer *l, const char *name, float *dst, size_t count) {
    if (!l || !dst) return moe_fail(MOE_ERR_INVALID_ARG, "layer and dst must not be NULL");
    int p = find_slot(l, name);
    if (p < 0) return moe_fail(MOE_ERR_MISSING, "the layer has no parameter '%s'", name ? name : "(null)");
    if (count != l->slots[p].numel)
        return moe_fail(MOE_ERR_SHAPE, "'%s' has %zu values, not %zu", name, l->slots[p].numel, count);
    if (l->slots[p].half) bf16_widen(dst, phalf(l, p), count);
    else memcpy(dst, l->params + l->slots[p].offset, sizeof(float) * count);
    return moe_ok();
}

moe_status moe_layer_set_param(moe_layer *l, const char *name, const float *src, size_t count) {
    if (!l || !src) return moe_fail(MOE_ERR_INVALID_ARG, "layer and src must not be NULL");
    int p = find_slot(l, name);
    if (p < 0) return moe_fail(MOE_ERR_MISSING, "the layer has no parameter '%s'", name ? name : "(null)");
    if (count != l->slots[p].numel)
        return moe_fail(MOE_ERR_SHAPE, "'%s' has %zu values, not %zu", name, l->slots[p].numel, count);
    if (!moe_all_finite(src, count))
        return moe_fail(MOE_ERR_NONFINITE, "values for '%s' contain NaN or Inf", name);
    uint16_t *hp = phalf(l, p);
    if (hp) /* bfloat16 storage: to nearest */
        for (size_t i = 0; i < count; i++) hp[i] = f32_to_bf16(src[i]);
    else memcpy(l->params + l->slots[p].offset, src, sizeof(float) * count);
    l->ws.valid = 0; /* a cached forward no longer matches the weights */
    return moe_ok();
}

void moe_layer_get_rng(const moe_layer *l, uint64_t *seed, uint64_t *counter) {
    if (seed) *seed = l->seed;
    if (counter) *counter = l->counter;
}

void moe_layer_set_rng(moe_layer *l, uint64_t seed, uint64_t counter) {
    l->seed = seed;
    l->counter = counter;
}
