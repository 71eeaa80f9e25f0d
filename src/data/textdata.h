/* textdata.h - a text file as a streaming token source for language-model training (internal,
 * not installed). Nothing here loads the file: memory is O(blocks) for the split table plus
 * O(B * (TD_READ_CHUNK + T)) per iterator, whatever the file's size.
 *
 *   file --td_open--> blocks (~block_size bytes, each ending after a '\n') --hash--> train/valid/test
 *   split --td_build_tokenizer--> tok (vocabulary counted on one split, usually train)
 *   split + tok --td_iter_next--> tokens [B, T+1] per call, B parallel contiguous streams
 *
 * The split rule (identical on every run and machine; depends on the file's size and bytes only):
 *   1. Nominal block size: block_size if given, else 64 KiB halved (down to 64 bytes) while the
 *      file is smaller than 40 nominal blocks.
 *   2. Blocks, from offset 0: a block ends just after the first '\n' at or after its nominal
 *      end (start + size - 1); with no '\n' within another `size` bytes it ends at the nominal end
 *      moved forward off UTF-8 continuation bytes; the last block ends at the end of the file.
 *   3. Blocks go in groups of 20 consecutive ones (group g = i / 20). In each group one position
 *      v = moe_rng_u64(TD_SPLIT_SEED, 2g) % 20 is valid and one other position t (from
 *      moe_rng_u64(TD_SPLIT_SEED, 2g+1) % 19, skipping v) is test; the other 18 are train. So the
 *      ratio is 90/5/5 by blocks, held and test data are spread over the whole file, and any file
 *      of 20 blocks or more has all three splits non-empty. A smaller file may not: the calls that
 *      need a split say so (MOE_ERR_MISSING).
 *
 * A split's token sequence is the concatenation, in file order, of its blocks' tokens, each block
 * tokenised on its own (its last word ends at the block's end).
 *
 * Batching (the classic LM scheme, truncated BPTT): with N tokens in the split and L = N / B,
 * stream b starts at token b*L. Each td_iter_next gives every stream the next T+1 tokens:
 * call j of stream b holds tokens (b*L + j*T + i) mod N for i = 0..T, so inputs = [:, 0:T] and
 * targets = [:, 1:T+1], and the last token of one call is the first of the next: the LSTM state
 * carries over. A stream runs on past its slice and wraps from the end of the split to its start.
 * The position is one counter (calls made), saved and restored exactly by td_pos.
 */
#ifndef MOE_TEXTDATA_H
#define MOE_TEXTDATA_H

#include "moe.h"
#include "data/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { TD_TRAIN = 0, TD_VALID = 1, TD_TEST = 2 } td_split;
#define TD_NSPLITS 3
#define TD_SPLIT_SEED 0x7e7d5b1175ULL
#define TD_READ_CHUNK 8192 /* bytes an iterator stream reads at a time */
#define TD_FORTUNES_DIR "/usr/share/games/fortunes"

/* "train", "valid", "test" ("?" otherwise). */
const char *td_split_name(td_split s);

typedef struct td_file td_file; /* an open text file (one descriptor) and its block table */

/* Opens `path` and computes its blocks (reads only the first 64 KiB and a little around each
 * block boundary). block_size 0 = automatic (rule 1 above). Fails with:
 *   MOE_ERR_IO      the file is missing, unreadable or not a regular file;
 *   MOE_ERR_FORMAT  it is empty, or its first 64 KiB hold a NUL byte or more than 2 + 1% (of
 *                   the bytes checked) invalid UTF-8 sequences ("does not look like UTF-8 text").
 * *out is untouched on failure. */
moe_status td_open(td_file **out, const char *path, size_t block_size);
void td_free(td_file *f);

typedef struct {
    uint64_t size;                /* bytes in the file */
    size_t block_size;            /* the nominal block size used */
    int64_t nblocks;
    int64_t blocks[TD_NSPLITS];   /* blocks per split */
    uint64_t bytes[TD_NSPLITS];   /* bytes per split (they add up to size) */
} td_info;
td_info td_get_info(const td_file *f);
/* Block i in [0, nblocks): its byte range [*offset, *offset + *length) and split. */
moe_status td_block(const td_file *f, int64_t i, uint64_t *offset, uint64_t *length, td_split *split);

/* Counts a vocabulary over the blocks of split `s` (usually TD_TRAIN), streaming, into *out
 * (caller frees with tok_free). TOK_BYTES needs no pass. MOE_ERR_MISSING for an empty split. */
moe_status td_build_tokenizer(const td_file *f, td_split s, const tok_config *cfg, tok **out);
/* Tokens in split s under tokenizer t (one streaming pass for words; the byte count for bytes).
 * 0 for an empty split. */
moe_status td_count_tokens(const td_file *f, td_split s, const tok *t, uint64_t *n);

/* ---- the batch iterator ---------------------------------------------------------------------- */
typedef struct td_iter td_iter;

/* An iterator over split s with B streams of T+1 tokens per call, at step 0. f and t must outlive
 * it. For words it makes one counting pass over the split. MOE_ERR_CONFIG for B < 1 or T < 1 (or
 * T > 2^24), MOE_ERR_MISSING if the split is empty or has fewer than B tokens (the message says
 * which). */
moe_status td_iter_create(td_iter **out, const td_file *f, const tok *t, td_split s, int B, int T);
void td_iter_free(td_iter *it);
/* tokens [B, T+1], row b = stream b (row-major; transpose for time-major [T,B] buffers).
 * On failure (MOE_ERR_IO, MOE_ERR_TRUNCATED if the file shrank) the iterator refuses further
 * calls (MOE_ERR_STATE) until td_iter_set_pos repositions it. */
moe_status td_iter_next(td_iter *it, int32_t *tokens);

/* The position, for checkpoints: `step` decides everything; the rest identifies the data so that
 * a resume on different data or batch shape is refused. */
typedef struct {
    uint64_t step;    /* td_iter_next calls made */
    uint64_t ntokens; /* tokens in the split */
    int32_t split, B, T;
} td_pos;
td_pos td_iter_get_pos(const td_iter *it);
/* Moves to pos (re-reads up to one block per stream). MOE_ERR_CONFIG if split, B, T or ntokens
 * differ from this iterator's: the position is then unchanged. A read failure (MOE_ERR_IO,
 * MOE_ERR_TRUNCATED) leaves the iterator refusing td_iter_next until a later set_pos succeeds. */
moe_status td_iter_set_pos(td_iter *it, const td_pos *pos);

uint64_t td_iter_ntokens(const td_iter *it); /* N: tokens in the split */
/* Passes over the data so far: step * T / L (each stream has then read that many slices). */
double td_iter_epoch(const td_iter *it);
/* floor(L / T): this many calls from step 0 predict every target at most once (stream b's targets
 * stay inside (b*L, (b+1)*L]); they miss at most B*T + N%B of the N tokens. For
 * evaluation; may be 0 when L < T. */
uint64_t td_iter_steps_per_epoch(const td_iter *it);

/* ---- the default corpus ---------------------------------------------------------------------- */
/* Writes the fortune files of `dir` (NULL: TD_FORTUNES_DIR) into one file at out_path: the regular
 * files whose names do not start with '.' nor end in ".dat" or ".u8" (symlinks and directories are
 * skipped), in strcmp order of their names, each copied as is and completed, if needed, with a
 * final '\n' and a closing "%" line, so the output keeps the fortune format (entries separated by
 * lines holding only "%"). Written atomically (out_path.tmp.<pid>, fsync, rename).
 * *nfiles and *nbytes (each may be NULL) get the count of files and the bytes written.
 * MOE_ERR_IO if `dir` is missing (the message names the Debian package `fortunes`), unreadable,
 * or the output cannot be written; MOE_ERR_MISSING if it holds no fortune file. */
moe_status td_build_fortunes(const char *dir, const char *out_path, int *nfiles, uint64_t *nbytes);

#endif
