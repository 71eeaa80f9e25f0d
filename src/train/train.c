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
#include "train/ckpt_table.h"
#include "train/optset.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* checkpoints of version 1 had a format string of their own; their layout is version 2's */
#define LEGACY_FORMAT "moe-lm-checkpoint-1"

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

/* ---- checkpoint contents ---- */

typedef struct {
    moe_lm *lm;
    tok *tk;
    const ptable *pt;           /* the model's tensors */
    const optset *opt;          /* may be NULL (inference) */
    moe_comm *comm;             /* NULL: one process */
    const moe_train_config *tc;
    int64_t step;
    td_pos pos;
    uint64_t tokens_seen;
    double elapsed;
} run_state;

static const char *ffn_name(moe_ffn_kind k) {
    return k == MOE_FFN_MOE ? "moe" : k == MOE_FFN_DENSE ? "dense" : "none";
}

/* ---- data parallelism: which streams and experts this rank has ---- */

static int nranks(const moe_comm *c) { return c ? moe_comm_size(c) : 1; }
static int myrank(const moe_comm *c) { return c ? moe_comm_rank(c) : 0; }
/* the first stream (of B) or expert (of n) of rank r */
static int first_of(int total, int P, int r) { return (int)((int64_t)total * r / P); }

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
    const moe_train_config *tc = r->tc;
    if (tc) {
        meta_str(m, "data", tc->data ? tc->data : "");
        meta_i64(m, "batch", tc->batch);
        meta_i64(m, "bptt", tc->bptt);
        meta_f(m, "lr", tc->lr);
        meta_i64(m, "warmup", tc->warmup);
        meta_f(m, "clip", tc->clip);
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
    const int B = r->tc->batch, b0 = first_of(B, P, me), nb = first_of(B, P, me + 1) - b0;
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
                rd[q] = (i * B + first_of(B, P, q)) * d;
                rc[q] = (first_of(B, P, q + 1) - first_of(B, P, q)) * d;
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
    if ((st = get_int(f, "vocab", &c->vocab)) || (st = get_int(f, "d", &c->d)) || (st = get_int(f, "n", &c->n)) ||
        (st = get_int(f, "k", &c->k)) || (st = get_int(f, "h", &c->h)) ||
        (st = get_float(f, "w_importance", &c->w_importance)) || (st = get_float(f, "w_load", &c->w_load)) ||
        (st = get_float(f, "noise_eps", &c->noise_eps)) || (st = get_float(f, "dropout", &c->dropout)))
        return st;
    if (moe_st_meta(f, "groups") && ((st = get_int(f, "groups", &c->groups)) || (st = get_int(f, "k_groups", &c->k_groups))))
        return st; /* absent in checkpoints from before hierarchical layers: flat */
    const char *ffn = moe_st_meta(f, "ffn");
    if (!ffn) return moe_fail(MOE_ERR_MISSING, "checkpoint lacks the setting 'ffn'");
    return ffn_parse(ffn, &c->ffn);
}

/* Creates the model and tokenizer from an open checkpoint and loads the weights. */
static moe_status model_from_ckpt(const moe_st *f, moe_lm **lm_out, tok **tk_out, moe_comm *comm) {
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
    if ((st = comm ? moe_lm_create_sharded(&lm, &c, seed, comm) : moe_lm_create(&lm, &c, seed))) {
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

static double lr_at(const moe_train_config *tc, int64_t step /* 1-based */) {
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

/* Rank 0's value of a flag on every rank (decisions that depend on a clock or a callback). */
static int sync_flag(moe_comm *comm, int v) {
    if (comm) comm_bcast(comm, &v, sizeof v, 0);
    return v;
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

moe_status moe_train(const moe_train_config *tc, const moe_lm_config *mc, const char *resume,
                     moe_train_callback cb, void *user) {
    moe_status st = check_train_cfg(tc);
    if (st) return st;
    if (!resume && !mc) return moe_fail(MOE_ERR_INVALID_ARG, "a new run needs model settings");
    const double t_start = now_s();
    td_file *f = NULL;
    tok *tk = NULL;
    moe_lm *lm = NULL;
    const ptable *pt = NULL;
    optset opt = {0};
    td_iter *it = NULL;
    moe_st *ck = NULL;
    int32_t *tokbuf = NULL;
    int64_t *expert_tokens = NULL;
    int *counts = NULL;
    run_state rs = {0};
    rs.tc = tc;
    /* data parallel over the ranks of tc->comm: rank me trains streams [b0, b0 + nb) of the
     * batch and holds its share of the experts; rank 0 alone reports and writes */
    moe_comm *comm = tc->comm && moe_comm_size(tc->comm) > 1 ? tc->comm : NULL;
    const int P = nranks(comm), me = myrank(comm);
    rs.comm = comm;
    if (comm) {
        const int64_t same[] = {tc->batch, tc->bptt, tc->steps, (int64_t)tc->seed, tc->words, resume != NULL,
                                (int64_t)(tc->minutes * 1000), tc->ckpt_every, tc->eval_every};
        const char *what[] = {"--batch", "--bptt", "--steps", "--seed", "--words", "--resume", "--minutes",
                              "--ckpt-every", "--eval-every"};
        for (int i = 0; i < 9; i++)
            if ((st = moe_comm_check_same(comm, same[i], what[i]))) return st;
        if (tc->batch < P)
            return moe_fail(MOE_ERR_CONFIG, "batch %d is smaller than the %d ranks: each rank needs at least one stream "
                            "(raise --batch or use fewer ranks)", tc->batch, P);
    }
    if ((st = td_open(&f, tc->data, 0))) goto done;
    if (resume) {
        if ((st = moe_st_open(&ck, resume))) goto done;
        if ((st = check_resume(ck, tc, mc))) goto done;
        if ((st = model_from_ckpt(ck, &lm, &tk, comm))) goto done;
    } else {
        tok_config tcfg = tok_config_default(tc->words ? TOK_WORDS : TOK_BYTES);
        tcfg.min_count = tc->min_count;
        tcfg.max_vocab = tc->max_vocab;
        tcfg.lowercase = tc->lowercase;
        st = tc->words ? td_build_tokenizer(f, TD_TRAIN, &tcfg, &tk) : tok_create_bytes(&tk);
        if (st) goto done;
        moe_lm_config c = *mc;
        c.vocab = tok_vocab_size(tk);
        if ((st = comm ? moe_lm_create_sharded(&lm, &c, tc->seed, comm) : moe_lm_create(&lm, &c, tc->seed))) goto done;
    }
    const int b0 = first_of(tc->batch, P, me), nb = first_of(tc->batch, P, me + 1) - b0;
    if (comm && (st = moe_lm_set_slice(lm, b0, tc->batch))) goto done;
    int factored = 0;
    if ((st = optim_choice(ck, tc, &factored))) goto done;
    moe_adam_config ac = factored ? moe_adam_config_factored() : moe_adam_config_default();
    pt = lm_table(lm);
    if ((st = optset_create(&opt, pt, &ac, OPT_ALL))) goto done;
    moe_layer *ml = moe_lm_moe(lm);
    if ((st = td_iter_create(&it, f, tk, TD_TRAIN, tc->batch, tc->bptt))) goto done;
    const int B = tc->batch, T = tc->bptt;
    const moe_lm_config cfg = moe_lm_get_config(lm);
    if (resume) {
        /* optimiser moments and steps, random streams, carried state, data position */
        if ((st = ckpt_get_optim(ck, pt, &opt))) goto done;
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
        const int64_t sh[3] = {4, B, cfg.d};
        st = ckpt_get_tensor(ck, "state", 3, sh, state);
        /* this rank's streams of each of h1, c1, h2, c2 [B, d] */
        for (int i = 0; !st && i < 4 && nb < B; i++) /* in order: each moves down, onto what is read already */
            memmove(state + (size_t)i * nb * cfg.d, state + ((size_t)i * B + b0) * cfg.d, sizeof(float) * (size_t)nb * cfg.d);
        if (!st) st = moe_lm_set_state(lm, state, nb);
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
    rs.pt = pt;
    rs.opt = &opt;
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
    pr.ranks = P;
    pr.step = rs.step;
    pr.steps = tc->steps;
    pr.n = n;
    pr.vocab = cfg.vocab;
    moe_lm_param_counts(lm, &pr.params_total, &pr.params_active);
    pr.optim_floats = optset_floats(&opt);
    int stop = sync_flag(comm, cb && me == 0 ? cb(&pr, user) : 0);
    const int64_t first_step = rs.step;
    double iv_loss = 0, iv_aux = 0, iv_flops = 0, iv_cvi = 0, iv_cvl = 0, iv_mm = 0, iv_gn = 0;
    int64_t iv_steps = 0, iv_tokens = 0;
    double iv_t0 = now_s(), run_t0 = now_s(), iv_comm = 0.0, layer_comm0 = 0.0;
    uint64_t bytes0 = 0;
    if (ml) {
        uint64_t a, b;
        moe_layer_comm_stats(ml, &layer_comm0, &a, &b);
        bytes0 = a + b;
    }
    while (!stop && (tc->steps == 0 || rs.step < tc->steps)) {
        if ((st = td_iter_next(it, tokbuf))) goto done;
        moe_lm_zero_grad(lm);
        moe_lm_stats s;
        if ((st = moe_lm_step(lm, tokbuf + (size_t)b0 * (T + 1), nb, T, 1, &s))) goto done;
        if (comm) {
            /* the replicated groups' gradients summed over ranks (each rank's loss gradient is
             * already its share of the global mean); a sharded MoE sums its gate itself, and
             * the dense baseline's one expert is replicated like the LSTMs */
            const double tc0 = now_s();
            for (int g = 0; g < pt->ngroups; g++)
                if (!pt->g[g].sharded && (st = moe_comm_allreduce_sum(comm, pt->g[g].grads, pt->g[g].count))) goto done;
            double tot[3] = {s.loss * (double)s.tokens, (double)s.tokens, s.flops};
            if ((st = comm_allreduce_sum_f64(comm, tot, 3))) goto done;
            iv_comm += now_s() - tc0;
            s.loss = tot[0] / tot[1];
            s.tokens = (int64_t)tot[1];
            s.flops = tot[2];
        }
        double gn2 = 0.0;
        if ((st = ptable_grad_norm2(pt, comm, OPT_ALL, &gn2))) goto done;
        const double gn = sqrt(gn2);
        if (!isfinite(gn)) {
            st = moe_fail(MOE_ERR_NONFINITE, "gradient norm is %g at step %" PRId64 ": lower --lr or raise --clip", gn, rs.step + 1);
            goto done;
        }
        if (tc->clip > 0.0f && gn > tc->clip) ptable_scale_grads(pt, OPT_ALL, (float)(tc->clip / gn));
        rs.step++;
        const float lr = (float)lr_at(tc, rs.step);
        if ((st = optset_step(&opt, pt, lr, OPT_ALL))) goto done;
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
        const int last = sync_flag(comm, (tc->steps > 0 && rs.step >= tc->steps) ||
                                             (tc->minutes > 0.0 && now_s() - run_t0 >= tc->minutes * 60.0));
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
            pr.ranks = P;
            if (comm) {
                double lc = 0.0;
                uint64_t a = 0, b = 0;
                if (ml) moe_layer_comm_stats(ml, &lc, &a, &b);
                pr.comm_fraction = dt > 0 ? (iv_comm + lc - layer_comm0) / dt : 0.0;
                pr.exchange_bytes = (double)(a + b - bytes0) / (double)iv_steps;
                layer_comm0 = lc;
                bytes0 = a + b;
                iv_comm = 0.0;
            }
            stop = sync_flag(comm, cb && me == 0 ? cb(&pr, user) : 0);
            iv_loss = iv_aux = iv_flops = iv_cvi = iv_cvl = iv_mm = iv_gn = 0;
            iv_steps = iv_tokens = 0;
            memset(expert_tokens, 0, sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
            iv_t0 = now_s();
        }
        if ((tc->eval_every > 0 && rs.step % tc->eval_every == 0) || last) {
            double vl;
            uint64_t vt;
            if ((st = eval_split(lm, f, tk, TD_VALID, B, T, tc->eval_batches, &vl, &vt, comm, b0, nb))) goto done;
            memset(&pr, 0, sizeof pr);
            pr.kind = MOE_PROGRESS_VALID;
            pr.step = rs.step;
            pr.steps = tc->steps;
            pr.valid_loss = vl;
            pr.valid_ppl = exp(vl);
            pr.elapsed_s = rs.elapsed + (now_s() - t_start);
            if (sync_flag(comm, cb && me == 0 ? cb(&pr, user) : 0)) stop = 1;
            iv_t0 = now_s(); /* evaluation time is not training throughput */
            if (ml) { /* nor is its exchange */
                uint64_t a, b;
                moe_layer_comm_stats(ml, &layer_comm0, &a, &b);
                bytes0 = a + b;
            }
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
            if (sync_flag(comm, cb && me == 0 ? cb(&pr, user) : 0)) stop = 1;
        }
        if (last) break;
    }
done:
    moe_st_free(ck);
    td_iter_free(it);
    optset_free(&opt);
    moe_lm_free(lm);
    tok_free(tk);
    td_free(f);
    free(tokbuf);
    free(expert_tokens);
    free(counts);
    if (!st) moe_clear_error(); /* a step may have tolerated a failure (e.g. no expert counts) */
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
    if (!st) st = model_from_ckpt(c->f, &c->lm, &c->tk, NULL);
    if (st) {
        moe_ckpt_free(c);
        return st;
    }
    *out = c;
    moe_clear_error();
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
    moe_clear_error();
    return MOE_OK;
}

moe_status moe_ckpt_decode(const moe_ckpt *c, const int32_t *ids, size_t n, char **text, size_t *len) {
    if (!c || !ids || !text) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    size_t l = 0;
    moe_status st = tok_decode(c->tk, ids, n, text, &l);
    if (st) return st;
    if (len) *len = l;
    moe_clear_error();
    return MOE_OK;
}

moe_status moe_ckpt_eval(moe_ckpt *c, const char *path, int split, int B, int T, int64_t max_batches,
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
