/* model_table.c - the models' parameter tables (model_table.h), from their public parameter
 * lists: the dense arena of each model as one group (the translation model's cut before its
 * baseline regressors), each MoE layer as another (moe/layer_table.c). */
#include "models/model_table.h"
#include "base/internal.h"
#include "models/s2s.h"
#include "moe/layer_table.h"

#include <string.h>

/* tensors of params[lo, hi) of a model's list, into group g */
typedef moe_status (*param_at)(void *model, int i, moe_param *p);

static moe_status add_dense(ptable *pt, int g, void *model, int np, param_at at, const float *lo, const float *hi) {
    moe_status st = MOE_OK;
    for (int i = 0; i < np && !st; i++) {
        moe_param p;
        if ((st = at(model, i, &p))) break;
        if (p.data < lo || p.data >= hi) continue;
        st = ptable_add(pt, g, p.name, p.ndim, p.shape, p.data, p.grad, p.ndim >= 2, 0, 0, 0);
    }
    return st;
}

static moe_status lm_at(void *m, int i, moe_param *p) { return moe_lm_param(m, i, p); }
static moe_status s2s_at(void *m, int i, moe_param *p) { return moe_s2s_param(m, i, p); }

moe_status lm_ptable(ptable *pt, moe_lm *m) {
    float *params, *grads;
    size_t count;
    moe_status st = moe_lm_arena(m, &params, &grads, &count);
    if (st) return st;
    const int g = ptable_group(pt, "lm", NULL, params, grads, count, 0);
    if (g < 0) return MOE_ERR_CONFIG;
    if ((st = add_dense(pt, g, m, moe_lm_num_params(m), lm_at, params, params + count))) return st;
    return moe_lm_moe(m) ? layer_ptable(pt, "moe", moe_lm_moe(m)) : MOE_OK;
}

moe_status s2s_ptable(ptable *pt, moe_s2s *m) {
    float *params, *grads;
    size_t count;
    moe_status st = moe_s2s_arena(m, &params, &grads, &count);
    if (st) return st;
    const size_t cut = s2s_baseline_offset(m);
    const int g = ptable_group(pt, "s2s", NULL, params, grads, cut, 0);
    if (g < 0) return MOE_ERR_CONFIG;
    if ((st = add_dense(pt, g, m, moe_s2s_num_params(m), s2s_at, params, params + cut))) return st;
    for (int side = 0; side < 2 && !st; side++)
        if (moe_s2s_moe(m, side)) st = layer_ptable(pt, side ? "moe1" : "moe0", moe_s2s_moe(m, side));
    if (st) return st;
    const int gb = ptable_group(pt, "baseline", "s2s", params + cut, grads + cut, count - cut, 0);
    if (gb < 0) return MOE_ERR_CONFIG;
    return add_dense(pt, gb, m, moe_s2s_num_params(m), s2s_at, params + cut, params + count);
}
