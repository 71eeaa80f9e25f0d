/* train.c - the language model's training loop and its checkpoints.
 *
 * A checkpoint is one safetensors file (written atomically) holding everything a run depends on:
 *   lm.<param>, moe.<param>        the weights (SPEC 1.5 names for the MoE layer)
 *   optim.lm.m/v, optim.moe.m/v    Adam's moments over each arena (no m with beta1 = 0; v holds
 *                                  row and column means of matrices with --optim factored)
 *   state                          the LSTM state carried between batches [4,B,d]
 *   __metadata__                   model and training settings, the tokenizer, the step, Adam's
 *                                  step, the random streams' counters, the data position
 * so that resuming continues the exact same sequence of batches, dropout masks and gate noise:
 * N steps then N more give the same parameters as 2N straight. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include "textdata.h"
#include "tokenizer.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CKPT_FORMAT "moe-lm-checkpoint-1"

moe_train_config moe_train_config_default(void) {
    moe_train_config c = {.data = NULL, .words = 0, .min_count = 2, .max_vocab = 10000,
                          .lowercase = 0, .batch = 32, .bptt = 64, .steps = 1000, .minutes = 0.0,
                          .lr = 2e-3f, .warmup = 200, .clip = 1.0f, .optim = NULL, .log_every = 20,
                          .eval_every = 200, .eval_batches = 0, .ckpt_every = 500,
                          .checkpoint = NULL, .seed = 1};
    return c;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- metadata helpers ---- */

typedef struct {
    moe_st_writer *w;
    moe_status st;
} meta_w;

static void meta_str(meta_w *m, const char *k, const char *v) {
    if (!m->st) m->st = moe_st_writer_meta(m->w, k, v);
}
static void meta_i64(meta_w *m, const char *k, int64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%" PRId64, v);
    meta_str(m, k, b);
}
static void meta_u64(meta_w *m, const char *k, uint64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%" PRIu64, v);
    meta_str(m, k, b);
}
static void meta_f(meta_w *m, const char *k, double v) {
    char b[48];
    snprintf(b, sizeof b, "%.9g", v);
    meta_str(m, k, b);
}

static moe_status get_i64(const moe_st *f, const char *k, int64_t *v) {
    const char *s = moe_st_meta(f, k);
    if (!s) return moe_fail(MOE_ERR_MISSING, "checkpoint lacks the setting '%s'", k);
    char *end;
    long long x = strtoll(s, &end, 10);
    if (end == s || *end) return moe_fail(MOE_ERR_FORMAT, "checkpoint setting %s='%s' is not an integer", k, s);
    *v = x;
    return MOE_OK;
}
static moe_status get_u64(const moe_st *f, const char *k, uint64_t *v) {
    const char *s = moe_st_meta(f, k);
    if (!s) return moe_fail(MOE_ERR_MISSING, "checkpoint lacks the setting '%s'", k);
    char *end;
    unsigned long long x = strtoull(s, &end, 10);
    if (end == s || *end || s[0] == '-') return moe_fail(MOE_ERR_FORMAT, "checkpoint setting %s='%s' is not a count", k, s);
    *v = x;
    return MOE_OK;
}
static moe_status get_int(const moe_st *f, const char *k, int *v) {
    int64_t x = 0;
    moe_status st = get_i64(f, k, &x);
    if (st) return st;
    if (x < -2147483647LL || x > 2147483647LL) return moe_fail(MOE_ERR_FORMAT, "checkpoint setting %s out of range", k);
    *v = (int)x;
    return MOE_OK;
}
static moe_status get_float(const moe_st *f, const char *k, float *v) {
    const char *s = moe_st_meta(f, k);
    if (!s) return moe_fail(MOE_ERR_MISSING, "checkpoint lacks the setting '%s'", k);
    char *end;
    double x = strtod(s, &end);
    if (end == s || *end) return moe_fail(MOE_ERR_FORMAT, "checkpoint setting %s='%s' is not a number", k, s);
    *v = (float)x;
    return MOE_OK;
}

/* ---- checkpoint contents ---- */

typedef struct {
    moe_lm *lm;
    tok *tk;
    moe_adam *opt_lm, *opt_moe; /* may be NULL (inference) */
    int factored;               /* the optimiser is the paper's factored variant */
    const moe_train_config *tc;
    int64_t step;
    td_pos pos;
    uint64_t tokens_seen;
    double elapsed;
} run_state;

static const char *ffn_name(moe_ffn_kind k) {
    return k == MOE_FFN_MOE ? "moe" : k == MOE_FFN_DENSE ? "dense" : "none";
}

static moe_status ckpt_write(const run_state *r, const char *path) {
    moe_st_writer *w = NULL;
    moe_status st = moe_st_writer_create(&w);
    if (st) return st;
    meta_w m = {w, MOE_OK};
    moe_lm_config c = moe_lm_get_config(r->lm);
    meta_str(&m, "format", CKPT_FORMAT);
    meta_i64(&m, "vocab", c.vocab);
    meta_i64(&m, "d", c.d);
    meta_str(&m, "ffn", ffn_name(c.ffn));
    meta_i64(&m, "n", c.n);
    meta_i64(&m, "k", c.k);
    meta_i64(&m, "h", c.h);
    meta_f(&m, "w_importance", c.w_importance);
    meta_f(&m, "w_load", c.w_load);
    meta_f(&m, "noise_eps", c.noise_eps);
    meta_f(&m, "dropout", c.dropout);
    char *ts = NULL;
    if (!m.st) m.st = tok_serialize(r->tk, &ts);
    meta_str(&m, "tokenizer", ts ? ts : "");
    meta_str(&m, "tokenizer.kind", tok_get_kind(r->tk) == TOK_WORDS ? "words" : "bytes");
    const moe_train_config *tc = r->tc;
    if (tc) {
        meta_str(&m, "data", tc->data ? tc->data : "");
        meta_i64(&m, "batch", tc->batch);
        meta_i64(&m, "bptt", tc->bptt);
        meta_f(&m, "lr", tc->lr);
        meta_i64(&m, "warmup", tc->warmup);
        meta_f(&m, "clip", tc->clip);
        meta_u64(&m, "seed", tc->seed);
    }
    meta_i64(&m, "step", r->step);
    meta_u64(&m, "tokens_seen", r->tokens_seen);
    meta_f(&m, "elapsed_s", r->elapsed);
    meta_u64(&m, "data.step", r->pos.step);
    meta_u64(&m, "data.ntokens", r->pos.ntokens);
    moe_lm_rng rng = moe_lm_get_rng(r->lm);
    meta_u64(&m, "rng.seed", rng.seed);
    meta_u64(&m, "rng.dropout_counter", rng.dropout_counter);
    meta_u64(&m, "rng.moe_seed", rng.moe_seed);
    meta_u64(&m, "rng.moe_counter", rng.moe_counter);
    char names[64][80];
    int nn = 0;
    for (int i = 0; !m.st && i < moe_lm_num_params(r->lm); i++) {
        moe_param p;
        moe_lm_param(r->lm, i, &p);
        snprintf(names[nn], sizeof names[nn], "lm.%s", p.name);
        m.st = moe_st_writer_add(w, names[nn++], MOE_F32, p.ndim, p.shape, p.data);
    }
    moe_layer *ml = moe_lm_moe(r->lm);
    for (int i = 0; !m.st && ml && i < moe_layer_num_params(ml); i++) {
        moe_param p;
        moe_layer_param(ml, i, &p);
        snprintf(names[nn], sizeof names[nn], "moe.%s", p.name);
        m.st = moe_st_writer_add(w, names[nn++], MOE_F32, p.ndim, p.shape, p.data);
    }
    float *state = NULL;
    if (!m.st && tc) {
        int64_t sh[3] = {4, tc->batch, c.d};
        state = malloc(sizeof(float) * 4 * (size_t)tc->batch * c.d);
        if (!state) m.st = moe_fail(MOE_ERR_NOMEM, "out of memory");
        else {
            moe_lm_get_state(r->lm, state, tc->batch);
            m.st = moe_st_writer_add(w, "state", MOE_F32, 3, sh, state);
        }
    }
    moe_adam *opts[2] = {r->opt_lm, r->opt_moe};
    const char *onames[2][2] = {{"optim.lm.m", "optim.lm.v"}, {"optim.moe.m", "optim.moe.v"}};
    const char *stepnames[2] = {"optim.lm.step", "optim.moe.step"};
    if (r->opt_lm) meta_str(&m, "optim", r->factored ? "factored" : "adam");
    for (int o = 0; o < 2 && !m.st; o++) {
        if (!opts[o]) continue;
        moe_adam_state_view sv;
        if ((m.st = moe_adam_state(opts[o], &sv))) break;
        int64_t shm[1] = {(int64_t)sv.m_count}, shv[1] = {(int64_t)sv.v_count};
        if (sv.m) m.st = moe_st_writer_add(w, onames[o][0], MOE_F32, 1, shm, sv.m);
        if (!m.st) m.st = moe_st_writer_add(w, onames[o][1], MOE_F32, 1, shv, sv.v);
        meta_i64(&m, stepnames[o], *sv.step);
    }
    if (!m.st) m.st = moe_st_writer_write(w, path);
    moe_st_writer_free(w);
    free(ts);
    free(state);
    return m.st;
}

static moe_status ffn_parse(const char *s, moe_ffn_kind *k) {
    if (strcmp(s, "moe") == 0) *k = MOE_FFN_MOE;
    else if (strcmp(s, "dense") == 0) *k = MOE_FFN_DENSE;
    else if (strcmp(s, "none") == 0) *k = MOE_FFN_NONE;
    else return moe_fail(MOE_ERR_FORMAT, "checkpoint has an unknown ffn kind '%s'", s);
    return MOE_OK;
}

static moe_status cfg_from_ckpt(const moe_st *f, moe_lm_config *c) {
    const char *fmt = moe_st_meta(f, "format");
    if (!fmt || strcmp(fmt, CKPT_FORMAT) != 0)
        return moe_fail(MOE_ERR_FORMAT, "not a moe language-model checkpoint (format '%s', expected '%s')",
                        fmt ? fmt : "(none)", CKPT_FORMAT);
    *c = moe_lm_config_default();
    moe_status st;
    if ((st = get_int(f, "vocab", &c->vocab)) || (st = get_int(f, "d", &c->d)) || (st = get_int(f, "n", &c->n)) ||
        (st = get_int(f, "k", &c->k)) || (st = get_int(f, "h", &c->h)) ||
        (st = get_float(f, "w_importance", &c->w_importance)) || (st = get_float(f, "w_load", &c->w_load)) ||
        (st = get_float(f, "noise_eps", &c->noise_eps)) || (st = get_float(f, "dropout", &c->dropout)))
        return st;
    const char *ffn = moe_st_meta(f, "ffn");
    if (!ffn) return moe_fail(MOE_ERR_MISSING, "checkpoint lacks the setting 'ffn'");
    return ffn_parse(ffn, &c->ffn);
}

/* Copies the named F32 tensor (exact shape) into dst. */
static moe_status load_tensor(const moe_st *f, const char *name, float *dst, size_t numel) {
    moe_tensor t;
    const float *src;
    moe_status st = moe_st_get_f32(f, name, &t, &src);
    if (st) return moe_fail(st, "checkpoint tensor '%s': %s", name, moe_last_error());
    if (t.numel != numel) return moe_fail(MOE_ERR_SHAPE, "checkpoint tensor '%s' has %zu values, the model needs %zu", name, t.numel, numel);
    if (!moe_all_finite(src, numel)) return moe_fail(MOE_ERR_NONFINITE, "checkpoint tensor '%s' contains NaN or Inf", name);
    memcpy(dst, src, sizeof(float) * numel);
    return MOE_OK;
}

/* Creates the model and tokenizer from an open checkpoint and loads the weights. */
static moe_status model_from_ckpt(const moe_st *f, moe_lm **lm_out, tok **tk_out) {
    moe_lm_config c;
    moe_status st = cfg_from_ckpt(f, &c);
    if (st) return st;
    const char *ts = moe_st_meta(f, "tokenizer");
    if (!ts) return moe_fail(MOE_ERR_MISSING, "checkpoint lacks its tokenizer");
    tok *tk = NULL;
    if ((st = tok_parse(&tk, ts))) return st;
    if (tok_vocab_size(tk) != c.vocab) {
        tok_free(tk);
        return moe_fail(MOE_ERR_FORMAT, "checkpoint's tokenizer has %d ids but the model %d", (int)tok_vocab_size(tk), c.vocab);
    }
    moe_lm *lm = NULL;
    uint64_t seed = 0;
    get_u64(f, "rng.seed", &seed);
    if ((st = moe_lm_create(&lm, &c, seed))) {
        tok_free(tk);
        return st;
    }
    char name[96];
    for (int i = 0; !st && i < moe_lm_num_params(lm); i++) {
        moe_param p;
        moe_lm_param(lm, i, &p);
        snprintf(name, sizeof name, "lm.%s", p.name);
        st = load_tensor(f, name, p.data, p.numel);
    }
    moe_layer *ml = moe_lm_moe(lm);
    for (int i = 0; !st && ml && i < moe_layer_num_params(ml); i++) {
        moe_param p;
        moe_layer_param(ml, i, &p);
        snprintf(name, sizeof name, "moe.%s", p.name);
        st = load_tensor(f, name, p.data, p.numel);
    }
    if (st) {
        moe_lm_free(lm);
        tok_free(tk);
        return st;
    }
    *lm_out = lm;
    *tk_out = tk;
    return MOE_OK;
}

/* ---- the training loop ---- */

static double lr_at(const moe_train_config *tc, int64_t step /* 1-based */) {
    if (tc->warmup > 0 && step <= tc->warmup) return tc->lr * (double)step / tc->warmup;
    if (tc->warmup > 0) return tc->lr * sqrt((double)tc->warmup / (double)step);
    return tc->lr;
}

static double grad_norm2(const float *g, size_t n) {
    double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return s;
}

static void scale(float *g, size_t n, float a) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) g[i] *= a;
}

/* Mean loss over a split with the model in evaluation mode; the carried training state is
 * saved and restored around it. */
static moe_status eval_split(moe_lm *lm, const td_file *f, const tok *tk, td_split split, int B, int T,
                             int64_t max_batches, double *loss, uint64_t *tokens) {
    td_iter *it = NULL;
    moe_status st = td_iter_create(&it, f, tk, split, B, T);
    if (st) return st;
    int64_t nb = (int64_t)td_iter_steps_per_epoch(it);
    if (nb < 1) nb = 1;
    if (max_batches > 0 && nb > max_batches) nb = max_batches;
    const int d = moe_lm_get_config(lm).d;
    float *saved = malloc(sizeof(float) * 4 * (size_t)B * d);
    int32_t *tokbuf = malloc(sizeof(int32_t) * (size_t)B * (T + 1));
    if (!saved || !tokbuf) {
        free(saved);
        free(tokbuf);
        td_iter_free(it);
        return moe_fail(MOE_ERR_NOMEM, "out of memory for evaluation");
    }
    moe_lm_get_state(lm, saved, B);
    moe_lm_reset_state(lm);
    double sum = 0.0;
    uint64_t n = 0;
    for (int64_t b = 0; b < nb && !st; b++) {
        st = td_iter_next(it, tokbuf);
        moe_lm_stats s;
        if (!st) st = moe_lm_step(lm, tokbuf, B, T, 0, &s);
        if (!st) {
            sum += s.loss * (double)s.tokens;
            n += (uint64_t)s.tokens;
        }
    }
    moe_lm_set_state(lm, saved, B);
    free(saved);
    free(tokbuf);
    td_iter_free(it);
    if (st) return st;
    *loss = n ? sum / (double)n : 0.0;
    if (tokens) *tokens = n;
    return MOE_OK;
}

static moe_status check_train_cfg(const moe_train_config *tc) {
    if (!tc || !tc->data) return moe_fail(MOE_ERR_INVALID_ARG, "no training data file given");
    if (tc->batch < 1 || tc->bptt < 1) return moe_fail(MOE_ERR_CONFIG, "batch (%d) and bptt (%d) must be >= 1", tc->batch, tc->bptt);
    if (tc->steps < 0 || !(tc->minutes >= 0.0)) return moe_fail(MOE_ERR_CONFIG, "steps and minutes must be >= 0");
    if (tc->steps == 0 && tc->minutes == 0.0) return moe_fail(MOE_ERR_CONFIG, "give a bound: steps > 0 or minutes > 0");
    if (!(tc->lr > 0.0f) || !isfinite(tc->lr)) return moe_fail(MOE_ERR_CONFIG, "learning rate %g must be > 0", tc->lr);
    if (tc->warmup < 0 || tc->clip < 0.0f) return moe_fail(MOE_ERR_CONFIG, "warmup and clip must be >= 0");
    if (tc->log_every < 1 || tc->eval_every < 0 || tc->ckpt_every < 0 || tc->eval_batches < 0)
        return moe_fail(MOE_ERR_CONFIG, "log_every must be >= 1; eval_every, ckpt_every, eval_batches >= 0");
    return MOE_OK;
}

/* Resume: everything that decides the data stream must agree with the checkpoint. */
static moe_status check_resume(const moe_st *f, const moe_train_config *tc, const moe_lm_config *mc) {
    const char *data = moe_st_meta(f, "data");
    if (data && strcmp(data, tc->data) != 0)
        return moe_fail(MOE_ERR_CONFIG, "the checkpoint was trained on '%s', not '%s': resume with the same --data", data, tc->data);
    int b = 0, t = 0;
    moe_status st;
    if ((st = get_int(f, "batch", &b)) || (st = get_int(f, "bptt", &t))) return st;
    if (b != tc->batch || t != tc->bptt)
        return moe_fail(MOE_ERR_CONFIG, "the checkpoint used batch %d and bptt %d, not %d and %d: resume with the same values",
                        b, t, tc->batch, tc->bptt);
    const char *kind = moe_st_meta(f, "tokenizer.kind");
    if (kind && strcmp(kind, tc->words ? "words" : "bytes") != 0)
        return moe_fail(MOE_ERR_CONFIG, "the checkpoint uses %s tokens, not %s", kind, tc->words ? "words" : "bytes");
    if (mc) {
        moe_lm_config c;
        if ((st = cfg_from_ckpt(f, &c))) return st;
        if (c.d != mc->d || c.ffn != mc->ffn || (c.ffn != MOE_FFN_NONE && (c.n != mc->n || c.k != mc->k || c.h != mc->h)) ||
            c.dropout != mc->dropout || c.w_importance != mc->w_importance || c.w_load != mc->w_load)
            return moe_fail(MOE_ERR_CONFIG,
                            "the model settings contradict the checkpoint (it has d=%d ffn=%s n=%d k=%d h=%d dropout=%g "
                            "w_importance=%g w_load=%g): drop them when resuming, or start a new run",
                            c.d, ffn_name(c.ffn), c.n, c.k, c.h, c.dropout, c.w_importance, c.w_load);
    }
    return MOE_OK;
}

/* The optimiser: tc->optim if given (and, on resume, the checkpoint's must agree), else the
 * checkpoint's, else plain Adam. */
static moe_status optim_choice(const moe_st *ck, const moe_train_config *tc, int *factored) {
    const char *want = tc->optim, *have = ck ? moe_st_meta(ck, "optim") : NULL;
    if (ck && !have) have = "adam"; /* checkpoints from before the option */
    if (want && strcmp(want, "adam") != 0 && strcmp(want, "factored") != 0)
        return moe_fail(MOE_ERR_CONFIG, "unknown optimiser '%s': use adam or factored", want);
    if (want && have && strcmp(want, have) != 0)
        return moe_fail(MOE_ERR_CONFIG, "the checkpoint was trained with the %s optimiser, not %s: drop the setting when resuming",
                        have, want);
    const char *o = want ? want : have ? have : "adam";
    *factored = strcmp(o, "factored") == 0;
    return MOE_OK;
}

/* Tensors of rank >= 2 are matrices [.., rows, cols] to the optimiser (a stack of experts is
 * `n` matrices). */
static moe_status declare_matrix(moe_adam *a, const moe_param *p, const float *arena) {
    if (p->ndim < 2) return MOE_OK;
    int64_t count = 1;
    for (int j = 0; j < p->ndim - 2; j++) count *= p->shape[j];
    return moe_adam_set_matrices(a, (size_t)(p->data - arena), count, p->shape[p->ndim - 2], p->shape[p->ndim - 1]);
}

moe_status moe_train(const moe_train_config *tc, const moe_lm_config *mc, const char *resume,
                     moe_train_callback cb, void *user) {
    moe_status st = check_train_cfg(tc);
    if (st) return st;
    if (!resume && !mc) return moe_fail(MOE_ERR_INVALID_ARG, "a new run needs model settings");
    const double t_start = now_s();
    td_file *f = NULL;
    tok *tk = NULL;
    moe_lm *lm = NULL;
    moe_adam *opt_lm = NULL, *opt_moe = NULL;
    td_iter *it = NULL;
    moe_st *ck = NULL;
    int32_t *tokbuf = NULL;
    int64_t *expert_tokens = NULL;
    int *counts = NULL;
    run_state rs = {0};
    rs.tc = tc;
    if ((st = td_open(&f, tc->data, 0))) goto done;
    if (resume) {
        if ((st = moe_st_open(&ck, resume))) goto done;
        if ((st = check_resume(ck, tc, mc))) goto done;
        if ((st = model_from_ckpt(ck, &lm, &tk))) goto done;
    } else {
        tok_config tcfg = tok_config_default(tc->words ? TOK_WORDS : TOK_BYTES);
        tcfg.min_count = tc->min_count;
        tcfg.max_vocab = tc->max_vocab;
        tcfg.lowercase = tc->lowercase;
        st = tc->words ? td_build_tokenizer(f, TD_TRAIN, &tcfg, &tk) : tok_create_bytes(&tk);
        if (st) goto done;
        moe_lm_config c = *mc;
        c.vocab = tok_vocab_size(tk);
        if ((st = moe_lm_create(&lm, &c, tc->seed))) goto done;
    }
    int factored = 0;
    if ((st = optim_choice(ck, tc, &factored))) goto done;
    moe_adam_config ac = factored ? moe_adam_config_factored() : moe_adam_config_default();
    float *plm, *glm, *pmoe = NULL, *gmoe = NULL;
    size_t nlm, nmoe = 0;
    moe_lm_arena(lm, &plm, &glm, &nlm);
    moe_layer *ml = moe_lm_moe(lm);
    if (ml) moe_layer_arena(ml, &pmoe, &gmoe, &nmoe);
    if ((st = moe_adam_create(&opt_lm, nlm, &ac))) goto done;
    if (ml && (st = moe_adam_create(&opt_moe, nmoe, &ac))) goto done;
    for (int i = 0; i < moe_lm_num_params(lm) && !st; i++) {
        moe_param p;
        moe_lm_param(lm, i, &p);
        st = declare_matrix(opt_lm, &p, plm);
    }
    for (int i = 0; ml && i < moe_layer_num_params(ml) && !st; i++) {
        moe_param p;
        moe_layer_param(ml, i, &p);
        st = declare_matrix(opt_moe, &p, pmoe);
    }
    if (st) goto done;
    if ((st = td_iter_create(&it, f, tk, TD_TRAIN, tc->batch, tc->bptt))) goto done;
    const int B = tc->batch, T = tc->bptt;
    const moe_lm_config cfg = moe_lm_get_config(lm);
    if (resume) {
        /* optimiser moments and steps, random streams, carried state, data position */
        moe_adam *opts[2] = {opt_lm, opt_moe};
        const char *onames[2][2] = {{"optim.lm.m", "optim.lm.v"}, {"optim.moe.m", "optim.moe.v"}};
        const char *stepnames[2] = {"optim.lm.step", "optim.moe.step"};
        for (int o = 0; o < 2 && !st; o++) {
            if (!opts[o]) continue;
            moe_adam_state_view sv;
            if ((st = moe_adam_state(opts[o], &sv))) break;
            if (sv.m) st = load_tensor(ck, onames[o][0], sv.m, sv.m_count);
            if (!st) st = load_tensor(ck, onames[o][1], sv.v, sv.v_count);
            if (!st) st = get_i64(ck, stepnames[o], sv.step);
        }
        if (st) goto done;
        moe_lm_rng r;
        if ((st = get_u64(ck, "rng.seed", &r.seed)) || (st = get_u64(ck, "rng.dropout_counter", &r.dropout_counter)) ||
            (st = get_u64(ck, "rng.moe_seed", &r.moe_seed)) || (st = get_u64(ck, "rng.moe_counter", &r.moe_counter)))
            goto done;
        moe_lm_set_rng(lm, &r);
        float *state = malloc(sizeof(float) * 4 * (size_t)B * cfg.d);
        if (!state) {
            st = moe_fail(MOE_ERR_NOMEM, "out of memory");
            goto done;
        }
        st = load_tensor(ck, "state", state, 4 * (size_t)B * cfg.d);
        if (!st) st = moe_lm_set_state(lm, state, B);
        free(state);
        if (st) goto done;
        td_pos pos = td_iter_get_pos(it);
        if ((st = get_u64(ck, "data.step", &pos.step)) || (st = get_i64(ck, "step", &rs.step)) ||
            (st = get_u64(ck, "tokens_seen", &rs.tokens_seen)))
            goto done;
        uint64_t ntok = 0;
        if ((st = get_u64(ck, "data.ntokens", &ntok))) goto done;
        if (ntok != pos.ntokens) {
            st = moe_fail(MOE_ERR_CONFIG, "the data file changed since the checkpoint (%" PRIu64 " training tokens then, %" PRIu64 " now)",
                          ntok, (uint64_t)pos.ntokens);
            goto done;
        }
        if ((st = td_iter_set_pos(it, &pos))) goto done;
        moe_st_free(ck);
        ck = NULL;
    }
    rs.lm = lm;
    rs.tk = tk;
    rs.opt_lm = opt_lm;
    rs.opt_moe = opt_moe;
    rs.factored = factored;
    tokbuf = malloc(sizeof(int32_t) * (size_t)B * (T + 1));
    const int n = ml ? moe_layer_get_config(ml).n : 0;
    expert_tokens = calloc((size_t)(n > 0 ? n : 1), sizeof(int64_t));
    counts = calloc((size_t)(n > 0 ? n : 1), sizeof(int));
    if (!tokbuf || !expert_tokens || !counts) {
        st = moe_fail(MOE_ERR_NOMEM, "out of memory");
        goto done;
    }
    moe_train_progress pr;
    memset(&pr, 0, sizeof pr);
    pr.kind = MOE_PROGRESS_START;
    pr.step = rs.step;
    pr.steps = tc->steps;
    pr.n = n;
    pr.vocab = cfg.vocab;
    moe_lm_param_counts(lm, &pr.params_total, &pr.params_active);
    for (int o = 0; o < 2; o++) {
        moe_adam_state_view sv;
        moe_adam *a = o ? opt_moe : opt_lm;
        if (a && !moe_adam_state(a, &sv)) pr.optim_floats += (int64_t)(sv.m_count + sv.v_count);
    }
    int stop = cb ? cb(&pr, user) : 0;
    const int64_t first_step = rs.step;
    double iv_loss = 0, iv_aux = 0, iv_flops = 0, iv_cvi = 0, iv_cvl = 0, iv_mm = 0, iv_gn = 0;
    int64_t iv_steps = 0, iv_tokens = 0;
    double iv_t0 = now_s(), run_t0 = now_s();
    while (!stop && (tc->steps == 0 || rs.step < tc->steps) &&
           (tc->minutes == 0.0 || now_s() - run_t0 < tc->minutes * 60.0)) {
        if ((st = td_iter_next(it, tokbuf))) goto done;
        moe_lm_zero_grad(lm);
        moe_lm_stats s;
        if ((st = moe_lm_step(lm, tokbuf, B, T, 1, &s))) goto done;
        double gn2 = grad_norm2(glm, nlm) + (ml ? grad_norm2(gmoe, nmoe) : 0.0), gn = sqrt(gn2);
        if (!isfinite(gn)) {
            st = moe_fail(MOE_ERR_NONFINITE, "gradient norm is %g at step %" PRId64 ": lower --lr or raise --clip", gn, rs.step + 1);
            goto done;
        }
        if (tc->clip > 0.0f && gn > tc->clip) {
            scale(glm, nlm, (float)(tc->clip / gn));
            if (ml) scale(gmoe, nmoe, (float)(tc->clip / gn));
        }
        rs.step++;
        const float lr = (float)lr_at(tc, rs.step);
        if ((st = moe_adam_step(opt_lm, plm, glm, lr))) goto done;
        if (ml && (st = moe_adam_step(opt_moe, pmoe, gmoe, lr))) goto done;
        rs.tokens_seen += (uint64_t)s.tokens;
        iv_loss += s.loss;
        iv_aux += s.aux;
        iv_flops += s.flops;
        iv_gn += gn;
        iv_cvi += s.moe.cv_importance;
        iv_cvl += s.moe.cv_load;
        iv_mm += s.moe.max_mean_load;
        iv_steps++;
        iv_tokens += s.tokens;
        if (ml && moe_layer_counts(ml, counts) == MOE_OK)
            for (int e = 0; e < n; e++) expert_tokens[e] += counts[e];
        const int last = (tc->steps > 0 && rs.step >= tc->steps) ||
                         (tc->minutes > 0.0 && now_s() - run_t0 >= tc->minutes * 60.0);
        if (rs.step % tc->log_every == 0 || last) {
            double t = now_s(), dt = t - iv_t0;
            memset(&pr, 0, sizeof pr);
            pr.kind = MOE_PROGRESS_TRAIN;
            pr.step = rs.step;
            pr.steps = tc->steps;
            pr.loss = iv_loss / iv_steps;
            pr.ppl = exp(pr.loss);
            pr.aux = iv_aux / iv_steps;
            pr.lr = lr;
            pr.grad_norm = iv_gn / iv_steps;
            pr.tokens_per_s = dt > 0 ? iv_tokens / dt : 0;
            pr.gflops = dt > 0 ? iv_flops / dt / 1e9 : 0;
            pr.elapsed_s = rs.elapsed + (t - t_start);
            double per_step = (t - run_t0) / (double)(rs.step - first_step);
            double eta_steps = tc->steps > 0 ? (tc->steps - rs.step) * per_step : 1e300;
            double eta_time = tc->minutes > 0 ? tc->minutes * 60.0 - (t - run_t0) : 1e300;
            pr.eta_s = fmax(0.0, fmin(eta_steps, eta_time));
            pr.epoch = td_iter_epoch(it);
            pr.cv_importance = iv_cvi / iv_steps;
            pr.cv_load = iv_cvl / iv_steps;
            pr.max_mean_load = iv_mm / iv_steps;
            pr.expert_tokens = expert_tokens;
            pr.n = n;
            stop = cb ? cb(&pr, user) : 0;
            iv_loss = iv_aux = iv_flops = iv_cvi = iv_cvl = iv_mm = iv_gn = 0;
            iv_steps = iv_tokens = 0;
            memset(expert_tokens, 0, sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
            iv_t0 = now_s();
        }
        if ((tc->eval_every > 0 && rs.step % tc->eval_every == 0) || last) {
            double vl;
            uint64_t vt;
            if ((st = eval_split(lm, f, tk, TD_VALID, B, T, tc->eval_batches, &vl, &vt))) goto done;
            memset(&pr, 0, sizeof pr);
            pr.kind = MOE_PROGRESS_VALID;
            pr.step = rs.step;
            pr.steps = tc->steps;
            pr.valid_loss = vl;
            pr.valid_ppl = exp(vl);
            pr.elapsed_s = rs.elapsed + (now_s() - t_start);
            if (cb && cb(&pr, user)) stop = 1;
            iv_t0 = now_s(); /* evaluation time is not training throughput */
        }
        if (tc->checkpoint && ((tc->ckpt_every > 0 && rs.step % tc->ckpt_every == 0) || last || stop)) {
            rs.pos = td_iter_get_pos(it);
            if ((st = ckpt_write(&rs, tc->checkpoint))) {
                st = moe_fail(st, "saving the checkpoint at step %lld failed (%s); the file from the last successful save is unchanged",
                              (long long)rs.step, moe_last_error());
                goto done;
            }
            memset(&pr, 0, sizeof pr);
            pr.kind = MOE_PROGRESS_CHECKPOINT;
            pr.step = rs.step;
            pr.path = tc->checkpoint;
            if (cb && cb(&pr, user)) stop = 1;
        }
    }
done:
    moe_st_free(ck);
    td_iter_free(it);
    moe_adam_free(opt_lm);
    moe_adam_free(opt_moe);
    moe_lm_free(lm);
    tok_free(tk);
    td_free(f);
    free(tokbuf);
    free(expert_tokens);
    free(counts);
    return st;
}

/* ---- checkpoints for inference ---- */

struct moe_ckpt {
    moe_st *f;
    moe_lm *lm;
    tok *tk;
};

moe_status moe_ckpt_load(moe_ckpt **out, const char *path) {
    if (!out || !path) return moe_fail(MOE_ERR_INVALID_ARG, "out and path must not be NULL");
    *out = NULL;
    moe_ckpt *c = calloc(1, sizeof *c);
    if (!c) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    moe_status st = moe_st_open(&c->f, path);
    if (!st) st = model_from_ckpt(c->f, &c->lm, &c->tk);
    if (st) {
        moe_ckpt_free(c);
        return st;
    }
    *out = c;
    return MOE_OK;
}

void moe_ckpt_free(moe_ckpt *c) {
    if (!c) return;
    moe_lm_free(c->lm);
    tok_free(c->tk);
    moe_st_free(c->f);
    free(c);
}

moe_lm *moe_ckpt_model(moe_ckpt *c) { return c ? c->lm : NULL; }
const char *moe_ckpt_meta(const moe_ckpt *c, const char *key) { return c ? moe_st_meta(c->f, key) : NULL; }
int moe_ckpt_meta_count(const moe_ckpt *c) { return c ? moe_st_meta_count(c->f) : 0; }
moe_status moe_ckpt_meta_at(const moe_ckpt *c, int i, const char **key, const char **value) {
    if (!c) return moe_fail(MOE_ERR_INVALID_ARG, "checkpoint is NULL");
    return moe_st_meta_at(c->f, i, key, value);
}

moe_status moe_ckpt_encode(const moe_ckpt *c, const char *text, size_t len, int32_t **ids, size_t *n) {
    if (!c || !text || !ids || !n) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    int32_t *out = malloc(sizeof(int32_t) * TOK_ENCODE_MAX(len));
    if (!out) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    *n = tok_encode(c->tk, NULL, text, len, 1, out);
    *ids = out;
    return MOE_OK;
}

moe_status moe_ckpt_decode(const moe_ckpt *c, const int32_t *ids, size_t n, char **text, size_t *len) {
    if (!c || !ids || !text) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    size_t l = 0;
    moe_status st = tok_decode(c->tk, ids, n, text, &l);
    if (!st && len) *len = l;
    return st;
}

moe_status moe_ckpt_eval(moe_ckpt *c, const char *path, int split, int B, int T, int64_t max_batches,
                         double *loss, uint64_t *tokens) {
    if (!c || !path || !loss) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    if (split < 0 || split > 2) return moe_fail(MOE_ERR_INVALID_ARG, "split must be 0 (train), 1 (valid) or 2 (test)");
    if (B < 1 || T < 1) return moe_fail(MOE_ERR_CONFIG, "B and T must be >= 1");
    td_file *f = NULL;
    moe_status st = td_open(&f, path, 0);
    if (st) return st;
    st = eval_split(c->lm, f, c->tk, (td_split)split, B, T, max_batches, loss, tokens);
    td_free(f);
    return st;
}
