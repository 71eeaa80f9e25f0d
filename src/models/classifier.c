/* classifier.c - the classifier of the Fashion-MNIST demo (`moe classify`), whose hidden layer
 * is a sparsely-gated MoE layer with a residual connection:
 *
 *   x [B,in] -> Linear in->d + ReLU = h1 [B,d] -> h2 = h1 + MoE(h1) [B,d]
 *            -> Linear d->C = logits [B,C] -> softmax cross-entropy (+ the balancing losses)
 *
 * The dense layers live in one arena (group "clf" of the model's parameter table), the MoE layer
 * in its own (group "moe"), so the optimiser over the table (moe_optim_create_clf) steps both. */
#include "base/internal.h"
#include "models/model_table.h"
#include "moe/layer_table.h"
#include "nn/nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { W1, B1, W2, B2, NP };
static const char *const NAMES[NP] = {"w1", "b1", "w2", "b2"};

struct moe_clf {
    moe_clf_config cfg;
    float *params, *grads; /* the dense arena: w1 [in,d], b1 [d], w2 [d,C], b2 [C] */
    size_t count;
    size_t off[NP];
    moe_layer *moe;
    ptable pt;
    /* activations of the last forward and their gradients, for capB examples */
    int capB;
    void *block;
    float *x, *h1, *m, *h2, *logits, *probs; /* [B,in] [B,d] [B,d] [B,d] [B,C] [B,C] */
    float *dlogits, *dh2, *dh1, *da1;        /* [B,C] [B,d] [B,d] [B,d] */
    int *y;                                  /* [B] */
    int B, valid;                            /* valid: a training forward with labels is kept */
};

moe_clf_config moe_clf_config_default(void) {
    moe_clf_config c = {.in = 784, .classes = 10, .moe = moe_layer_config_default()};
    c.moe.d = 256;
    c.moe.h = 256;
    c.moe.n = 8;
    c.moe.k = 2;
    return c;
}

static moe_status check_cfg(const moe_clf_config *c) {
    if (!c) return moe_fail(MOE_ERR_INVALID_ARG, "config is NULL");
    if (c->in < 1 || c->in > (1 << 24)) return moe_fail(MOE_ERR_CONFIG, "input size %d must be in [1, 2^24]", c->in);
    if (c->classes < 2 || c->classes > (1 << 20))
        return moe_fail(MOE_ERR_CONFIG, "%d classes: need between 2 and 2^20", c->classes);
    return moe_layer_config_check(&c->moe);
}

static float *P(const moe_clf *m, int p) { return m->params + m->off[p]; }
static float *G(const moe_clf *m, int p) { return m->grads + m->off[p]; }

/* The parameter table: the dense arena as group "clf" (the two weight matrices marked for the
 * factored optimiser), the MoE layer as group "moe". */
static moe_status build_table(moe_clf *m) {
    const int64_t in = m->cfg.in, d = m->cfg.moe.d, C = m->cfg.classes;
    const int64_t shapes[NP][2] = {{in, d}, {d, 0}, {d, C}, {C, 0}};
    const int g = ptable_group(&m->pt, "clf", NULL, m->params, m->grads, m->count, 0);
    moe_status st = g < 0 ? MOE_ERR_CONFIG : MOE_OK;
    for (int p = 0; p < NP && !st; p++) {
        const int ndim = shapes[p][1] ? 2 : 1;
        st = ptable_add(&m->pt, g, NAMES[p], ndim, shapes[p], P(m, p), G(m, p), ndim == 2, 0, 0, 0);
    }
    if (!st) st = layer_ptable(&m->pt, "moe", m->moe);
    return st;
}

moe_status moe_clf_create(moe_clf **out, const moe_clf_config *cfg, uint64_t seed) {
    if (!out) return moe_fail(MOE_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    moe_status st = check_cfg(cfg);
    if (st) return st;
    moe_clf *m = calloc(1, sizeof *m);
    if (!m) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the classifier");
    m->cfg = *cfg;
    const size_t in = (size_t)cfg->in, d = (size_t)cfg->moe.d, C = (size_t)cfg->classes;
    const size_t numel[NP] = {in * d, d, d * C, C};
    for (int p = 0; p < NP; p++) {
        m->off[p] = m->count;
        m->count += MOE_ARENA_PAD(numel[p]);
    }
    if (!moe_alloc_arena(&m->params, &m->grads, m->count)) {
        moe_clf_free(m);
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate %zu parameters", m->count);
    }
    if ((st = moe_layer_create(&m->moe, &cfg->moe, seed)) || (st = build_table(m))) {
        moe_clf_free(m);
        return st;
    }
    /* weights uniform in +-1/sqrt(fan_in) (PyTorch's Linear default), biases zero (the arena's) */
    nn_init_uniform(P(m, W1), numel[W1], 1.0f / sqrtf((float)in), seed ^ 0xd1ULL);
    nn_init_uniform(P(m, W2), numel[W2], 1.0f / sqrtf((float)d), seed ^ 0xd2ULL);
    *out = m;
    return moe_ok();
}

void moe_clf_free(moe_clf *m) {
    if (!m) return;
    moe_layer_free(m->moe);
    moe_free_aligned(m->params);
    moe_free_aligned(m->grads);
    moe_free_aligned(m->block);
    ptable_free(&m->pt);
    free(m);
}

moe_clf_config moe_clf_get_config(const moe_clf *m) { return m->cfg; }
moe_layer *moe_clf_moe(moe_clf *m) { return m ? m->moe : NULL; }
const ptable *clf_table(const moe_clf *m) { return &m->pt; }
int moe_clf_num_tensors(const moe_clf *m) { return m ? m->pt.count : 0; }

moe_status moe_clf_tensor(moe_clf *m, int i, moe_param *p) { return ptable_param(m ? &m->pt : NULL, i, p); }

void moe_clf_zero_grad(moe_clf *m) {
    if (!m) return;
    memset(m->grads, 0, sizeof(float) * m->count);
    moe_layer_zero_grad(m->moe);
}

/* Grows the activation buffers to B examples (their contents are not kept). */
static moe_status reserve(moe_clf *m, int B) {
    if (B <= m->capB) return MOE_OK;
    const size_t Bz = (size_t)B, in = (size_t)m->cfg.in, d = (size_t)m->cfg.moe.d, C = (size_t)m->cfg.classes;
    /* on failure moe_bufs_alloc leaves the pointers (and so the old block) as they were */
    void *old = m->block;
    const moe_buf list[] = {MOE_BUF(m->x, Bz * in),  MOE_BUF(m->h1, Bz * d),     MOE_BUF(m->m, Bz * d),
                            MOE_BUF(m->h2, Bz * d),  MOE_BUF(m->logits, Bz * C), MOE_BUF(m->probs, Bz * C),
                            MOE_BUF(m->dlogits, Bz * C), MOE_BUF(m->dh2, Bz * d), MOE_BUF(m->dh1, Bz * d),
                            MOE_BUF(m->da1, Bz * d), MOE_BUF(m->y, Bz)};
    void *block = moe_bufs_alloc(list, (int)(sizeof list / sizeof list[0]));
    if (!block) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the activations of %d examples", B);
    moe_free_aligned(old);
    m->block = block;
    m->capB = B;
    return MOE_OK;
}

moe_status moe_clf_forward(moe_clf *m, const float *x, const int *y, int B, moe_mode mode, moe_clf_stats *stats) {
    if (!m || !x) return moe_fail(MOE_ERR_INVALID_ARG, "model and x must not be NULL");
    if (mode != MOE_EVAL && mode != MOE_TRAIN) return moe_fail(MOE_ERR_INVALID_ARG, "unknown mode %d", (int)mode);
    if (mode == MOE_TRAIN && !y) return moe_fail(MOE_ERR_INVALID_ARG, "training needs the labels y");
    if (B < 1 || B > (1 << 24)) return moe_fail(MOE_ERR_SHAPE, "batch B=%d must be in [1, 2^24]", B);
    const int in = m->cfg.in, d = m->cfg.moe.d, C = m->cfg.classes;
    for (int r = 0; y && r < B; r++)
        if (y[r] < 0 || y[r] >= C) return moe_fail(MOE_ERR_INVALID_ARG, "label %d of example %d is not in [0, %d)", y[r], r, C);
    if (!moe_all_finite(x, (size_t)B * in)) return moe_fail(MOE_ERR_NONFINITE, "x contains NaN or Inf");
    moe_status st = reserve(m, B);
    if (st) return st;
    m->valid = 0;
    /* copies: backward needs x, and the MoE layer borrows h1 until then */
    memcpy(m->x, x, sizeof(float) * (size_t)B * in);
    if (y) memcpy(m->y, y, sizeof(int) * (size_t)B);
    const size_t Bd = (size_t)B * d;
    moe_layer_stats ms;
    linear_forward(m->h1, m->x, P(m, W1), P(m, B1), B, in, d);
    relu_forward(m->h1, m->h1, Bd);
    if ((st = moe_layer_forward(m->moe, m->m, m->h1, B, mode, NULL, &ms))) return st;
    /* forward: h2 = h1 + moe(h1) */
    for (size_t j = 0; j < Bd; j++) m->h2[j] = m->h1[j] + m->m[j];
    linear_forward(m->logits, m->h2, P(m, W2), P(m, B2), B, d, C);
    double loss = NAN;
    int correct = 0;
    if (y) {
        loss = softmax_xent_forward(NULL, m->probs, m->logits, m->y, B, C);
        correct = argmax_correct(m->logits, m->y, B, C);
    }
    m->B = B;
    m->valid = mode == MOE_TRAIN;
    if (stats) {
        stats->loss = loss;
        stats->aux = (double)ms.loss_importance + ms.loss_load;
        stats->correct = correct;
        stats->moe = ms;
    }
    return moe_ok();
}

moe_status moe_clf_backward(moe_clf *m) {
    if (!m) return moe_fail(MOE_ERR_INVALID_ARG, "model is NULL");
    if (!m->valid) return moe_fail(MOE_ERR_STATE, "backward needs a preceding training forward");
    const int B = m->B, d = m->cfg.moe.d, C = m->cfg.classes;
    const size_t Bd = (size_t)B * d;
    memset(m->dlogits, 0, sizeof(float) * (size_t)B * C);
    memset(m->dh2, 0, sizeof(float) * Bd);
    memset(m->da1, 0, sizeof(float) * Bd);
    softmax_xent_backward(m->dlogits, m->probs, m->y, B, C);
    linear_backward(m->dh2, G(m, W2), G(m, B2), m->dlogits, m->h2, P(m, W2), B, d, C);
    /* forward: h2 = h1 + moe(h1);  so dh1 = dh2 + (the MoE layer's dx, which it adds) */
    memcpy(m->dh1, m->dh2, sizeof(float) * Bd);
    moe_status st = moe_layer_backward(m->moe, m->dh1, m->dh2);
    if (st) return st;
    /* forward: h1 = relu(a1);  so da1 = dh1 * (h1 > 0) */
    relu_backward(m->da1, m->dh1, m->h1, Bd);
    linear_backward(NULL, G(m, W1), G(m, B1), m->da1, m->x, P(m, W1), B, m->cfg.in, d);
    m->valid = 0;
    return moe_ok();
}

moe_status moe_clf_logits(const moe_clf *m, float *logits) {
    if (!m || !logits) return moe_fail(MOE_ERR_INVALID_ARG, "model and logits must not be NULL");
    if (m->B < 1) return moe_fail(MOE_ERR_STATE, "no forward yet");
    memcpy(logits, m->logits, sizeof(float) * (size_t)m->B * m->cfg.classes);
    return moe_ok();
}
