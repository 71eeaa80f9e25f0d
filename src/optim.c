/* optim.c - Adam over one flat parameter arena (bias-corrected; decoupled weight decay). */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct moe_adam {
    moe_adam_config cfg;
    size_t count;
    float *m, *v; /* [count] */
    int64_t step;
};

moe_adam_config moe_adam_config_default(void) {
    moe_adam_config c = {.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f};
    return c;
}

moe_status moe_adam_create(moe_adam **out, size_t count, const moe_adam_config *cfg) {
    if (!out || !cfg) return moe_fail(MOE_ERR_INVALID_ARG, "out and cfg must not be NULL");
    *out = NULL;
    if (!(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f) || !(cfg->beta2 > 0.0f && cfg->beta2 < 1.0f) ||
        !(cfg->eps > 0.0f) || !(cfg->weight_decay >= 0.0f))
        return moe_fail(MOE_ERR_CONFIG, "Adam needs 0 <= beta1 < 1, 0 < beta2 < 1, eps > 0, weight_decay >= 0");
    moe_adam *a = calloc(1, sizeof *a);
    if (!a) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the optimiser");
    a->cfg = *cfg;
    a->count = count;
    a->m = moe_alloc_floats(count);
    a->v = moe_alloc_floats(count);
    if (!a->m || !a->v) {
        moe_adam_free(a);
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate optimiser state for %zu parameters", count);
    }
    memset(a->m, 0, sizeof(float) * count);
    memset(a->v, 0, sizeof(float) * count);
    *out = a;
    return MOE_OK;
}

void moe_adam_free(moe_adam *a) {
    if (!a) return;
    moe_free_aligned(a->m);
    moe_free_aligned(a->v);
    free(a);
}

moe_status moe_adam_step(moe_adam *a, float *params, const float *grads, float lr) {
    if (!a || !params || !grads) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument to moe_adam_step");
    if (!moe_all_finite(grads, a->count))
        return moe_fail(MOE_ERR_NONFINITE, "gradient contains NaN or Inf; parameters left unchanged");
    a->step++;
    const float b1 = a->cfg.beta1, b2 = a->cfg.beta2, eps = a->cfg.eps, wd = a->cfg.weight_decay;
    const float c1 = 1.0f - powf(b1, (float)a->step), c2 = 1.0f - powf(b2, (float)a->step);
    const float step_size = lr / (c1 > 0.0f ? c1 : 1.0f), inv_c2 = 1.0f / c2;
    float *m = a->m, *v = a->v;
    const size_t n = a->count;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        float upd = step_size * m[i] / (sqrtf(v[i] * inv_c2) + eps);
        params[i] -= upd + lr * wd * params[i];
    }
    return MOE_OK;
}

moe_status moe_adam_state(moe_adam *a, float **m, float **v, int64_t **step) {
    if (!a) return moe_fail(MOE_ERR_INVALID_ARG, "optimiser is NULL");
    if (m) *m = a->m;
    if (v) *v = a->v;
    if (step) *step = &a->step;
    return MOE_OK;
}
