/* s2s_train.c - training the translation model: cross-entropy, MIXER and SCST (SPEC 3),
 * validation BLEU, checkpoints that resume exactly, and the checkpoint-side helpers
 * (translate a sentence, BLEU of a split).
 *
 * One step on a batch of B pairs (sources of one length Ts, references y_b of L_b tokens with
 * the end mark):
 *   XENT   coef[b,t] = 1/N for t < L_b
 *   MIXER  the first s_b = min(s, L_b) tokens teacher-forced (coef 1/N), the rest sampled from
 *          the model (same dropout masks as the gradient pass), reward r_b = BLEU(prefix +
 *          sample, y_b), coef[b,t] = (r_b - baseline_t(h_bt)) / N for t >= s_b; the baseline is
 *          a linear regressor per step on the attention output h, trained by squared error and
 *          not backpropagated into the decoder (SPEC 3.2)
 *   SCST   the whole sequence sampled, coef = (r_b - r(greedy_b)) / N
 * N = all scored positions of the batch. */
#define _POSIX_C_SOURCE 200809L
#include "io/ckpt_meta.h"
#include "base/internal.h"
#include "models/s2s.h"
#include "data/s2s_data.h"
#include "data/tokenizer.h"
#include "models/model_table.h"
#include "train/ckpt_table.h"
#include "train/optset.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* checkpoints of version 1 had this format string and one optimiser state per arena */
#define LEGACY_FORMAT "moe-seq2seq 1"
#define DEFAULT_DICT "/usr/share/dictd/freedict-deu-eng.dict.dz"

moe_s2s_train_config moe_s2s_train_config_default(void) {
    moe_s2s_train_config c = {.dict = NULL, .src_file = NULL, .tgt_file = NULL, .out_dir = "runs/seq2seq",
                              .objective = MOE_OBJ_XENT, .epochs = 0, .max_steps = 0, .n_xent = 8, .n_xer = 2, .delta = 3,
                              .batch = 64, .lr = 2e-3f, .lr_rl = 5e-4f, .clip = 1.0f, .seed = 1,
                              .reward = MOE_BLEU_PLUS1, .min_count = 3, .max_vocab = 8000, .max_words = 10,
                              .min_words = 3, .valid_sentences = 0, .log_every = 50, .ckpt_every = 0,
                              .baseline_lr = 1e-3f};
    return c;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *obj_name(moe_s2s_objective o) {
    return o == MOE_OBJ_MIXER ? "mixer" : (o == MOE_OBJ_SCST ? "scst" : "xent");
}

/* ---- schedule (SPEC 3.3) ---------------------------------------------------------------------- */
/* MIXER's stages: s = T, T - delta, ... while s > 1, then a last stage at s = 0 */
static int mixer_stages(int T, int delta) {
    int n = 0;
    for (int s = T; s > 1; s -= delta) n++;
    return n + 1;
}
static int stage_s(int T, int delta, int j) {
    const int n = mixer_stages(T, delta);
    return j >= n - 1 ? 0 : T - j * delta;
}
static int total_epochs(const moe_s2s_train_config *tc, int T) {
    return tc->epochs > 0 ? tc->epochs : tc->n_xent + mixer_stages(T, tc->delta) * tc->n_xer;
}
/* s for epoch e (0-based): -1 = cross-entropy only */
static int epoch_s(const moe_s2s_train_config *tc, int T, int e) {
    if (tc->objective == MOE_OBJ_XENT || e < tc->n_xent) return -1;
    if (tc->objective == MOE_OBJ_SCST) return 0;
    return stage_s(T, tc->delta, (e - tc->n_xent) / tc->n_xer);
}

/* ---- data --------------------------------------------------------------------------------------- */
typedef struct {
    tok *ts, *tt;
    s2s_data data;
    int ntrain, nvalid, ntest;
} corpus;

static void corpus_free(corpus *c) {
    tok_free(c->ts);
    tok_free(c->tt);
    s2s_data_free(&c->data);
    memset(c, 0, sizeof *c);
}

/* Reads the data; builds the vocabularies unless given (then they are owned by the corpus). */
static moe_status corpus_load(corpus *c, const char *dict, const char *src, const char *tgt, int min_words,
                              int min_count, int max_vocab, int max_words, tok *ts, tok *tt) {
    memset(c, 0, sizeof *c);
    s2s_pairs p;
    moe_status st = src || tgt ? (src && tgt ? s2s_read_parallel(src, tgt, &p)
                                             : moe_fail(MOE_ERR_CONFIG, "parallel text needs both a source and a target file"))
                               : s2s_read_ding(dict ? dict : DEFAULT_DICT, NULL, min_words, &p);
    if (st) {
        tok_free(ts);
        tok_free(tt);
        return st;
    }
    if (!ts) st = s2s_build_vocab(&p, 0, min_count, max_vocab, &ts);
    if (!st && !tt) st = s2s_build_vocab(&p, 1, min_count, max_vocab, &tt);
    c->ts = ts;
    c->tt = tt;
    if (!st) st = s2s_data_encode(&p, ts, tt, max_words, !(src || tgt), &c->data);
    s2s_pairs_free(&p);
    if (st) {
        corpus_free(c);
        return st;
    }
    for (int i = 0; i < c->data.n; i++) {
        const int s = c->data.split[i];
        c->ntrain += s == 0;
        c->nvalid += s == 1;
        c->ntest += s == 2;
    }
    if (c->ntrain == 0 || c->nvalid == 0) {
        corpus_free(c);
        return moe_fail(MOE_ERR_FORMAT, "the data has %d training and %d validation pairs: too few to train on", c->ntrain,
                        c->nvalid);
    }
    return MOE_OK;
}

/* A batch of pairs idx[0..nb): sources [nb, Ts], references [nb, R] padded, lengths. */
typedef struct {
    int nb, Ts, R;
    int32_t *src, *ref;
    int *ref_len;
} batch;

static moe_status batch_make(batch *b, const s2s_data *d, const int *idx, int nb, int R) {
    b->nb = nb;
    b->Ts = (int)(d->src_off[idx[0] + 1] - d->src_off[idx[0]]);
    b->R = R;
    b->src = malloc(sizeof(int32_t) * (size_t)nb * b->Ts);
    b->ref = malloc(sizeof(int32_t) * (size_t)nb * R);
    b->ref_len = malloc(sizeof(int) * (size_t)nb);
    if (!b->src || !b->ref || !b->ref_len) return moe_fail(MOE_ERR_NOMEM, "out of memory for a batch");
    for (int i = 0; i < nb; i++) {
        const int64_t s0 = d->src_off[idx[i]], t0 = d->tgt_off[idx[i]];
        memcpy(b->src + (size_t)i * b->Ts, d->src_ids + s0, sizeof(int32_t) * (size_t)b->Ts);
        int L = (int)(d->tgt_off[idx[i] + 1] - t0);
        if (L > R) L = R;
        b->ref_len[i] = L;
        for (int t = 0; t < R; t++) b->ref[(size_t)i * R + t] = t < L ? d->tgt_ids[t0 + t] : TOK_NEWLINE;
    }
    return MOE_OK;
}
static void batch_free(batch *b) {
    free(b->src);
    free(b->ref);
    free(b->ref_len);
}

/* BLEU statistics of hyp against the reference without its end mark; reference <unk> never
 * matches (it becomes an id no hypothesis has). */
static void bleu_stats(moe_bleu_stats *s, const int32_t *hyp, int nh, const int32_t *ref, int nr, int V, int32_t *tmp) {
    if (nh > 0 && hyp[nh - 1] == TOK_NEWLINE) nh--;
    if (nr > 0 && ref[nr - 1] == TOK_NEWLINE) nr--;
    for (int i = 0; i < nr; i++) tmp[i] = ref[i] == TOK_UNK ? V : ref[i];
    moe_bleu_stats_sentence(s, hyp, (size_t)nh, tmp, (size_t)nr);
}

/* Corpus BLEU x 100 of greedy (beam 1) or beam decoding on a split, at most `limit` pairs. */
static moe_status split_bleu(moe_s2s *m, const s2s_data *d, int split, int beam, float alpha, int limit, int B,
                             double *bleu, int *count) {
    s2s_batches bt;
    moe_status st = s2s_make_batches(d, split, B, 0, 0, 0, &bt);
    if (st) return st;
    const moe_s2s_config cfg = moe_s2s_get_config(m);
    const int T = cfg.max_len;
    moe_bleu_stats acc;
    memset(&acc, 0, sizeof acc);
    int32_t *out = malloc(sizeof(int32_t) * (size_t)B * T), *tmp = malloc(sizeof(int32_t) * (size_t)(T + 1));
    int *len = malloc(sizeof(int) * (size_t)B);
    int n = 0;
    if (!out || !tmp || !len) st = moe_fail(MOE_ERR_NOMEM, "out of memory");
    for (int j = 0; j < bt.nbatch && !st && (limit <= 0 || n < limit); j++) {
        int nb = bt.start[j + 1] - bt.start[j];
        if (limit > 0 && n + nb > limit) nb = limit - n;
        batch b;
        memset(&b, 0, sizeof b);
        st = batch_make(&b, d, bt.idx + bt.start[j], nb, T);
        if (!st && beam <= 1) st = moe_s2s_greedy(m, b.src, nb, b.Ts, T, out, len);
        for (int i = 0; i < nb && !st && beam > 1; i++)
            st = moe_s2s_beam(m, b.src + (size_t)i * b.Ts, b.Ts, beam, alpha, T, out + (size_t)i * T, &len[i]);
        for (int i = 0; i < nb && !st; i++) {
            moe_bleu_stats s;
            bleu_stats(&s, out + (size_t)i * T, len[i], b.ref + (size_t)i * T, b.ref_len[i], cfg.tgt_vocab, tmp);
            moe_bleu_stats_add(&acc, &s);
        }
        n += nb;
        batch_free(&b);
    }
    free(out);
    free(tmp);
    free(len);
    s2s_batches_free(&bt);
    if (!st) {
        *bleu = 100.0 * moe_bleu_score(&acc, MOE_BLEU_NONE);
        if (count) *count = n;
    }
    return st;
}

/* ---- checkpoints -------------------------------------------------------------------------------- */
typedef struct {
    const moe_s2s_train_config *tc;
    moe_s2s *m;
    corpus *c;
    const ptable *pt; /* the model's: groups s2s, moe0, moe1 (if present), baseline */
    optset opt;
    int gbase;        /* the baseline regressors' group, stepped on its own */
    int epoch, batch_in_epoch;
    int64_t step;
    double elapsed;
} run_state;

static moe_status ckpt_write(const run_state *r, const char *path) {
    ckw o;
    moe_status st = ckw_begin(&o, NULL, "seq2seq");
    if (st) return st;
    meta_w m = o.m;
    const moe_s2s_config c = moe_s2s_get_config(r->m);
    meta_i64(&m, "src_vocab", c.src_vocab);
    meta_i64(&m, "tgt_vocab", c.tgt_vocab);
    meta_i64(&m, "d", c.d);
    meta_i64(&m, "layers", c.layers);
    meta_i64(&m, "bidir", c.bidir);
    meta_i64(&m, "moe", c.moe);
    meta_i64(&m, "n", c.n);
    meta_i64(&m, "k", c.k);
    meta_i64(&m, "h", c.h);
    meta_f(&m, "w_importance", c.w_importance);
    meta_f(&m, "w_load", c.w_load);
    meta_f(&m, "noise_eps", c.noise_eps);
    meta_f(&m, "dropout", c.dropout);
    meta_i64(&m, "max_len", c.max_len);
    meta_i64(&m, "eos", c.eos);
    char *ts = NULL, *tt = NULL;
    if (!m.st) m.st = tok_serialize(r->c->ts, &ts);
    if (!m.st) m.st = tok_serialize(r->c->tt, &tt);
    meta_str(&m, "tokenizer.src", ts ? ts : "");
    meta_str(&m, "tokenizer.tgt", tt ? tt : "");
    const moe_s2s_train_config *tc = r->tc;
    meta_str(&m, "data.dict", tc->src_file ? "" : (tc->dict ? tc->dict : DEFAULT_DICT));
    meta_str(&m, "data.src", tc->src_file ? tc->src_file : "");
    meta_str(&m, "data.tgt", tc->tgt_file ? tc->tgt_file : "");
    meta_i64(&m, "data.min_words", tc->min_words);
    meta_i64(&m, "data.max_words", tc->max_words);
    meta_i64(&m, "data.min_count", tc->min_count);
    meta_i64(&m, "data.max_vocab", tc->max_vocab);
    meta_u64(&m, "data.hash", r->c->data.hash);
    meta_str(&m, "objective", obj_name(tc->objective));
    meta_i64(&m, "n_xent", tc->n_xent);
    meta_i64(&m, "n_xer", tc->n_xer);
    meta_i64(&m, "delta", tc->delta);
    meta_i64(&m, "batch", tc->batch);
    meta_f(&m, "lr", tc->lr);
    meta_u64(&m, "seed", tc->seed);
    meta_i64(&m, "epoch", r->epoch);
    meta_i64(&m, "batch_in_epoch", r->batch_in_epoch);
    meta_i64(&m, "step", r->step);
    meta_f(&m, "elapsed_s", r->elapsed);
    meta_u64(&m, "rng.step_counter", s2s_get_step_counter(r->m));
    meta_u64(&m, "rng.seed", s2s_get_seed(r->m));
    for (int s = 0; s < 2; s++) {
        moe_layer *ml = moe_s2s_moe(r->m, s);
        if (!ml) continue;
        uint64_t sd, ct;
        moe_layer_get_rng(ml, &sd, &ct);
        meta_u64(&m, s ? "rng.moe1_seed" : "rng.moe0_seed", sd);
        meta_u64(&m, s ? "rng.moe1_counter" : "rng.moe0_counter", ct);
    }
    o.m = m;
    ckw_table(&o, r->pt, &r->opt);
    st = ckw_end(&o, path);
    free(ts);
    free(tt);
    return st;
}

static moe_status cfg_from_ckpt(const moe_st *f, moe_s2s_config *c) {
    int version;
    moe_status st = ckpt_check_format(f, "seq2seq", LEGACY_FORMAT, "translation-model", &version);
    if (st) return st;
    *c = moe_s2s_config_default();
    const char *ik[] = {"src_vocab", "tgt_vocab", "d", "layers", "bidir", "moe", "n", "k", "h", "max_len", "eos"};
    int *iv[] = {&c->src_vocab, &c->tgt_vocab, &c->d, &c->layers, &c->bidir, &c->moe, &c->n, &c->k, &c->h, &c->max_len, &c->eos};
    for (int i = 0; i < 11 && !st; i++) st = get_int(f, ik[i], iv[i]);
    const char *fk[] = {"w_importance", "w_load", "noise_eps", "dropout"};
    float *fv[] = {&c->w_importance, &c->w_load, &c->noise_eps, &c->dropout};
    for (int i = 0; i < 4 && !st; i++) st = get_float(f, fk[i], fv[i]);
    return st;
}

/* Model (and tokenizers) from an opened checkpoint; the model's parameters and rng. */
static moe_status model_from_ckpt(const moe_st *f, moe_s2s **out, tok **ts, tok **tt) {
    moe_s2s_config c;
    moe_status st = cfg_from_ckpt(f, &c);
    const char *s1 = moe_st_meta(f, "tokenizer.src"), *s2 = moe_st_meta(f, "tokenizer.tgt");
    if (!st && (!s1 || !s2)) st = moe_fail(MOE_ERR_MISSING, "checkpoint lacks its vocabularies");
    if (!st) st = tok_parse(ts, s1);
    if (!st && (st = tok_parse(tt, s2))) {
        tok_free(*ts);
        *ts = NULL;
    }
    if (!st && (tok_vocab_size(*ts) != c.src_vocab || tok_vocab_size(*tt) != c.tgt_vocab))
        st = moe_fail(MOE_ERR_FORMAT, "checkpoint's vocabularies do not match its model's sizes");
    moe_s2s *m = NULL;
    if (!st) st = moe_s2s_create(&m, &c, 1);
    if (!st) st = ckpt_get_params(f, s2s_table(m));
    for (int s = 0; s < 2 && !st; s++) {
        moe_layer *ml = moe_s2s_moe(m, s);
        if (!ml) continue;
        uint64_t sd = 0, ct = 0;
        st = get_u64(f, s ? "rng.moe1_seed" : "rng.moe0_seed", &sd);
        if (!st) st = get_u64(f, s ? "rng.moe1_counter" : "rng.moe0_counter", &ct);
        if (!st) moe_layer_set_rng(ml, sd, ct);
    }
    uint64_t sc = 0, sd = 0;
    if (!st) st = get_u64(f, "rng.step_counter", &sc);
    /* the dropout seed is the training seed ("rng.seed" in files from 2026-12-02 on) */
    if (!st) st = get_u64(f, moe_st_meta(f, "rng.seed") ? "rng.seed" : "seed", &sd);
    if (!st) s2s_set_step_counter(m, sc), s2s_set_seed(m, sd);
    if (st) {
        moe_s2s_free(m);
        tok_free(*ts);
        tok_free(*tt);
        *ts = *tt = NULL;
        return st;
    }
    *out = m;
    return MOE_OK;
}

/* ---- one training step -------------------------------------------------------------------------- */
typedef struct {
    int32_t *seq, *in, *tgt, *greedy, *tmp;
    float *coef;
    float *nt;           /* [T] rows sampled at step t (the baseline's per-step mean) */
    int *len, *glen, *force, *counts;
    double *reward;
} step_ws;

static void step_ws_free(step_ws *w) {
    free(w->seq);
    free(w->in);
    free(w->tgt);
    free(w->greedy);
    free(w->tmp);
    free(w->coef);
    free(w->len);
    free(w->glen);
    free(w->force);
    free(w->reward);
    free(w->nt);
    free(w->counts);
}

static moe_status step_ws_make(step_ws *w, int B, int T, int n_experts) {
    const size_t n = (size_t)B * T;
    w->seq = malloc(sizeof(int32_t) * n);
    w->in = malloc(sizeof(int32_t) * n);
    w->tgt = malloc(sizeof(int32_t) * n);
    w->greedy = malloc(sizeof(int32_t) * n);
    w->tmp = malloc(sizeof(int32_t) * (size_t)(T + 1));
    w->coef = malloc(sizeof(float) * n);
    w->len = malloc(sizeof(int) * (size_t)B);
    w->glen = malloc(sizeof(int) * (size_t)B);
    w->force = malloc(sizeof(int) * (size_t)B);
    w->reward = malloc(sizeof(double) * (size_t)B);
    w->nt = malloc(sizeof(float) * (size_t)T);
    w->counts = malloc(sizeof(int) * (size_t)(n_experts > 0 ? n_experts : 1));
    if (!w->seq || !w->in || !w->tgt || !w->greedy || !w->tmp || !w->coef || !w->len || !w->glen || !w->force || !w->reward ||
        !w->nt || !w->counts)
        return moe_fail(MOE_ERR_NOMEM, "out of memory for the training step");
    return MOE_OK;
}

typedef struct {
    double xent_sum;  /* sum of -log p over teacher-forced tokens */
    int64_t xent_n, tokens;
    double reward_sum, berr_sum;
    int64_t reward_n, berr_n;
} step_stats;


static moe_status train_step(run_state *r, const batch *b, int s, step_ws *w, step_stats *ss) {
    moe_s2s *m = r->m;
    const moe_s2s_train_config *tc = r->tc;
    const moe_s2s_config cfg = moe_s2s_get_config(m);
    const int B = b->nb, T = cfg.max_len, V = cfg.tgt_vocab, eos = cfg.eos;
    const int scst = tc->objective == MOE_OBJ_SCST && s >= 0;
    moe_status st = MOE_OK;
    int rl = 0;
    for (int i = 0; i < B; i++) {
        w->force[i] = s < 0 ? b->ref_len[i] : (s < b->ref_len[i] ? s : b->ref_len[i]);
        rl |= w->force[i] < b->ref_len[i];
    }
    if (scst) { /* the baseline: the greedy decode's reward (test-time setting: no dropout) */
        if ((st = s2s_encode(m, b->src, B, b->Ts, 0))) return st;
        if ((st = s2s_sample(m, NULL, NULL, 0, NULL, T, 1, 0, 0, 0, w->greedy, w->glen))) return st;
    }
    if ((st = s2s_encode(m, b->src, B, b->Ts, 1))) return st;
    int Tt = 0;
    if (rl) {
        const uint64_t ctr = (uint64_t)r->step << 24;
        st = s2s_sample(m, b->ref, b->ref_len, b->R, w->force, T, 0, 1, tc->seed ^ 0x73616d70ULL, ctr, w->seq, w->len);
        if (st) return st;
        for (int i = 0; i < B; i++) {
            if (w->len[i] > Tt) Tt = w->len[i];
            moe_bleu_stats bs;
            bleu_stats(&bs, w->seq + (size_t)i * T, w->len[i], b->ref + (size_t)i * b->R, b->ref_len[i], V, w->tmp);
            w->reward[i] = moe_bleu_score(&bs, tc->reward);
        }
    } else {
        for (int i = 0; i < B; i++) {
            w->len[i] = b->ref_len[i];
            memcpy(w->seq + (size_t)i * T, b->ref + (size_t)i * b->R, sizeof(int32_t) * (size_t)b->ref_len[i]);
            if (w->len[i] > Tt) Tt = w->len[i];
        }
    }
    int64_t N = 0;
    for (int i = 0; i < B; i++) N += w->len[i];
    const float invN = 1.0f / (float)N;
    for (int i = 0; i < B; i++)
        for (int t = 0; t < Tt; t++) {
            const size_t o = (size_t)i * Tt + t;
            const int L = w->len[i];
            w->in[o] = t == 0 ? eos : (t - 1 < L ? w->seq[(size_t)i * T + t - 1] : eos);
            w->tgt[o] = t < L ? w->seq[(size_t)i * T + t] : eos;
            w->coef[o] = t < w->force[i] && t < L ? invN : 0.0f;
        }
    double loss = 0.0;
    if ((st = s2s_decode(m, w->in, w->tgt, w->coef, Tt, 1, &loss))) return st;
    /* cross-entropy share for the report: -log p of the forced tokens */
    int64_t nx = 0;
    for (int i = 0; i < B; i++) nx += w->force[i] < w->len[i] ? w->force[i] : w->len[i];
    if (rl) {
        const float *hc = s2s_hidden(m);
        moe_param bw, bb;
        moe_s2s_find_param(m, "baseline.w", &bw);
        moe_s2s_find_param(m, "baseline.b", &bb);
        const int d = cfg.d;
        /* the regressors' gradient goes to their place in the (zeroed) gradient arena, which the
         * loss does not touch: step t's regressor gets the mean squared error over the rows
         * sampled at t */
        float *nt = w->nt;
        memset(nt, 0, sizeof(float) * (size_t)T);
        for (int i = 0; i < B; i++)
            for (int t = w->force[i]; t < w->len[i]; t++) nt[t] += 1.0f;
        for (int i = 0; i < B; i++) {
            const int f = w->force[i];
            if (f >= w->len[i]) continue;
            ss->reward_sum += w->reward[i];
            ss->reward_n++;
            double base = 0.0;
            if (scst) {
                moe_bleu_stats bs;
                bleu_stats(&bs, w->greedy + (size_t)i * T, w->glen[i], b->ref + (size_t)i * b->R, b->ref_len[i], V, w->tmp);
                base = moe_bleu_score(&bs, tc->reward);
                ss->berr_sum += fabs(w->reward[i] - base);
                ss->berr_n++;
            }
            for (int t = f; t < w->len[i]; t++) {
                if (!scst) {
                    const float *h = hc + ((size_t)t * B + i) * d, *wt = bw.data + (size_t)t * d;
                    double pred = bb.data[t];
                    for (int j = 0; j < d; j++) pred += (double)wt[j] * h[j];
                    /* a reward lies in [0, 1]: so does the best constant baseline */
                    base = pred < 0.0 ? 0.0 : (pred > 1.0 ? 1.0 : pred);
                    const double e = pred - w->reward[i];
                    ss->berr_sum += e * e;
                    ss->berr_n++;
                    const float g = (float)(e / (double)nt[t]);
                    float *gwt = bw.grad + (size_t)t * d;
                    for (int j = 0; j < d; j++) gwt[j] += g * h[j];
                    bb.grad[t] += g;
                }
                w->coef[(size_t)i * Tt + t] = (float)((w->reward[i] - base) * invN);
            }
        }
        /* the regressors' own Adam, after the coefficients used them (bw starts their block) */
        if (!scst && (st = optset_step(&r->opt, r->pt, tc->baseline_lr, 1u << r->gbase))) return st;
        if ((st = s2s_set_coef(m, w->coef))) return st;
    }
    ss->xent_sum += nx ? (loss - s2s_last_aux(m)) * (double)N : 0.0; /* loss = sum nll / N over forced tokens + aux */
    ss->xent_n += nx;
    ss->tokens += N;
    return moe_s2s_backward(m);
}

/* ---- the loop ----------------------------------------------------------------------------------- */
/* A report of `kind` with the run's position filled in. */
static moe_s2s_progress progress_at(moe_s2s_progress_kind kind, const run_state *r, int64_t steps, int epochs,
                                    const char *phase, int s) {
    moe_s2s_progress p;
    memset(&p, 0, sizeof p);
    p.kind = kind;
    p.step = r->step;
    p.steps = steps;
    p.epoch = r->epoch;
    p.epochs = epochs;
    p.phase = phase;
    p.s = s;
    p.elapsed_s = r->elapsed;
    return p;
}

/* Writes the checkpoint and reports it; returns the callback's verdict in *stop. */
static moe_status checkpoint(const run_state *r, const char *path, moe_s2s_callback cb, void *user, int *stop) {
    moe_status st = ckpt_write(r, path);
    if (!st && cb) {
        moe_s2s_progress p = progress_at(MOE_S2S_CHECKPOINT, r, 0, 0, NULL, -1);
        p.path = path;
        if (cb(&p, user)) *stop = 1;
    }
    return st;
}

/* Clips the global gradient norm over every group but the baseline (which train_step stepped
 * on its own), then takes their Adam steps. */
static moe_status optim_step(run_state *r, float lr) {
    const uint32_t mask = OPT_ALL & ~(1u << r->gbase);
    double n2 = 0.0;
    moe_status st = ptable_grad_norm2(r->pt, NULL, mask, &n2);
    const double norm = sqrt(n2);
    if (!st && !isfinite(norm))
        return moe_fail(MOE_ERR_NONFINITE, "the gradient is not finite at step %lld: lower the learning rate", (long long)r->step + 1);
    const float clip = r->tc->clip;
    if (!st && clip > 0.0f && norm > clip) ptable_scale_grads(r->pt, mask, (float)(clip / norm));
    return st ? st : optset_step(&r->opt, r->pt, lr, mask);
}

/* The optimisers, their state from the checkpoint when resuming: per tensor, or (version 1)
 * per arena, optim0 .. optim3 for the groups s2s, moe0, moe1, baseline. */
static moe_status make_optim(run_state *r, const moe_st *ck) {
    const moe_adam_config ac = moe_adam_config_default();
    r->pt = s2s_table(r->m);
    r->gbase = ptable_group_index(r->pt, "baseline");
    moe_status st = optset_create(&r->opt, r->pt, &ac, OPT_ALL);
    if (st || !ck) return st;
    int version = 0;
    if ((st = ckpt_check_format(ck, "seq2seq", LEGACY_FORMAT, "translation-model", &version))) return st;
    if (version >= 2) return ckpt_get_optim(ck, r->pt, &r->opt);
    static const char *const legacy[] = {"s2s", "moe0", "moe1", "baseline"};
    for (int i = 0; i < 4 && !st; i++) {
        const int g = ptable_group_index(r->pt, legacy[i]);
        char key[16];
        snprintf(key, sizeof key, "optim%d", i);
        /* a checkpoint from before any REINFORCE epoch may lack the baseline's optimiser */
        if (g < 0 || (i == 3 && !moe_st_meta(ck, "optim3.step"))) continue;
        st = ckpt_get_optim_arena(ck, r->opt.a[g], key);
    }
    return st;
}

static moe_status mkdirs(const char *dir) {
    char buf[4096];
    size_t n = strlen(dir);
    if (n + 1 > sizeof buf) return moe_fail(MOE_ERR_INVALID_ARG, "path too long: %s", dir);
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++)
        if (buf[i] == '/' || buf[i] == 0) {
            char ch = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) return moe_fail(MOE_ERR_IO, "cannot create %s: %s", buf, strerror(errno));
            buf[i] = ch;
        }
    return MOE_OK;
}

static moe_status check_tc(const moe_s2s_train_config *tc) {
    if (!tc) return moe_fail(MOE_ERR_INVALID_ARG, "training config is NULL");
    if (tc->batch < 1 || tc->batch > 65536) return moe_fail(MOE_ERR_CONFIG, "batch %d must be in [1, 65536]", tc->batch);
    if (!(tc->lr > 0.0f) || !(tc->lr_rl >= 0.0f)) return moe_fail(MOE_ERR_CONFIG, "learning rates must be positive");
    if (tc->n_xent < 0 || tc->n_xer < 1 || tc->delta < 1)
        return moe_fail(MOE_ERR_CONFIG, "MIXER schedule n_xent=%d n_xer=%d delta=%d: need n_xent >= 0, n_xer >= 1, delta >= 1",
                        tc->n_xent, tc->n_xer, tc->delta);
    if (tc->max_steps < 0) return moe_fail(MOE_ERR_CONFIG, "max steps %lld must be >= 0", (long long)tc->max_steps);
    if (tc->epochs < 0) return moe_fail(MOE_ERR_CONFIG, "epochs %d must be >= 0", tc->epochs);
    if (tc->max_words < 1 || tc->max_words > 4000) return moe_fail(MOE_ERR_CONFIG, "max words %d must be in [1, 4000]", tc->max_words);
    if (tc->min_count < 1) return moe_fail(MOE_ERR_CONFIG, "min count %d must be >= 1", tc->min_count);
    if (tc->objective < MOE_OBJ_XENT || tc->objective > MOE_OBJ_SCST) return moe_fail(MOE_ERR_CONFIG, "unknown objective");
    if ((int)tc->reward < 0 || tc->reward > MOE_BLEU_PLUS1) return moe_fail(MOE_ERR_CONFIG, "unknown reward smoothing");
    if (!(tc->baseline_lr >= 0.0f)) return moe_fail(MOE_ERR_CONFIG, "baseline learning rate must be >= 0");
    return MOE_OK;
}

moe_status moe_s2s_train(const moe_s2s_train_config *tc_in, const moe_s2s_config *mc_in, const char *resume,
                         moe_s2s_callback cb, void *user) {
    moe_status st = check_tc(tc_in);
    if (st) return st;
    moe_s2s_train_config tcl = *tc_in; /* resuming: the checkpoint's seed (data order, samples) */
    const moe_s2s_train_config *tc = &tcl;
    if (!mc_in && !resume) return moe_fail(MOE_ERR_INVALID_ARG, "need a model config or a checkpoint to resume");
    run_state r;
    memset(&r, 0, sizeof r);
    r.tc = tc;
    corpus c;
    memset(&c, 0, sizeof c);
    moe_st *ck = NULL;
    step_ws w;
    memset(&w, 0, sizeof w);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", tc->out_dir);
    if (resume) {
        if ((st = moe_st_open(&ck, resume))) return st;
        tok *ts = NULL, *tt = NULL;
        st = model_from_ckpt(ck, &r.m, &ts, &tt);
        if (!st) {
            moe_s2s_config cc = moe_s2s_get_config(r.m);
            if (cc.max_len != tc->max_words + 1)
                st = moe_fail(MOE_ERR_CONFIG, "the checkpoint was trained with --max-words %d; this run asks for %d",
                              cc.max_len - 1, tc->max_words);
        }
        if (!st) st = corpus_load(&c, tc->dict, tc->src_file, tc->tgt_file, tc->min_words, tc->min_count, tc->max_vocab,
                                  tc->max_words, ts, tt);
        else {
            tok_free(ts);
            tok_free(tt);
        }
        uint64_t h = 0;
        if (!st) st = get_u64(ck, "data.hash", &h);
        if (!st && h != c.data.hash)
            st = moe_fail(MOE_ERR_CONFIG, "the data differs from the checkpoint's (other files or --min-words/--max-words): resume with the same data");
        int bsz = 0;
        if (!st) st = get_u64(ck, "seed", &tcl.seed);
        if (!st) st = get_int(ck, "batch", &bsz);
        if (!st && bsz != tc->batch)
            st = moe_fail(MOE_ERR_CONFIG, "the checkpoint was trained with --batch %d; resume with the same batch", bsz);
        if (!st) st = get_int(ck, "epoch", &r.epoch);
        if (!st) st = get_int(ck, "batch_in_epoch", &r.batch_in_epoch);
        uint64_t step = 0;
        if (!st) st = get_u64(ck, "step", &step);
        r.step = (int64_t)step;
        float el = 0;
        if (!st) st = get_float(ck, "elapsed_s", &el);
        r.elapsed = el;
    } else {
        st = corpus_load(&c, tc->dict, tc->src_file, tc->tgt_file, tc->min_words, tc->min_count, tc->max_vocab, tc->max_words,
                         NULL, NULL);
        if (!st) {
            moe_s2s_config mc = *mc_in;
            mc.src_vocab = tok_vocab_size(c.ts);
            mc.tgt_vocab = tok_vocab_size(c.tt);
            mc.max_len = tc->max_words + 1;
            mc.eos = TOK_NEWLINE;
            st = moe_s2s_create(&r.m, &mc, tc->seed);
        }
    }
    r.c = &c;
    if (!st) st = make_optim(&r, ck);
    moe_st_free(ck);
    ck = NULL;
    const moe_s2s_config cfg = r.m ? moe_s2s_get_config(r.m) : moe_s2s_config_default();
    const int T = cfg.max_len, E = total_epochs(tc, T);
    if (!st) st = mkdirs(tc->out_dir);
    if (!st) st = step_ws_make(&w, tc->batch, T, cfg.moe ? cfg.n : 0);
    s2s_batches bt;
    memset(&bt, 0, sizeof bt);
    int64_t steps_per_epoch = 0;
    if (!st) {
        st = s2s_make_batches(&c.data, 0, tc->batch, 1, tc->seed, 0, &bt);
        steps_per_epoch = bt.nbatch;
        s2s_batches_free(&bt);
    }
    moe_s2s_progress pg;
    memset(&pg, 0, sizeof pg);
    if (!st && cb) {
        const int64_t total = ptable_numel(r.pt);
        pg = progress_at(MOE_S2S_START, &r, steps_per_epoch * E, E, obj_name(tc->objective), -1);
        pg.params_total = total;
        pg.src_vocab = cfg.src_vocab;
        pg.tgt_vocab = cfg.tgt_vocab;
        pg.train_pairs = c.ntrain;
        pg.valid_pairs = c.nvalid;
        pg.test_pairs = c.ntest;
        pg.dropped = c.data.dropped_long;
        cb(&pg, user);
    }
    const double t0 = now_s() - r.elapsed, trun0 = now_s();
    int stop = 0;
    step_stats acc;
    memset(&acc, 0, sizeof acc);
    double cv_sum = 0, mm_sum = 0, tint = now_s();
    int nint = 0;
    int64_t step0 = r.step;
    while (!st && !stop && r.epoch < E) {
        const int s = epoch_s(tc, T, r.epoch);
        const float lr = s >= 0 && tc->lr_rl > 0.0f ? tc->lr_rl : tc->lr;
        if ((st = s2s_make_batches(&c.data, 0, tc->batch, 1, tc->seed, (uint64_t)r.epoch, &bt))) break;
        const char *phase = s < 0 ? "xent" : obj_name(tc->objective);
        for (; r.batch_in_epoch < bt.nbatch && !st && !stop; r.batch_in_epoch++) {
            if (tc->max_steps > 0 && r.step >= tc->max_steps) {
                stop = 2;
                break;
            }
            batch b;
            memset(&b, 0, sizeof b);
            const int j = r.batch_in_epoch;
            st = batch_make(&b, &c.data, bt.idx + bt.start[j], bt.start[j + 1] - bt.start[j], T);
            moe_s2s_zero_grad(r.m);
            if (!st) st = train_step(&r, &b, s, &w, &acc);
            batch_free(&b);
            if (st) break;
            st = optim_step(&r, lr);
            if (st) break;
            r.step++;
            if (cfg.moe) {
                /* the decoder MoE's last forward is the training pass of this step */
                int *cnts = w.counts;
                if (!moe_layer_counts(moe_s2s_moe(r.m, 1), cnts)) {
                    double mean = 0, var = 0, mx = 0;
                    for (int e = 0; e < cfg.n; e++) mean += cnts[e];
                    mean /= cfg.n;
                    for (int e = 0; e < cfg.n; e++) var += (cnts[e] - mean) * (cnts[e] - mean), mx = fmax(mx, cnts[e]);
                    cv_sum += mean > 0 ? sqrt(var / cfg.n) / mean : 0;
                    mm_sum += mean > 0 ? mx / mean : 0;
                }
            }
            nint++;
            r.elapsed = now_s() - t0;
            const int report = cb && (r.step % (tc->log_every > 0 ? tc->log_every : 50) == 0 || r.batch_in_epoch + 1 == bt.nbatch);
            if (report) {
                const double tn = now_s();
                pg = progress_at(MOE_S2S_TRAIN, &r, steps_per_epoch * E, E, phase, s);
                pg.loss = acc.xent_n ? acc.xent_sum / (double)acc.xent_n : NAN;
                pg.reward = acc.reward_n ? acc.reward_sum / (double)acc.reward_n : NAN;
                pg.baseline_err = acc.berr_n ? acc.berr_sum / (double)acc.berr_n : NAN;
                pg.tokens_per_s = (double)acc.tokens / fmax(tn - tint, 1e-9);
                pg.eta_s = r.step > step0 ? (tn - trun0) / (double)(r.step - step0) * (double)(pg.steps - r.step) : NAN;
                pg.lr = lr;
                pg.cv_load = nint ? cv_sum / nint : 0;
                pg.max_mean_load = nint ? mm_sum / nint : 0;
                if (cb(&pg, user)) stop = 1;
                memset(&acc, 0, sizeof acc);
                cv_sum = mm_sum = 0;
                nint = 0;
                tint = now_s();
            }
            if (!stop && tc->ckpt_every > 0 && r.step % tc->ckpt_every == 0) {
                r.batch_in_epoch++; /* the checkpoint resumes after this batch */
                st = checkpoint(&r, path, cb, user, &stop);
                r.batch_in_epoch--;
            }
        }
        s2s_batches_free(&bt);
        if (st) break;
        if (r.batch_in_epoch >= steps_per_epoch) { /* the epoch is complete */
            r.epoch++;
            r.batch_in_epoch = 0;
            double vb = 0;
            int nv = 0;
            st = split_bleu(r.m, &c.data, 1, 1, 0.0f, tc->valid_sentences, 128, &vb, &nv);
            if (st) break;
            r.elapsed = now_s() - t0;
            tint = now_s(); /* the next speed report counts training only */
            if (cb) {
                pg = progress_at(MOE_S2S_EPOCH, &r, steps_per_epoch * E, E, phase, s);
                pg.valid_bleu = vb;
                if (cb(&pg, user)) stop = 1;
            }
        }
        if (!st) st = checkpoint(&r, path, cb, user, &stop);
    }
    step_ws_free(&w);
    optset_free(&r.opt);
    moe_s2s_free(r.m);
    corpus_free(&c);
    if (!st) moe_clear_error(); /* a step may have tolerated a failure (e.g. no expert counts) */
    return st;
}

/* ---- checkpoints for use ------------------------------------------------------------------------ */
struct moe_s2s_ckpt {
    moe_st *f;
    moe_s2s *m;
    tok *ts, *tt;
    corpus *c; /* the training data, read on first need */
};

moe_status moe_s2s_ckpt_load(moe_s2s_ckpt **out, const char *path) {
    if (!out || !path) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    *out = NULL;
    moe_s2s_ckpt *c = calloc(1, sizeof *c);
    if (!c) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    moe_status st = moe_st_open(&c->f, path);
    if (!st) st = model_from_ckpt(c->f, &c->m, &c->ts, &c->tt);
    if (st) {
        moe_s2s_ckpt_free(c);
        return st;
    }
    *out = c;
    moe_clear_error();
    return MOE_OK;
}

void moe_s2s_ckpt_free(moe_s2s_ckpt *c) {
    if (!c) return;
    moe_s2s_free(c->m);
    tok_free(c->ts);
    tok_free(c->tt);
    if (c->c) {
        corpus_free(c->c);
        free(c->c);
    }
    moe_st_free(c->f);
    free(c);
}

moe_s2s *moe_s2s_ckpt_model(moe_s2s_ckpt *c) { return c ? c->m : NULL; }
const char *moe_s2s_ckpt_meta(const moe_s2s_ckpt *c, const char *key) { return c ? moe_st_meta(c->f, key) : NULL; }

moe_status moe_s2s_ckpt_translate(moe_s2s_ckpt *c, const char *text, int beam, float alpha, char **out, int *unknown) {
    if (!c || !text || !out) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    *out = NULL;
    const size_t n = strlen(text);
    int32_t *ids = malloc(sizeof(int32_t) * TOK_ENCODE_MAX(n));
    if (!ids) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    size_t k = tok_encode(c->ts, NULL, text, n, 1, ids), m = 0;
    int unk = 0;
    for (size_t i = 0; i < k; i++) /* newlines are not words */
        if (ids[i] != TOK_NEWLINE) unk += ids[i] == TOK_UNK, ids[m++] = ids[i];
    if (unknown) *unknown = unk;
    const moe_s2s_config cfg = moe_s2s_get_config(c->m);
    moe_status st = MOE_OK;
    if (m == 0) st = moe_fail(MOE_ERR_INVALID_ARG, "the sentence has no words to translate");
    else if ((int)m > 4096) st = moe_fail(MOE_ERR_SHAPE, "the sentence has %zu words; at most 4096 can be translated", m);
    int32_t *hyp = malloc(sizeof(int32_t) * (size_t)cfg.max_len);
    int len = 0;
    if (!st && !hyp) st = moe_fail(MOE_ERR_NOMEM, "out of memory");
    if (!st) st = beam <= 1 ? moe_s2s_greedy(c->m, ids, 1, (int)m, cfg.max_len, hyp, &len)
                            : moe_s2s_beam(c->m, ids, (int)m, beam, alpha, cfg.max_len, hyp, &len);
    if (!st) st = tok_decode(c->tt, hyp, (size_t)len, out, NULL);
    free(ids);
    free(hyp);
    if (!st) moe_clear_error();
    return st;
}

moe_status moe_s2s_ckpt_bleu(moe_s2s_ckpt *c, int split, int beam, float alpha, double *bleu, int *sentences) {
    if (!c || !bleu || (split != 1 && split != 2)) return moe_fail(MOE_ERR_INVALID_ARG, "split must be 1 (valid) or 2 (test)");
    moe_status st = MOE_OK;
    if (!c->c) {
        const moe_st *f = c->f;
        const char *dict = moe_st_meta(f, "data.dict"), *src = moe_st_meta(f, "data.src"), *tgt = moe_st_meta(f, "data.tgt");
        int minw = 3, maxw = 10, minc = 3, maxv = 8000;
        st = get_int(f, "data.min_words", &minw);
        if (!st) st = get_int(f, "data.max_words", &maxw);
        if (!st) st = get_int(f, "data.min_count", &minc);
        if (!st) st = get_int(f, "data.max_vocab", &maxv);
        tok *ts = NULL, *tt = NULL;
        if (!st) st = tok_parse(&ts, moe_st_meta(f, "tokenizer.src"));
        if (!st && (st = tok_parse(&tt, moe_st_meta(f, "tokenizer.tgt")))) tok_free(ts);
        corpus *cp = calloc(1, sizeof *cp);
        if (!st && !cp) st = moe_fail(MOE_ERR_NOMEM, "out of memory");
        if (!st)
            st = corpus_load(cp, dict && *dict ? dict : NULL, src && *src ? src : NULL, tgt && *tgt ? tgt : NULL, minw, minc,
                             maxv, maxw, ts, tt);
        if (st) {
            free(cp);
            return st;
        }
        c->c = cp;
    }
    st = split_bleu(c->m, &c->c->data, split, beam, alpha, 0, 128, bleu, sentences);
    if (!st) moe_clear_error();
    return st;
}
