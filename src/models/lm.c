/* lm.c - the paper's language model (SPEC 2, App. C.1), forward and backward over a [T,B] batch:
 *
 *   tokens -> emb -> drop = x0 -> LSTM1 -> x1 = x0 + drop(a1)
 *          -> x2 = x1 + drop(sigmoid(MoE(x1)))        (the MoE sees all T*B positions at once)
 *          -> LSTM2 -> x3 = x2 + drop(a3) -> logits = x3 W_out + b_out -> softmax cross-entropy
 *
 * The LSTM state is carried between calls (truncated BPTT). The dense parameters live in one
 * arena; the MoE layer keeps its own (moe_layer). Every random draw comes from counters, so a
 * checkpoint of (seed, counters, carried state) resumes a run exactly. */
#include "base/internal.h"
#include "models/model_table.h"
#include "moe/layer_table.h"
#include "nn/lstm.h"
#include "nn/nn.h"
#include "base/vmath.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { E_EMB, L1_WIH, L1_WHH, L1_BIH, L1_BHH, L2_WIH, L2_WHH, L2_BIH, L2_BHH, O_W, O_B, NP };
static const char *const NAMES[NP] = {"embedding.weight", "lstm1.w_ih", "lstm1.w_hh", "lstm1.b_ih",
                                      "lstm1.b_hh",       "lstm2.w_ih", "lstm2.w_hh", "lstm2.b_ih",
                                      "lstm2.b_hh",       "softmax.w",  "softmax.b"};

typedef struct {
    int ndim;
    int64_t shape[2];
    size_t numel, offset;
} slot;

struct moe_lm {
    moe_lm_config cfg;
    slot slots[NP];
    float *params, *grads;
    size_t count;
    moe_layer *moe;
    uint64_t seed, drop_ctr;
    int stateB;
    float *state; /* [4,B,d]: h1, c1, h2, c2 */
    /* workspace for N = T*B positions */
    int capN, capT, capB;
    int32_t *in_tok, *tgt;                          /* [N] time-major */
    float *x0, *a1, *x1, *mo, *sg, *x2, *a3, *x3;   /* [N,d] */
    float *probs, *dlogits;                         /* [N,V] */
    float *cache1, *cache2, *scratch, *g1, *g2;
    uint64_t ctr[4]; /* dropout counters of the last training forward */
    int T, B, valid;
    int b0, Bg;      /* data parallel: this model's streams are [b0, b0+B) of Bg (0: all) */
    ptable pt;       /* every tensor: groups "lm" and "moe" */
};

moe_lm_config moe_lm_config_default(void) {
    moe_lm_config c = {.vocab = 256, .d = 128, .ffn = MOE_FFN_MOE, .n = 16, .k = 2, .h = 256,
                       .w_importance = 0.1f, .w_load = 0.1f, .noise_eps = 0.01f, .dropout = 0.1f};
    return c;
}

static moe_status check_cfg(const moe_lm_config *c) {
    if (!c) return moe_fail(MOE_ERR_INVALID_ARG, "config is NULL");
    if (c->vocab < 2) return moe_fail(MOE_ERR_CONFIG, "vocabulary size %d: need at least 2", c->vocab);
    if (c->d < 1) return moe_fail(MOE_ERR_CONFIG, "width d=%d must be positive", c->d);
    if (c->ffn != MOE_FFN_MOE && c->ffn != MOE_FFN_DENSE && c->ffn != MOE_FFN_NONE)
        return moe_fail(MOE_ERR_CONFIG, "unknown middle-layer kind %d", (int)c->ffn);
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f))
        return moe_fail(MOE_ERR_CONFIG, "dropout %g must be in [0, 1)", c->dropout);
    return MOE_OK;
}

static void ws_free(moe_lm *m) {
    free(m->in_tok);
    free(m->tgt);
    float *fs[] = {m->x0, m->a1, m->x1, m->mo, m->sg, m->x2, m->a3, m->x3, m->probs,
                   m->dlogits, m->cache1, m->cache2, m->scratch, m->g1, m->g2};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++) moe_free_aligned(fs[i]);
    m->in_tok = m->tgt = NULL;
    m->x0 = m->a1 = m->x1 = m->mo = m->sg = m->x2 = m->a3 = m->x3 = NULL;
    m->probs = m->dlogits = m->cache1 = m->cache2 = m->scratch = m->g1 = m->g2 = NULL;
    m->capN = m->capT = m->capB = 0;
}

static moe_status ws_reserve(moe_lm *m, int T, int B) {
    if (T <= m->capT && B <= m->capB) return MOE_OK;
    int nT = T > m->capT ? T : m->capT, nB = B > m->capB ? B : m->capB;
    ws_free(m);
    const size_t N = (size_t)nT * nB, d = (size_t)m->cfg.d, V = (size_t)m->cfg.vocab;
    m->in_tok = malloc(sizeof(int32_t) * N);
    m->tgt = malloc(sizeof(int32_t) * N);
    float **nd[] = {&m->x0, &m->a1, &m->x1, &m->mo, &m->sg, &m->x2, &m->a3, &m->x3, &m->g1, &m->g2};
    int ok = m->in_tok && m->tgt;
    for (size_t i = 0; i < sizeof nd / sizeof nd[0]; i++) ok &= (*nd[i] = moe_alloc_floats(N * d)) != NULL;
    ok &= (m->probs = moe_alloc_floats(N * V)) != NULL;
    ok &= (m->dlogits = moe_alloc_floats(N * V)) != NULL;
    ok &= (m->cache1 = moe_alloc_floats(lstm_cache_floats(nT, nB, (int)d))) != NULL;
    ok &= (m->cache2 = moe_alloc_floats(lstm_cache_floats(nT, nB, (int)d))) != NULL;
    ok &= (m->scratch = moe_alloc_floats(lstm_scratch_floats(nT, nB, (int)d))) != NULL;
    if (!ok) {
        ws_free(m);
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate the workspace for T=%d B=%d", T, B);
    }
    m->capT = nT;
    m->capB = nB;
    m->capN = nT * nB;
    return MOE_OK;
}

static moe_status state_reserve(moe_lm *m, int B) {
    if (B == m->stateB) return MOE_OK;
    float *s = moe_alloc_floats((size_t)4 * B * m->cfg.d);
    if (!s) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the LSTM state for B=%d", B);
    memset(s, 0, sizeof(float) * 4 * (size_t)B * m->cfg.d);
    moe_free_aligned(m->state);
    m->state = s;
    m->stateB = B;
    return MOE_OK;
}

/* The parameter table: the dense arena as group "lm" (matrices for the factored optimiser: every
 * tensor of rank 2), the MoE layer as group "moe". */
static moe_status build_table(moe_lm *m) {
    const int g = ptable_group(&m->pt, "lm", NULL, m->params, m->grads, m->count, 0);
    moe_status st = g < 0 ? MOE_ERR_CONFIG : MOE_OK;
    for (int p = 0; p < NP && !st; p++)
        st = ptable_add(&m->pt, g, NAMES[p], m->slots[p].ndim, m->slots[p].shape, m->params + m->slots[p].offset,
                        m->grads + m->slots[p].offset, m->slots[p].ndim >= 2, 0, 0, 0);
    if (!st && m->moe) st = layer_ptable(&m->pt, "moe", m->moe);
    return st;
}

moe_layer_config lm_ffn_config(const moe_lm_config *cfg) {
    if (cfg->ffn != MOE_FFN_MOE) /* one always-on expert of hidden k*h: the dense FFN of equal active FLOPs */
        return layer_config_of(cfg->d, 1, 1, cfg->k * cfg->h, 0.0f, 0.0f, moe_layer_config_default().noise_eps);
    moe_layer_config lc = layer_config_of(cfg->d, cfg->n, cfg->k, cfg->h, cfg->w_importance, cfg->w_load, cfg->noise_eps);
    lc.groups = cfg->groups;
    lc.k_groups = cfg->k_groups;
    return lc;
}

/* The dense tensors' shapes ([rows, cols]; cols 0: a vector), in NAMES' order. */
static void dense_shapes(const moe_lm_config *cfg, int64_t shapes[NP][2]) {
    const int64_t V = cfg->vocab, d = cfg->d;
    const int64_t s[NP][2] = {{V, d}, {4 * d, d}, {4 * d, d}, {4 * d, 0}, {4 * d, 0}, {4 * d, d},
                              {4 * d, d}, {4 * d, 0}, {4 * d, 0}, {d, V}, {V, 0}};
    memcpy(shapes, s, sizeof s);
}

size_t lm_dense_floats(const moe_lm_config *cfg, size_t *factored) {
    int64_t sh[NP][2];
    dense_shapes(cfg, sh);
    size_t all = 0, f = 0;
    for (int p = 0; p < NP; p++) {
        const size_t numel = (size_t)sh[p][0] * (size_t)(sh[p][1] ? sh[p][1] : 1);
        all += MOE_ARENA_PAD(numel);
        f += sh[p][1] ? (size_t)(sh[p][0] + sh[p][1]) : numel;
    }
    if (factored) *factored = f;
    return all;
}

int lm_config_tensor(const moe_lm_config *cfg, int i, char name[PT_NAME], int *ndim, int64_t shape[3]) {
    if (i < 0) return 0;
    if (i < NP) {
        int64_t sh[NP][2];
        dense_shapes(cfg, sh);
        snprintf(name, PT_NAME, "lm.%s", NAMES[i]);
        *ndim = sh[i][1] ? 2 : 1;
        shape[0] = sh[i][0];
        shape[1] = sh[i][1];
        shape[2] = 0;
        return 1;
    }
    if (cfg->ffn == MOE_FFN_NONE) return 0;
    const moe_layer_config lc = lm_ffn_config(cfg);
    const char *own;
    if (!layer_config_tensor(&lc, i - NP, &own, ndim, shape)) return 0;
    snprintf(name, PT_NAME, "moe.%s", own);
    return 1;
}

size_t lm_ws_floats(const moe_lm_config *cfg, int T, int B) {
    const size_t N = (size_t)T * B, d = (size_t)cfg->d, V = (size_t)cfg->vocab;
    /* ws_reserve's buffers (the two token arrays as floats' worth), and the carried state */
    return 2 * N + 10 * N * d + 2 * N * V + 2 * lstm_cache_floats(T, B, (int)d) + lstm_scratch_floats(T, B, (int)d) +
           4 * (size_t)B * d;
}

static moe_status lm_create(moe_lm **out, const moe_lm_config *cfg, uint64_t seed, moe_comm *comm, int flags) {
    const int fused = (flags & LAYER_FUSED) != 0;
    if (!out) return moe_fail(MOE_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    moe_status st = check_cfg(cfg);
    if (st) return st;
    moe_lm *m = calloc(1, sizeof *m);
    if (!m) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the model");
    m->cfg = *cfg;
    const int64_t d = cfg->d;
    int64_t shapes[NP][2];
    dense_shapes(cfg, shapes);
    size_t off = 0;
    for (int p = 0; p < NP; p++) {
        slot *s = &m->slots[p];
        s->ndim = shapes[p][1] ? 2 : 1;
        s->shape[0] = shapes[p][0];
        s->shape[1] = shapes[p][1];
        s->numel = (size_t)shapes[p][0] * (size_t)(shapes[p][1] ? shapes[p][1] : 1);
        s->offset = off;
        off += MOE_ARENA_PAD(s->numel);
    }
    m->count = off;
    if (!moe_alloc_arena(&m->params, &m->grads, off)) {
        moe_lm_free(m);
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate %zu parameters", off);
    }
    /* PyTorch's initialisations: LSTM and softmax uniform(+-1/sqrt(fan)), embedding small */
    const float a = 1.0f / sqrtf((float)d);
    for (int p = 0; p < NP; p++) {
        float scale = p == E_EMB ? 0.1f : (p == O_B ? 0.0f : a);
        nn_init_uniform(m->params + m->slots[p].offset, m->slots[p].numel, scale, seed * 131 + (uint64_t)p);
    }
    if (cfg->ffn != MOE_FFN_NONE) {
        if (cfg->ffn == MOE_FFN_DENSE && (cfg->k < 1 || cfg->h < 1))
            return moe_lm_free(m), moe_fail(MOE_ERR_CONFIG, "dense FFN needs k >= 1 and h >= 1");
        const moe_layer_config lc = lm_ffn_config(cfg);
        /* experts split over the ranks; the dense baseline's one expert is replicated (so its
         * gradients are summed over the ranks before any update: no fused updates there) */
        const int split = comm && moe_comm_size(comm) > 1 && cfg->ffn == MOE_FFN_MOE;
        if (fused && comm && moe_comm_size(comm) > 1 && !split)
            return moe_lm_free(m), moe_fail(MOE_ERR_CONFIG, "fused updates need the experts split over the ranks "
                                                            "(the dense FFN is replicated): leave them off");
        const uint64_t ls = seed ^ 0x6d6f65ULL;
        st = flags ? layer_create_opts(&m->moe, &lc, ls, split ? comm : NULL, flags)
             : split ? moe_layer_create_sharded(&m->moe, &lc, ls, comm)
                     : moe_layer_create(&m->moe, &lc, ls);
        if (st) {
            moe_lm_free(m);
            return st;
        }
    }
    if ((st = build_table(m))) {
        moe_lm_free(m);
        return st;
    }
    m->seed = seed;
    *out = m;
    return MOE_OK;
}

moe_status lm_create_opts(moe_lm **out, const moe_lm_config *cfg, uint64_t seed, moe_comm *comm, int flags) {
    moe_status st = lm_create(out, cfg, seed, comm, flags);
    if (!st) moe_clear_error();
    return st;
}

moe_status moe_lm_create(moe_lm **out, const moe_lm_config *cfg, uint64_t seed) {
    moe_status st = lm_create(out, cfg, seed, NULL, 0);
    if (!st) moe_clear_error();
    return st;
}

moe_status moe_lm_create_sharded(moe_lm **out, const moe_lm_config *cfg, uint64_t seed, moe_comm *comm) {
    if (!comm) return moe_fail(MOE_ERR_INVALID_ARG, "comm is NULL");
    moe_status st = lm_create(out, cfg, seed, comm, 0);
    if (!st) moe_clear_error();
    return st;
}

moe_status moe_lm_set_slice(moe_lm *m, int b0, int Bglobal) {
    if (!m || b0 < 0 || Bglobal < 1 || b0 >= Bglobal)
        return moe_fail(MOE_ERR_INVALID_ARG, "slice [%d, ..) of %d streams is impossible", b0, Bglobal);
    m->b0 = b0;
    m->Bg = Bglobal;
    return moe_ok();
}

void moe_lm_free(moe_lm *m) {
    if (!m) return;
    ws_free(m);
    moe_free_aligned(m->params);
    moe_free_aligned(m->grads);
    moe_free_aligned(m->state);
    moe_layer_free(m->moe);
    ptable_free(&m->pt);
    free(m);
}

const ptable *lm_table(const moe_lm *m) { return &m->pt; }
int moe_lm_num_tensors(const moe_lm *m) { return m ? m->pt.count : 0; }
moe_status moe_lm_tensor(moe_lm *m, int i, moe_param *p) { return ptable_param(m ? &m->pt : NULL, i, p); }

moe_lm_config moe_lm_get_config(const moe_lm *m) { return m->cfg; }
moe_layer *moe_lm_moe(moe_lm *m) { return m ? m->moe : NULL; }

static float *P(const moe_lm *m, int p) { return m->params + m->slots[p].offset; }
static float *G(const moe_lm *m, int p) { return m->grads + m->slots[p].offset; }


/* FLOPs of the matrix products for N positions (a multiply-add = 2). */
static double step_flops(const moe_lm *m, double N, int train) {
    const moe_lm_config *c = &m->cfg;
    double d = c->d, f = 2.0 * 16.0 * d * d + 2.0 * d * c->vocab; /* two LSTMs, softmax */
    if (c->ffn == MOE_FFN_MOE && c->groups > 0) /* kp*k experts; the primary gate, kp groups' gates */
        f += 4.0 * c->k_groups * c->k * d * c->h +
             2.0 * d * (c->groups + (double)c->k_groups * (c->n / c->groups)) * (train ? 2 : 1);
    else if (c->ffn == MOE_FFN_MOE) f += 4.0 * c->k * d * c->h + 2.0 * d * c->n * (train ? 2 : 1);
    if (c->ffn == MOE_FFN_DENSE) f += 4.0 * c->k * d * c->h;
    return N * f * (train ? 3.0 : 1.0);
}

/* Dropout masks are drawn by the element's position in the global batch [T, Bg, d], so the
 * ranks of a data-parallel run together draw exactly the masks of one process. For t, this
 * model's rows are the contiguous range [b0, b0+B) of the global step. */
static void drop_fwd(const moe_lm *m, float *out, const float *in, float p, uint64_t ctr, int T, int B) {
    dropout_rows(1, out, in, T, B, m->Bg ? m->Bg : B, m->Bg ? m->b0 : 0, m->cfg.d, p, m->seed, ctr);
}
static void drop_bwd(const moe_lm *m, float *dx, const float *dout, float p, uint64_t ctr, int T, int B) {
    dropout_rows(0, dx, dout, T, B, m->Bg ? m->Bg : B, m->Bg ? m->b0 : 0, m->cfg.d, p, m->seed, ctr);
}

moe_status moe_lm_step(moe_lm *m, const int32_t *tokens, int B, int T, int train, moe_lm_stats *stats) {
    if (!m || !tokens) return moe_fail(MOE_ERR_INVALID_ARG, "model and tokens must not be NULL");
    if (B < 1 || T < 1) return moe_fail(MOE_ERR_SHAPE, "batch B=%d, T=%d: both must be >= 1", B, T);
    const moe_lm_config *c = &m->cfg;
    const int d = c->d, V = c->vocab, N = T * B;
    for (size_t i = 0; i < (size_t)B * (T + 1); i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return moe_fail(MOE_ERR_INVALID_ARG, "token %d at position %zu is outside the vocabulary [0,%d)",
                            tokens[i], i, V);
    moe_status st = ws_reserve(m, T, B);
    if (!st) st = state_reserve(m, B);
    if (st) return st;
    m->valid = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            m->in_tok[t * B + b] = tokens[(size_t)b * (T + 1) + t];
            m->tgt[t * B + b] = tokens[(size_t)b * (T + 1) + t + 1];
        }
    const float p = train ? c->dropout : 0.0f;
    const size_t Nd = (size_t)N * d;
    if (m->Bg && m->b0 + B > m->Bg)
        return moe_fail(MOE_ERR_SHAPE, "streams [%d, %d) do not fit the global batch of %d", m->b0, m->b0 + B, m->Bg);
    const int Bg = m->Bg ? m->Bg : B;
    const size_t NdG = (size_t)T * Bg * d; /* dropout draws of one layer over the global batch */
    uint64_t *ctr = m->ctr;
    for (int i = 0; i < 4; i++) ctr[i] = m->drop_ctr + (uint64_t)i * NdG;
    float *h1 = m->state, *c1 = h1 + (size_t)B * d, *h2 = c1 + (size_t)B * d, *c2 = h2 + (size_t)B * d;

    embedding_forward(m->x0, m->in_tok, P(m, E_EMB), N, V, d);
    drop_fwd(m, m->x0, m->x0, p, ctr[0], T, B);
    lstm_forward(m->a1, h1, c1, m->cache1, m->x0, h1, c1, P(m, L1_WIH), P(m, L1_WHH), P(m, L1_BIH),
                 P(m, L1_BHH), T, B, d, d);
    /* forward: x1 = x0 + drop(a1) */
    drop_fwd(m, m->x1, m->a1, p, ctr[1], T, B);
    for (size_t i = 0; i < Nd; i++) m->x1[i] += m->x0[i];
    moe_layer_stats ms;
    memset(&ms, 0, sizeof ms);
    const float *x2 = m->x1;
    if (m->moe) {
        /* the MoE's tokens are this model's streams of each step of the global batch */
        if (m->Bg && (st = moe_layer_set_noise_layout(m->moe, B, m->Bg, m->b0))) return st;
        st = moe_layer_forward(m->moe, m->mo, m->x1, N, train ? MOE_TRAIN : MOE_EVAL, NULL, &ms);
        if (st) return st;
        /* forward: x2 = x1 + drop(sigmoid(mo)) */
        for (size_t i = 0; i < Nd; i++) m->sg[i] = sigmoid_f(m->mo[i]);
        drop_fwd(m, m->x2, m->sg, p, ctr[2], T, B);
        for (size_t i = 0; i < Nd; i++) m->x2[i] += m->x1[i];
        x2 = m->x2;
    }
    lstm_forward(m->a3, h2, c2, m->cache2, x2, h2, c2, P(m, L2_WIH), P(m, L2_WHH), P(m, L2_BIH),
                 P(m, L2_BHH), T, B, d, d);
    drop_fwd(m, m->x3, m->a3, p, ctr[3], T, B);
    for (size_t i = 0; i < Nd; i++) m->x3[i] += x2[i];
    linear_forward(m->dlogits, m->x3, P(m, O_W), P(m, O_B), N, d, V); /* logits, reused below */
    double loss = softmax_xent_forward(NULL, m->probs, m->dlogits, m->tgt, N, V);
    if (train) m->drop_ctr += 4 * (uint64_t)NdG;
    if (!isfinite(loss))
        return moe_fail(MOE_ERR_NONFINITE, "the loss is %g: the model diverged (lower the learning rate)", loss);
    if (stats) {
        stats->loss = loss;
        stats->aux = (double)ms.loss_importance + ms.loss_load;
        stats->moe = ms;
        stats->tokens = N;
        stats->flops = step_flops(m, N, train);
    }
    if (!train) {
        return moe_ok();
    }

    /* ---- backward ---- */
    const int64_t Vd = (int64_t)N * V;
    memset(m->dlogits, 0, sizeof(float) * (size_t)Vd);
    softmax_xent_backward(m->dlogits, m->probs, m->tgt, N, V);
    if (m->Bg && m->Bg != B) { /* this rank's share of the global batch's mean loss */
        const float gs = (float)B / (float)m->Bg;
        for (size_t i = 0; i < (size_t)Vd; i++) m->dlogits[i] *= gs;
    }
    memset(m->g1, 0, sizeof(float) * Nd);
    linear_backward(m->g1, G(m, O_W), G(m, O_B), m->dlogits, m->x3, P(m, O_W), N, d, V);
    /* forward: x3 = x2 + drop(a3);  g1 = dx3 becomes dx2 after the LSTM adds its input grad */
    memset(m->g2, 0, sizeof(float) * Nd);
    drop_bwd(m, m->g2, m->g1, p, ctr[3], T, B);
    lstm_backward(m->g1, G(m, L2_WIH), G(m, L2_WHH), G(m, L2_BIH), G(m, L2_BHH), NULL, NULL,
                  m->scratch, m->g2, NULL, NULL, x2, m->a3, m->cache2, P(m, L2_WIH), P(m, L2_WHH), T,
                  B, d, d);
    if (m->moe) {
        /* forward: x2 = x1 + drop(s), s = sigmoid(mo);  so dmo = drop'(dx2) * s (1 - s) */
        memset(m->g2, 0, sizeof(float) * Nd);
        drop_bwd(m, m->g2, m->g1, p, ctr[2], T, B);
        for (size_t i = 0; i < Nd; i++) m->g2[i] *= m->sg[i] * (1.0f - m->sg[i]);
        st = moe_layer_backward(m->moe, m->g1, m->g2);
        if (st) return st;
    }
    /* forward: x1 = x0 + drop(a1) */
    memset(m->g2, 0, sizeof(float) * Nd);
    drop_bwd(m, m->g2, m->g1, p, ctr[1], T, B);
    lstm_backward(m->g1, G(m, L1_WIH), G(m, L1_WHH), G(m, L1_BIH), G(m, L1_BHH), NULL, NULL,
                  m->scratch, m->g2, NULL, NULL, m->x0, m->a1, m->cache1, P(m, L1_WIH), P(m, L1_WHH),
                  T, B, d, d);
    /* forward: x0 = drop(emb) */
    memset(m->g2, 0, sizeof(float) * Nd);
    drop_bwd(m, m->g2, m->g1, p, ctr[0], T, B);
    embedding_backward(G(m, E_EMB), m->g2, m->in_tok, N, d);
    m->T = T;
    m->B = B;
    m->valid = 1;
    return moe_ok();
}

void moe_lm_reset_state(moe_lm *m) {
    if (m && m->state) memset(m->state, 0, sizeof(float) * 4 * (size_t)m->stateB * m->cfg.d);
}

moe_status moe_lm_next_logits(moe_lm *m, const int32_t *tokens, int B, float *logits) {
    if (!m || !tokens || !logits) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    /* one evaluation step; the target column is a dummy copy of the input */
    int32_t *tk = malloc(sizeof(int32_t) * 2 * (size_t)B);
    if (!tk) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    for (int b = 0; b < B; b++) tk[2 * b] = tk[2 * b + 1] = tokens[b];
    moe_status st = moe_lm_step(m, tk, B, 1, 0, NULL);
    free(tk);
    if (st) return st;
    /* moe_lm_step leaves the logits' softmax in probs; logits are recoverable only up to a
     * constant, which is all sampling needs: log p */
    for (size_t i = 0; i < (size_t)B * m->cfg.vocab; i++) logits[i] = logf(fmaxf(m->probs[i], 1e-30f));
    return moe_ok();
}

int moe_lm_num_params(const moe_lm *m) { return m ? NP : 0; }

moe_status moe_lm_param(moe_lm *m, int i, moe_param *p) {
    if (!m || !p || i < 0 || i >= NP) return moe_fail(MOE_ERR_INVALID_ARG, "parameter index %d out of range", i);
    const slot *s = &m->slots[i];
    p->name = NAMES[i];
    p->ndim = s->ndim;
    p->shape[0] = s->shape[0];
    p->shape[1] = s->ndim > 1 ? s->shape[1] : 0;
    p->shape[2] = 0;
    p->numel = s->numel;
    p->data = m->params + s->offset;
    p->grad = m->grads + s->offset;
    p->expert_first = p->experts = 0;
    return moe_ok();
}

moe_status moe_lm_arena(moe_lm *m, float **params, float **grads, size_t *count) {
    if (!m) return moe_fail(MOE_ERR_INVALID_ARG, "model is NULL");
    return moe_arena_out(m->params, m->grads, m->count, params, grads, count);
}

void moe_lm_zero_grad(moe_lm *m) {
    if (!m) return;
    memset(m->grads, 0, sizeof(float) * m->count);
    moe_layer_zero_grad(m->moe);
}

moe_status moe_lm_config_param_counts(const moe_lm_config *cfg, int64_t *total, int64_t *active) {
    if (!cfg) return moe_fail(MOE_ERR_INVALID_ARG, "cfg is NULL");
    int64_t sh[NP][2], t = 0, a = 0;
    dense_shapes(cfg, sh);
    for (int p = 0; p < NP; p++) t += sh[p][0] * (sh[p][1] ? sh[p][1] : 1);
    a = t;
    if (cfg->ffn != MOE_FFN_NONE) { /* the dense FFN is a layer of one expert (its gate counted too) */
        const moe_layer_config lc = lm_ffn_config(cfg);
        const int64_t expert = 2LL * lc.d * lc.h + (lc.bias ? lc.h + lc.d : 0), gate = 2LL * lc.d * lc.n;
        if (lc.groups > 0) { /* the primary gate and every group's; a token uses k_groups groups' */
            const int64_t g1 = 2LL * lc.d * lc.groups, g2 = 2LL * lc.d * (lc.n / lc.groups);
            t += g1 + g2 * lc.groups + expert * lc.n;
            a += g1 + g2 * lc.k_groups + expert * (int64_t)lc.k_groups * lc.k;
        } else {
            t += gate + expert * lc.n;
            a += gate + expert * lc.k;
        }
    }
    if (total) *total = t;
    if (active) *active = a;
    return MOE_OK;
}

void moe_lm_param_counts(const moe_lm *m, int64_t *total, int64_t *active) {
    if (m) moe_lm_config_param_counts(&m->cfg, total, active);
}

moe_lm_rng moe_lm_get_rng(const moe_lm *m) {
    moe_lm_rng r = {m->seed, m->drop_ctr, 0, 0};
    if (m->moe) moe_layer_get_rng(m->moe, &r.moe_seed, &r.moe_counter);
    return r;
}

void moe_lm_set_rng(moe_lm *m, const moe_lm_rng *r) {
    m->seed = r->seed;
    m->drop_ctr = r->dropout_counter;
    if (m->moe) moe_layer_set_rng(m->moe, r->moe_seed, r->moe_counter);
}

moe_status moe_lm_get_state(const moe_lm *m, float *state, int B) {
    if (!m || !state) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    size_t n = 4 * (size_t)B * m->cfg.d;
    if (m->stateB != B) memset(state, 0, sizeof(float) * n); /* no state carried yet for this B: zeros */
    else memcpy(state, m->state, sizeof(float) * n);
    return moe_ok();
}

moe_status moe_lm_set_state(moe_lm *m, const float *state, int B) {
    if (!m || !state || B < 1) return moe_fail(MOE_ERR_INVALID_ARG, "bad argument");
    if (!moe_all_finite(state, 4 * (size_t)B * m->cfg.d))
        return moe_fail(MOE_ERR_NONFINITE, "LSTM state contains NaN or Inf");
    moe_status st = state_reserve(m, B);
    if (st) return st;
    memcpy(m->state, state, sizeof(float) * 4 * (size_t)B * m->cfg.d);
    return moe_ok();
}
