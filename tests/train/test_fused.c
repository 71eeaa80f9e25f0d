/* test_fused.c - fused expert updates (train/fused.h) against the unfused step: a layer whose
 * experts keep gradients, stepped by the optimiser after backward, and a twin made for fused
 * updates, fed the same batches. Without clipping the two give the same bits (parameters and
 * optimiser state), with the factored optimiser (untouched experts' decay applied lazily, and
 * eagerly) and with Adam (beta1 > 0: untouched experts stepped at once); with clipping the
 * fused twin equals the unfused step clipped per expert and the router by its own norm. Small
 * batches leave most experts without a token. Also: the errors of misuse. */
#define T_FAIL_DETAIL moe_last_error()
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

enum { D = 8, H = 6, B = 3 };

typedef struct {
    moe_layer *l;
    ptable pt;
    optset os;
    fused *fu;
} twin;

static void twin_make(twin *t, const moe_layer_config *c, const moe_adam_config *ac, int fused_, float clip, int lazy) {
    memset(t, 0, sizeof *t);
    moe_status st = fused_ ? layer_create_opts(&t->l, c, 7, NULL, LAYER_FUSED) : moe_layer_create(&t->l, c, 7);
    CHECK(st == MOE_OK, "layer created (fused %d)", fused_);
    CHECK(layer_ptable(&t->pt, "moe", t->l) == MOE_OK, "table");
    CHECK(optset_create(&t->os, &t->pt, ac, OPT_ALL) == MOE_OK, "optimiser");
    if (fused_) {
        CHECK(fused_create(&t->fu, t->l, &t->pt, &t->os, clip) == MOE_OK, "fused updates bound");
        adam_set_lazy(t->os.a[0], lazy);
    }
}

static void twin_free(twin *t) {
    fused_free(t->fu);
    optset_free(&t->os);
    ptable_free(&t->pt);
    moe_layer_free(t->l);
}

/* The unfused reference of a clipped fused step: each expert's gradient (w1, b1, w2, b2) scaled
 * to `clip` when its norm is above, the router's together by their norm */
static void clip_like_fused(twin *t, float clip) {
    const moe_layer_config c = moe_layer_get_config(t->l);
    moe_param w[4];
    const char *names[4] = {"experts.w1", "experts.b1", "experts.w2", "experts.b2"};
    for (int i = 0; i < 4; i++)
        if (moe_layer_find_param(t->l, names[i], &w[i]) != MOE_OK) w[i].grad = NULL;
    for (int e = 0; e < c.n; e++) {
        double s = 0.0;
        for (int i = 0; i < 4; i++) {
            if (!w[i].grad) continue;
            const size_t u = w[i].numel / (size_t)c.n;
            for (size_t j = 0; j < u; j++) s += (double)w[i].grad[e * u + j] * w[i].grad[e * u + j];
        } /* (summed in another order than the updater's: the comparison allows for it) */
        if (!(sqrt(s) > clip)) continue;
        const float a = (float)(clip / sqrt(s));
        for (int i = 0; i < 4; i++) {
            if (!w[i].grad) continue;
            const size_t u = w[i].numel / (size_t)c.n;
            for (size_t j = 0; j < u; j++) w[i].grad[e * u + j] *= a;
        }
    }
    double r = 0.0;
    const int nr = moe_layer_num_params(t->l);
    for (int i = 0; i < nr; i++) {
        moe_param p;
        moe_layer_param(t->l, i, &p);
        if (strncmp(p.name, "experts.", 8) == 0) continue;
        for (size_t j = 0; j < p.numel; j++) r += (double)p.grad[j] * p.grad[j];
    }
    if (!(sqrt(r) > clip)) return;
    for (int i = 0; i < nr; i++) {
        moe_param p;
        moe_layer_param(t->l, i, &p);
        if (strncmp(p.name, "experts.", 8) == 0) continue;
        for (size_t j = 0; j < p.numel; j++) p.grad[j] *= (float)(clip / sqrt(r));
    }
}

/* worst relative difference of the two arenas (0: the same bits) and of the optimiser states */
static double compare(twin *a, twin *b, int *same_bits) {
    float *pa, *pb;
    size_t na, nb;
    moe_layer_arena(a->l, &pa, NULL, &na);
    moe_layer_arena(b->l, &pb, NULL, &nb);
    moe_adam_state_view sa, sb;
    moe_adam_state(a->os.a[0], &sa);
    moe_adam_state(b->os.a[0], &sb);
    *same_bits = na == nb && memcmp(pa, pb, sizeof(float) * na) == 0 && sa.v_count == sb.v_count &&
                 memcmp(sa.v, sb.v, sizeof(float) * sa.v_count) == 0 && *sa.step == *sb.step &&
                 (!sa.m || memcmp(sa.m, sb.m, sizeof(float) * sa.m_count) == 0);
    return na == nb ? t_rel_err(pb, pa, na) : 1.0;
}

/* Steps both twins over the same batches; returns the worst relative difference */
static double run(const moe_layer_config *c, const moe_adam_config *ac, float clip, int ref_clips, int lazy, int steps,
                  int *same) {
    twin a, b;
    twin_make(&a, c, ac, 0, 0.0f, 1);
    twin_make(&b, c, ac, 1, clip, lazy);
    float x[B * D], y[B * D], dy[B * D], dx[B * D];
    int untouched = 0;
    for (int s = 0; s < steps; s++) {
        const float lr = 0.01f * (float)(s + 1);
        t_fill_normal(x, B * D, 100 + (uint64_t)s);
        t_fill_normal(dy, B * D, 200 + (uint64_t)s);
        moe_layer_zero_grad(a.l);
        moe_layer_zero_grad(b.l);
        CHECK(moe_layer_forward(a.l, y, x, B, MOE_TRAIN, NULL, NULL) == MOE_OK, "forward");
        CHECK(moe_layer_backward(a.l, dx, dy) == MOE_OK, "backward");
        if (clip > 0.0f && ref_clips) clip_like_fused(&a, clip);
        CHECK(optset_step(&a.os, &a.pt, lr, OPT_ALL) == MOE_OK, "unfused step");
        CHECK(fused_begin(b.fu, lr) == MOE_OK, "fused begin");
        CHECK(moe_layer_forward(b.l, y, x, B, MOE_TRAIN, NULL, NULL) == MOE_OK, "fused forward");
        CHECK(moe_layer_backward(b.l, dx, dy) == MOE_OK, "fused backward");
        double r2 = 0.0;
        CHECK(ptable_grad_norm2(&b.pt, NULL, OPT_ALL, &r2) == MOE_OK, "norm");
        if (clip > 0.0f && sqrt(r2) > clip) ptable_scale_grads(&b.pt, OPT_ALL, (float)(clip / sqrt(r2)));
        CHECK(optset_step(&b.os, &b.pt, lr, OPT_ALL) == MOE_OK, "fused step");
        int counts[64];
        moe_layer_counts(b.l, counts);
        for (int e = 0; e < c->n; e++) untouched += counts[e] == 0;
    }
    CHECK(untouched > steps, "most experts got no token in some step (%d expert-steps without)", untouched);
    const double worst = compare(&a, &b, same);
    twin_free(&a);
    twin_free(&b);
    return worst;
}

static void misuse(const moe_layer_config *c) {
    const moe_adam_config ac = moe_adam_config_factored();
    moe_layer *l = NULL;
    CHECK(layer_create_opts(&l, c, 7, NULL, LAYER_FUSED) == MOE_OK, "fused layer");
    float *g = (float *)1;
    size_t n = 0;
    moe_layer_arena(l, NULL, &g, &n);
    CHECK(g == NULL && n > 0, "a fused layer has no gradient arena to give");
    moe_param p;
    CHECK(moe_layer_find_param(l, "experts.w1", &p) == MOE_OK && p.grad == NULL, "nor expert gradients");
    CHECK(moe_layer_find_param(l, "gate.w_gate", &p) == MOE_OK && p.grad != NULL, "the router keeps its own");
    float x[B * D], y[B * D], dx[B * D];
    t_fill_normal(x, B * D, 5);
    CHECK(moe_layer_forward(l, y, x, B, MOE_TRAIN, NULL, NULL) == MOE_OK, "forward without an updater");
    CHECK(moe_layer_backward(l, dx, x) == MOE_ERR_STATE, "backward without an updater refused");
    ptable pt = {0};
    optset os;
    layer_ptable(&pt, "moe", l);
    optset_create(&os, &pt, &ac, OPT_ALL);
    fused *f = NULL;
    CHECK(fused_create(&f, l, &pt, &os, 0.0f) == MOE_OK, "bound");
    CHECK(fused_begin(f, 0.01f) == MOE_OK, "begin");
    CHECK(moe_layer_forward(l, y, x, B, MOE_TRAIN, NULL, NULL) == MOE_OK, "forward");
    CHECK(moe_layer_backward(l, dx, x) == MOE_OK, "backward");
    CHECK(moe_layer_backward(l, dx, x) == MOE_ERR_STATE, "a second backward in one step is refused: %s", moe_last_error());
    moe_layer *plain = NULL;
    moe_layer_create(&plain, c, 7);
    const expert_updater up = {NULL, NULL};
    CHECK(layer_set_updater(plain, &up) != MOE_OK, "an updater needs a layer made for it");
    moe_layer_free(plain);
    fused_free(f);
    optset_free(&os);
    ptable_free(&pt);
    moe_layer_free(l);
}

int main(void) {
    moe_layer_config flat = moe_layer_config_default();
    flat.d = D;
    flat.h = H;
    flat.n = 16;
    flat.k = 2;
    flat.bias = 1;
    moe_layer_config hier = flat;
    hier.n = 24;
    hier.groups = 4;
    hier.k_groups = 2;
    hier.bias = 0;
    const moe_adam_config fac = moe_adam_config_factored(), adam = moe_adam_config_default();
    const moe_layer_config *cfgs[2] = {&flat, &hier};
    for (int i = 0; i < 2; i++) {
        const char *what = i ? "hierarchical" : "flat";
        int same = 0;
        double r = run(cfgs[i], &fac, 0.0f, 0, 1, 6, &same);
        CHECK(same, "%s, factored, lazy: the unfused step's bits (rel. err %.3g)", what, r);
        r = run(cfgs[i], &fac, 0.0f, 0, 0, 6, &same);
        CHECK(same, "%s, factored, eager: the unfused step's bits (rel. err %.3g)", what, r);
        r = run(cfgs[i], &adam, 0.0f, 0, 1, 6, &same);
        CHECK(same, "%s, Adam (untouched experts stepped): the unfused step's bits (rel. err %.3g)", what, r);
        r = run(cfgs[i], &fac, 0.05f, 1, 1, 6, &same);
        CHECK(r < 1e-6, "%s, clipped: per expert and the router by its own norm (rel. err %.3g)", what, r);
        /* and the clipping is real: an unclipped reference differs */
        r = run(cfgs[i], &fac, 0.05f, 0, 1, 6, &same);
        CHECK(!same && r > 1e-4, "%s, clipped against unclipped differ (rel. err %.3g)", what, r);
    }
    misuse(&flat);
    return test_finish("test_fused");
}
