/* optim_api.c - the public optimiser (moe_optim_*): the trainers' clip-then-Adam over a model's
 * parameter table (optset.h), for C users and the CLI's demo and benchmark, so that they step
 * exactly as moe_lm_train and moe_s2s_train do instead of keeping one Adam per arena by hand. */
#include "base/internal.h"
#include "models/model_table.h"
#include "moe/layer_table.h"
#include "train/optset.h"

#include <math.h>
#include <stdlib.h>

struct moe_optim {
    ptable own;       /* a bare layer's table; a model's table is the model's */
    const ptable *pt; /* the table stepped: &own or the model's */
    moe_comm *comm;   /* the ranks the experts are split over (NULL: one process) */
    optset set;
};

/* An optimiser over pt, or over l's table when l is given (pt NULL). */
static moe_status create(moe_optim **out, const ptable *pt, moe_layer *l, moe_comm *comm, const moe_adam_config *cfg) {
    if (!cfg) return moe_fail(MOE_ERR_INVALID_ARG, "the Adam config is NULL");
    moe_optim *o = calloc(1, sizeof *o);
    if (!o) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the optimiser");
    moe_status st = MOE_OK;
    if (l) {
        st = layer_ptable(&o->own, "moe", l);
        pt = &o->own;
    }
    o->pt = pt;
    o->comm = comm;
    if (!st) st = optset_create(&o->set, pt, cfg, OPT_ALL);
    if (st) {
        ptable_free(&o->own);
        free(o);
        return st;
    }
    *out = o;
    return moe_ok();
}

static moe_status check_args(moe_optim **out, const void *model) {
    if (!out) return moe_fail(MOE_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    return model ? MOE_OK : moe_fail(MOE_ERR_INVALID_ARG, "the model is NULL");
}

moe_status moe_optim_create_layer(moe_optim **out, moe_layer *l, const moe_adam_config *cfg) {
    moe_status st = check_args(out, l);
    return st ? st : create(out, NULL, l, layer_comm(l), cfg);
}

moe_status moe_optim_create_lm(moe_optim **out, moe_lm *m, const moe_adam_config *cfg) {
    moe_status st = check_args(out, m);
    return st ? st : create(out, lm_table(m), NULL, layer_comm(moe_lm_moe(m)), cfg);
}

moe_status moe_optim_create_s2s(moe_optim **out, moe_s2s *m, const moe_adam_config *cfg) {
    moe_status st = check_args(out, m);
    /* both sides' layers are split over the same ranks, if at all */
    moe_comm *comm = layer_comm(moe_s2s_moe(m, 0)) ? layer_comm(moe_s2s_moe(m, 0)) : layer_comm(moe_s2s_moe(m, 1));
    return st ? st : create(out, s2s_table(m), NULL, comm, cfg);
}

moe_status moe_optim_create_clf(moe_optim **out, moe_clf *m, const moe_adam_config *cfg) {
    moe_status st = check_args(out, m);
    return st ? st : create(out, clf_table(m), NULL, NULL, cfg);
}

void moe_optim_free(moe_optim *o) {
    if (!o) return;
    optset_free(&o->set);
    ptable_free(&o->own);
    free(o);
}

moe_status moe_optim_step(moe_optim *o, float lr, float clip, double *grad_norm) {
    if (!o) return moe_fail(MOE_ERR_INVALID_ARG, "optimiser is NULL");
    if (!(lr >= 0.0f && isfinite(lr))) return moe_fail(MOE_ERR_INVALID_ARG, "learning rate %g must be finite and >= 0", lr);
    if (!(clip >= 0.0f && isfinite(clip)))
        return moe_fail(MOE_ERR_INVALID_ARG, "clip %g must be finite and >= 0 (0: no clipping)", clip);
    double n2 = 0.0;
    moe_status st = ptable_grad_norm2(o->pt, o->comm, OPT_ALL, &n2);
    if (st) return st;
    const double norm = sqrt(n2);
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(norm)) return moe_fail(MOE_ERR_NONFINITE, "the gradient norm is %g: no step taken", norm);
    /* as the trainers clip: the scale computed in double, applied in float */
    if (clip > 0.0f && norm > clip) ptable_scale_grads(o->pt, OPT_ALL, (float)(clip / norm));
    if ((st = optset_step(&o->set, o->pt, lr, OPT_ALL))) return st;
    return moe_ok();
}

int64_t moe_optim_state_floats(const moe_optim *o) { return o ? optset_floats(&o->set) : 0; }
