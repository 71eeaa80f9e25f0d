/* layer_io.c - a layer to and from the SPEC 1.5 safetensors layout: parameters by name,
 * settings as strings in __metadata__ (an absent setting takes its default). */
#include "base/internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static moe_status parse_int(const char *key, const char *v, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (end == v || *end != '\0' || errno || x < -2147483647L || x > 2147483647L)
        return moe_fail(MOE_ERR_FORMAT, "metadata %s='%s' is not an integer", key, v);
    *out = (int)x;
    return MOE_OK;
}

static moe_status parse_float(const char *key, const char *v, float *out) {
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (end == v || *end != '\0' || errno || !isfinite(x))
        return moe_fail(MOE_ERR_FORMAT, "metadata %s='%s' is not a finite number", key, v);
    *out = x;
    return MOE_OK;
}

/* Shape check helper: tensor `name` must exist, be F32 and have the given shape. */
static moe_status want(const moe_st *f, const char *name, int ndim, const int64_t *shape,
                       const float **data) {
    moe_tensor t;
    moe_status st = moe_st_get_f32(f, name, &t, data);
    if (st) return st;
    int ok = t.ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t.shape[i] == shape[i];
    if (!ok) {
        char got[128] = "", exp[128] = "";
        for (int i = 0; i < t.ndim && strlen(got) < 100; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "", (long long)t.shape[i]);
        for (int i = 0; i < ndim; i++)
            snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%lld", i ? "," : "", (long long)shape[i]);
        return moe_fail(MOE_ERR_SHAPE, "tensor '%s' has shape [%s], expected [%s]", name, got, exp);
    }
    return MOE_OK;
}

moe_status moe_layer_config_from_st(const moe_st *f, moe_layer_config *cfg) {
    if (!f || !cfg) return moe_fail(MOE_ERR_INVALID_ARG, "file and cfg must not be NULL");
    moe_layer_config c = moe_layer_config_default();
    moe_tensor w1;
    moe_status st = moe_st_get(f, "experts.w1", &w1);
    if (st) return moe_fail(st, "not a MoE layer file: no tensor 'experts.w1' [n,d,h]");
    if (w1.ndim != 3)
        return moe_fail(MOE_ERR_SHAPE, "tensor 'experts.w1' must be [n,d,h], it has %d dims", w1.ndim);
    if (w1.shape[0] > 1 << 30 || w1.shape[1] > 1 << 30 || w1.shape[2] > 1 << 30)
        return moe_fail(MOE_ERR_SHAPE, "tensor 'experts.w1' is too large");
    c.n = (int)w1.shape[0];
    c.d = (int)w1.shape[1];
    c.h = (int)w1.shape[2];
    moe_tensor tb;
    int has_b1 = moe_st_get(f, "experts.b1", &tb) == MOE_OK;
    int has_b2 = moe_st_get(f, "experts.b2", &tb) == MOE_OK;
    c.bias = has_b1 || has_b2;
    const char *v;
    int meta_bias = -1, meta_d = -1, meta_h = -1, meta_n = -1;
    if (!(v = moe_st_meta(f, "k"))) {
        if (c.k > c.n) c.k = c.n;
    } else if ((st = parse_int("k", v, &c.k))) {
        return st;
    }
    if ((v = moe_st_meta(f, "bias")) && (st = parse_int("bias", v, &meta_bias))) return st;
    if ((v = moe_st_meta(f, "d")) && (st = parse_int("d", v, &meta_d))) return st;
    if ((v = moe_st_meta(f, "h")) && (st = parse_int("h", v, &meta_h))) return st;
    if ((v = moe_st_meta(f, "n")) && (st = parse_int("n", v, &meta_n))) return st;
    if ((v = moe_st_meta(f, "w_importance")) && (st = parse_float("w_importance", v, &c.w_importance))) return st;
    if ((v = moe_st_meta(f, "w_load")) && (st = parse_float("w_load", v, &c.w_load))) return st;
    if ((v = moe_st_meta(f, "noise_eps")) && (st = parse_float("noise_eps", v, &c.noise_eps))) return st;
    /* hierarchical (SPEC 1.6): the groups' gates gate2.* [a, d, n/a] */
    moe_tensor g2;
    if (moe_st_get(f, "gate2.w_gate", &g2) == MOE_OK) {
        if (g2.ndim != 3 || g2.shape[0] < 1 || g2.shape[0] > c.n || g2.shape[1] != c.d ||
            g2.shape[0] * g2.shape[2] != c.n)
            return moe_fail(MOE_ERR_SHAPE, "tensor 'gate2.w_gate' must be [a, d=%d, n/a] with a * n/a = n=%d", c.d, c.n);
        c.groups = (int)g2.shape[0];
        c.k_groups = c.groups < 2 ? c.groups : 2;
        if ((v = moe_st_meta(f, "k_groups")) && (st = parse_int("k_groups", v, &c.k_groups))) return st;
        if (!moe_st_meta(f, "k") && c.k > c.n / c.groups) c.k = c.n / c.groups;
        int meta_g = -1;
        if ((v = moe_st_meta(f, "groups")) && (st = parse_int("groups", v, &meta_g))) return st;
        if (meta_g >= 0 && meta_g != c.groups)
            return moe_fail(MOE_ERR_SHAPE, "metadata groups=%d contradicts gate2.w_gate [%d,...]", meta_g, c.groups);
    } else if ((v = moe_st_meta(f, "groups")) && strcmp(v, "0") != 0) {
        return moe_fail(MOE_ERR_MISSING, "metadata says groups=%s but the groups' gates gate2.w_gate/gate2.w_noise are absent", v);
    }
    if ((meta_d >= 0 && meta_d != c.d) || (meta_h >= 0 && meta_h != c.h) || (meta_n >= 0 && meta_n != c.n))
        return moe_fail(MOE_ERR_SHAPE, "metadata d/h/n (%d/%d/%d) contradict experts.w1 [%d,%d,%d]",
                        meta_d, meta_h, meta_n, c.n, c.d, c.h);
    if (meta_bias == 1 && !(has_b1 && has_b2))
        return moe_fail(MOE_ERR_MISSING, "metadata says bias=1 but experts.b1/experts.b2 are absent");
    if (meta_bias == 0 && c.bias)
        return moe_fail(MOE_ERR_FORMAT, "metadata says bias=0 but the file has expert biases");
    if (has_b1 != has_b2)
        return moe_fail(MOE_ERR_MISSING, "the file has %s but not %s", has_b1 ? "experts.b1" : "experts.b2",
                        has_b1 ? "experts.b2" : "experts.b1");
    st = moe_layer_config_check(&c);
    if (st) return st;
    *cfg = c;
    return moe_ok();
}

moe_status moe_layer_load_st(moe_layer *l, const moe_st *f) {
    if (!l || !f) return moe_fail(MOE_ERR_INVALID_ARG, "layer and file must not be NULL");
    moe_layer_config c = moe_layer_get_config(l);
    /* validate everything before touching the layer, so a bad file changes nothing */
    const float *src[8];
    moe_param p[8];
    int np = moe_layer_num_params(l);
    for (int i = 0; i < np; i++) {
        moe_layer_param(l, i, &p[i]);
        moe_status st = want(f, p[i].name, p[i].ndim, p[i].shape, &src[i]);
        if (st) return st;
        if (!moe_all_finite(src[i], p[i].numel))
            return moe_fail(MOE_ERR_NONFINITE, "tensor '%s' contains NaN or Inf", p[i].name);
    }
    (void)c;
    for (int i = 0; i < np; i++) {
        moe_status st = moe_layer_set_param(l, p[i].name, src[i], p[i].numel);
        if (st) return st;
    }
    return moe_ok();
}

moe_status moe_layer_load(moe_layer **out, const char *path) {
    if (!out || !path) return moe_fail(MOE_ERR_INVALID_ARG, "out and path must not be NULL");
    *out = NULL;
    moe_st *f = NULL;
    moe_status st = moe_st_open(&f, path);
    if (st) return st;
    moe_layer_config c;
    moe_layer *l = NULL;
    st = moe_layer_config_from_st(f, &c);
    if (!st) st = moe_layer_create(&l, &c, 0);
    if (!st) st = moe_layer_load_st(l, f);
    moe_st_free(f);
    if (st) {
        moe_layer_free(l);
        return st;
    }
    *out = l;
    return moe_ok();
}

moe_status moe_layer_save(const moe_layer *cl, const char *path) {
    if (!cl || !path) return moe_fail(MOE_ERR_INVALID_ARG, "layer and path must not be NULL");
    moe_layer *l = (moe_layer *)cl; /* parameter views only read */
    moe_layer_config c = moe_layer_get_config(l);
    moe_st_writer *w = NULL;
    moe_status st = moe_st_writer_create(&w);
    if (st) return st;
    char buf[64];
    struct { const char *k; double v; int is_int; } meta[] = {
        {"d", c.d, 1}, {"h", c.h, 1}, {"n", c.n, 1}, {"k", c.k, 1}, {"bias", c.bias, 1},
        {"w_importance", c.w_importance, 0}, {"w_load", c.w_load, 0}, {"noise_eps", c.noise_eps, 0}};
    for (size_t i = 0; !st && i < sizeof meta / sizeof meta[0]; i++) {
        if (meta[i].is_int) snprintf(buf, sizeof buf, "%d", (int)meta[i].v);
        else snprintf(buf, sizeof buf, "%.9g", (float)meta[i].v);
        st = moe_st_writer_meta(w, meta[i].k, buf);
    }
    if (!st && c.groups) {
        char g[2][16];
        snprintf(g[0], sizeof g[0], "%d", c.groups);
        snprintf(g[1], sizeof g[1], "%d", c.k_groups);
        st = moe_st_writer_meta(w, "groups", g[0]);
        if (!st) st = moe_st_writer_meta(w, "k_groups", g[1]);
    }
    int np = moe_layer_num_params(l);
    for (int i = 0; !st && i < np; i++) {
        moe_param p;
        moe_layer_param(l, i, &p);
        st = moe_st_writer_add(w, p.name, MOE_F32, p.ndim, p.shape, p.data);
    }
    if (!st) st = moe_st_writer_write(w, path);
    moe_st_writer_free(w);
    return st;
}
