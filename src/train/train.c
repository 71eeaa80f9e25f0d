/* train.c - the language model's training loop and its checkpoints.
 *
 * A checkpoint is one safetensors file (written atomically, kind "lm" of train/ckpt_table.h's
 * format) holding everything a run depends on:
 *   lm.<param>, moe.<param>        the weights (the model's parameter table; SPEC 1.5 names for
 *                                  the MoE layer)
 *   optim.lm.m.<param>, ...        Adam's moments per tensor (no m with beta1 = 0; v holds row and
 *                                  column means of matrices with --optim factored)
 *   state                          the LSTM state carried between batches [4,B,d]
 *   __metadata__                   model and training settings, the tokenizer, the step, Adam's
 *                                  step, the random streams' counters, the data position
 * so that resuming continues the exact same sequence of batches, dropout masks and gate noise:
 * N steps then N more give the same parameters as 2N straight. */
#define _POSIX_C_SOURCE 200809L
#include "parallel/comm.h"
#include "io/ckpt_meta.h"
#include "base/internal.h"
#include "data/textdata.h"
#include "data/tokenizer.h"
#include "models/model_table.h"
#include "moe/layer_table.h"
#include "train/ckpt_table.h"
#include "train/fused.h"
#include "train/optset.h"
#include "train/run.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* checkpoints of version 1 had a format string of their own; their layout is version 2's */
#define LEGACY_FORMAT "moe-lm-checkpoint-1"

moe_lm_train_config moe_lm_train_config_default(void) {
    moe_lm_train_config c = {.data = NULL, .words = 0, .min_count = 2, .max_vocab = 10000,
                          .lowercase = 0, .batch = 32, .bptt = 64, .steps = 1000, .minutes = 0.0,
                          .lr = 2e-3f, .warmup = 200, .clip = 1.0f, .optim = NULL, .log_every = 20,
                          .eval_every = 200, .eval_batches = 0, .ckpt_every = 500,
                          .checkpoint = NULL, .seed = 1, .fused = 0, .bf16 = 0};
    return c;
}

/* ---- checkpoint contents ---- */

typedef struct {
    moe_lm *lm;
    tok *tk;
    const ptable *pt;           /* the model's tensors */
    const optset *opt;          /* may be NULL (inference) */
    moe_comm *comm;             /* NULL: one process */
    const moe_lm_train_config *tc;
    int64_t step;
    td_pos pos;
    uint64_t tokens_seen;
    double elapsed;
} run_state;

static const char *ffn_name(moe_ffn_kind k) {
    return k == MOE_FFN_MOE ? "moe" : k == MOE_FFN_DENSE ? "dense" : "none";
}

static void write_settings(meta_w *m, const run_state *r, int P, char **ts) {
    const moe_lm_config c = moe_lm_get_config(r->lm);
    meta_i64(m, "vocab", c.vocab);
    meta_i64(m, "d", c.d);
    meta_str(m, "ffn", ffn_name(c.ffn));
    meta_i64(m, "n", c.n);
    meta_i64(m, "k", c.k);
    meta_i64(m, "h", c.h);
    meta_f(m, "w_importance", c.w_importance);
    meta_f(m, "w_load", c.w_load);
    meta_f(m, "noise_eps", c.noise_eps);
    meta_f(m, "dropout", c.dropout);
    meta_i64(m, "groups", c.groups);
    meta_i64(m, "k_groups", c.k_groups);
    if (m->w && !m->st) m->st = tok_serialize(r->tk, ts);
    meta_str(m, "tokenizer", *ts ? *ts : "");
    meta_str(m, "tokenizer.kind", tok_get_kind(r->tk) == TOK_WORDS ? "words" : "bytes");
    const moe_lm_train_config *tc = r->tc;
    if (tc) {
        meta_str(m, "data", tc->data ? tc->data : "");
        meta_i64(m, "batch", tc->batch);
        meta_i64(m, "bptt", tc->bptt);
        meta_f(m, "lr", tc->lr);
        meta_i64(m, "warmup", tc->warmup);
        meta_f(m, "clip", tc->clip);
        meta_i64(m, "fused", tc->fused);
        meta_i64(m, "bf16", tc->bf16);
        meta_u64(m, "seed", tc->seed);
        meta_i64(m, "ranks", P);
    }
    meta_i64(m, "step", r->step);
    meta_u64(m, "tokens_seen", r->tokens_seen);
    meta_f(m, "elapsed_s", r->elapsed);
    meta_u64(m, "data.step", r->pos.step);
    meta_u64(m, "data.ntokens", r->pos.ntokens);
    moe_lm_rng rng = moe_lm_get_rng(r->lm);
    meta_u64(m, "rng.seed", rng.seed);
    meta_u64(m, "rng.dropout_counter", rng.dropout_counter);
    meta_u64(m, "rng.moe_seed", rng.moe_seed);
    meta_u64(m, "rng.moe_counter", rng.moe_counter);
    if (r->opt) meta_str(m, "optim", r->opt->factored ? "factored" : "adam");
}

/* The carried LSTM state of all B streams [4, B, d], each rank's rows in place (collective). */
static void write_state(ckw *o, const run_state *r) {
    const int P = o->ranks, me = o->rank, d = moe_lm_get_config(r->lm).d;
    const int B = r->tc->batch, b0 = comm_first(B, P, me), nb = comm_first(B, P, me + 1) - b0;
    float *local = malloc(sizeof(float) * 4 * (size_t)nb * d);
    float *full = me == 0 ? moe_alloc_floats(4 * (size_t)B * d) : NULL;
    int *rc = P > 1 ? malloc(sizeof(int) * (size_t)P) : NULL, *rd = P > 1 ? malloc(sizeof(int) * (size_t)P) : NULL;
    moe_status st = !local || (me == 0 && !full) || (P > 1 && (!rc || !rd))
                        ? moe_fail(MOE_ERR_NOMEM, "out of memory for the LSTM state of the checkpoint")
                        : MOE_OK;
    if (!o->stopped && (st = comm_ready(o->comm, st))) o->stopped = 1;
    if (st || o->stopped) {
        if (!o->m.st) o->m.st = st ? st : moe_fail(MOE_ERR_NOMEM, "out of memory while writing a checkpoint");
    } else if (P == 1) {
        moe_lm_get_state(r->lm, full, nb);
    } else {
        moe_lm_get_state(r->lm, local, nb);
        for (int i = 0; i < 4; i++) {
            for (int q = 0; q < P; q++) {
                rd[q] = (i * B + comm_first(B, P, q)) * d;
                rc[q] = (comm_first(B, P, q + 1) - comm_first(B, P, q)) * d;
            }
            st = comm_gatherv_f32(o->comm, local + (size_t)i * nb * d, nb * d, full, rc, rd, 0);
            if (st && !o->m.st) o->m.st = st;
        }
    }
    free(rc);
    free(rd);
    free(local);
    const int64_t sh[3] = {4, B, d};
    if (full && ckw_keep(o, full)) ckw_tensor(o, "state", 3, sh, full, 0, 0, 0);
}

static moe_status ckpt_write(const run_state *r, const char *path) {
    ckw o;
    moe_status st = ckw_begin(&o, r->comm, "lm");
    if (st) return st;
    char *ts = NULL;
    write_settings(&o.m, r, o.ranks, &ts);
    ckw_table(&o, r->pt, r->opt);
    if (r->tc) write_state(&o, r);
    st = ckw_end(&o, path);
    free(ts);
    return st;
}

static moe_status ffn_parse(const char *s, moe_ffn_kind *k) {
    if (strcmp(s, "moe") == 0) *k = MOE_FFN_MOE;
    else if (strcmp(s, "dense") == 0) *k = MOE_FFN_DENSE;
    else if (strcmp(s, "none") == 0) *k = MOE_FFN_NONE;
    else return moe_fail(MOE_ERR_FORMAT, "checkpoint has an unknown ffn kind '%s'", s);
    return MOE_OK;
}

static moe_status cfg_from_ckpt(const moe_st *f, moe_lm_config *c) {
    int version;
    moe_status st = ckpt_check_format(f, "lm", LEGACY_FORMAT, "language-model", &version);
    if (st) return st;
    *c = moe_lm_config_default();
    if ((st = get_int_in(f, "vocab", 2, CKPT_MAX_VOCAB, &c->vocab)) || (st = get_int_in(f, "d", 1, CKPT_MAX_DIM, &c->d)) ||
        (st = get_int_in(f, "n", 1, CKPT_MAX_EXPERTS, &c->n)) || (st = get_int_in(f, "k", 1, CKPT_MAX_EXPERTS, &c->k)) ||
        (st = get_int_in(f, "h", 1, CKPT_MAX_DIM * 16, &c->h)) ||
        (st = get_float(f, "w_importance", &c->w_importance)) || (st = get_float(f, "w_load", &c->w_load)) ||
        (st = get_float(f, "noise_eps", &c->noise_eps)) || (st = get_float(f, "dropout", &c->dropout)))
        return st;
    if (moe_st_meta(f, "groups") && ((st = get_int_in(f, "groups", 0, CKPT_MAX_EXPERTS, &c->groups)) ||
                                     (st = get_int_in(f, "k_groups", 0, CKPT_MAX_EXPERTS, &c->k_groups))))
        return st; /* absent in checkpoints from before hierarchical layers: flat */
    const char *ffn = moe_st_meta(f, "ffn");
    if (!ffn) return moe_fail(MOE_ERR_MISSING, "checkpoint lacks the setting 'ffn'");
    if ((st = ffn_parse(ffn, &c->ffn))) return st;
    /* the embedding, output layer and LSTMs, and the experts: the bulk of what the model allocates */
    const double d = c->d, ffn_floats = c->ffn == MOE_FFN_MOE     ? 2.0 * c->n * d * c->h
                                        : c->ffn == MOE_FFN_DENSE ? 2.0 * c->k * d * c->h
                                                                  : 0.0;
    char what[160];
    snprintf(what, sizeof what, "vocab=%d d=%d n=%d k=%d h=%d", c->vocab, c->d, c->n, c->k, c->h);
    return ckpt_check_holds(f, 2.0 * c->vocab * d + 16.0 * d * d + ffn_floats, what);
}

/* The checkpoint's tokenizer, refused unless it has exactly `vocab` ids */
static moe_status ckpt_tokenizer(const moe_st *f, int vocab, tok **out) {
    *out = NULL;
    const char *ts = moe_st_meta(f, "tokenizer");
    if (!ts) return moe_fail(MOE_ERR_MISSING, "checkpoint lacks its tokenizer");
    tok *tk = NULL;
    moe_status st = tok_parse(&tk, ts);
    if (st) return st;
    const int64_t tv = (int64_t)tok_vocab_size(tk);
    if (tv != vocab) {
        tok_free(tk);
        return moe_fail(MOE_ERR_FORMAT, "checkpoint's tokenizer has %lld ids but its model %d", (long long)tv, vocab);
    }
    *out = tk;
    return MOE_OK;
}

/* Creates the model and tokenizer from an open checkpoint and loads the weights. */
/* 1 when the checkpoint keeps its experts' weights in bfloat16 */
static int ckpt_bf16(const moe_st *f) {
    const char *v = moe_st_meta(f, "bf16");
    return v && strcmp(v, "1") == 0;
}

/* The FFN layer's flags (moe/layer_table.h) for these settings */
static int layer_flags(int fuse, int bf16, moe_ffn_kind ffn) {
    if (ffn == MOE_FFN_NONE) return 0;
    return (fuse ? LAYER_FUSED : 0) | (bf16 ? LAYER_BF16 : 0);
}

/* The memory plan's flags (MOE_PLAN_*) */
static int plan_flags(int factored, const moe_lm_train_config *tc) {
    return (factored ? MOE_PLAN_FACTORED : 0) | (tc->fused ? MOE_PLAN_FUSED : 0) | (tc->bf16 ? MOE_PLAN_BF16 : 0);
}

/* The checkpoint's model; flags: its FFN layer's (moe/layer_table.h) */
static moe_status model_from_ckpt(const moe_st *f, moe_lm **lm_out, tok **tk_out, moe_comm *comm, int flags) {
    moe_lm_config c;
    moe_status st = cfg_from_ckpt(f, &c);
    if (st) return st;
    tok *tk = NULL;
    if ((st = ckpt_tokenizer(f, c.vocab, &tk))) return st;
    moe_lm *lm = NULL;
    uint64_t seed = 0;
    get_u64(f, "rng.seed", &seed);
    if ((st = lm_create_opts(&lm, &c, seed, comm, c.ffn == MOE_FFN_NONE ? 0 : flags))) {
        tok_free(tk);
        return st;
    }
    st = ckpt_get_params(f, lm_table(lm));
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

static double lr_at(const moe_lm_train_config *tc, int64_t step /* 1-based */) {
    if (tc->warmup > 0 && step <= tc->warmup) return tc->lr * (double)step / tc->warmup;
    if (tc->warmup > 0) return tc->lr * sqrt((double)tc->warmup / (double)step);
    return tc->lr;
}

/* Mean loss over a split with the model in evaluation mode; the carried training state is
 * saved and restored around it. */
static moe_status eval_split(moe_lm *lm, const td_file *f, const tok *tk, td_split split, int B, int T,
                             int64_t max_batches, double *loss, uint64_t *tokens, moe_comm *comm, int b0, int nb) {
    td_iter *it = NULL;
    moe_status st = td_iter_create(&it, f, tk, split, B, T);
    if (st) return st;
    int64_t nbatch = (int64_t)td_iter_steps_per_epoch(it);
    if (nbatch < 1) nbatch = 1;
    if (max_batches > 0 && nbatch > max_batches) nbatch = max_batches;
    const int d = moe_lm_get_config(lm).d;
    float *saved = malloc(sizeof(float) * 4 * (size_t)nb * d);
    int32_t *tokbuf = malloc(sizeof(int32_t) * (size_t)B * (T + 1));
    if (!saved || !tokbuf) {
        free(saved);
        free(tokbuf);
        td_iter_free(it);
        return moe_fail(MOE_ERR_NOMEM, "out of memory for evaluation");
    }
    moe_lm_get_state(lm, saved, nb);
    moe_lm_reset_state(lm);
    double sum[2] = {0.0, 0.0}; /* loss * tokens, tokens */
    for (int64_t b = 0; b < nbatch && !st; b++) {
        st = td_iter_next(it, tokbuf);
        moe_lm_stats s;
        if (!st) st = moe_lm_step(lm, tokbuf + (size_t)b0 * (T + 1), nb, T, 0, &s);
        if (!st) {
            sum[0] += s.loss * (double)s.tokens;
            sum[1] += (double)s.tokens;
        }
    }
    moe_lm_set_state(lm, saved, nb);
    free(saved);
    free(tokbuf);
    td_iter_free(it);
    if (st) return st;
    if (comm && (st = comm_allreduce_sum_f64(comm, sum, 2))) return st;
    *loss = sum[1] > 0 ? sum[0] / sum[1] : 0.0;
    if (tokens) *tokens = (uint64_t)sum[1];
    return MOE_OK;
}

static moe_status check_train_cfg(const moe_lm_train_config *tc) {
    if (!tc || !tc->data) return moe_fail(MOE_ERR_INVALID_ARG, "no training data file given");
    if (tc->batch < 1 || tc->bptt < 1) return moe_fail(MOE_ERR_CONFIG, "batch (%d) and bptt (%d) must be >= 1", tc->batch, tc->bptt);
    if (tc->steps < 0 || !(tc->minutes >= 0.0)) return moe_fail(MOE_ERR_CONFIG, "steps and minutes must be >= 0");
    if (tc->steps == 0 && tc->minutes == 0.0) return moe_fail(MOE_ERR_CONFIG, "give a bound: steps > 0 or minutes > 0");
    if (!(tc->lr > 0.0f) || !isfinite(tc->lr)) return moe_fail(MOE_ERR_CONFIG, "learning rate %g must be > 0", tc->lr);
    if (tc->warmup < 0 || tc->clip < 0.0f) return moe_fail(MOE_ERR_CONFIG, "warmup and clip must be >= 0");
    if (tc->fused != 0 && tc->fused != 1) return moe_fail(MOE_ERR_CONFIG, "fused must be 0 or 1, got %d", tc->fused);
    if (tc->bf16 != 0 && tc->bf16 != 1) return moe_fail(MOE_ERR_CONFIG, "bf16 must be 0 or 1, got %d", tc->bf16);
    if (tc->bf16 && !tc->fused)
        return moe_fail(MOE_ERR_CONFIG, "bfloat16 expert weights (--bf16) are updated by fused updates: add --fused");
    if (tc->log_every < 1 || tc->eval_every < 0 || tc->ckpt_every < 0 || tc->eval_batches < 0)
        return moe_fail(MOE_ERR_CONFIG, "log_every must be >= 1; eval_every, ckpt_every, eval_batches >= 0");
    return MOE_OK;
}

/* Resume: everything that decides the data stream must agree with the checkpoint. */
static moe_status check_resume(const moe_st *f, const moe_lm_train_config *tc, const moe_lm_config *mc) {
    const char *data = moe_st_meta(f, "data");
    if (data && strcmp(data, tc->data) != 0)
        return moe_fail(MOE_ERR_CONFIG, "the checkpoint was trained on '%s', not '%s': resume with the same --data", data, tc->data);
    int b = 0, t = 0;
    moe_status st;
    if ((st = get_int(f, "batch", &b)) || (st = get_int(f, "bptt", &t))) return st;
    if (b != tc->batch || t != tc->bptt)
        return moe_fail(MOE_ERR_CONFIG, "the checkpoint used batch %d and bptt %d, not %d and %d: resume with the same values",
                        b, t, tc->batch, tc->bptt);
    if (ckpt_bf16(f) != tc->bf16)
        return moe_fail(MOE_ERR_CONFIG, "the checkpoint keeps its expert weights in %s: resume %s --bf16",
                        tc->bf16 ? "float32" : "bfloat16", tc->bf16 ? "without" : "with");
    const char *kind = moe_st_meta(f, "tokenizer.kind");
    if (kind && strcmp(kind, tc->words ? "words" : "bytes") != 0)
        return moe_fail(MOE_ERR_CONFIG, "the checkpoint uses %s tokens, not %s", kind, tc->words ? "words" : "bytes");
    if (mc) {
        moe_lm_config c;
        if ((st = cfg_from_ckpt(f, &c))) return st;
        if (c.d != mc->d || c.ffn != mc->ffn || (c.ffn != MOE_FFN_NONE && (c.n != mc->n || c.k != mc->k || c.h != mc->h)) ||
            c.groups != mc->groups || (c.groups && c.k_groups != mc->k_groups) ||
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
static moe_status optim_choice(const moe_st *ck, const moe_lm_train_config *tc, int *factored) {
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

/* A training run of the language model: the trainer core and everything the steps use. */
typedef struct {
    run_core core;
    run_state rs; /* what a checkpoint holds */
    const moe_lm_train_config *tc;
    moe_lm_callback cb;
    void *user;
    td_file *f;
    td_iter *it;
    tok *tk;
    moe_lm *lm;
    moe_layer *ml; /* the model's FFN layer, or NULL */
    optset opt;
    fused *fu;     /* fused expert updates, or NULL */
    int b0, nb;      /* this rank's streams of the batch */
    int32_t *tokbuf; /* [B, T+1] */
    int *counts;     /* [n] */
    int n;           /* experts (0: no FFN) */
    /* the report interval: sums over its steps */
    double loss, aux, flops, cvi, cvl, mm, gn, comm_s, layer_comm0;
    run_watch watch; /* divergence */
    int64_t steps, tokens, *expert_tokens; /* expert_tokens [n] */
    uint64_t bytes0;
    float lr;
} lm_run;

/* Every rank must run the same settings: a mismatch would pair up different collectives. */
static moe_status check_ranks(const moe_lm_train_config *tc, moe_comm *comm, const char *resume) {
    const int P = moe_comm_size(comm);
    const int64_t same[] = {tc->batch, tc->bptt, tc->steps, (int64_t)tc->seed, tc->words, resume != NULL,
                            (int64_t)(tc->minutes * 1000), tc->ckpt_every, tc->eval_every, tc->fused, tc->bf16};
    const char *what[] = {"--batch", "--bptt", "--steps", "--seed", "--words", "--resume", "--minutes",
                          "--ckpt-every", "--eval-every", "--fused", "--bf16"};
    moe_status st = MOE_OK;
    for (int i = 0; i < 11 && !st; i++) st = moe_comm_check_same(comm, same[i], what[i]);
    if (!st && tc->batch < P)
        st = moe_fail(MOE_ERR_CONFIG, "batch %d is smaller than the %d ranks: each rank needs at least one stream "
                      "(raise --batch or use fewer ranks)", tc->batch, P);
    return st;
}

static double gb(int64_t bytes) { return (double)bytes / 1e9; }

/* A run whose memory plan does not fit what this process may use is refused before anything
 * large is allocated, with what would fit. */
static moe_status plan_fits(const moe_lm_config *c, const moe_lm_train_config *tc, int factored, int ranks) {
    moe_mem_plan p, q;
    const int flags = plan_flags(factored, tc);
    moe_status st = moe_lm_plan(c, tc->batch, tc->bptt, flags, ranks, &p);
    if (st || p.available <= 0 || p.total <= p.available) return st;
    char hint[512] = "";
    size_t n = 0;
    /* the memory-saving settings not yet on, alone and together */
    static const struct {
        int flags;
        const char *what;
    } SAVE[] = {{MOE_PLAN_FACTORED, "--optim factored"},
                {MOE_PLAN_FUSED, "--fused"},
                {MOE_PLAN_FUSED | MOE_PLAN_BF16, "--fused --bf16"},
                {MOE_PLAN_FACTORED | MOE_PLAN_FUSED, "--optim factored --fused"},
                {MOE_PLAN_FACTORED | MOE_PLAN_FUSED | MOE_PLAN_BF16, "--optim factored --fused --bf16"}};
    for (int i = 0; i < 5; i++) {
        /* only settings none of which is on yet (so no combination is named twice) */
        if ((SAVE[i].flags & flags) || (c->ffn == MOE_FFN_NONE && (SAVE[i].flags & MOE_PLAN_FUSED))) continue;
        if (!moe_lm_plan(c, tc->batch, tc->bptt, flags | SAVE[i].flags, ranks, &q))
            n += (size_t)snprintf(hint + n, sizeof hint - n, "; %s needs %.2f GB%s", SAVE[i].what, gb(q.total),
                                  q.total <= p.available ? " (fits)" : "");
    }
    moe_lm_config s = *c; /* the most experts that fit, halving */
    while (c->ffn == MOE_FFN_MOE && s.n > 1 && n < sizeof hint - 96) {
        s.n /= 2;
        if (s.groups && s.n % s.groups) break;
        if (s.k > s.n || moe_lm_plan(&s, tc->batch, tc->bptt, flags, ranks, &q)) break;
        if (q.total <= p.available) {
            n += (size_t)snprintf(hint + n, sizeof hint - n, "; --experts %d needs %.2f GB", s.n, gb(q.total));
            break;
        }
    }
    return moe_fail(MOE_ERR_NOMEM, "this run needs %.2f GB (parameters %.2f, gradients %.2f, optimiser %.2f, "
                    "activations %.2f) but %.2f GB is available: nothing was allocated%s",
                    gb(p.total), gb(p.params), gb(p.grads), gb(p.optim), gb(p.activations), gb(p.available), hint);
}

/* The tokenizer of a new run */
static moe_status new_tokenizer(const moe_lm_train_config *tc, td_file *f, tok **out) {
    tok_config tcfg = tok_config_default(tc->words ? TOK_WORDS : TOK_BYTES);
    tcfg.min_count = tc->min_count;
    tcfg.max_vocab = tc->max_vocab;
    tcfg.lowercase = tc->lowercase;
    return tc->words ? td_build_tokenizer(f, TD_TRAIN, &tcfg, out) : tok_create_bytes(out);
}

/* A new model and tokenizer from the data */
static moe_status new_model(lm_run *r, const moe_lm_config *mc, int factored, moe_comm *comm) {
    const moe_lm_train_config *tc = r->tc;
    moe_status st = new_tokenizer(tc, r->f, &r->tk);
    if (st) return st;
    moe_lm_config c = *mc;
    c.vocab = tok_vocab_size(r->tk);
    if ((st = plan_fits(&c, tc, factored, comm ? moe_comm_size(comm) : 1))) return st;
    return lm_create_opts(&r->lm, &c, tc->seed, comm, layer_flags(tc->fused, tc->bf16, c.ffn));
}

/* The checkpoint's model, if its plan fits */
static moe_status resume_model(lm_run *r, const moe_st *ck, int factored, moe_comm *comm) {
    moe_lm_config c;
    moe_status st = cfg_from_ckpt(ck, &c);
    if (!st) st = plan_fits(&c, r->tc, factored, comm ? moe_comm_size(comm) : 1);
    return st ? st : model_from_ckpt(ck, &r->lm, &r->tk, comm, layer_flags(r->tc->fused, r->tc->bf16, c.ffn));
}

moe_status moe_lm_train_plan(const moe_lm_train_config *tc, const moe_lm_config *mc, const char *resume,
                             moe_mem_plan *out) {
    moe_status st = check_train_cfg(tc);
    if (st) return st;
    if (!out || (!resume && !mc)) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    moe_st *ck = NULL;
    td_file *f = NULL;
    tok *tk = NULL;
    moe_lm_config c = mc ? *mc : moe_lm_config_default();
    int factored = 0;
    if (resume && !(st = moe_st_open(&ck, resume))) st = cfg_from_ckpt(ck, &c);
    else if (!resume && !(st = td_open(&f, tc->data, 0)) && !(st = new_tokenizer(tc, f, &tk))) c.vocab = tok_vocab_size(tk);
    if (!st) st = optim_choice(ck, tc, &factored);
    const int flags = plan_flags(factored, tc);
    if (!st) st = moe_lm_plan(&c, tc->batch, tc->bptt, flags, tc->comm ? moe_comm_size(tc->comm) : 1, out);
    tok_free(tk);
    td_free(f);
    moe_st_free(ck);
    return st;
}

/* Resume: optimiser moments and steps, random streams, carried state, data position. */
static moe_status resume_state(lm_run *r, const moe_st *ck) {
    const int B = r->tc->batch, d = moe_lm_get_config(r->lm).d, b0 = r->b0, nb = r->nb;
    moe_status st = ckpt_get_optim(ck, r->rs.pt, &r->opt);
    moe_lm_rng g;
    if (st || (st = get_u64(ck, "rng.seed", &g.seed)) || (st = get_u64(ck, "rng.dropout_counter", &g.dropout_counter)) ||
        (st = get_u64(ck, "rng.moe_seed", &g.moe_seed)) || (st = get_u64(ck, "rng.moe_counter", &g.moe_counter)))
        return st;
    moe_lm_set_rng(r->lm, &g);
    float *state = malloc(sizeof(float) * 4 * (size_t)B * d);
    if (!state) return moe_fail(MOE_ERR_NOMEM, "out of memory for the carried LSTM state");
    const int64_t sh[3] = {4, B, d};
    st = ckpt_get_tensor(ck, "state", 3, sh, state);
    /* this rank's streams of each of h1, c1, h2, c2 [B, d] */
    for (int i = 0; !st && i < 4 && nb < B; i++) /* in order: each moves down, onto what is read already */
        memmove(state + (size_t)i * nb * d, state + ((size_t)i * B + b0) * d, sizeof(float) * (size_t)nb * d);
    if (!st) st = moe_lm_set_state(r->lm, state, nb);
    free(state);
    td_pos pos = td_iter_get_pos(r->it);
    uint64_t ntok = 0;
    if (st || (st = get_u64(ck, "data.step", &pos.step)) || (st = get_i64_in(ck, "step", 0, CKPT_MAX_STEP, &r->rs.step)) ||
        (st = get_u64(ck, "tokens_seen", &r->rs.tokens_seen)) || (st = get_u64(ck, "data.ntokens", &ntok)))
        return st;
    if (ntok != pos.ntokens)
        return moe_fail(MOE_ERR_CONFIG, "the data file changed since the checkpoint (%" PRIu64 " training tokens then, %" PRIu64 " now)",
                        ntok, (uint64_t)pos.ntokens);
    float el = 0.0f;
    if (moe_st_meta(ck, "elapsed_s") && (st = get_float(ck, "elapsed_s", &el))) return st;
    r->rs.elapsed = el;
    return td_iter_set_pos(r->it, &pos);
}

/* The model (new or from the checkpoint), its optimiser, the data stream and the buffers. */
static moe_status lm_setup(lm_run *r, const moe_lm_config *mc, const char *resume, moe_comm *comm) {
    const moe_lm_train_config *tc = r->tc;
    const int P = comm ? moe_comm_size(comm) : 1, me = comm ? moe_comm_rank(comm) : 0;
    moe_st *ck = NULL;
    moe_status st = td_open(&r->f, tc->data, 0);
    if (!st && resume && !(st = moe_st_open(&ck, resume))) st = check_resume(ck, tc, mc);
    int factored = 0;
    if (!st) st = optim_choice(ck, tc, &factored);
    if (!st) st = resume ? resume_model(r, ck, factored, comm) : new_model(r, mc, factored, comm);
    /* data parallel: rank me trains streams [b0, b0 + nb) of the batch */
    r->b0 = comm_first(tc->batch, P, me);
    r->nb = comm_first(tc->batch, P, me + 1) - r->b0;
    if (!st && comm) st = moe_lm_set_slice(r->lm, r->b0, tc->batch);
    const moe_adam_config ac = factored ? moe_adam_config_factored() : moe_adam_config_default();
    if (!st) r->rs.pt = lm_table(r->lm);
    if (!st) st = optset_create(&r->opt, r->rs.pt, &ac, OPT_ALL);
    if (!st && layer_is_fused(moe_lm_moe(r->lm)))
        st = fused_create(&r->fu, moe_lm_moe(r->lm), r->rs.pt, &r->opt, tc->clip);
    if (!st) st = td_iter_create(&r->it, r->f, r->tk, TD_TRAIN, tc->batch, tc->bptt);
    if (!st && ck) st = resume_state(r, ck);
    moe_st_free(ck);
    if (st) return st;
    r->ml = moe_lm_moe(r->lm);
    r->n = r->ml ? moe_layer_get_config(r->ml).n : 0;
    r->tokbuf = malloc(sizeof(int32_t) * (size_t)tc->batch * (tc->bptt + 1));
    r->expert_tokens = calloc((size_t)(r->n > 0 ? r->n : 1), sizeof(int64_t));
    r->counts = calloc((size_t)(r->n > 0 ? r->n : 1), sizeof(int));
    if (!r->tokbuf || !r->expert_tokens || !r->counts) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    r->rs.lm = r->lm;
    r->rs.tk = r->tk;
    r->rs.opt = &r->opt;
    r->rs.comm = comm;
    r->rs.tc = tc;
    return MOE_OK;
}

static void lm_free(lm_run *r) {
    td_iter_free(r->it);
    fused_free(r->fu);
    optset_free(&r->opt);
    moe_lm_free(r->lm);
    tok_free(r->tk);
    td_free(r->f);
    free(r->tokbuf);
    free(r->expert_tokens);
    free(r->counts);
}

/* rank 0's callback on p, its verdict on every rank */
static int lm_call(lm_run *r, moe_lm_progress *p) {
    p->step = r->core.step;
    p->steps = r->tc->steps;
    p->ranks = r->core.ranks;
    return run_verdict(&r->core, r->cb && r->core.rank == 0 ? r->cb(p, r->user) : 0);
}

/* the MoE layer's collective time and bytes so far */
static void layer_comm_time(const lm_run *r, double *s, uint64_t *bytes) {
    uint64_t a = 0, b = 0;
    *s = 0.0;
    if (r->ml) moe_layer_comm_stats(r->ml, s, &a, &b);
    *bytes = a + b;
}

/* One step: forward and backward on this rank's streams, gradients summed over ranks, clipped,
 * the optimiser; the interval's sums. */
static moe_status lm_step(lm_run *r) {
    const moe_lm_train_config *tc = r->tc;
    const ptable *pt = r->rs.pt;
    moe_comm *comm = r->core.comm;
    moe_status st = td_iter_next(r->it, r->tokbuf);
    if (st) return st;
    moe_lm_zero_grad(r->lm);
    if (r->fu && (st = fused_begin(r->fu, (float)lr_at(tc, r->core.step + 1)))) return st;
    moe_lm_stats s;
    if ((st = moe_lm_step(r->lm, r->tokbuf + (size_t)r->b0 * (tc->bptt + 1), r->nb, tc->bptt, 1, &s))) return st;
    if (comm) {
        /* the replicated groups' gradients summed over ranks (each rank's loss gradient is
         * already its share of the global mean); a sharded MoE sums its gate itself, and the
         * dense baseline's one expert is replicated like the LSTMs */
        const double t0 = run_now();
        for (int g = 0; g < pt->ngroups && !st; g++)
            if (!pt->g[g].sharded) st = moe_comm_allreduce_sum(comm, pt->g[g].grads, pt->g[g].gcount);
        double tot[3] = {s.loss * (double)s.tokens, (double)s.tokens, s.flops};
        if (st || (st = comm_allreduce_sum_f64(comm, tot, 3))) return st;
        r->comm_s += run_now() - t0;
        s.loss = tot[0] / tot[1];
        s.tokens = (int64_t)tot[1];
        s.flops = tot[2];
    }
    if ((st = run_watch_step(&r->watch, s.loss, r->core.step + 1, tc->checkpoint))) return st;
    double gn2 = 0.0, ex2 = r->fu ? fused_norm2(r->fu) : 0.0;
    if ((st = ptable_grad_norm2(pt, comm, OPT_ALL, &gn2))) return st;
    if (r->fu && comm && moe_comm_size(comm) > 1 && (st = comm_allreduce_sum_f64(comm, &ex2, 1))) return st;
    /* fused: the experts were clipped each by its own norm; the rest by the norm of the rest */
    const double gn = sqrt(gn2 + ex2), gclip = r->fu ? sqrt(gn2) : gn;
    if (!isfinite(gn)) return run_watch_fail(&r->watch, "the gradient norm", gn, r->core.step + 1, tc->checkpoint);
    if (tc->clip > 0.0f && gclip > tc->clip) ptable_scale_grads(pt, OPT_ALL, (float)(tc->clip / gclip));
    r->core.step++;
    r->lr = (float)lr_at(tc, r->core.step);
    if ((st = optset_step(&r->opt, pt, r->lr, OPT_ALL))) return st;
    r->rs.tokens_seen += (uint64_t)s.tokens;
    r->loss += s.loss;
    r->aux += s.aux;
    r->flops += s.flops;
    r->gn += gn;
    r->cvi += s.moe.cv_importance;
    r->cvl += s.moe.cv_load;
    r->mm += s.moe.max_mean_load;
    r->steps++;
    r->tokens += s.tokens;
    if (r->ml && moe_layer_counts(r->ml, r->counts) == MOE_OK)
        for (int e = 0; e < r->n; e++) r->expert_tokens[e] += r->counts[e];
    return MOE_OK;
}

/* The report of the interval's means (divergence when their loss says so); starts the next
 * interval. */
static moe_status lm_report(lm_run *r) {
    const double dt = run_interval(&r->core), k = (double)r->steps;
    moe_lm_progress p;
    memset(&p, 0, sizeof p);
    p.kind = MOE_LM_TRAIN;
    p.loss = r->loss / k;
    p.ppl = exp(p.loss);
    p.aux = r->aux / k;
    p.lr = r->lr;
    p.grad_norm = r->gn / k;
    p.tokens_per_s = dt > 0 ? r->tokens / dt : 0;
    p.gflops = dt > 0 ? r->flops / dt / 1e9 : 0;
    p.elapsed_s = r->rs.elapsed + run_elapsed(&r->core);
    p.eta_s = run_eta(&r->core);
    p.epoch = td_iter_epoch(r->it);
    p.cv_importance = r->cvi / k;
    p.cv_load = r->cvl / k;
    p.max_mean_load = r->mm / k;
    p.expert_tokens = r->expert_tokens;
    p.n = r->n;
    if (r->core.comm) {
        double lc;
        uint64_t bytes;
        layer_comm_time(r, &lc, &bytes);
        p.comm_fraction = dt > 0 ? (r->comm_s + lc - r->layer_comm0) / dt : 0.0;
        p.exchange_bytes = (double)(bytes - r->bytes0) / k;
        r->layer_comm0 = lc;
        r->bytes0 = bytes;
        r->comm_s = 0.0;
    }
    lm_call(r, &p);
    r->loss = r->aux = r->flops = r->cvi = r->cvl = r->mm = r->gn = 0;
    r->steps = r->tokens = 0;
    memset(r->expert_tokens, 0, sizeof(int64_t) * (size_t)(r->n > 0 ? r->n : 1));
    run_restart_interval(&r->core);
    return run_watch_mean(&r->watch, p.loss, r->core.step, r->tc->checkpoint, 1);
}

static moe_status lm_validate(lm_run *r) {
    const moe_lm_train_config *tc = r->tc;
    double vl;
    uint64_t vt;
    moe_status st = eval_split(r->lm, r->f, r->tk, TD_VALID, tc->batch, tc->bptt, tc->eval_batches, &vl, &vt,
                               r->core.comm, r->b0, r->nb);
    if (st) return st;
    moe_lm_progress p;
    memset(&p, 0, sizeof p);
    p.kind = MOE_LM_VALID;
    p.valid_loss = vl;
    p.valid_ppl = exp(vl);
    p.elapsed_s = r->rs.elapsed + run_elapsed(&r->core);
    lm_call(r, &p);
    run_restart_interval(&r->core); /* evaluation time is not training throughput */
    layer_comm_time(r, &r->layer_comm0, &r->bytes0); /* nor is its exchange */
    return MOE_OK;
}

static moe_status lm_save(lm_run *r) {
    /* the steps since the last report must not be diverging either */
    moe_status sw = r->steps ? run_watch_mean(&r->watch, r->loss / (double)r->steps, r->core.step, r->tc->checkpoint, 0)
                             : MOE_OK;
    if (sw) return sw;
    r->rs.pos = td_iter_get_pos(r->it);
    r->rs.step = r->core.step;
    const double elapsed0 = r->rs.elapsed;
    r->rs.elapsed = elapsed0 + run_elapsed(&r->core);
    moe_status st = ckpt_write(&r->rs, r->tc->checkpoint);
    r->rs.elapsed = elapsed0;
    if (st)
        return moe_fail(st, "saving the checkpoint at step %lld failed (%s); the file from the last successful save is unchanged",
                        (long long)r->core.step, moe_last_error());
    r->watch.last_save = r->core.step;
    moe_lm_progress p;
    memset(&p, 0, sizeof p);
    p.kind = MOE_LM_CHECKPOINT;
    p.path = r->tc->checkpoint;
    lm_call(r, &p);
    return MOE_OK;
}

static void lm_start_report(lm_run *r) {
    moe_lm_progress p;
    memset(&p, 0, sizeof p);
    p.kind = MOE_LM_START;
    p.n = r->n;
    p.vocab = moe_lm_get_config(r->lm).vocab;
    moe_lm_param_counts(r->lm, &p.params_total, &p.params_active);
    p.optim_floats = optset_floats(&r->opt);
    lm_call(r, &p);
    layer_comm_time(r, &r->layer_comm0, &r->bytes0);
}

moe_status moe_lm_train(const moe_lm_train_config *tc, const moe_lm_config *mc, const char *resume,
                        moe_lm_callback cb, void *user) {
    moe_status st = check_train_cfg(tc);
    if (st) return st;
    if (!resume && !mc) return moe_fail(MOE_ERR_INVALID_ARG, "a new run needs model settings");
    /* data parallel over the ranks of tc->comm; rank 0 alone reports and writes */
    moe_comm *comm = tc->comm && moe_comm_size(tc->comm) > 1 ? tc->comm : NULL;
    if (comm && (st = check_ranks(tc, comm, resume))) return st;
    lm_run r;
    memset(&r, 0, sizeof r);
    r.tc = tc;
    r.cb = cb;
    r.user = user;
    if ((st = lm_setup(&r, mc, resume, comm))) {
        lm_free(&r);
        return st;
    }
    run_begin(&r.core, comm, r.rs.step, tc->steps, tc->minutes, 0.0);
    run_watch_begin(&r.watch, moe_lm_get_config(r.lm).vocab);
    lm_start_report(&r);
    while (!st && !r.core.stop && (tc->steps == 0 || r.core.step < tc->steps)) {
        if ((st = lm_step(&r))) break;
        const int last = run_bound_reached(&r.core);
        if ((run_due(&r.core, tc->log_every) || last) && (st = lm_report(&r))) break;
        if ((run_due(&r.core, tc->eval_every) || last) && (st = lm_validate(&r))) break;
        if (tc->checkpoint && (run_due(&r.core, tc->ckpt_every) || last || r.core.stop) && (st = lm_save(&r))) break;
        if (last) break;
    }
    lm_free(&r);
    if (!st) moe_clear_error(); /* a step may have tolerated a failure (e.g. no expert counts) */
    return st;
}

/* ---- checkpoints for inference ---- */

struct moe_lm_ckpt {
    moe_st *f;
    moe_lm *lm;
    tok *tk;
};

/* What the header says against itself, with no weight read: the tokenizer's size against the
 * vocabulary, and every tensor the settings imply present with its dtype and shape. */
static moe_status check_header(const moe_st *f, const moe_lm_config *c) {
    tok *tk = NULL;
    moe_status st = ckpt_tokenizer(f, c->vocab, &tk);
    tok_free(tk);
    if (st) return st;
    const int bf16 = ckpt_bf16(f) && c->ffn != MOE_FFN_NONE;
    char name[PT_NAME];
    int ndim;
    int64_t shape[3];
    for (int i = 0; !st && lm_config_tensor(c, i, name, &ndim, shape); i++) {
        const int half = bf16 && (strcmp(name, "moe.experts.w1") == 0 || strcmp(name, "moe.experts.w2") == 0);
        st = ckpt_check_tensor(f, name, half ? MOE_BF16 : MOE_F32, ndim, shape);
    }
    return st;
}

moe_status moe_lm_ckpt_config(const moe_st *f, moe_lm_config *cfg) {
    if (!f || !cfg) return moe_fail(MOE_ERR_INVALID_ARG, "f and cfg must not be NULL");
    moe_lm_config c;
    moe_status st = cfg_from_ckpt(f, &c);
    if (!st) st = check_header(f, &c);
    if (!st) *cfg = c;
    return st;
}

moe_status moe_lm_ckpt_load(moe_lm_ckpt **out, const char *path) {
    if (!out || !path) return moe_fail(MOE_ERR_INVALID_ARG, "out and path must not be NULL");
    *out = NULL;
    moe_lm_ckpt *c = calloc(1, sizeof *c);
    if (!c) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    moe_status st = moe_st_open(&c->f, path);
    /* for inference: the experts keep no gradients (a model of billions of parameters loads in
     * the memory of its weights) */
    if (!st) st = model_from_ckpt(c->f, &c->lm, &c->tk, NULL, LAYER_FUSED | (ckpt_bf16(c->f) ? LAYER_BF16 : 0));
    if (st) {
        moe_lm_ckpt_free(c);
        return st;
    }
    *out = c;
    return moe_ok();
}

void moe_lm_ckpt_free(moe_lm_ckpt *c) {
    if (!c) return;
    moe_lm_free(c->lm);
    tok_free(c->tk);
    moe_st_free(c->f);
    free(c);
}

moe_lm *moe_lm_ckpt_model(moe_lm_ckpt *c) { return c ? c->lm : NULL; }
const char *moe_lm_ckpt_meta(const moe_lm_ckpt *c, const char *key) { return c ? moe_st_meta(c->f, key) : NULL; }
int moe_lm_ckpt_meta_count(const moe_lm_ckpt *c) { return c ? moe_st_meta_count(c->f) : 0; }
moe_status moe_lm_ckpt_meta_at(const moe_lm_ckpt *c, int i, const char **key, const char **value) {
    if (!c) return moe_fail(MOE_ERR_INVALID_ARG, "checkpoint is NULL");
    return moe_st_meta_at(c->f, i, key, value);
}

moe_status moe_lm_ckpt_encode(const moe_lm_ckpt *c, const char *text, size_t len, int32_t **ids, size_t *n) {
    if (!c || !text || !ids || !n) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    int32_t *out = malloc(sizeof(int32_t) * TOK_ENCODE_MAX(len));
    if (!out) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    *n = tok_encode(c->tk, NULL, text, len, 1, out);
    *ids = out;
    return moe_ok();
}

moe_status moe_lm_ckpt_decode(const moe_lm_ckpt *c, const int32_t *ids, size_t n, char **text, size_t *len) {
    if (!c || !ids || !text) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    size_t l = 0;
    moe_status st = tok_decode(c->tk, ids, n, text, &l);
    if (st) return st;
    if (len) *len = l;
    return moe_ok();
}

moe_status moe_lm_ckpt_eval(moe_lm_ckpt *c, const char *path, int split, int B, int T, int64_t max_batches,
                             double *loss, uint64_t *tokens) {
    if (!c || !path || !loss) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    if (split < 0 || split > 2) return moe_fail(MOE_ERR_INVALID_ARG, "split must be 0 (train), 1 (valid) or 2 (test)");
    if (B < 1 || T < 1) return moe_fail(MOE_ERR_CONFIG, "B and T must be >= 1");
    td_file *f = NULL;
    moe_status st = td_open(&f, path, 0);
    if (st) return st;
    st = eval_split(c->lm, f, c->tk, (td_split)split, B, T, max_batches, loss, tokens, NULL, 0, B);
    td_free(f);
    if (!st) moe_clear_error();
    return st;
}
