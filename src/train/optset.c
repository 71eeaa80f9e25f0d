/* optset.c - one Adam per parameter group, gradient norm and clipping over the table. */
#include "train/optset.h"
#include "base/internal.h"
#include "parallel/comm.h"

#include <string.h>

moe_status optset_create(optset *o, const ptable *pt, const moe_adam_config *cfg, uint32_t mask) {
    memset(o, 0, sizeof *o);
    o->factored = cfg->factored;
    moe_status st = MOE_OK;
    for (int g = 0; g < pt->ngroups && !st; g++)
        if (mask >> g & 1) st = moe_adam_create(&o->a[g], pt->g[g].count, cfg);
    /* each matrix, or stack of them ([count, rows, cols]), keeps factored row/column means */
    for (int i = 0; i < pt->count && !st; i++) {
        const ptensor *t = &pt->t[i];
        if (!t->matrix || !o->a[t->group]) continue;
        int64_t count = 1;
        for (int j = 0; j < t->ndim - 2; j++) count *= t->shape[j];
        st = moe_adam_set_matrices(o->a[t->group], t->offset, count, t->shape[t->ndim - 2], t->shape[t->ndim - 1]);
    }
    if (st) optset_free(o);
    return st;
}

void optset_free(optset *o) {
    if (!o) return;
    for (int g = 0; g < PT_MAX_GROUPS; g++) moe_adam_free(o->a[g]);
    memset(o, 0, sizeof *o);
}

moe_status optset_step(optset *o, const ptable *pt, float lr, uint32_t mask) {
    for (int g = 0; g < pt->ngroups; g++) {
        if (!(mask >> g & 1) || !o->a[g]) continue;
        moe_status st = moe_adam_step(o->a[g], pt->g[g].params, pt->g[g].grads, lr);
        if (st) return moe_fail(st, "the optimiser of '%s': %s", pt->g[g].name, moe_last_error());
    }
    return MOE_OK;
}

int64_t optset_floats(const optset *o) {
    int64_t f = 0;
    for (int g = 0; g < PT_MAX_GROUPS; g++) {
        moe_adam_state_view sv;
        if (o->a[g] && !moe_adam_state(o->a[g], &sv)) f += (int64_t)(sv.m_count + sv.v_count);
    }
    return f;
}

static double sum_squares(const float *g, size_t n) {
    double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return s;
}

moe_status ptable_grad_norm2(const ptable *pt, moe_comm *comm, uint32_t mask, double *out) {
    double shared = 0.0, mine = 0.0;
    /* a group held whole is one sum over its arena (padding is zero); a sharded one is summed
     * per tensor, its experts' part over the ranks */
    for (int g = 0; g < pt->ngroups; g++)
        if ((mask >> g & 1) && !pt->g[g].sharded) shared += sum_squares(pt->g[g].grads, pt->g[g].gcount);
    for (int i = 0; i < pt->count; i++) {
        const ptensor *t = &pt->t[i];
        if (!(mask >> t->group & 1) || !pt->g[t->group].sharded || !t->grad) continue;
        const double s = sum_squares(t->grad, t->numel);
        if (t->expert && t->ne < t->n) mine += s;
        else shared += s;
    }
    moe_status st = MOE_OK;
    if (comm && moe_comm_size(comm) > 1) st = comm_allreduce_sum_f64(comm, &mine, 1);
    *out = shared + mine;
    return st;
}

void ptable_scale_grads(const ptable *pt, uint32_t mask, float a) {
    for (int g = 0; g < pt->ngroups; g++) {
        if (!(mask >> g & 1)) continue;
        float *grad = pt->g[g].grads;
        const size_t n = pt->g[g].gcount;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) grad[i] *= a;
    }
}
