/* s2s_corpus.h - the translation trainer's data: the corpus (the pairs encoded with their
 * vocabularies and split into train/valid/test), batches of pairs with the rows of each that one
 * rank runs, and corpus BLEU of greedy or beam decoding on a split (summed over the ranks).
 * Internal. */
#ifndef MOE_S2S_CORPUS_H
#define MOE_S2S_CORPUS_H

#include "data/s2s_data.h"
#include "data/tokenizer.h"
#include "moe.h"

#include <stdint.h>

#define S2S_DEFAULT_DICT "/usr/share/dictd/freedict-deu-eng.dict.dz"

typedef struct {
    tok *ts, *tt; /* source and target vocabularies (owned) */
    s2s_data data;
    int ntrain, nvalid, ntest;
} s2s_corpus;

/* Reads the data: the Ding dictionary `dict` (NULL: the default), or the parallel files src and
 * tgt; builds the vocabularies from the training split unless ts and tt are given (then owned by
 * the corpus, freed on failure too). */
moe_status s2s_corpus_load(s2s_corpus *c, const char *dict, const char *src, const char *tgt, int min_words,
                           int min_count, int max_vocab, int max_words, tok *ts, tok *tt);
void s2s_corpus_free(s2s_corpus *c);

/* A batch of pairs idx[0..nb): sources [nb,Ts] (one length), references [nb,R] padded with the
 * end mark, their lengths [nb]; this rank runs rows [lo, lo + n) (comm NULL: all). */
typedef struct {
    int nb, Ts, R;
    int32_t *src, *ref;
    int *ref_len;
    int lo, n;
} s2s_batch;

moe_status s2s_batch_make(s2s_batch *b, const s2s_data *d, const int *idx, int nb, int R, moe_comm *comm);
void s2s_batch_free(s2s_batch *b);

/* BLEU statistics of hyp [nh] against ref [nr], both without their end mark; a reference <unk>
 * matches nothing. tmp [nr] is scratch. */
void s2s_bleu_stats(moe_bleu_stats *s, const int32_t *hyp, int nh, const int32_t *ref, int nr, int V, int32_t *tmp);

/* A split decoded and scored: the summed BLEU statistics, the pairs decoded, how many of their
 * hypotheses are exactly the reference, and (when asked) each pair's statistics in the split's
 * fixed order (owned: free(per)). */
typedef struct {
    moe_bleu_stats total;
    int count, exact;
    moe_bleu_stats *per;
} s2s_eval;
/* s2s_split_bleu's decoding into *ev; keep_per: also ev->per (not with comm) */
moe_status s2s_split_eval(moe_s2s *m, moe_comm *comm, const s2s_data *d, int split, int beam, float alpha, int limit,
                          int B, int keep_per, s2s_eval *ev);
/* Corpus BLEU x 100 of greedy (beam 1) or beam decoding of a split, at most `limit` pairs (0:
 * all), in batches of B; *count (may be NULL) the pairs decoded. With comm (a model made by
 * moe_s2s_create_sharded on it): each rank decodes its rows of each batch; collective; greedy
 * only. */
moe_status s2s_split_bleu(moe_s2s *m, moe_comm *comm, const s2s_data *d, int split, int beam, float alpha, int limit,
                          int B, double *bleu, int *count);

#endif
