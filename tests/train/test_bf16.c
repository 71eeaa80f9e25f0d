/* test_bf16.c - bfloat16 expert weights (LAYER_BF16, moe train --bf16):
 * - the roundings of base/bf16.h: to nearest even on chosen values, NaN and Inf kept, and the
 *   stochastic rounding unbiased (the share rounded up matches the dropped fraction);
 * - a layer with bfloat16 experts computes what a float32 twin holding the same (widened)
 *   weights computes, bit for bit, forward and backward: the arithmetic is float32;
 * - after a fused step each weight is one of the two bfloat16 neighbours of the float32 twin's
 *   new value, rounded up about as often as the dropped fractions say; the rest of the layer is
 *   the twin's bits (factored optimiser and Adam, flat and hierarchical);
 * - steps give the same bits on 1 and 2 threads, and lazily and eagerly decayed;
 * - misuse: bfloat16 without fused updates refused; the parameter views. */
#define T_FAIL_DETAIL moe_last_error()
#include "base/bf16.h"
#include "base/internal.h"
#include "moe.h"
#include "moe/layer_table.h"
#include "testutil.h"
#include "train/fused.h"
#include "train/optim_fused.h"
#include "train/optset.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { D = 8, H = 6, B = 5, MAXN = 24 };

static void roundings(void) {
    CHECK(f32_to_bf16(1.0f) == 0x3f80, "1.0");
    CHECK(f32_to_bf16(-2.5f) == 0xc020, "-2.5");
    CHECK(f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80, "a tie rounds to even (down)");
    CHECK(f32_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82, "a tie rounds to even (up)");
    CHECK(f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 0x3f81, "above the tie rounds up");
    CHECK(bf16_to_f32(f32_to_bf16(-0.0f)) == 0.0f && f32_to_bf16(-0.0f) == 0x8000, "-0 kept");
    CHECK(isinf(bf16_to_f32(f32_to_bf16(INFINITY))) && isnan(bf16_to_f32(f32_to_bf16(NAN))), "Inf and NaN kept");
    CHECK(isnan(bf16_to_f32(f32_to_bf16_sr(NAN, 0xffff))) && isinf(bf16_to_f32(f32_to_bf16_sr(-INFINITY, 0xffff))),
          "stochastic: Inf and NaN kept");
    CHECK(!isinf(bf16_to_f32(f32_to_bf16_sr(3.3e38f, 0xffff))), "stochastic rounding does not overflow to Inf");
    const uint16_t bad[3] = {0x3f80, 0x7f80, 0x0000}, good[2] = {0x3f80, 0xc020};
    CHECK(!bf16_all_finite(bad, 3) && bf16_all_finite(good, 2), "finite check");
    /* the block store is the element-wise definition, from any starting place */
    float src[600];
    uint16_t got[600];
    t_fill_normal(src, 600, 4);
    const uint64_t firsts[3] = {0, 5, 1023};
    for (int f = 0; f < 3; f++) {
        bf16_store_sr(got, src, 600, rng_key(11), firsts[f]);
        int same = 1;
        for (int i = 0; i < 600; i++) same &= got[i] == f32_to_bf16_sr(src[i], bf16_sr_bits(rng_key(11), firsts[f] + (uint64_t)i));
        CHECK(same, "bf16_store_sr from element %llu: the element-wise rounding", (unsigned long long)firsts[f]);
    }
    /* stochastic: 1 + f * 2^-7 rounds up with probability f */
    const float fr[4] = {0.0f, 0.125f, 0.5f, 0.9f};
    for (int i = 0; i < 4; i++) {
        const float x = 1.0f + fr[i] * 0x1p-7f;
        int up = 0, other = 0;
        const int N = 20000;
        for (int j = 0; j < N; j++) {
            const uint16_t r = f32_to_bf16_sr(x, (uint32_t)(rng_u64_key(rng_key(9), (uint64_t)j) >> 48));
            up += r == 0x3f81;
            other += r != 0x3f80 && r != 0x3f81;
        }
        const double want = fr[i] * N, sd = sqrt(N * fr[i] * (1 - fr[i]));
        CHECK(other == 0 && fabs(up - want) <= 5 * sd + 1, "1 + %g ulp: rounded up %d of %d times (want %.0f)", fr[i], up,
              N, want);
    }
}

typedef struct {
    moe_layer *l;
    ptable pt;
    optset os;
    fused *fu;
} twin;

static void twin_make(twin *t, const moe_layer_config *c, const moe_adam_config *ac, int flags, int lazy) {
    memset(t, 0, sizeof *t);
    CHECK(layer_create_opts(&t->l, c, 7, NULL, flags) == MOE_OK, "layer (flags %d)", flags);
    CHECK(layer_ptable(&t->pt, "moe", t->l) == MOE_OK, "table");
    CHECK(optset_create(&t->os, &t->pt, ac, OPT_ALL) == MOE_OK, "optimiser");
    CHECK(fused_create(&t->fu, t->l, &t->pt, &t->os, 0.0f) == MOE_OK, "fused updates bound");
    adam_set_lazy(t->os.a[0], lazy);
}

static void twin_free(twin *t) {
    fused_free(t->fu);
    optset_free(&t->os);
    ptable_free(&t->pt);
    moe_layer_free(t->l);
}

/* One training step of t on batch s: forward, backward (fused updates; dx [B*D] made, not
 * added to), the optimiser's step */
static void step(twin *t, int s, float *y, float *dx) {
    float x[B * D], dy[B * D];
    memset(dx, 0, sizeof(float) * B * D);
    t_fill_normal(x, B * D, 100 + (uint64_t)s);
    t_fill_normal(dy, B * D, 200 + (uint64_t)s);
    const float lr = 0.02f;
    CHECK(fused_begin(t->fu, lr) == MOE_OK, "begin");
    CHECK(moe_layer_forward(t->l, y, x, B, MOE_TRAIN, NULL, NULL) == MOE_OK, "forward");
    CHECK(moe_layer_backward(t->l, dx, dy) == MOE_OK, "backward");
    CHECK(optset_step(&t->os, &t->pt, lr, OPT_ALL) == MOE_OK, "step");
}

static size_t numel_of(moe_layer *l, const char *name) {
    moe_param p;
    return moe_layer_find_param(l, name, &p) == MOE_OK ? p.numel : 0;
}

/* 1 when tensor `name` has the same bits in both layers (as float32) */
static int same_param(moe_layer *a, moe_layer *b, const char *name) {
    const size_t n = numel_of(a, name);
    if (n == 0) return numel_of(b, name) == 0;
    float *pa = malloc(sizeof(float) * n), *pb = malloc(sizeof(float) * n);
    const int same = moe_layer_get_param(a, name, pa, n) == MOE_OK && moe_layer_get_param(b, name, pb, n) == MOE_OK &&
                     memcmp(pa, pb, sizeof(float) * n) == 0;
    free(pa);
    free(pb);
    return same;
}

/* the bfloat16 layer's w (name) against the float32 twin's: each value one of the two bfloat16
 * neighbours of the twin's. Where the twin's value is not one (*inexact counts them), ups[q]
 * counts those rounded away from zero and want[q] their expected count (the dropped fractions
 * summed), q = 0 for fractions below 1/2 and 1 above: rounding to nearest would give ups[0] = 0
 * and ups[1] = all, not the sums */
static int brackets(moe_layer *h, moe_layer *f, const char *name, double *ups, double *want, int *inexact) {
    const size_t n = numel_of(h, name);
    float *ph = malloc(sizeof(float) * n), *pf = malloc(sizeof(float) * n);
    moe_layer_get_param(h, name, ph, n);
    moe_layer_get_param(f, name, pf, n);
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        const uint32_t u = f32_bits(pf[i]);
        const float lo = bf16_to_f32((uint16_t)(u >> 16)), hi = bf16_to_f32((uint16_t)((u >> 16) + 1));
        if (lo == pf[i]) {
            ok &= ph[i] == lo;
            continue;
        }
        ok &= ph[i] == lo || ph[i] == hi;
        const double frac = (fabs((double)pf[i]) - fabs((double)lo)) / (fabs((double)hi) - fabs((double)lo));
        ups[frac >= 0.5] += ph[i] == hi;
        want[frac >= 0.5] += frac;
        (*inexact)++;
    }
    free(ph);
    free(pf);
    return ok;
}

/* A float32 twin given the bfloat16 layer's weights computes the same bits; one step later the
 * bfloat16 weights bracket the twin's */
static void against_f32(const moe_layer_config *c, const moe_adam_config *ac, const char *what) {
    twin h, f;
    twin_make(&h, c, ac, LAYER_FUSED | LAYER_BF16, 1);
    twin_make(&f, c, ac, LAYER_FUSED, 1);
    const char *W[2] = {"experts.w1", "experts.w2"};
    const size_t nw = numel_of(h.l, W[0]);
    float *w = malloc(sizeof(float) * nw);
    for (int i = 0; i < 2; i++) {
        CHECK(moe_layer_get_param(h.l, W[i], w, nw) == MOE_OK, "get %s", W[i]);
        CHECK(moe_layer_set_param(f.l, W[i], w, nw) == MOE_OK, "set %s", W[i]);
    }
    free(w);
    float yh[B * D], yf[B * D], dxh[B * D], dxf[B * D];
    double ups[2] = {0.0, 0.0}, want[2] = {0.0, 0.0};
    int inexact = 0, ok = 1;
    step(&h, 0, yh, dxh);
    step(&f, 0, yf, dxf);
    CHECK(memcmp(yh, yf, sizeof yh) == 0, "%s: forward, the float32 twin's bits", what);
    CHECK(memcmp(dxh, dxf, sizeof dxh) == 0, "%s: backward, the float32 twin's bits", what);
    const char *rest[6] = {"gate.w_gate", "gate.w_noise", "gate2.w_gate", "gate2.w_noise", "experts.b1", "experts.b2"};
    for (int i = 0; i < 6; i++) CHECK(same_param(h.l, f.l, rest[i]), "%s: %s after the step, the twin's bits", what, rest[i]);
    for (int i = 0; i < 2; i++) ok &= brackets(h.l, f.l, W[i], ups, want, &inexact);
    CHECK(ok, "%s: every bfloat16 weight is a neighbour of the float32 twin's", what);
    CHECK(inexact > 100, "%s: the step moved weights off the bfloat16 grid (%d)", what, inexact);
    for (int q = 0; q < 2; q++)
        CHECK(fabs(ups[q] - want[q]) <= 5 * sqrt(want[q]) + 2,
              "%s: fractions %s 1/2 rounded up %.0f times, the dropped fractions say %.1f", what, q ? "above" : "below",
              ups[q], want[q]);
    twin_free(&h);
    twin_free(&f);
}

/* twins over 4 steps: same bits in both (bfloat16 weights, the rest, optimiser state) */
static int same_run(const moe_layer_config *c, const moe_adam_config *ac, int threads_a, int threads_b, int lazy_b) {
    twin a, b;
    twin_make(&a, c, ac, LAYER_FUSED | LAYER_BF16, 1);
    twin_make(&b, c, ac, LAYER_FUSED | LAYER_BF16, lazy_b);
    float y[B * D], dx[B * D];
    for (int s = 0; s < 4; s++) {
        moe_set_threads(threads_a);
        step(&a, s, y, dx);
        moe_set_threads(threads_b);
        step(&b, s, y, dx);
    }
    moe_set_threads(2);
    int same = 1;
    const char *all[8] = {"gate.w_gate",   "gate.w_noise", "gate2.w_gate", "gate2.w_noise",
                          "experts.w1",    "experts.b1",   "experts.w2",   "experts.b2"};
    for (int i = 0; i < 8; i++) same &= same_param(a.l, b.l, all[i]);
    moe_adam_state_view sa, sb;
    moe_adam_state(a.os.a[0], &sa);
    moe_adam_state(b.os.a[0], &sb);
    same &= sa.v_count == sb.v_count && memcmp(sa.v, sb.v, sizeof(float) * sa.v_count) == 0;
    twin_free(&a);
    twin_free(&b);
    return same;
}

static void misuse(const moe_layer_config *c) {
    moe_layer *l = (moe_layer *)1;
    CHECK(layer_create_opts(&l, c, 7, NULL, LAYER_BF16) == MOE_ERR_CONFIG && l == NULL,
          "bfloat16 without fused updates refused");
    CHECK(layer_create_opts(&l, c, 7, NULL, LAYER_FUSED | LAYER_BF16) == MOE_OK, "bfloat16 layer");
    CHECK(layer_is_bf16(l), "it says so");
    moe_param p;
    CHECK(moe_layer_find_param(l, "experts.w1", &p) == MOE_OK && p.data == NULL && p.data_bf16 && !p.grad,
          "w1: bfloat16 view only");
    CHECK(moe_layer_find_param(l, "experts.b1", &p) == MOE_OK && p.data && !p.data_bf16, "b1: float32");
    const size_t n = numel_of(l, "experts.w2");
    float *v = malloc(sizeof(float) * n), *back = malloc(sizeof(float) * n);
    t_fill_normal(v, n, 3);
    CHECK(moe_layer_set_param(l, "experts.w2", v, n) == MOE_OK && moe_layer_get_param(l, "experts.w2", back, n) == MOE_OK,
          "set and get w2");
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= back[i] == bf16_to_f32(f32_to_bf16(v[i]));
    CHECK(ok, "set rounds to nearest, get widens");
    v[3] = NAN;
    CHECK(moe_layer_set_param(l, "experts.w2", v, n) == MOE_ERR_NONFINITE, "NaN refused");
    free(v);
    free(back);
    moe_layer *f = NULL;
    layer_create_opts(&f, c, 7, NULL, LAYER_FUSED);
    size_t nh = 0, nf = 0;
    moe_layer_arena(l, NULL, NULL, &nh);
    moe_layer_arena(f, NULL, NULL, &nf);
    CHECK(nh + 2 * numel_of(l, "experts.w1") <= nf, "the float arena leaves out w1 and w2 (%zu against %zu)", nh, nf);
    moe_layer_free(f);
    moe_layer_free(l);
}

int main(void) {
    roundings();
    moe_layer_config flat = moe_layer_config_default();
    flat.d = D;
    flat.h = H;
    flat.n = 16;
    flat.k = 2;
    flat.bias = 1;
    moe_layer_config hier = flat;
    hier.n = MAXN;
    hier.groups = 4;
    hier.k_groups = 2;
    hier.bias = 0;
    const moe_adam_config fac = moe_adam_config_factored(), adam = moe_adam_config_default();
    against_f32(&flat, &fac, "flat, factored");
    against_f32(&flat, &adam, "flat, Adam");
    against_f32(&hier, &fac, "hierarchical, factored");
    CHECK(same_run(&flat, &fac, 1, 2, 1), "flat, factored: 1 and 2 threads give the same bits");
    CHECK(same_run(&hier, &adam, 1, 2, 1), "hierarchical, Adam: 1 and 2 threads give the same bits");
    CHECK(same_run(&flat, &fac, 2, 2, 0), "flat, factored: lazy and eager decay give the same bits");
    misuse(&flat);
    return test_finish("test_bf16");
}
