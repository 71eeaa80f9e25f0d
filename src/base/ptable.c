/* ptable.c - building the parameter table (ptable.h). */
#include "base/ptable.h"
#include "base/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ptable_group(ptable *pt, const char *name, const char *prefix, float *params, float *grads, size_t count,
                 int sharded) {
    if (pt->ngroups >= PT_MAX_GROUPS) {
        moe_fail(MOE_ERR_CONFIG, "more than %d parameter groups", PT_MAX_GROUPS);
        return -1;
    }
    pgroup *g = &pt->g[pt->ngroups];
    snprintf(g->name, sizeof g->name, "%s", name);
    snprintf(g->prefix, sizeof g->prefix, "%s", prefix ? prefix : name);
    g->params = params;
    g->grads = grads;
    g->count = count;
    g->gcount = count;
    g->sharded = sharded;
    return pt->ngroups++;
}

/* A new entry of group g named "<prefix>.<name>" with its shape and expert range, not yet
 * counted (*out; the caller sets its storage and then counts it) */
static moe_status push(ptable *pt, int g, const char *name, int ndim, const int64_t *shape, int matrix, int e0,
                       int ne, int n, ptensor **out) {
    *out = NULL;
    if (g < 0 || g >= pt->ngroups) return moe_fail(MOE_ERR_INVALID_ARG, "tensor '%s' of no group", name);
    const pgroup *gr = &pt->g[g];
    if (pt->count == pt->cap) {
        int cap = pt->cap ? 2 * pt->cap : 32;
        ptensor *t = realloc(pt->t, sizeof *t * (size_t)cap);
        if (!t) return moe_fail(MOE_ERR_NOMEM, "cannot grow the parameter table");
        pt->t = t;
        pt->cap = cap;
    }
    ptensor *t = &pt->t[pt->count];
    memset(t, 0, sizeof *t);
    if (snprintf(t->name, sizeof t->name, "%s.%s", gr->prefix, name) >= (int)sizeof t->name)
        return moe_fail(MOE_ERR_INVALID_ARG, "tensor name '%s.%s' too long", gr->prefix, name);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim && i < 3; i++) {
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    t->group = g;
    t->matrix = matrix;
    t->expert = ne > 0;
    t->e0 = e0;
    t->ne = ne;
    t->n = n;
    *out = t;
    return MOE_OK;
}

moe_status ptable_add(ptable *pt, int g, const char *name, int ndim, const int64_t *shape, float *data, float *grad,
                      int matrix, int e0, int ne, int n) {
    ptensor *t = NULL;
    moe_status st = push(pt, g, name, ndim, shape, matrix, e0, ne, n, &t);
    if (st) return st;
    const pgroup *gr = &pt->g[g];
    if (data < gr->params || data + t->numel > gr->params + gr->count)
        return moe_fail(MOE_ERR_INVALID_ARG, "tensor '%s' lies outside its group", t->name);
    t->data = data;
    t->grad = grad;
    t->offset = (size_t)(data - gr->params);
    pt->count++;
    return MOE_OK;
}

moe_status ptable_add_bf16(ptable *pt, int g, const char *name, int ndim, const int64_t *shape, uint16_t *data,
                           size_t offset, int matrix, int e0, int ne, int n) {
    ptensor *t = NULL;
    moe_status st = push(pt, g, name, ndim, shape, matrix, e0, ne, n, &t);
    if (st) return st;
    if (!data || offset > pt->g[g].count || t->numel > pt->g[g].count - offset)
        return moe_fail(MOE_ERR_INVALID_ARG, "tensor '%s' lies outside its group", t->name);
    t->bf16 = data;
    t->offset = offset;
    pt->count++;
    return MOE_OK;
}

const ptensor *ptable_find(const ptable *pt, const char *name) {
    for (int i = 0; name && i < pt->count; i++)
        if (strcmp(pt->t[i].name, name) == 0) return &pt->t[i];
    return NULL;
}

int ptable_group_index(const ptable *pt, const char *name) {
    for (int g = 0; pt && name && g < pt->ngroups; g++)
        if (strcmp(pt->g[g].name, name) == 0) return g;
    return -1;
}

int64_t ptable_numel(const ptable *pt) {
    int64_t n = 0;
    for (int i = 0; i < pt->count; i++) n += (int64_t)pt->t[i].numel;
    return n;
}

void ptable_free(ptable *pt) {
    if (!pt) return;
    free(pt->t);
    memset(pt, 0, sizeof *pt);
}

moe_status ptable_param(const ptable *pt, int i, moe_param *p) {
    if (!pt) return moe_fail(MOE_ERR_INVALID_ARG, "model is NULL");
    if (!p || i < 0 || i >= pt->count) return moe_fail(MOE_ERR_INVALID_ARG, "tensor index %d out of range", i);
    const ptensor *t = &pt->t[i];
    p->name = t->name;
    p->ndim = t->ndim;
    for (int j = 0; j < 3; j++) p->shape[j] = j < t->ndim ? t->shape[j] : 0;
    p->numel = t->numel;
    p->data = t->data;
    p->data_bf16 = t->bf16;
    p->grad = t->grad;
    p->expert_first = t->expert ? t->e0 : 0;
    p->experts = t->expert ? t->n : 0;
    return moe_ok();
}
