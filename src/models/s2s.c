/* s2s.c - the sequence-to-sequence model: forward and backward of a teacher-forced batch,
 * step-by-step decoding (greedy, sampling, beam search).
 *
 *   src [Ts,B] -> emb_s -> drop = xs -> LSTM enc1 (bidir: + LSTM enc1r over reversed time, the
 *              two outputs summed) = e1 [-> x2e = drop(e1 + sigmoid(MoE_e(e1))) -> LSTM enc2 = e2]
 *              enc = the last layer's output [Ts,B,d]; layer l's final (h, c) (the left-to-right
 *              LSTM's) start decoder layer l
 *   in  [Tt,B] -> emb_t -> drop = xt -> LSTM dec1 = d1 [-> x2d = drop(d1 + sigmoid(MoE_d(d1)))
 *              -> LSTM dec2 = d2]  = q [Tt,B,d]
 *   attention:  K = enc W_a;  score[t,s] = q_t . K_s;  a = softmax over s;  ctx_t = sum_s a enc_s
 *   hc = tanh([ctx; q] W_c + b_c) -> drop -> logits = hc W_o + b_o -> softmax
 *   loss = sum coef[t,b] * -log p[t,b](tgt[t,b])  (+ both MoE layers' balancing losses)
 *
 * Buffers are time-major: row (t, b) of a [T,B,W] buffer starts at (t*B + b)*W. Every sequence
 * of a batch has the same source length (the trainer buckets by it), so the attention needs no
 * mask. The decoder's step-by-step functions compute exactly what the teacher-forced pass does
 * with the same inputs, dropout masks included (see s2s.h).
 *
 * Data parallel (moe_s2s_create_sharded, moe_s2s_set_slice): each rank runs rows [b0, b0+B) of
 * every batch of Bg, possibly none; dropout masks, gate noise and sampling draws are those of the
 * global rows, and the MoE layers' experts are split over the ranks, so P ranks compute what one
 * process computes for the whole batch. */
#include "base/internal.h"
#include "parallel/comm.h"
#include "models/model_table.h"
#include "moe/layer_table.h"
#include "nn/lstm.h"
#include "nn/nn.h"
#include "models/s2s.h"
#include "base/vmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
    P_SEMB, P_TEMB,
    P_E1, P_E1R = P_E1 + 4, P_E2 = P_E1R + 4, P_D1 = P_E2 + 4, P_D2 = P_D1 + 4, /* w_ih w_hh b_ih b_hh */
    P_ATT = P_D2 + 4, P_CW, P_CB, P_OW, P_OB, P_BW, P_BB, NP
};
static const char *const NAMES[NP] = {
    "src_emb", "tgt_emb",
    "enc1.w_ih", "enc1.w_hh", "enc1.b_ih", "enc1.b_hh",
    "enc1r.w_ih", "enc1r.w_hh", "enc1r.b_ih", "enc1r.b_hh",
    "enc2.w_ih", "enc2.w_hh", "enc2.b_ih", "enc2.b_hh",
    "dec1.w_ih", "dec1.w_hh", "dec1.b_ih", "dec1.b_hh",
    "dec2.w_ih", "dec2.w_hh", "dec2.b_ih", "dec2.b_hh",
    "att.w", "comb.w", "comb.b", "out.w", "out.b", "baseline.w", "baseline.b"};

/* dropout sites: each has its own counter range within a training step */
enum { DR_SRC, DR_ENC2, DR_TGT, DR_DEC2, DR_HC };
#define DR_SITE_STRIDE (1ULL << 34)
#define DR_STEP_STRIDE (1ULL << 37)

/* workspace buffers (floats), sized for the largest (Ts, Tt, B) seen */
enum {
    /* encoder [Ts,B,d] */
    W_XS, W_XSR, W_E1F, W_E1B, W_E1, W_MOE, W_SGE, W_X2E, W_E2, W_K,
    W_GE0, W_GE1, W_GE2,
    /* decoder [Tt,B,d] */
    W_XT, W_D1, W_MOD, W_SGD, W_X2D, W_D2, W_CTX, W_HC, W_HCD, W_GD0, W_GD1, W_GD2,
    W_CAT, W_DCAT, /* [Tt,B,2d] */
    W_ATT,         /* [Tt,B,Ts] */
    W_PROB, W_DLOG, /* [Tt,B,V] */
    W_NLL,         /* [Tt,B] each position's weighted -log p, summed in order */
    W_CE1F, W_CE1B, W_CE2, W_CD1, W_CD2, W_SCR, /* LSTM caches and scratch */
    W_FIN,         /* [2 layers][h,c][B,d] encoder final states */
    W_DFIN,        /* the same shape: their gradients */
    NW
};

struct moe_s2s {
    moe_s2s_config cfg;
    ptable pt; /* every tensor: groups s2s, moe0, moe1, baseline */
    int np;                   /* parameters in use (indices into `off` may be unused: -1) */
    size_t off[NP], numel[NP];
    int ndim[NP];
    int64_t shape[NP][2];
    float *params, *grads;
    size_t count;
    moe_layer *moe[2];
    moe_comm *comm;           /* the MoE layers' experts split over its ranks (NULL: one process) */
    int b0, Bg;               /* data parallel: this model's rows are [b0, b0+B) of a batch of Bg
                                 (0: the whole batch) */
    uint64_t seed, step_ctr;  /* dropout: masks of step `step_ctr` */
    float *w[NW];
    size_t cap[NW];
    int32_t *itok;            /* [Ts*B + 2*Tt*B] src, in, tgt time-major */
    float *coef;              /* [Tt*B] */
    size_t itok_cap, coef_cap;
    /* the last encode / decode */
    int B, Ts, Tt, enc_train, dec_train, enc_ok, dec_ok;
    moe_layer_stats enc_stats;
    double loss, aux;
    /* step-by-step decoding state */
    float *st;                /* [2 layers][h,c][R,d] + x, y, q, tmp [R,d] + cat [R,2d] + probs [R,V] + cache */
    size_t st_cap;
    int32_t *src_row;         /* [R] which encoded source each decoding row attends to */
    size_t src_row_cap;
};

moe_s2s_config moe_s2s_config_default(void) {
    moe_s2s_config c = {.src_vocab = 0, .tgt_vocab = 0, .d = 128, .layers = 2, .bidir = 1, .moe = 1,
                        .n = 8, .k = 2, .h = 256, .w_importance = 0.1f, .w_load = 0.1f,
                        .noise_eps = 0.01f, .dropout = 0.1f, .max_len = 16, .eos = 1};
    return c;
}

static moe_status check_cfg(const moe_s2s_config *c) {
    if (!c) return moe_fail(MOE_ERR_INVALID_ARG, "config is NULL");
    if (c->src_vocab < 2 || c->tgt_vocab < 2)
        return moe_fail(MOE_ERR_CONFIG, "vocabularies of %d and %d words: need at least 2 each", c->src_vocab, c->tgt_vocab);
    if (c->d < 1) return moe_fail(MOE_ERR_CONFIG, "width d=%d must be positive", c->d);
    if (c->layers != 1 && c->layers != 2) return moe_fail(MOE_ERR_CONFIG, "layers=%d: 1 or 2", c->layers);
    if (c->moe && c->layers != 2) return moe_fail(MOE_ERR_CONFIG, "an MoE layer sits between two LSTM layers: it needs layers=2");
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f)) return moe_fail(MOE_ERR_CONFIG, "dropout %g must be in [0, 1)", c->dropout);
    if (c->max_len < 1 || c->max_len > 4096) return moe_fail(MOE_ERR_CONFIG, "max_len=%d must be in [1, 4096]", c->max_len);
    if (c->eos < 0 || c->eos >= c->tgt_vocab) return moe_fail(MOE_ERR_CONFIG, "end mark %d is not a target id", c->eos);
    return MOE_OK;
}

static float *PA(const moe_s2s *m, int p) { return m->params + m->off[p]; }
static float *GR(const moe_s2s *m, int p) { return m->grads + m->off[p]; }
static int used(const moe_s2s *m, int p) { return m->numel[p] > 0; }

/* tensors p of [lo, hi) into group g */
static moe_status add_dense(moe_s2s *m, int g, int lo, int hi) {
    moe_status st = MOE_OK;
    for (int p = lo; p < hi && !st; p++)
        if (used(m, p))
            st = ptable_add(&m->pt, g, NAMES[p], m->ndim[p], m->shape[p], PA(m, p), GR(m, p), m->ndim[p] >= 2, 0, 0, 0);
    return st;
}

/* The parameter table: the dense arena up to the baseline regressors as group "s2s", each MoE
 * layer as "moe0"/"moe1", the regressors (the arena's tail, stepped by their own optimiser) as
 * "baseline" with the names s2s.baseline.* */
static moe_status build_table(moe_s2s *m) {
    const size_t cut = m->off[P_BW];
    const int g = ptable_group(&m->pt, "s2s", NULL, m->params, m->grads, cut, 0);
    moe_status st = g < 0 ? MOE_ERR_CONFIG : add_dense(m, g, 0, P_BW);
    for (int side = 0; side < 2 && !st; side++)
        if (m->moe[side]) st = layer_ptable(&m->pt, side ? "moe1" : "moe0", m->moe[side]);
    if (st) return st;
    const int gb = ptable_group(&m->pt, "baseline", "s2s", m->params + cut, m->grads + cut, m->count - cut, 0);
    return gb < 0 ? MOE_ERR_CONFIG : add_dense(m, gb, P_BW, NP);
}

static moe_status s2s_create(moe_s2s **out, const moe_s2s_config *cfg, uint64_t seed, moe_comm *comm) {
    if (!out) return moe_fail(MOE_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    moe_status st = check_cfg(cfg);
    if (st) return st;
    moe_s2s *m = calloc(1, sizeof *m);
    if (!m) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the model");
    m->cfg = *cfg;
    const int64_t d = cfg->d, Vs = cfg->src_vocab, Vt = cfg->tgt_vocab, T = cfg->max_len;
    int64_t sh[NP][2] = {{Vs, d}, {Vt, d}};
    for (int l = 0; l < 5; l++) {
        const int base = P_E1 + 4 * l;
        const int on = l == 0 || l == 3 || (l == 1 && cfg->bidir) || ((l == 2 || l == 4) && cfg->layers == 2);
        if (!on) continue;
        sh[base][0] = 4 * d, sh[base][1] = d;
        sh[base + 1][0] = 4 * d, sh[base + 1][1] = d;
        sh[base + 2][0] = 4 * d;
        sh[base + 3][0] = 4 * d;
    }
    sh[P_ATT][0] = d, sh[P_ATT][1] = d;
    sh[P_CW][0] = 2 * d, sh[P_CW][1] = d;
    sh[P_CB][0] = d;
    sh[P_OW][0] = d, sh[P_OW][1] = Vt;
    sh[P_OB][0] = Vt;
    sh[P_BW][0] = T, sh[P_BW][1] = d;
    sh[P_BB][0] = T;
    size_t off = 0;
    for (int p = 0; p < NP; p++) {
        m->shape[p][0] = sh[p][0];
        m->shape[p][1] = sh[p][1];
        m->ndim[p] = sh[p][1] ? 2 : 1;
        m->numel[p] = (size_t)sh[p][0] * (size_t)(sh[p][1] ? sh[p][1] : 1);
        m->off[p] = off;
        off += MOE_ARENA_PAD(m->numel[p]);
    }
    m->count = off;
    if (!moe_alloc_arena(&m->params, &m->grads, off)) {
        moe_s2s_free(m);
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate %zu parameters", off);
    }
    const float a = 1.0f / sqrtf((float)d);
    for (int p = 0; p < NP; p++) {
        if (!used(m, p) || p == P_BW || p == P_BB || p == P_OB || p == P_CB) continue; /* zeros */
        const float s = p == P_SEMB || p == P_TEMB ? 0.1f : (p == P_CW ? 1.0f / sqrtf(2.0f * d) : a);
        nn_init_uniform(PA(m, p), m->numel[p], s, seed * 131 + (uint64_t)p);
    }
    if (cfg->moe) {
        for (int side = 0; side < 2; side++) {
            const moe_layer_config lc =
                layer_config_of(cfg->d, cfg->n, cfg->k, cfg->h, cfg->w_importance, cfg->w_load, cfg->noise_eps);
            const uint64_t ls = (seed ^ 0x6d6f65ULL) + 7919ULL * (uint64_t)side;
            st = comm ? moe_layer_create_sharded(&m->moe[side], &lc, ls, comm) : moe_layer_create(&m->moe[side], &lc, ls);
            if (st) {
                moe_s2s_free(m);
                return st;
            }
        }
    }
    if ((st = build_table(m))) {
        moe_s2s_free(m);
        return st;
    }
    m->seed = seed;
    m->comm = comm;
    *out = m;
    return moe_ok();
}

moe_status moe_s2s_create(moe_s2s **out, const moe_s2s_config *cfg, uint64_t seed) {
    return s2s_create(out, cfg, seed, NULL);
}

moe_status moe_s2s_create_sharded(moe_s2s **out, const moe_s2s_config *cfg, uint64_t seed, moe_comm *comm) {
    if (!comm) return moe_fail(MOE_ERR_INVALID_ARG, "comm is NULL");
    return s2s_create(out, cfg, seed, moe_comm_size(comm) > 1 ? comm : NULL);
}

moe_status moe_s2s_set_slice(moe_s2s *m, int b0, int Bglobal) {
    if (!m || b0 < 0 || Bglobal < 0 || (Bglobal > 0 && b0 > Bglobal))
        return moe_fail(MOE_ERR_INVALID_ARG, "rows from %d of a batch of %d is impossible", b0, Bglobal);
    m->b0 = Bglobal ? b0 : 0;
    m->Bg = Bglobal;
    return moe_ok();
}

void moe_s2s_free(moe_s2s *m) {
    if (!m) return;
    moe_free_aligned(m->params);
    moe_free_aligned(m->grads);
    for (int i = 0; i < NW; i++) moe_free_aligned(m->w[i]);
    moe_free_aligned(m->st);
    free(m->itok);
    free(m->coef);
    free(m->src_row);
    moe_layer_free(m->moe[0]);
    moe_layer_free(m->moe[1]);
    ptable_free(&m->pt);
    free(m);
}

const ptable *s2s_table(const moe_s2s *m) { return &m->pt; }
int moe_s2s_num_tensors(const moe_s2s *m) { return m ? m->pt.count : 0; }
moe_status moe_s2s_tensor(moe_s2s *m, int i, moe_param *p) { return ptable_param(m ? &m->pt : NULL, i, p); }

moe_s2s_config moe_s2s_get_config(const moe_s2s *m) { return m->cfg; }
moe_layer *moe_s2s_moe(moe_s2s *m, int side) { return m && (side == 0 || side == 1) ? m->moe[side] : NULL; }
uint64_t s2s_get_step_counter(const moe_s2s *m) { return m->step_ctr; }
uint64_t s2s_get_seed(const moe_s2s *m) { return m->seed; }
size_t s2s_baseline_offset(const moe_s2s *m) { return m->off[P_BW]; } /* P_BW, P_BB come last */
void s2s_set_seed(moe_s2s *m, uint64_t seed) { m->seed = seed; }
void s2s_set_step_counter(moe_s2s *m, uint64_t c) { m->step_ctr = c; }
const float *s2s_hidden(const moe_s2s *m) { return m->w[W_HC]; }

int moe_s2s_num_params(const moe_s2s *m) {
    int n = 0;
    for (int p = 0; m && p < NP; p++) n += used(m, p);
    return n;
}

moe_status moe_s2s_param(moe_s2s *m, int i, moe_param *p) {
    if (!m || !p) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    for (int q = 0; q < NP; q++) {
        if (!used(m, q)) continue;
        if (i-- == 0) {
            p->name = NAMES[q];
            p->ndim = m->ndim[q];
            p->shape[0] = m->shape[q][0];
            p->shape[1] = m->ndim[q] > 1 ? m->shape[q][1] : 0;
            p->shape[2] = 0;
            p->numel = m->numel[q];
            p->data = PA(m, q);
            p->grad = GR(m, q);
            p->expert_first = p->experts = 0;
            return moe_ok();
        }
    }
    return moe_fail(MOE_ERR_INVALID_ARG, "parameter index out of range");
}

moe_status moe_s2s_find_param(moe_s2s *m, const char *name, moe_param *p) {
    const int n = moe_s2s_num_params(m);
    for (int i = 0; i < n && name; i++)
        if (!moe_s2s_param(m, i, p) && strcmp(p->name, name) == 0) return MOE_OK;
    return moe_fail(MOE_ERR_MISSING, "no parameter named '%s'", name ? name : "(null)");
}

moe_status moe_s2s_arena(moe_s2s *m, float **params, float **grads, size_t *count) {
    if (!m) return moe_fail(MOE_ERR_INVALID_ARG, "model is NULL");
    return moe_arena_out(m->params, m->grads, m->count, params, grads, count);
}

void moe_s2s_zero_grad(moe_s2s *m) {
    if (!m) return;
    memset(m->grads, 0, sizeof(float) * m->count);
    moe_layer_zero_grad(m->moe[0]);
    moe_layer_zero_grad(m->moe[1]);
}

/* ---- workspace -------------------------------------------------------------------------------- */
static moe_status ws(moe_s2s *m, int i, size_t n) {
    if (n <= m->cap[i]) return MOE_OK;
    moe_free_aligned(m->w[i]);
    m->w[i] = moe_alloc_floats(n ? n : 1);
    m->cap[i] = m->w[i] ? n : 0;
    return m->w[i] ? MOE_OK : moe_fail(MOE_ERR_NOMEM, "cannot allocate %zu floats of workspace", n);
}

static moe_status ws_tokens(moe_s2s *m, size_t ntok, size_t ncoef) {
    if (ntok > m->itok_cap) {
        int32_t *t = realloc(m->itok, sizeof(int32_t) * ntok);
        if (!t) return moe_fail(MOE_ERR_NOMEM, "out of memory");
        m->itok = t;
        m->itok_cap = ntok;
    }
    if (ncoef > m->coef_cap) {
        float *c = realloc(m->coef, sizeof(float) * ncoef);
        if (!c) return moe_fail(MOE_ERR_NOMEM, "out of memory");
        m->coef = c;
        m->coef_cap = ncoef;
    }
    return MOE_OK;
}

static uint64_t drop_ctr(const moe_s2s *m, int site) {
    return m->step_ctr * DR_STEP_STRIDE + (uint64_t)site * DR_SITE_STRIDE;
}

/* The rows of the whole batch at each time step: Bg when this model holds a slice of it. */
static int rows_global(const moe_s2s *m, int B) { return m->Bg ? m->Bg : B; }

/* Dropout (fwd 1: forward, 0: backward) over a time-major [T,B,d] buffer with the draws of the
 * whole batch (dropout_rows), so a slice of the batch on one rank sees the masks one process
 * running the whole batch would. */
static void drop_rows(const moe_s2s *m, int fwd, float *out, const float *in, int T, int B, float p, uint64_t ctr) {
    dropout_rows(fwd, out, in, T, B, rows_global(m, B), m->Bg ? m->b0 : 0, m->cfg.d, p, m->seed, ctr);
}

/* The MoE layers draw their gate noise by the global position of a row too. */
static moe_status noise_rows(moe_s2s *m, int side, int B) {
    if (!m->moe[side] || B == 0) return MOE_OK;
    return moe_layer_set_noise_layout(m->moe[side], B, rows_global(m, B), m->Bg ? m->b0 : 0);
}

static void lstm_fwd(const moe_s2s *m, int p, float *h, float *hT, float *cT, float *cache, const float *x,
                     const float *h0, const float *c0, int T, int B) {
    const int d = m->cfg.d;
    lstm_forward(h, hT, cT, cache, x, h0, c0, PA(m, p), PA(m, p + 1), PA(m, p + 2), PA(m, p + 3), T, B, d, d);
}

static void lstm_bwd(const moe_s2s *m, int p, float *dx, float *dh0, float *dc0, const float *dh,
                     const float *dhT, const float *dcT, const float *x, const float *h, const float *cache,
                     int T, int B) {
    const int d = m->cfg.d;
    lstm_backward(dx, GR(m, p), GR(m, p + 1), GR(m, p + 2), GR(m, p + 3), dh0, dc0, m->w[W_SCR], dh, dhT, dcT,
                  x, h, cache, PA(m, p), PA(m, p + 1), T, B, d, d);
}

/* time-reverse a [T,B,d] buffer: out[t] = in[T-1-t] */
static void reverse_time(float *out, const float *in, int T, size_t row) {
    for (int t = 0; t < T; t++) memcpy(out + (size_t)t * row, in + (size_t)(T - 1 - t) * row, sizeof(float) * row);
}

/* Between the two LSTM layers of a side:  x2 = drop(x1 + sigmoid(MoE(x1)))  (without MoE:
 * drop(x1)) over [T,B] rows; sg [T*B,d] keeps the sigmoid for backward (it may be the same
 * buffer as mo, the MoE's output). Dropout counters of the batch start at ctr. */
static moe_status mid_forward(moe_s2s *m, int side, float *x2, const float *x1, float *mo, float *sg, int T, int B,
                              moe_mode mode, float p, uint64_t ctr, moe_layer_stats *ms) {
    const size_t N = (size_t)T * B, Nd = N * (size_t)m->cfg.d;
    memcpy(x2, x1, sizeof(float) * Nd);
    if (m->cfg.moe) {
        moe_status st = mode == MOE_TRAIN ? noise_rows(m, side, B) : MOE_OK;
        if (!st) st = moe_layer_forward(m->moe[side], mo, x1, (int)N, mode, NULL, ms);
        if (st) return st;
        for (size_t i = 0; i < Nd; i++) sg[i] = sigmoid_f(mo[i]), x2[i] += sg[i];
    }
    drop_rows(m, 1, x2, x2, T, B, p, ctr);
    return MOE_OK;
}

/* Its backward: dx1 = dL/dx1 from dx2 = dL/dx2 (overwritten: scratch). */
static moe_status mid_backward(moe_s2s *m, int side, float *dx1, float *dx2, const float *sg, int T, int B, float p,
                               uint64_t ctr) {
    const size_t Nd = (size_t)T * B * (size_t)m->cfg.d;
    memset(dx1, 0, sizeof(float) * Nd);
    drop_rows(m, 0, dx1, dx2, T, B, p, ctr);
    if (!m->cfg.moe) return MOE_OK;
    for (size_t i = 0; i < Nd; i++) dx2[i] = dx1[i] * sg[i] * (1.0f - sg[i]);
    return moe_layer_backward(m->moe[side], dx1, dx2);
}

/* ---- encoder ---------------------------------------------------------------------------------- */
moe_status s2s_encode(moe_s2s *m, const int32_t *src, int B, int Ts, int train) {
    if (!m || !src) return moe_fail(MOE_ERR_INVALID_ARG, "model and source must not be NULL");
    /* a rank of a model split over ranks may have no rows of a batch: it still takes part */
    if (B < (m->comm ? 0 : 1) || Ts < 1 || Ts > 4096)
        return moe_fail(MOE_ERR_SHAPE, "batch of %d sources of length %d: need B >= 1 and 1 <= Ts <= 4096", B, Ts);
    if (m->Bg && m->b0 + B > m->Bg)
        return moe_fail(MOE_ERR_SHAPE, "rows [%d, %d) do not fit the batch of %d (moe_s2s_set_slice)", m->b0, m->b0 + B, m->Bg);
    const moe_s2s_config *c = &m->cfg;
    const int d = c->d;
    for (size_t i = 0; i < (size_t)B * Ts; i++)
        if (src[i] < 0 || src[i] >= c->src_vocab)
            return moe_fail(MOE_ERR_INVALID_ARG, "source token %d at %zu is outside the vocabulary [0,%d)", src[i], i, c->src_vocab);
    const size_t N = (size_t)Ts * B, Nd = N * d;
    moe_status st = MOE_OK;
    const int ebuf[] = {W_XS, W_XSR, W_E1F, W_E1B, W_E1, W_MOE, W_SGE, W_X2E, W_E2, W_K, W_GE0, W_GE1, W_GE2};
    for (size_t i = 0; i < sizeof ebuf / sizeof ebuf[0] && !st; i++) st = ws(m, ebuf[i], Nd);
    const size_t cf = lstm_cache_floats(Ts, B, d);
    if (!st) st = ws(m, W_CE1F, cf);
    if (!st) st = ws(m, W_CE1B, cf);
    if (!st) st = ws(m, W_CE2, cf);
    if (!st) st = ws(m, W_SCR, lstm_scratch_floats(Ts, B, d));
    if (!st) st = ws(m, W_FIN, 4 * (size_t)B * d);
    if (!st) st = ws(m, W_DFIN, 4 * (size_t)B * d);
    if (!st) st = ws_tokens(m, N ? N : 1, 0);
    if (st) return st;
    m->enc_ok = m->dec_ok = 0;
    if (train) m->step_ctr++;
    const float p = train ? c->dropout : 0.0f;
    int32_t *stok = m->itok;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < Ts; t++) stok[(size_t)t * B + b] = src[(size_t)b * Ts + t];
    float *fin = m->w[W_FIN], *h1 = fin, *c1 = fin + (size_t)B * d, *h2 = c1 + (size_t)B * d, *c2 = h2 + (size_t)B * d;
    float *xs = m->w[W_XS], *e1 = m->w[W_E1];
    embedding_forward(xs, stok, PA(m, P_SEMB), (int)N, c->src_vocab, d);
    drop_rows(m, 1, xs, xs, Ts, B, p, drop_ctr(m, DR_SRC));
    lstm_fwd(m, P_E1, m->w[W_E1F], h1, c1, m->w[W_CE1F], xs, NULL, NULL, Ts, B);
    memcpy(e1, m->w[W_E1F], sizeof(float) * Nd);
    if (c->bidir) {
        reverse_time(m->w[W_XSR], xs, Ts, (size_t)B * d);
        lstm_fwd(m, P_E1R, m->w[W_E1B], NULL, NULL, m->w[W_CE1B], m->w[W_XSR], NULL, NULL, Ts, B);
        for (int t = 0; t < Ts; t++) {
            const float *r = m->w[W_E1B] + (size_t)(Ts - 1 - t) * B * d;
            float *o = e1 + (size_t)t * B * d;
            for (size_t j = 0; j < (size_t)B * d; j++) o[j] += r[j];
        }
    }
    float *enc = e1;
    if (c->layers == 2) {
        float *x2 = m->w[W_X2E];
        st = mid_forward(m, 0, x2, e1, m->w[W_MOE], m->w[W_SGE], Ts, B, train ? MOE_TRAIN : MOE_EVAL, p,
                         drop_ctr(m, DR_ENC2), &m->enc_stats);
        if (st) return st;
        lstm_fwd(m, P_E2, m->w[W_E2], h2, c2, m->w[W_CE2], x2, NULL, NULL, Ts, B);
        enc = m->w[W_E2];
    }
    linear_forward(m->w[W_K], enc, PA(m, P_ATT), NULL, (int)N, d, d);
    m->B = B;
    m->Ts = Ts;
    m->enc_train = train;
    m->enc_ok = 1;
    return MOE_OK;
}

static const float *enc_out(const moe_s2s *m) { return m->cfg.layers == 2 ? m->w[W_E2] : m->w[W_E1]; }

/* Attention for R query rows: q [R,d] row r attends over the encoded source src_row[r] (or r when
 * src_row is NULL), within the [Ts,B,d] encoder buffers. Writes a [R,Ts] and cat [R,2d] = [ctx; q]. */
static void attend(const moe_s2s *m, float *a, float *cat, const float *q, int R, const int32_t *src_row) {
    const int d = m->cfg.d, Ts = m->Ts, B = m->B;
    const float *enc = enc_out(m), *K = m->w[W_K];
#pragma omp parallel for schedule(static) if (R >= 16)
    for (int r = 0; r < R; r++) {
        const int b = src_row ? src_row[r] : r % B;
        const float *qr = q + (size_t)r * d;
        float *ar = a + (size_t)r * Ts, mx = -INFINITY;
        for (int s = 0; s < Ts; s++) {
            const float *ks = K + ((size_t)s * B + b) * d;
            float acc = 0.0f;
            for (int j = 0; j < d; j++) acc += qr[j] * ks[j];
            ar[s] = acc;
            mx = fmaxf(mx, acc);
        }
        float sum = 0.0f;
        for (int s = 0; s < Ts; s++) sum += (ar[s] = expf(ar[s] - mx));
        float *ctx = cat + (size_t)r * 2 * d;
        memset(ctx, 0, sizeof(float) * d);
        for (int s = 0; s < Ts; s++) {
            ar[s] /= sum;
            const float *es = enc + ((size_t)s * B + b) * d, w = ar[s];
            for (int j = 0; j < d; j++) ctx[j] += w * es[j];
        }
        memcpy(ctx + d, qr, sizeof(float) * d);
    }
}

/* ---- teacher-forced decoder ------------------------------------------------------------------- */
moe_status s2s_decode(moe_s2s *m, const int32_t *in, const int32_t *tgt, const float *coef, int Tt, int train,
                      double *loss) {
    if (!m || !in || !tgt || !coef) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    if (!m->enc_ok) return moe_fail(MOE_ERR_STATE, "decode without an encoded batch");
    if (Tt < 1) return moe_fail(MOE_ERR_SHAPE, "target length %d must be >= 1", Tt);
    const moe_s2s_config *c = &m->cfg;
    const int d = c->d, V = c->tgt_vocab, B = m->B, Ts = m->Ts;
    const size_t N = (size_t)Tt * B, Nd = N * d;
    for (size_t i = 0; i < N; i++) {
        if (in[i] < 0 || in[i] >= V)
            return moe_fail(MOE_ERR_INVALID_ARG, "decoder input %d at %zu is outside the vocabulary [0,%d)", in[i], i, V);
        if (coef[i] != 0.0f && (tgt[i] < 0 || tgt[i] >= V))
            return moe_fail(MOE_ERR_INVALID_ARG, "target %d at %zu is outside the vocabulary [0,%d)", tgt[i], i, V);
        if (!isfinite(coef[i])) return moe_fail(MOE_ERR_NONFINITE, "coefficient %zu is %g", i, coef[i]);
    }
    moe_status st = MOE_OK;
    const int dbuf[] = {W_XT, W_D1, W_MOD, W_SGD, W_X2D, W_D2, W_CTX, W_HC, W_HCD, W_GD0, W_GD1, W_GD2};
    for (size_t i = 0; i < sizeof dbuf / sizeof dbuf[0] && !st; i++) st = ws(m, dbuf[i], Nd);
    if (!st) st = ws(m, W_CAT, 2 * Nd);
    if (!st) st = ws(m, W_DCAT, 2 * Nd);
    if (!st) st = ws(m, W_ATT, N * Ts);
    if (!st) st = ws(m, W_PROB, N * V);
    if (!st) st = ws(m, W_DLOG, N * V);
    if (!st) st = ws(m, W_NLL, N);
    const size_t cf = lstm_cache_floats(Tt, B, d);
    if (!st) st = ws(m, W_CD1, cf);
    if (!st) st = ws(m, W_CD2, cf);
    if (!st) st = ws(m, W_SCR, lstm_scratch_floats(Tt > Ts ? Tt : Ts, B, d));
    if (!st) {
        /* the source tokens stay at the start of itok */
        const size_t ns = (size_t)Ts * B;
        if (ns + 2 * N > m->itok_cap) {
            int32_t *t = realloc(m->itok, sizeof(int32_t) * (ns + 2 * N));
            if (!t) st = moe_fail(MOE_ERR_NOMEM, "out of memory");
            else m->itok = t, m->itok_cap = ns + 2 * N;
        }
    }
    if (!st) st = ws_tokens(m, 0, N ? N : 1);
    if (st) return st;
    m->dec_ok = 0;
    int32_t *itin = m->itok + (size_t)Ts * B, *ittg = itin + N;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < Tt; t++) {
            itin[(size_t)t * B + b] = in[(size_t)b * Tt + t];
            ittg[(size_t)t * B + b] = tgt[(size_t)b * Tt + t];
            m->coef[(size_t)t * B + b] = coef[(size_t)b * Tt + t];
        }
    const float p = train ? c->dropout : 0.0f;
    const float *fin = m->w[W_FIN];
    const float *h1 = fin, *c1 = fin + (size_t)B * d, *h2 = c1 + (size_t)B * d, *c2 = h2 + (size_t)B * d;
    float *xt = m->w[W_XT], *q = m->w[W_D1];
    embedding_forward(xt, itin, PA(m, P_TEMB), (int)N, V, d);
    drop_rows(m, 1, xt, xt, Tt, B, p, drop_ctr(m, DR_TGT));
    lstm_fwd(m, P_D1, m->w[W_D1], NULL, NULL, m->w[W_CD1], xt, h1, c1, Tt, B);
    moe_layer_stats ms[2];
    memset(ms, 0, sizeof ms);
    if (c->layers == 2) {
        float *x2 = m->w[W_X2D];
        st = mid_forward(m, 1, x2, m->w[W_D1], m->w[W_MOD], m->w[W_SGD], Tt, B, train ? MOE_TRAIN : MOE_EVAL, p,
                         drop_ctr(m, DR_DEC2), &ms[1]);
        if (st) return st;
        lstm_fwd(m, P_D2, m->w[W_D2], NULL, NULL, m->w[W_CD2], x2, h2, c2, Tt, B);
        q = m->w[W_D2];
    }
    attend(m, m->w[W_ATT], m->w[W_CAT], q, (int)N, NULL);
    float *hc = m->w[W_HC];
    linear_forward(hc, m->w[W_CAT], PA(m, P_CW), PA(m, P_CB), (int)N, 2 * d, d);
    for (size_t i = 0; i < Nd; i++) hc[i] = tanh_f(hc[i]);
    drop_rows(m, 1, m->w[W_HCD], hc, Tt, B, p, drop_ctr(m, DR_HC));
    float *logits = m->w[W_DLOG], *probs = m->w[W_PROB];
    linear_forward(logits, m->w[W_HCD], PA(m, P_OW), PA(m, P_OB), (int)N, d, V);
    float *nll = m->w[W_NLL];
#pragma omp parallel for schedule(static) if (N >= 64)
    for (size_t r = 0; r < N; r++) {
        const float *z = logits + r * V;
        float *pr = probs + r * V, mx = -INFINITY;
        for (int j = 0; j < V; j++) mx = fmaxf(mx, z[j]);
        float sum = 0.0f;
        for (int j = 0; j < V; j++) sum += (pr[j] = exp_f(z[j] - mx));
        const float inv = 1.0f / sum;
        for (int j = 0; j < V; j++) pr[j] *= inv;
        nll[r] = m->coef[r] != 0.0f ? (float)((double)m->coef[r] * -((double)(z[ittg[r]] - mx) - log((double)sum))) : 0.0f;
    }
    double total = 0.0; /* in row order: the same bits for any number of threads */
    for (size_t r = 0; r < N; r++) total += nll[r];
    if (c->moe) {
        ms[0] = m->enc_stats;
        total += (double)ms[0].loss_importance + ms[0].loss_load + ms[1].loss_importance + ms[1].loss_load;
    }
    if (!isfinite(total))
        return moe_fail(MOE_ERR_NONFINITE, "the loss is %g: the model diverged (lower the learning rate)", total);
    m->Tt = Tt;
    m->dec_train = train;
    m->dec_ok = 1;
    m->loss = total;
    m->aux = c->moe ? (double)ms[0].loss_importance + ms[0].loss_load + ms[1].loss_importance + ms[1].loss_load : 0.0;
    if (loss) *loss = total;
    return MOE_OK;
}

moe_status moe_s2s_forward(moe_s2s *m, const int32_t *src, int B, int Ts, const int32_t *in, const int32_t *tgt,
                           const float *coef, int Tt, moe_mode mode, double *loss) {
    moe_status st = s2s_encode(m, src, B, Ts, mode == MOE_TRAIN);
    if (!st) st = s2s_decode(m, in, tgt, coef, Tt, mode == MOE_TRAIN, loss);
    if (!st) moe_clear_error();
    return st;
}

moe_status s2s_set_coef(moe_s2s *m, const float *coef) {
    if (!m || !coef) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    if (!m->dec_ok) return moe_fail(MOE_ERR_STATE, "coefficients without a decoded batch");
    const int B = m->B, Tt = m->Tt;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < Tt; t++) {
            const float c = coef[(size_t)b * Tt + t];
            if (!isfinite(c)) return moe_fail(MOE_ERR_NONFINITE, "coefficient (%d, %d) is %g", b, t, c);
            const int32_t w = m->itok[(size_t)m->Ts * B + (size_t)Tt * B + (size_t)t * B + b];
            if (c != 0.0f && (w < 0 || w >= m->cfg.tgt_vocab))
                return moe_fail(MOE_ERR_INVALID_ARG, "target %d at (%d, %d) is outside the vocabulary", w, b, t);
        }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < Tt; t++) {
            const float c = coef[(size_t)b * Tt + t];
            m->coef[(size_t)t * B + b] = c;
        }
    return MOE_OK;
}

double s2s_last_aux(const moe_s2s *m) { return m->aux; }

/* ---- backward --------------------------------------------------------------------------------- */
moe_status moe_s2s_backward(moe_s2s *m) {
    if (!m || !m->dec_ok) return moe_fail(MOE_ERR_STATE, "backward without a forward");
    const moe_s2s_config *c = &m->cfg;
    const int d = c->d, V = c->tgt_vocab, B = m->B, Ts = m->Ts, Tt = m->Tt;
    const size_t N = (size_t)Tt * B, Nd = N * d, Ns = (size_t)Ts * B, Nsd = Ns * d;
    const float p = m->dec_train ? c->dropout : 0.0f, pe = m->enc_train ? c->dropout : 0.0f;
    const int32_t *stok = m->itok, *itin = m->itok + Ns, *ittg = itin + N;
    moe_status st;
    /* forward: loss = sum coef * -log softmax(logits)[tgt];  dlogits = coef * (p - onehot) */
    float *dlog = m->w[W_DLOG];
#pragma omp parallel for schedule(static) if (N >= 64)
    for (size_t r = 0; r < N; r++) {
        float *g = dlog + r * V;
        const float *pr = m->w[W_PROB] + r * V, cr = m->coef[r];
        if (cr == 0.0f) {
            memset(g, 0, sizeof(float) * V);
            continue;
        }
        for (int j = 0; j < V; j++) g[j] = cr * pr[j];
        g[ittg[r]] -= cr;
    }
    float *g0 = m->w[W_GD0], *g1 = m->w[W_GD1], *g2 = m->w[W_GD2];
    /* logits = hcd W_o + b_o */
    memset(g0, 0, sizeof(float) * Nd);
    linear_backward(g0, GR(m, P_OW), GR(m, P_OB), dlog, m->w[W_HCD], PA(m, P_OW), (int)N, d, V);
    /* hcd = drop(hc);  hc = tanh(pre) */
    memset(g1, 0, sizeof(float) * Nd);
    drop_rows(m, 0, g1, g0, Tt, B, p, drop_ctr(m, DR_HC));
    const float *hc = m->w[W_HC];
    for (size_t i = 0; i < Nd; i++) g1[i] *= 1.0f - hc[i] * hc[i];
    /* pre = cat W_c + b_c */
    float *dcat = m->w[W_DCAT];
    memset(dcat, 0, sizeof(float) * 2 * Nd);
    linear_backward(dcat, GR(m, P_CW), GR(m, P_CB), g1, m->w[W_CAT], PA(m, P_CW), (int)N, 2 * d, d);
    /* attention: ctx = sum_s a enc_s, a = softmax(q . K_s). dq -> g2, denc -> GE0, dK -> GE1 */
    const float *enc = enc_out(m), *K = m->w[W_K], *att = m->w[W_ATT];
    const float *q = c->layers == 2 ? m->w[W_D2] : m->w[W_D1];
    float *denc = m->w[W_GE0], *dK = m->w[W_GE1];
    memset(denc, 0, sizeof(float) * Nsd);
    memset(dK, 0, sizeof(float) * Nsd);
    /* rows of one source b touch only that source's encoder rows: parallel over b */
#pragma omp parallel for schedule(static) if (B >= 8)
    for (int b = 0; b < B; b++) {
        float da[4096];
        for (int t = 0; t < Tt; t++) {
            const size_t r = (size_t)t * B + b;
            const float *dctx = dcat + r * 2 * d, *ar = att + r * Ts, *qr = q + r * d;
            float *dq = g2 + r * d;
            memcpy(dq, dctx + d, sizeof(float) * d);
            float dot = 0.0f;
            for (int s = 0; s < Ts; s++) {
                const float *es = enc + ((size_t)s * B + b) * d;
                float *des = denc + ((size_t)s * B + b) * d, acc = 0.0f;
                for (int j = 0; j < d; j++) acc += dctx[j] * es[j], des[j] += ar[s] * dctx[j];
                da[s] = acc;
                dot += ar[s] * acc;
            }
            for (int s = 0; s < Ts; s++) {
                const float ds = ar[s] * (da[s] - dot);
                const float *ks = K + ((size_t)s * B + b) * d;
                float *dks = dK + ((size_t)s * B + b) * d;
                for (int j = 0; j < d; j++) dq[j] += ds * ks[j], dks[j] += ds * qr[j];
            }
        }
    }
    /* K = enc W_a */
    linear_backward(denc, GR(m, P_ATT), NULL, dK, enc, PA(m, P_ATT), (int)Ns, d, d);
    /* decoder, top down; the gradients of the encoder's final states land in W_DFIN */
    float *dfin = m->w[W_DFIN], *dh1 = dfin, *dc1 = dfin + (size_t)B * d, *dh2 = dc1 + (size_t)B * d,
          *dc2 = dh2 + (size_t)B * d;
    float *dd1 = g2; /* dL/d d1 */
    if (c->layers == 2) {
        memset(g0, 0, sizeof(float) * Nd);
        lstm_bwd(m, P_D2, g0, dh2, dc2, g2, NULL, NULL, m->w[W_X2D], m->w[W_D2], m->w[W_CD2], Tt, B);
        if ((st = mid_backward(m, 1, g1, g0, m->w[W_SGD], Tt, B, p, drop_ctr(m, DR_DEC2)))) return st;
        dd1 = g1;
    }
    memset(g0, 0, sizeof(float) * Nd);
    lstm_bwd(m, P_D1, g0, dh1, dc1, dd1, NULL, NULL, m->w[W_XT], m->w[W_D1], m->w[W_CD1], Tt, B);
    memset(g1, 0, sizeof(float) * Nd);
    drop_rows(m, 0, g1, g0, Tt, B, p, drop_ctr(m, DR_TGT));
    embedding_backward(GR(m, P_TEMB), g1, itin, (int)N, d);
    /* encoder, top down. Free [Ts,B,d] buffers once their values are used: GE0..GE2, and MOE,
     * SGE (the MoE's output and sigmoid, consumed by its backward). */
    float *ge0 = m->w[W_GE0], *ge1 = m->w[W_GE1], *ge2 = m->w[W_GE2];
    float *de1 = ge0, *dxs = ge1, *dem = ge2; /* one layer: denc is dL/de1 */
    if (c->layers == 2) {
        memset(ge1, 0, sizeof(float) * Nsd);
        lstm_bwd(m, P_E2, ge1, NULL, NULL, ge0, dh2, dc2, m->w[W_X2E], m->w[W_E2], m->w[W_CE2], Ts, B);
        if ((st = mid_backward(m, 0, ge2, ge1, m->w[W_SGE], Ts, B, pe, drop_ctr(m, DR_ENC2)))) return st;
        de1 = ge2, dxs = ge0, dem = ge1;
    }
    /* e1 = e1f + reverse(e1b); xs feeds both directions */
    memset(dxs, 0, sizeof(float) * Nsd);
    lstm_bwd(m, P_E1, dxs, NULL, NULL, de1, dh1, dc1, m->w[W_XS], m->w[W_E1F], m->w[W_CE1F], Ts, B);
    if (c->bidir) {
        float *drev = m->w[W_SGE], *dxr = m->w[W_MOE];
        reverse_time(drev, de1, Ts, (size_t)B * d);
        memset(dxr, 0, sizeof(float) * Nsd);
        lstm_bwd(m, P_E1R, dxr, NULL, NULL, drev, NULL, NULL, m->w[W_XSR], m->w[W_E1B], m->w[W_CE1B], Ts, B);
        for (int t = 0; t < Ts; t++) {
            const float *r = dxr + (size_t)(Ts - 1 - t) * B * d;
            float *o = dxs + (size_t)t * B * d;
            for (size_t j = 0; j < (size_t)B * d; j++) o[j] += r[j];
        }
    }
    /* xs = drop(emb) */
    memset(dem, 0, sizeof(float) * Nsd);
    drop_rows(m, 0, dem, dxs, Ts, B, pe, drop_ctr(m, DR_SRC));
    embedding_backward(GR(m, P_SEMB), dem, stok, (int)Ns, d);
    /* the model changed nothing that forward keeps; a second backward is allowed but adds twice */
    return moe_ok();
}

/* ---- step-by-step decoding -------------------------------------------------------------------- */
/* State of R decoding rows: per layer h, c [R,d]; then x, y, q [R,d], cat [R,2d], a [R,Ts],
 * logp [R,V], an LSTM cache for one step. */
typedef struct {
    int R;
    float *h[2], *c[2], *x, *y, *q, *cat, *a, *logp, *cache, *hc, *sg;
} dstate;

static moe_status dstate_make(moe_s2s *m, dstate *s, int R) {
    const int d = m->cfg.d, V = m->cfg.tgt_vocab, Ts = m->Ts;
    const size_t Rd = (size_t)R * d;
    const size_t need = 4 * Rd + 3 * Rd + 2 * Rd + (size_t)R * Ts + (size_t)R * V + lstm_cache_floats(1, R, d) +
                        2 * Rd + 16 * 12;
    if (need > m->st_cap) {
        moe_free_aligned(m->st);
        m->st = moe_alloc_floats(need);
        m->st_cap = m->st ? need : 0;
        if (!m->st) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the decoding state for %d rows", R);
    }
    if ((size_t)R > m->src_row_cap) {
        int32_t *r = realloc(m->src_row, sizeof(int32_t) * (size_t)R);
        if (!r) return moe_fail(MOE_ERR_NOMEM, "out of memory");
        m->src_row = r;
        m->src_row_cap = (size_t)R;
    }
    float *p = m->st;
#define TAKE(ptr, n) (ptr = p, p += MOE_ARENA_PAD(n))
    s->R = R;
    TAKE(s->h[0], Rd);
    TAKE(s->c[0], Rd);
    TAKE(s->h[1], Rd);
    TAKE(s->c[1], Rd);
    TAKE(s->x, Rd);
    TAKE(s->y, Rd);
    TAKE(s->q, Rd);
    TAKE(s->hc, Rd);
    TAKE(s->sg, Rd);
    TAKE(s->cat, 2 * Rd);
    TAKE(s->a, (size_t)R * Ts);
    TAKE(s->logp, (size_t)R * V);
    TAKE(s->cache, lstm_cache_floats(1, R, d));
#undef TAKE
    return MOE_OK;
}

/* The start state: row r takes the encoder's final states of source src_row[r]. */
static void dstate_init(const moe_s2s *m, dstate *s, const int32_t *src_row) {
    const int d = m->cfg.d, B = m->B;
    const float *fin = m->w[W_FIN];
    for (int l = 0; l < m->cfg.layers; l++)
        for (int r = 0; r < s->R; r++) {
            const int b = src_row[r];
            memcpy(s->h[l] + (size_t)r * d, fin + ((size_t)(2 * l) * B + b) * d, sizeof(float) * d);
            memcpy(s->c[l] + (size_t)r * d, fin + ((size_t)(2 * l + 1) * B + b) * d, sizeof(float) * d);
        }
}

/* One decoder step for R rows reading tokens tok [R] at time t: s->logp [R,V] = log p. With
 * train, the dropout masks of positions (t, r) of the current training step (rows = batch rows). */
static moe_status dstate_step(moe_s2s *m, dstate *s, const int32_t *tok, int t, int train, const int32_t *src_row) {
    const moe_s2s_config *c = &m->cfg;
    const int d = c->d, V = c->tgt_vocab, R = s->R;
    const size_t Rd = (size_t)R * d, o = (size_t)t * (size_t)rows_global(m, R) * d; /* step t's draws */
    const float p = train ? c->dropout : 0.0f;
    moe_status st = embedding_forward(s->x, tok, PA(m, P_TEMB), R, V, d);
    if (st) return st;
    drop_rows(m, 1, s->x, s->x, 1, R, p, drop_ctr(m, DR_TGT) + o);
    lstm_fwd(m, P_D1, s->y, s->h[0], s->c[0], s->cache, s->x, s->h[0], s->c[0], 1, R);
    float *q = s->y;
    if (c->layers == 2) {
        st = mid_forward(m, 1, s->x, s->y, s->sg, s->sg, 1, R, MOE_EVAL, p, drop_ctr(m, DR_DEC2) + o, NULL);
        if (st) return st;
        lstm_fwd(m, P_D2, s->q, s->h[1], s->c[1], s->cache, s->x, s->h[1], s->c[1], 1, R);
        q = s->q;
    }
    attend(m, s->a, s->cat, q, R, src_row);
    linear_forward(s->hc, s->cat, PA(m, P_CW), PA(m, P_CB), R, 2 * d, d);
    for (size_t i = 0; i < Rd; i++) s->hc[i] = tanh_f(s->hc[i]);
    drop_rows(m, 1, s->hc, s->hc, 1, R, p, drop_ctr(m, DR_HC) + o);
    linear_forward(s->logp, s->hc, PA(m, P_OW), PA(m, P_OB), R, d, V);
    for (int r = 0; r < R; r++) {
        float *z = s->logp + (size_t)r * V, mx = -INFINITY;
        for (int j = 0; j < V; j++) mx = fmaxf(mx, z[j]);
        double sum = 0.0;
        for (int j = 0; j < V; j++) sum += exp((double)(z[j] - mx));
        const float lse = mx + (float)log(sum);
        for (int j = 0; j < V; j++) z[j] -= lse;
        if (!isfinite(lse)) return moe_fail(MOE_ERR_NONFINITE, "decoder output is not finite");
    }
    return MOE_OK;
}

/* 1 when the rows of every rank have ended, or a rank failed (*st: its own error there, an error
 * on the others). The decoder's MoE is collective when split over ranks, so every rank runs the
 * same steps, its finished rows reading the end mark. */
static int decoding_over(moe_s2s *m, int alive, moe_status *st) {
    double v[2] = {(double)alive, *st ? 1.0 : 0.0};
    if (m->comm) {
        const moe_status cs = comm_allreduce_sum_f64(m->comm, v, 2);
        if (cs) v[1] = 1.0, *st = *st ? *st : cs;
    }
    if (v[1] > 0.0 && !*st) *st = moe_fail(MOE_ERR_COMM, "another rank failed while decoding");
    return v[1] > 0.0 || v[0] == 0.0;
}

moe_status s2s_sample(moe_s2s *m, const int32_t *ref, const int *ref_len, int ref_stride, const int *force,
                      int max_len, int greedy, int train, uint64_t seed, uint64_t ctr, int32_t *out, int *len) {
    if (!m || !out || !len) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    if (!m->enc_ok) return moe_fail(MOE_ERR_STATE, "decoding without an encoded batch");
    const moe_s2s_config *c = &m->cfg;
    const int B = m->B, V = c->tgt_vocab, Bg = rows_global(m, B), b0 = m->Bg ? m->b0 : 0;
    if (max_len < 1 || max_len > c->max_len)
        return moe_fail(MOE_ERR_CONFIG, "decoding length %d must be in [1, %d]", max_len, c->max_len);
    for (int b = 0; force && b < B; b++)
        if (force[b] < 0 || (force[b] > 0 && (!ref || !ref_len || force[b] > ref_len[b] || force[b] > ref_stride)))
            return moe_fail(MOE_ERR_INVALID_ARG, "row %d: %d forced tokens but a reference of %d", b, force[b],
                            ref_len ? ref_len[b] : 0);
    dstate s;
    moe_status st = dstate_make(m, &s, B);
    if (st) return st;
    for (int b = 0; b < B; b++) m->src_row[b] = b;
    dstate_init(m, &s, m->src_row);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(B > 0 ? B : 1));
    int *done = calloc((size_t)(B > 0 ? B : 1), sizeof(int));
    if (!tok || !done) {
        free(tok);
        free(done);
        return moe_fail(MOE_ERR_NOMEM, "out of memory");
    }
    for (int b = 0; b < B; b++) tok[b] = c->eos, len[b] = 0;
    int alive = B;
    for (int t = 0; t < max_len && !decoding_over(m, alive, &st); t++) {
        if ((st = dstate_step(m, &s, tok, t, train, NULL))) continue; /* decoding_over tells the others */
        for (int b = 0; b < B; b++) {
            int32_t w;
            if (done[b]) {
                w = c->eos; /* finished rows keep reading the end mark; nothing uses them */
            } else if (force && ref && t < force[b]) {
                w = ref[(size_t)b * ref_stride + t];
                if (w < 0 || w >= V) {
                    st = moe_fail(MOE_ERR_INVALID_ARG, "reference token %d is outside the vocabulary", w);
                    break;
                }
            } else {
                const float *lp = s.logp + (size_t)b * V;
                if (greedy) {
                    w = 0;
                    for (int j = 1; j < V; j++)
                        if (lp[j] > lp[w]) w = j;
                } else {
                    const double u = moe_rng_uniform(seed, ctr + (uint64_t)t * Bg + (uint64_t)(b0 + b));
                    double acc = 0.0;
                    w = V - 1;
                    for (int j = 0; j < V; j++)
                        if ((acc += exp((double)lp[j])) > u) {
                            w = j;
                            break;
                        }
                }
            }
            if (!done[b]) {
                out[(size_t)b * max_len + t] = w;
                len[b] = t + 1;
                if (w == c->eos) done[b] = 1, alive--;
            }
            tok[b] = w;
        }
    }
    free(tok);
    free(done);
    return st;
}

moe_status moe_s2s_greedy(moe_s2s *m, const int32_t *src, int B, int Ts, int max_len, int32_t *out, int *len) {
    if (!m || !src || !out || !len) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    moe_status st = s2s_encode(m, src, B, Ts, 0);
    if (st) return st;
    int32_t *tmp = malloc(sizeof(int32_t) * (size_t)(B > 0 ? B : 1) * (size_t)max_len);
    if (!tmp) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    st = s2s_sample(m, NULL, NULL, 0, NULL, max_len, 1, 0, 0, 0, tmp, len);
    for (int b = 0; b < B && !st; b++) {
        int n = len[b];
        if (n > 0 && tmp[(size_t)b * max_len + n - 1] == m->cfg.eos) n--;
        memcpy(out + (size_t)b * max_len, tmp + (size_t)b * max_len, sizeof(int32_t) * (size_t)n);
        len[b] = n;
    }
    free(tmp);
    if (!st) moe_clear_error();
    return st;
}

moe_status moe_s2s_beam(moe_s2s *m, const int32_t *src, int Ts, int beam, float alpha, int max_len, int32_t *out,
                        int *len) {
    if (!m || !src || !out || !len) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    if (beam < 1 || beam > 256) return moe_fail(MOE_ERR_CONFIG, "beam %d must be in [1, 256]", beam);
    if (!(alpha >= 0.0f)) return moe_fail(MOE_ERR_CONFIG, "length penalty %g must be >= 0", alpha);
    const moe_s2s_config *c = &m->cfg;
    if (max_len < 1 || max_len > c->max_len)
        return moe_fail(MOE_ERR_CONFIG, "decoding length %d must be in [1, %d]", max_len, c->max_len);
    moe_status st = s2s_encode(m, src, 1, Ts, 0);
    if (st) return st;
    const int d = c->d, V = c->tgt_vocab, K = beam;
    dstate s;
    if ((st = dstate_make(m, &s, K))) return st;
    for (int r = 0; r < K; r++) m->src_row[r] = 0;
    dstate_init(m, &s, m->src_row);
    /* hypotheses: alive [K] (score, tokens [max_len]); the best finished one */
    double *score = malloc(sizeof(double) * K), *nscore = malloc(sizeof(double) * K);
    int32_t *hyp = malloc(sizeof(int32_t) * (size_t)K * max_len), *nhyp = malloc(sizeof(int32_t) * (size_t)K * max_len);
    int32_t *tok = malloc(sizeof(int32_t) * K), *parent = malloc(sizeof(int32_t) * K);
    float *save = moe_alloc_floats(4 * (size_t)K * d);
    if (!score || !nscore || !hyp || !nhyp || !tok || !parent || !save) {
        st = moe_fail(MOE_ERR_NOMEM, "out of memory for beam search");
        goto done;
    }
    int alive = 1, best_len = -1, nfin = 0;
    double best = -INFINITY;
    score[0] = 0.0;
    tok[0] = c->eos;
    for (int r = 1; r < K; r++) tok[r] = c->eos;
    int32_t *best_hyp = out;
    for (int t = 0; t < max_len && alive > 0; t++) {
        s.R = alive; /* the first `alive` rows hold live hypotheses */
        if ((st = dstate_step(m, &s, tok, t, 0, m->src_row))) break;
        /* top K (score + logp) over alive x V, by repeated selection over a small candidate set */
        int nk = 0;
        int32_t cand_w[256], cand_p[256];
        double cand_s[256];
        for (int r = 0; r < alive; r++) {
            const float *lp = s.logp + (size_t)r * V;
            for (int j = 0; j < V; j++) {
                const double sc = score[r] + lp[j];
                if (nk == K && !(sc > cand_s[K - 1])) continue;
                int i = nk < K ? nk++ : K - 1; /* a new slot, or the worst one's */
                while (i > 0 && cand_s[i - 1] < sc) cand_s[i] = cand_s[i - 1], cand_w[i] = cand_w[i - 1], cand_p[i] = cand_p[i - 1], i--;
                cand_s[i] = sc, cand_w[i] = j, cand_p[i] = r;
            }
        }
        int na = 0;
        for (int i = 0; i < nk; i++) {
            const int r = cand_p[i];
            if (cand_w[i] == c->eos || t == max_len - 1) {
                const int L = cand_w[i] == c->eos ? t : t + 1; /* tokens without the end mark */
                nfin++;
                const double norm = alpha > 0.0f ? cand_s[i] / pow((double)(t + 1), alpha) : cand_s[i];
                if (norm > best) {
                    best = norm;
                    best_len = L;
                    memcpy(best_hyp, hyp + (size_t)r * max_len, sizeof(int32_t) * (size_t)t);
                    if (L > t) best_hyp[t] = cand_w[i];
                }
                continue;
            }
            memcpy(nhyp + (size_t)na * max_len, hyp + (size_t)r * max_len, sizeof(int32_t) * (size_t)t);
            nhyp[(size_t)na * max_len + t] = cand_w[i];
            nscore[na] = cand_s[i];
            parent[na] = r;
            na++;
        }
        /* stop when no live hypothesis can still beat the best finished one (scores only fall) */
        if ((alpha == 0.0f && na > 0 && nscore[0] <= best) || nfin >= K) na = 0;
        /* reorder the LSTM states by parent */
        for (int l = 0; l < c->layers; l++) {
            for (int i = 0; i < na; i++) {
                memcpy(save + (size_t)i * d, s.h[l] + (size_t)parent[i] * d, sizeof(float) * d);
                memcpy(save + (size_t)(K + i) * d, s.c[l] + (size_t)parent[i] * d, sizeof(float) * d);
            }
            memcpy(s.h[l], save, sizeof(float) * (size_t)na * d);
            memcpy(s.c[l], save + (size_t)K * d, sizeof(float) * (size_t)na * d);
        }
        int32_t *sw = hyp;
        hyp = nhyp;
        nhyp = sw;
        double *ss = score;
        score = nscore;
        nscore = ss;
        for (int i = 0; i < na; i++) tok[i] = hyp[(size_t)i * max_len + t];
        alive = na;
    }
    if (!st) *len = best_len < 0 ? 0 : best_len;
done:
    free(score);
    free(nscore);
    free(hyp);
    free(nhyp);
    free(tok);
    free(parent);
    moe_free_aligned(save);
    if (!st) moe_clear_error();
    return st;
}
