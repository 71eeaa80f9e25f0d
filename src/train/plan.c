/* plan.c - the memory plan of a training run (moe_lm_plan): the bytes of the buffers the model,
 * the optimiser and a step allocate, from the settings alone, and what the machine gives this
 * process, so that a run that cannot fit is refused before it allocates anything. */
#define _POSIX_C_SOURCE 200809L
#include "base/internal.h"
#include "models/model_table.h"
#include "moe/layer_ops.h"
#include "moe/layer_table.h"
#include "parallel/comm.h"

#include <stdio.h>
#include <string.h>

/* The MoE layer's workspace for B tokens with nloc experts here (pipeline.c's, the router's and
 * the placement's buffers; the same formulas as their reserve functions). */
static double layer_ws_floats(const moe_layer_config *c, double B, int ranks) {
    const double d = c->d, h = c->h, n = c->n, a = c->groups;
    const double kk = a ? (double)c->k_groups * c->k : c->k, R = B * kk;
    double f = B * (a ? a + n : n) + 5.0 * R + 3.0 * R * d; /* noise; routes; Xs, Ys, dYs */
    if (a) {
        const double kp = c->k_groups, b = n / a, R1 = B * kp;
        f += 8.0 * B * a + 4.0 * B * (kp + 1) + 8.0 * R1 * b + 4.0 * R1 * (c->k + 1) + 4.0 * R1 * d;
    } else {
        f += 7.0 * B * n + 2.0 * B * (c->k + 1) + 2.0 * B * c->k;
    }
    f += 2.0 * R * h; /* the experts' hidden activations and their gradients */
    if (ranks > 1) f += 3.0 * R * d; /* the rows exchanged with the other ranks */
    return f;
}

moe_status moe_lm_plan(const moe_lm_config *mc, int batch, int bptt, int flags, int ranks, moe_mem_plan *out) {
    if (!mc || !out) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    if (batch < 1 || bptt < 1 || ranks < 1) return moe_fail(MOE_ERR_CONFIG, "batch, bptt and ranks must be >= 1");
    if (flags & ~(MOE_PLAN_FACTORED | MOE_PLAN_FUSED | MOE_PLAN_BF16))
        return moe_fail(MOE_ERR_CONFIG, "unknown plan flags %d", flags);
    if ((flags & MOE_PLAN_BF16) && !(flags & MOE_PLAN_FUSED))
        return moe_fail(MOE_ERR_CONFIG, "bfloat16 expert weights need fused updates (MOE_PLAN_FUSED)");
    memset(out, 0, sizeof *out);
    const int factored = flags & MOE_PLAN_FACTORED, fused = (flags & MOE_PLAN_FUSED) && mc->ffn != MOE_FFN_NONE;
    const int half = fused && (flags & MOE_PLAN_BF16);
    double half_saved = 0.0; /* floats' worth that bfloat16 storage saves: half of w1 and w2 */
    size_t dense_f = 0, layer_f = 0, router_f = 0;
    double params = (double)lm_dense_floats(mc, &dense_f), optim_f = factored ? (double)dense_f : 2.0 * params;
    double grads = params;
    const int B = (batch + ranks - 1) / ranks; /* the most streams a rank runs */
    double act = (double)lm_ws_floats(mc, bptt, B);
    if (mc->ffn != MOE_FFN_NONE) {
        const moe_layer_config lc = lm_ffn_config(mc);
        const int P = mc->ffn == MOE_FFN_MOE ? ranks : 1, nloc = (lc.n + P - 1) / P;
        const double lp = (double)layer_param_floats(&lc, nloc, &layer_f, &router_f);
        params += lp;
        grads += fused ? (double)router_f : lp;
        optim_f += factored ? (double)layer_f : 2.0 * lp;
        act += layer_ws_floats(&lc, (double)B * bptt, P);
        /* the experts' backward scratch (with fused updates each thread's expert gradients);
         * the updater's norms */
        act += (double)experts_scratch_floats(lc.d, lc.h, moe_threads(), fused, half) + (fused ? 2.0 * nloc : 0.0);
        if (half) half_saved = (double)nloc * lc.d * lc.h; /* w1, w2 in 2 bytes */
    }
    out->params = (int64_t)(4.0 * (params - half_saved));
    out->grads = (int64_t)(4.0 * grads);
    out->optim = (int64_t)(4.0 * optim_f);
    out->activations = (int64_t)(4.0 * act);
    out->total = out->params + out->grads + out->optim + out->activations;
    out->available = moe_mem_available();
    return moe_ok();
}

/* The first number on the line of `path` that starts with `key` (key "" : the file's first
 * number), times `scale`; -1 when there is none. */
static int64_t read_number(const char *path, const char *key, int64_t scale) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    int64_t v = -1;
    const size_t nk = strlen(key);
    while (v < 0 && fgets(line, sizeof line, f)) {
        long long x;
        if (strncmp(line, key, nk) == 0 && sscanf(line + nk, " %lld", &x) == 1) v = (int64_t)x * scale;
    }
    fclose(f);
    return v;
}

int64_t moe_mem_available(void) {
    /* cgroup v2: the limit ("max" reads as no number) less what the group uses now */
    const int64_t lim = read_number("/sys/fs/cgroup/memory.max", "", 1);
    const int64_t used = read_number("/sys/fs/cgroup/memory.current", "", 1);
    const int64_t avail = read_number("/proc/meminfo", "MemAvailable:", 1024);
    int64_t v = avail;
    if (lim > 0 && used >= 0 && (v < 0 || lim - used < v)) v = lim - used;
    return v > 0 ? v : 0;
}
