/* s2s_data.h - parallel text for the translation model (internal, not installed): the Ding
 * German-English dictionary (SPEC 4) or two user files of one sentence a line, a deterministic
 * train/valid/test split by a hash of the source side, word vocabularies, and the epoch's
 * batches bucketed by source length.
 *
 *   dict.dz + .index --s2s_read_ding--> pairs (German, English) --s2s_data_encode--> ids
 *   src.txt + tgt.txt --s2s_read_parallel--^
 */
#ifndef MOE_S2S_DATA_H
#define MOE_S2S_DATA_H

#include "moe.h"
#include "data/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

/* Sentence pairs as text: pair i is src + src_off[i] .. src_off[i+1] (NUL-terminated). */
typedef struct {
    int n;
    char *src, *tgt;
    size_t *src_off, *tgt_off; /* [n+1] */
    size_t cap, src_bytes, tgt_bytes, src_cap, tgt_cap;
} s2s_pairs;

void s2s_pairs_free(s2s_pairs *p);
moe_status s2s_pairs_add(s2s_pairs *p, const char *s, size_t ls, const char *t, size_t lt);

/* The dictionary's pairs: for every entry (found through the dictd index next to the data,
 * `index` = NULL: dict path with ".dict.dz" replaced by ".index"), the headword without its IPA
 * /.../ and grammar <...> tags, and the first English translation without [domain], <pos> and
 * {...} annotations; kept when the German side has at least min_words words. */
moe_status s2s_read_ding(const char *dict, const char *index, int min_words, s2s_pairs *out);

/* Two files of one sentence a line (UTF-8; "\r\n" ends a line too). MOE_ERR_FORMAT naming the
 * files and lines for different line counts or an empty line. */
moe_status s2s_read_parallel(const char *src, const char *tgt, s2s_pairs *out);

/* Split of pair i: 0 train (90%), 1 valid (5%), 2 test (5%), by a 64-bit FNV-1a hash of the
 * source text, so a sentence stays in its split whatever else the data holds. */
int s2s_split_of(const char *src_text);

/* Encoded data: pair i's source ids src_ids[src_off[i] .. src_off[i+1]), target ids likewise,
 * the target ending with the end mark (TOK_NEWLINE). */
typedef struct {
    int n;
    int32_t *src_ids, *tgt_ids;
    int64_t *src_off, *tgt_off;
    uint8_t *split;
    int dropped_long; /* pairs left out for having more than max_words words on a side */
    int max_src, max_tgt; /* longest kept source, target (with its end mark) */
    uint64_t hash;    /* of every kept pair's ids and split: resuming checks it */
} s2s_data;

/* Encodes the pairs with the two tokenizers. Pairs with more than max_words tokens on a side:
 * dropped and counted when drop_long, else MOE_ERR_FORMAT naming the pair. Empty after
 * tokenising: dropped too (counted in dropped_long). */
moe_status s2s_data_encode(const s2s_pairs *p, const tok *ts, const tok *tt, int max_words, int drop_long,
                           s2s_data *out);
void s2s_data_free(s2s_data *d);

/* Word tokenizers (lowercase) from the training split of the pairs. */
moe_status s2s_build_vocab(const s2s_pairs *p, int side, int min_count, int max_vocab, tok **out);

/* One epoch's batches of a split: pair indices grouped by source length, shuffled within a
 * length by (seed, epoch), cut into batches of at most B, the batch order shuffled too.
 * Batch j is idx[start[j] .. start[j+1]). seed 0 with epoch 0 and shuffle 0: in order. */
typedef struct {
    int nbatch;
    int *idx, *start;
} s2s_batches;
moe_status s2s_make_batches(const s2s_data *d, int split, int B, int shuffle, uint64_t seed, uint64_t epoch,
                            s2s_batches *out);
void s2s_batches_free(s2s_batches *b);

#endif
