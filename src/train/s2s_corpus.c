/* s2s_corpus.c - the translation trainer's data and corpus BLEU (s2s_corpus.h). */
#include "train/s2s_corpus.h"
#include "base/internal.h"
#include "parallel/comm.h"

#include <stdlib.h>
#include <string.h>

void s2s_corpus_free(s2s_corpus *c) {
    tok_free(c->ts);
    tok_free(c->tt);
    s2s_data_free(&c->data);
    memset(c, 0, sizeof *c);
}

moe_status s2s_corpus_load(s2s_corpus *c, const char *dict, const char *src, const char *tgt, int min_words,
                           int min_count, int max_vocab, int max_words, tok *ts, tok *tt) {
    memset(c, 0, sizeof *c);
    s2s_pairs p;
    moe_status st = src || tgt ? (src && tgt ? s2s_read_parallel(src, tgt, &p)
                                             : moe_fail(MOE_ERR_CONFIG, "parallel text needs both a source and a target file"))
                               : s2s_read_ding(dict ? dict : S2S_DEFAULT_DICT, NULL, min_words, &p);
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
        s2s_corpus_free(c);
        return st;
    }
    for (int i = 0; i < c->data.n; i++) {
        const int s = c->data.split[i];
        c->ntrain += s == 0;
        c->nvalid += s == 1;
        c->ntest += s == 2;
    }
    if (c->ntrain == 0 || c->nvalid == 0) {
        const int a = c->ntrain, b = c->nvalid;
        s2s_corpus_free(c);
        return moe_fail(MOE_ERR_FORMAT, "the data has %d training and %d validation pairs: too few to train on", a, b);
    }
    return MOE_OK;
}

moe_status s2s_batch_make(s2s_batch *b, const s2s_data *d, const int *idx, int nb, int R, moe_comm *comm) {
    const int P = comm ? moe_comm_size(comm) : 1, me = comm ? moe_comm_rank(comm) : 0;
    b->nb = nb;
    b->Ts = (int)(d->src_off[idx[0] + 1] - d->src_off[idx[0]]);
    b->R = R;
    b->lo = comm_first(nb, P, me);
    b->n = comm_first(nb, P, me + 1) - b->lo;
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

void s2s_batch_free(s2s_batch *b) {
    free(b->src);
    free(b->ref);
    free(b->ref_len);
    memset(b, 0, sizeof *b);
}

void s2s_bleu_stats(moe_bleu_stats *s, const int32_t *hyp, int nh, const int32_t *ref, int nr, int V, int32_t *tmp) {
    if (nh > 0 && hyp[nh - 1] == TOK_NEWLINE) nh--;
    if (nr > 0 && ref[nr - 1] == TOK_NEWLINE) nr--;
    for (int i = 0; i < nr; i++) tmp[i] = ref[i] == TOK_UNK ? V : ref[i];
    moe_bleu_stats_sentence(s, hyp, (size_t)nh, tmp, (size_t)nr);
}

/* The statistics and exact matches summed over the ranks (exact: counts far below 2^53). */
static moe_status eval_sum_ranks(moe_comm *comm, s2s_eval *ev) {
    if (!comm) return MOE_OK;
    moe_bleu_stats *acc = &ev->total;
    double v[11];
    for (int i = 0; i < 4; i++) v[i] = (double)acc->match[i], v[4 + i] = (double)acc->total[i];
    v[8] = (double)acc->hyp_len;
    v[9] = (double)acc->ref_len;
    v[10] = (double)ev->exact;
    moe_status st = comm_allreduce_sum_f64(comm, v, 11);
    for (int i = 0; i < 4 && !st; i++) acc->match[i] = (int64_t)v[i], acc->total[i] = (int64_t)v[4 + i];
    acc->hyp_len = (int64_t)v[8];
    acc->ref_len = (int64_t)v[9];
    ev->exact = (int)v[10];
    return st;
}

/* 1 when hyp [nh] is its reference [nr] (end marks as s2s_bleu_stats drops them; a reference
 * <unk> matches nothing) */
static int exact_match(const int32_t *hyp, int nh, const int32_t *ref, int nr) {
    if (nh > 0 && hyp[nh - 1] == TOK_NEWLINE) nh--;
    if (nr > 0 && ref[nr - 1] == TOK_NEWLINE) nr--;
    if (nh != nr) return 0;
    for (int i = 0; i < nr; i++)
        if (ref[i] == TOK_UNK || hyp[i] != ref[i]) return 0;
    return 1;
}

/* This rank's rows of one batch decoded and scored into ev (and each sentence's statistics into
 * ev->per + ev->count, when kept); out [B*T], len [B], tmp [T+1]. */
static moe_status batch_bleu(moe_s2s *m, moe_comm *comm, const s2s_batch *b, int beam, float alpha, int T, int V,
                             int32_t *out, int *len, int32_t *tmp, s2s_eval *ev) {
    const int32_t *src = b->src + (size_t)b->lo * b->Ts;
    moe_status st = comm ? moe_s2s_set_slice(m, b->lo, b->nb) : MOE_OK;
    if (!st && beam <= 1) st = moe_s2s_greedy(m, src, b->n, b->Ts, T, out, len);
    for (int i = 0; i < b->n && !st && beam > 1; i++)
        st = moe_s2s_beam(m, src + (size_t)i * b->Ts, b->Ts, beam, alpha, T, out + (size_t)i * T, &len[i]);
    for (int i = 0; i < b->n && !st; i++) {
        moe_bleu_stats s;
        const size_t r = (size_t)(b->lo + i) * b->R;
        s2s_bleu_stats(&s, out + (size_t)i * T, len[i], b->ref + r, b->ref_len[b->lo + i], V, tmp);
        moe_bleu_stats_add(&ev->total, &s);
        ev->exact += exact_match(out + (size_t)i * T, len[i], b->ref + r, b->ref_len[b->lo + i]);
        if (ev->per) ev->per[ev->count + i] = s;
    }
    return st;
}

moe_status s2s_split_eval(moe_s2s *m, moe_comm *comm, const s2s_data *d, int split, int beam, float alpha, int limit,
                          int B, int keep_per, s2s_eval *ev) {
    memset(ev, 0, sizeof *ev);
    if (comm && beam > 1)
        return moe_fail(MOE_ERR_CONFIG, "beam search of a model split over ranks is not supported: use beam 1");
    if (comm && keep_per) return moe_fail(MOE_ERR_CONFIG, "per-sentence statistics of a model split over ranks");
    s2s_batches bt;
    moe_status st = s2s_make_batches(d, split, B, 0, 0, 0, &bt);
    if (comm) st = comm_ready(comm, st);
    if (st) {
        s2s_batches_free(&bt); /* (emptied already where it failed) */
        return st;
    }
    const moe_s2s_config cfg = moe_s2s_get_config(m);
    const int T = cfg.max_len;
    const int all = bt.start[bt.nbatch], want = limit > 0 && limit < all ? limit : all;
    int32_t *out = malloc(sizeof(int32_t) * (size_t)B * T), *tmp = malloc(sizeof(int32_t) * (size_t)(T + 1));
    int *len = malloc(sizeof(int) * (size_t)B);
    if (keep_per && want > 0) ev->per = malloc(sizeof(moe_bleu_stats) * (size_t)want);
    if (!out || !tmp || !len || (keep_per && want > 0 && !ev->per)) st = moe_fail(MOE_ERR_NOMEM, "out of memory");
    if (comm) st = comm_ready(comm, st);
    for (int j = 0; j < bt.nbatch && !st && ev->count < want; j++) {
        int nb = bt.start[j + 1] - bt.start[j];
        if (ev->count + nb > want) nb = want - ev->count;
        s2s_batch b;
        memset(&b, 0, sizeof b);
        st = s2s_batch_make(&b, d, bt.idx + bt.start[j], nb, T, comm);
        if (comm) st = comm_ready(comm, st); /* a rank that cannot decode stops them all here */
        if (!st) st = batch_bleu(m, comm, &b, beam, alpha, T, cfg.tgt_vocab, out, len, tmp, ev);
        ev->count += nb;
        s2s_batch_free(&b);
    }
    free(out);
    free(tmp);
    free(len);
    s2s_batches_free(&bt);
    if (!st) st = eval_sum_ranks(comm, ev);
    if (!st && comm) st = moe_s2s_set_slice(m, 0, 0);
    if (st) {
        free(ev->per);
        ev->per = NULL;
    }
    return st;
}

moe_status s2s_split_bleu(moe_s2s *m, moe_comm *comm, const s2s_data *d, int split, int beam, float alpha, int limit,
                          int B, double *bleu, int *count) {
    s2s_eval ev;
    moe_status st = s2s_split_eval(m, comm, d, split, beam, alpha, limit, B, 0, &ev);
    if (!st) {
        *bleu = 100.0 * moe_bleu_score(&ev.total, MOE_BLEU_NONE);
        if (count) *count = ev.count;
    }
    return st;
}
