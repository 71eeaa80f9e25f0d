/* fused.c - fused expert updates (fused.h): the layer's updater, which takes one expert's
 * gradients from backward, clips them by their own norm and steps that expert's units of the
 * layer group's optimiser (optim_fused.h). */
#include "train/fused.h"
#include "base/internal.h"
#include "base/rng.h"
#include "base/vmath.h"
#include "moe/layer_table.h"
#include "train/optim_fused.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { F_W1, F_B1, F_W2, F_B2, F_COUNT };
static const char *const SUFFIX[F_COUNT] = {"experts.w1", "experts.b1", "experts.w2", "experts.b2"};

struct fused {
    moe_adam *a;            /* the layer group's optimiser (borrowed) */
    float *params;          /* the group's arena */
    size_t off[F_COUNT];    /* expert 0's first float in the group */
    size_t unit[F_COUNT];   /* floats per expert (0: no such tensor) */
    uint16_t *half[F_COUNT]; /* bfloat16 storage (NULL: float32 in the arena) */
    int e0;                 /* the first expert held here */
    int nloc;
    float clip, lr;
    double *norm2;          /* [nloc] this step's squared norm per expert, before clipping */
};

static moe_status apply(void *ctx, int e, float *gw1, float *gb1, float *gw2, float *gb2) {
    fused *f = ctx;
    float *g[F_COUNT] = {gw1, gb1, gw2, gb2};
    double s = 0.0;
    for (int i = 0; i < F_COUNT; i++)
        if (f->unit[i] && g[i]) s += vsumsq_f64(g[i], f->unit[i]);
    f->norm2[e] = s;
    if (!isfinite(s)) /* before any of its tensors moves */
        return moe_fail(MOE_ERR_NONFINITE, "expert %d's gradient contains NaN or Inf; it was left unchanged", e);
    if (f->clip > 0.0f && sqrt(s) > f->clip) {
        const float c = (float)(f->clip / sqrt(s));
        for (int i = 0; i < F_COUNT; i++)
            for (size_t j = 0; f->unit[i] && g[i] && j < f->unit[i]; j++) g[i][j] *= c;
    }
    for (int i = 0; i < F_COUNT; i++) {
        if (!f->unit[i] || !g[i]) continue;
        /* finite: s, their squared sum, is (and clipping only scales them down) */
        moe_status st = adam_step_unit_finite(f->a, f->off[i] + (size_t)e * f->unit[i], f->params, g[i], f->lr);
        if (st) return st;
    }
    return MOE_OK;
}

/* The layer's expert tensors in pt: their group, offsets and units; the span they fill */
static moe_status find_tensors(fused *f, const ptable *pt, int *group, size_t *span0, size_t *span1) {
    *group = -1;
    *span0 = (size_t)-1;
    *span1 = 0;
    for (int i = 0; i < pt->count; i++) {
        const ptensor *t = &pt->t[i];
        if (!t->expert || t->grad) continue;
        const size_t nl = strlen(t->name);
        for (int k = 0; k < F_COUNT; k++) {
            const size_t ns = strlen(SUFFIX[k]);
            if (nl < ns || strcmp(t->name + nl - ns, SUFFIX[k]) != 0) continue;
            if (*group >= 0 && *group != t->group)
                return moe_fail(MOE_ERR_CONFIG, "fused updates serve one layer: '%s' is in another group", t->name);
            *group = t->group;
            f->off[k] = t->offset;
            f->unit[k] = t->numel / (size_t)t->ne;
            f->half[k] = t->bf16;
            f->nloc = t->ne;
            f->e0 = t->e0;
            if (t->offset < *span0) *span0 = t->offset;
            if (t->offset + MOE_ARENA_PAD(t->numel) > *span1) *span1 = t->offset + MOE_ARENA_PAD(t->numel);
        }
    }
    if (*group < 0 || !f->unit[F_W1] || !f->unit[F_W2])
        return moe_fail(MOE_ERR_CONFIG, "the table has no layer made for fused updates");
    for (int i = 0; i < pt->count; i++) /* nothing with a gradient may sit in the span */
        if (pt->t[i].group == *group && pt->t[i].grad && pt->t[i].offset < *span1 &&
            pt->t[i].offset + pt->t[i].numel > *span0)
            return moe_fail(MOE_ERR_CONFIG, "'%s' lies among the experts' tensors", pt->t[i].name);
    return MOE_OK;
}

moe_status fused_create(fused **out, moe_layer *l, const ptable *pt, optset *os, float clip) {
    if (!out || !l || !pt || !os) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument to fused_create");
    *out = NULL;
    fused *f = calloc(1, sizeof *f);
    if (!f) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    int g;
    size_t s0, s1;
    moe_status st = find_tensors(f, pt, &g, &s0, &s1);
    if (!st && !(f->a = os->a[g])) st = moe_fail(MOE_ERR_CONFIG, "the layer's group has no optimiser");
    if (!st && !(f->norm2 = calloc((size_t)f->nloc, sizeof(double)))) st = moe_fail(MOE_ERR_NOMEM, "out of memory");
    if (!st) st = adam_set_fused_span(f->a, s0, s1);
    uint64_t seed = 0;
    moe_layer_get_rng(l, &seed, NULL);
    for (int k = 0; k < F_COUNT && !st; k++) {
        if (!f->unit[k]) continue;
        /* bfloat16: rounded with bits of the layer's seed and the tensor */
        st = f->half[k] ? adam_add_units_bf16(f->a, f->off[k], f->nloc, f->unit[k], f->half[k],
                                              rng_key(seed ^ (0xbf160000ULL + (uint64_t)k)), f->e0)
                        : adam_add_units(f->a, f->off[k], f->nloc, f->unit[k]);
    }
    if (!st) {
        f->params = pt->g[g].params;
        f->clip = clip;
        const expert_updater up = {apply, f};
        st = layer_set_updater(l, &up);
    }
    if (st) {
        fused_free(f);
        return st;
    }
    *out = f;
    return MOE_OK;
}

void fused_free(fused *f) {
    if (!f) return;
    free(f->norm2);
    free(f);
}

moe_status fused_begin(fused *f, float lr) {
    moe_status st = adam_prepare(f->a); /* before backward's threads use it */
    if (st) return st;
    memset(f->norm2, 0, sizeof(double) * (size_t)f->nloc);
    f->lr = lr;
    return MOE_OK;
}

double fused_norm2(const fused *f) {
    double s = 0.0;
    for (int e = 0; e < f->nloc; e++) s += f->norm2[e];
    return s;
}
