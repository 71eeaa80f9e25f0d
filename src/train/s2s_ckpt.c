/* s2s_ckpt.c - the translation model's checkpoints (s2s_ckpt.h) and the public handle on a
 * trained one (moe_s2s_ckpt_*: the model with its vocabularies, translation of a sentence, BLEU of
 * a split of its training data). */
#define _POSIX_C_SOURCE 200809L
#include "train/s2s_ckpt.h"
#include "base/internal.h"
#include "io/ckpt_meta.h"
#include "models/model_table.h"
#include "models/s2s.h"
#include "train/ckpt_table.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* checkpoints of version 1 had this format string and one optimiser state per arena */
#define LEGACY_FORMAT "moe-seq2seq 1"

const char *s2s_objective_name(moe_s2s_objective o) {
    return o == MOE_OBJ_MIXER ? "mixer" : (o == MOE_OBJ_SCST ? "scst" : "xent");
}

/* The model's settings and vocabularies */
static void write_model(meta_w *mw, moe_s2s *model, const s2s_corpus *cp, char **ts, char **tt) {
    meta_w m = *mw;
    const moe_s2s_config c = moe_s2s_get_config(model);
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
    if (m.w && !m.st) m.st = tok_serialize(cp->ts, ts); /* rank 0 alone writes */
    if (m.w && !m.st) m.st = tok_serialize(cp->tt, tt);
    meta_str(&m, "tokenizer.src", *ts ? *ts : "");
    meta_str(&m, "tokenizer.tgt", *tt ? *tt : "");
    *mw = m;
}

moe_status s2s_ckpt_write(const char *path, moe_comm *comm, const moe_s2s_train_config *tc, moe_s2s *model,
                          const s2s_corpus *cp, const optset *opt, const s2s_pos *pos) {
    ckw o;
    moe_status st = ckw_begin(&o, comm, "seq2seq");
    if (st) return st;
    char *ts = NULL, *tt = NULL;
    write_model(&o.m, model, cp, &ts, &tt);
    meta_w m = o.m;
    meta_str(&m, "data.dict", tc->src_file ? "" : (tc->dict ? tc->dict : S2S_DEFAULT_DICT));
    meta_str(&m, "data.src", tc->src_file ? tc->src_file : "");
    meta_str(&m, "data.tgt", tc->tgt_file ? tc->tgt_file : "");
    meta_i64(&m, "data.min_words", tc->min_words);
    meta_i64(&m, "data.max_words", tc->max_words);
    meta_i64(&m, "data.min_count", tc->min_count);
    meta_i64(&m, "data.max_vocab", tc->max_vocab);
    meta_u64(&m, "data.hash", cp->data.hash);
    meta_str(&m, "objective", s2s_objective_name(tc->objective));
    meta_i64(&m, "n_xent", tc->n_xent);
    meta_i64(&m, "n_xer", tc->n_xer);
    meta_i64(&m, "delta", tc->delta);
    meta_str(&m, "mixer_from", tc->mixer_from_end ? "end" : "start");
    meta_f(&m, "rl_xent", tc->rl_xent);
    meta_i64(&m, "batch", tc->batch);
    meta_f(&m, "lr", tc->lr);
    meta_u64(&m, "seed", tc->seed);
    meta_i64(&m, "epoch", pos->epoch);
    meta_i64(&m, "batch_in_epoch", pos->batch_in_epoch);
    meta_i64(&m, "step", pos->step);
    meta_f(&m, "elapsed_s", pos->elapsed);
    meta_u64(&m, "rng.step_counter", s2s_get_step_counter(model));
    meta_u64(&m, "rng.seed", s2s_get_seed(model));
    for (int s = 0; s < 2; s++) {
        moe_layer *ml = moe_s2s_moe(model, s);
        if (!ml) continue;
        uint64_t sd, ct;
        moe_layer_get_rng(ml, &sd, &ct);
        meta_u64(&m, s ? "rng.moe1_seed" : "rng.moe0_seed", sd);
        meta_u64(&m, s ? "rng.moe1_counter" : "rng.moe0_counter", ct);
    }
    o.m = m;
    ckw_table(&o, s2s_table(model), opt);
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
    const int lo[] = {2, 2, 1, 1, 0, 0, 1, 1, 1, 1, 0};
    const int hi[] = {CKPT_MAX_VOCAB, CKPT_MAX_VOCAB, CKPT_MAX_DIM, 2, 1, 1, CKPT_MAX_EXPERTS, CKPT_MAX_EXPERTS,
                      CKPT_MAX_DIM * 16, 4096, CKPT_MAX_VOCAB};
    for (int i = 0; i < 11 && !st; i++) st = get_int_in(f, ik[i], lo[i], hi[i], iv[i]);
    const char *fk[] = {"w_importance", "w_load", "noise_eps", "dropout"};
    float *fv[] = {&c->w_importance, &c->w_load, &c->noise_eps, &c->dropout};
    for (int i = 0; i < 4 && !st; i++) st = get_float(f, fk[i], fv[i]);
    if (st) return st;
    /* embeddings, output layer, the first LSTM layer, the experts: the bulk of the model */
    const double d = c->d;
    char what[160];
    snprintf(what, sizeof what, "vocabularies %d and %d, d=%d n=%d h=%d", c->src_vocab, c->tgt_vocab, c->d, c->n, c->h);
    return ckpt_check_holds(f, (c->src_vocab + 2.0 * c->tgt_vocab) * d + 8.0 * d * d + (c->moe ? 4.0 * c->n * d * c->h : 0.0),
                            what);
}

/* Model (and tokenizers) from an opened checkpoint; the model's parameters and rng. */
moe_status s2s_model_from_ckpt(const moe_st *f, moe_comm *comm, moe_s2s **out, tok **ts, tok **tt) {
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
    if (!st) st = comm ? moe_s2s_create_sharded(&m, &c, 1, comm) : moe_s2s_create(&m, &c, 1);
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

/* Version 1 kept one state per arena: optim0 .. optim3 for the groups s2s, moe0, moe1, baseline. */
moe_status s2s_optim_from_ckpt(const moe_st *ck, const ptable *pt, optset *opt) {
    int version = 0;
    moe_status st = ckpt_check_format(ck, "seq2seq", LEGACY_FORMAT, "translation-model", &version);
    if (st) return st;
    if (version >= 2) return ckpt_get_optim(ck, pt, opt);
    static const char *const legacy[] = {"s2s", "moe0", "moe1", "baseline"};
    for (int i = 0; i < 4 && !st; i++) {
        const int g = ptable_group_index(pt, legacy[i]);
        char key[24];
        snprintf(key, sizeof key, "optim%d", i);
        /* a checkpoint from before any REINFORCE epoch may lack the baseline's optimiser */
        if (g < 0 || (i == 3 && !moe_st_meta(ck, "optim3.step"))) continue;
        st = ckpt_get_optim_arena(ck, opt->a[g], key);
    }
    return st;
}

moe_status s2s_pos_from_ckpt(const moe_st *f, s2s_pos *pos) {
    float el = 0.0f;
    /* (the trainer checks batch_in_epoch against the epoch's batches) */
    moe_status st = get_int_in(f, "epoch", 0, 1 << 30, &pos->epoch);
    if (!st) st = get_int_in(f, "batch_in_epoch", 0, 1 << 30, &pos->batch_in_epoch);
    if (!st) st = get_i64_in(f, "step", 0, CKPT_MAX_STEP, &pos->step);
    if (!st) st = get_float(f, "elapsed_s", &el);
    pos->elapsed = el;
    return st;
}

/* ---- checkpoints for use ---- */
struct moe_s2s_ckpt {
    moe_st *f;
    moe_s2s *m;
    tok *ts, *tt;
    s2s_corpus *c; /* the training data, read on first need */
    moe_bleu_stats *per; /* the last moe_s2s_ckpt_eval's per-sentence statistics */
};

moe_status moe_s2s_ckpt_load(moe_s2s_ckpt **out, const char *path) {
    if (!out || !path) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    *out = NULL;
    moe_s2s_ckpt *c = calloc(1, sizeof *c);
    if (!c) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    moe_status st = moe_st_open(&c->f, path);
    if (!st) st = s2s_model_from_ckpt(c->f, NULL, &c->m, &c->ts, &c->tt);
    if (st) {
        moe_s2s_ckpt_free(c);
        return st;
    }
    *out = c;
    return moe_ok();
}

void moe_s2s_ckpt_free(moe_s2s_ckpt *c) {
    if (!c) return;
    free(c->per);
    moe_s2s_free(c->m);
    tok_free(c->ts);
    tok_free(c->tt);
    if (c->c) {
        s2s_corpus_free(c->c);
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

/* The training data the checkpoint names, read once */
static moe_status ckpt_corpus(moe_s2s_ckpt *c) {
    if (c->c) return MOE_OK;
    const moe_st *f = c->f;
    const char *dict = moe_st_meta(f, "data.dict"), *src = moe_st_meta(f, "data.src"), *tgt = moe_st_meta(f, "data.tgt");
    int minw = 3, maxw = 10, minc = 3, maxv = 8000;
    moe_status st = get_int_in(f, "data.min_words", 1, 1000, &minw);
    if (!st) st = get_int_in(f, "data.max_words", 1, 4000, &maxw);
    if (!st) st = get_int_in(f, "data.min_count", 1, 1 << 30, &minc);
    if (!st) st = get_int_in(f, "data.max_vocab", 3, CKPT_MAX_VOCAB, &maxv);
    tok *ts = NULL, *tt = NULL;
    if (!st) st = tok_parse(&ts, moe_st_meta(f, "tokenizer.src"));
    if (!st && (st = tok_parse(&tt, moe_st_meta(f, "tokenizer.tgt")))) tok_free(ts);
    s2s_corpus *cp = calloc(1, sizeof *cp);
    if (!st && !cp) st = moe_fail(MOE_ERR_NOMEM, "out of memory");
    if (!st)
        st = s2s_corpus_load(cp, dict && *dict ? dict : NULL, src && *src ? src : NULL, tgt && *tgt ? tgt : NULL, minw, minc,
                             maxv, maxw, ts, tt);
    if (st) {
        free(cp);
        return st;
    }
    c->c = cp;
    return MOE_OK;
}

moe_status moe_s2s_ckpt_bleu(moe_s2s_ckpt *c, int split, int beam, float alpha, double *bleu, int *sentences) {
    if (!c || !bleu || (split != 1 && split != 2)) return moe_fail(MOE_ERR_INVALID_ARG, "split must be 1 (valid) or 2 (test)");
    moe_status st = ckpt_corpus(c);
    if (!st) st = s2s_split_bleu(c->m, NULL, &c->c->data, split, beam, alpha, 0, 128, bleu, sentences);
    if (!st) moe_clear_error();
    return st;
}

moe_status moe_s2s_ckpt_eval(moe_s2s_ckpt *c, int split, int beam, float alpha, moe_s2s_eval *out) {
    if (!c || !out || (split != 1 && split != 2)) return moe_fail(MOE_ERR_INVALID_ARG, "split must be 1 (valid) or 2 (test)");
    memset(out, 0, sizeof *out);
    free(c->per);
    c->per = NULL;
    moe_status st = ckpt_corpus(c);
    s2s_eval ev;
    if (!st) st = s2s_split_eval(c->m, NULL, &c->c->data, split, beam, alpha, 0, 128, 1, &ev);
    if (st) return st;
    c->per = ev.per;
    out->bleu = 100.0 * moe_bleu_score(&ev.total, MOE_BLEU_NONE);
    out->bleu_smooth = 100.0 * moe_bleu_score(&ev.total, MOE_BLEU_METHOD3);
    out->exact = ev.count ? (double)ev.exact / ev.count : 0.0;
    out->sentences = ev.count;
    out->total = ev.total;
    out->per_sentence = c->per;
    return moe_ok();
}
