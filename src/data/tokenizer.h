/* tokenizer.h - text <-> int32 token ids for the language model (internal, not installed).
 *
 * Two kinds:
 *   TOK_BYTES  character level: id = byte value, vocabulary 256, decoding is exact.
 *   TOK_WORDS  a vocabulary counted from training text (tok_builder), then frozen. The text is
 *              cut into tokens by this rule, the same when counting and when encoding:
 *                - a word is a run of "word bytes": ASCII letters and digits, the apostrophe,
 *                  and every byte >= 0x80 (so UTF-8 letters stay inside words); apostrophes at
 *                  the start or end of a run are split off as "'" tokens ("'tis" -> "'" "tis",
 *                  "don't" stays one word); a run longer than TOK_MAX_WORD bytes is one TOK_UNK;
 *                - '\n' is the token TOK_NEWLINE, so the layout of the text survives;
 *                - space, \t, \r, \v and \f separate tokens and are dropped;
 *                - every other byte (punctuation, control bytes) is a token of its own.
 *              With `lowercase`, ASCII A-Z fold to a-z (other bytes are left alone).
 *              Ids: 0 = TOK_UNK ("<unk>"), 1 = TOK_NEWLINE, then the kept words by falling count
 *              (ties by their bytes, memcmp order), so id order is deterministic.
 *              Decoding joins tokens with spaces except around newlines, before . , ; : ! ? ) ] }
 *              and after ( [ {; it is lossy (spacing, case, <unk>).
 *
 *   text --tok_builder_add (chunks, any split)--> counts --tok_builder_finish--> tok
 *   text --tok_encode (chunks, tok_carry)--> ids [n] --tok_decode--> text
 *   tok --tok_serialize--> one ASCII string --tok_parse--> the same tok
 *
 * Streaming: words may cross chunk boundaries. The partial word at the end of a chunk waits in a
 * tok_carry (at most TOK_MAX_WORD bytes) until a later call, or a call with final = 1 that ends
 * the text, completes it. Feeding a text in any split into chunks gives the same tokens.
 */
#ifndef MOE_TOKENIZER_H
#define MOE_TOKENIZER_H

#include "moe.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { TOK_BYTES = 0, TOK_WORDS = 1 } tok_kind;

#define TOK_UNK 0      /* words: rare, unseen or over-long word */
#define TOK_NEWLINE 1  /* words: "\n" */
#define TOK_MAX_WORD 64 /* words: longest word in bytes; a longer run encodes as TOK_UNK */

typedef struct {
    tok_kind kind;
    int lowercase; /* words: fold ASCII A-Z to a-z, when counting and when encoding (0 or 1) */
    int min_count; /* words: a word seen fewer times is <unk> (>= 1) */
    int max_vocab; /* words: most ids in all, the 2 reserved ones included (0 = no limit, else >= 2);
                    * the least frequent words beyond it are <unk> */
} tok_config;

/* kind, lowercase 0, min_count 2, max_vocab 10000 (the Penn Treebank's size). */
tok_config tok_config_default(tok_kind kind);

typedef struct tok tok; /* a frozen tokenizer; read-only after creation, so shareable */

/* A word cut by a chunk boundary. Zero-initialise ({0}) before the first chunk of a text;
 * after a call with final = 1 it is empty again and can start the next text. */
typedef struct {
    int len;      /* bytes in buf */
    int overlong; /* the run passed TOK_MAX_WORD bytes: it will be one TOK_UNK */
    unsigned char buf[TOK_MAX_WORD];
} tok_carry;

/* ---- building a vocabulary ----------------------------------------------------------------- */
typedef struct tok_builder tok_builder; /* word counts (a hash table) plus a tok_carry */

/* MOE_ERR_CONFIG for a bad config (reason in moe_last_error()). For TOK_BYTES the builder
 * ignores its text and finish gives the byte tokenizer. */
moe_status tok_builder_create(tok_builder **out, const tok_config *cfg);
void tok_builder_free(tok_builder *b);
/* Counts the tokens of text[0, len) (any bytes; len 0 is fine). final = 1 ends the text: the
 * word in the carry is counted, and the next call starts a new text. MOE_ERR_NOMEM leaves the
 * counts incomplete: free the builder. */
moe_status tok_builder_add(tok_builder *b, const char *text, size_t len, int final);
/* Ends the current text (as final = 1) and freezes the vocabulary into *out (caller frees with
 * tok_free). The builder stays valid and may go on counting. */
moe_status tok_builder_finish(tok_builder *b, tok **out);

/* One-call builders. From a file: bytes [offset, offset + length) of `path` (length UINT64_MAX:
 * to the end), read `chunk` bytes at a time (0: 1 MiB), never the whole file at once.
 * MOE_ERR_IO if the file cannot be opened or read or the range lies beyond its end. */
moe_status tok_build_from_file(tok **out, const tok_config *cfg, const char *path, uint64_t offset,
                               uint64_t length, size_t chunk);
moe_status tok_build_from_buffer(tok **out, const tok_config *cfg, const char *text, size_t len);

/* The byte tokenizer (cannot fail except MOE_ERR_NOMEM). */
moe_status tok_create_bytes(tok **out);
void tok_free(tok *t);

/* ---- using a tokenizer ---------------------------------------------------------------------- */
tok_kind tok_get_kind(const tok *t);
int tok_lowercase(const tok *t);
int32_t tok_vocab_size(const tok *t);
/* The bytes of token `id` (not NUL-terminated; *len set; "<unk>" for TOK_UNK of a word
 * tokenizer), owned by t. NULL (and *len = 0) for an id outside [0, vocab). */
const char *tok_piece(const tok *t, int32_t id, size_t *len);
/* The id of one token's bytes (as they appear after lowercasing), or -1 if not in the vocabulary. */
int32_t tok_lookup(const tok *t, const char *bytes, size_t len);

/* Room that `out` of tok_encode needs for `len` input bytes: every byte gives at most one id, and
 * the carry's bytes at most one each. */
#define TOK_ENCODE_MAX(len) ((size_t)(len) + TOK_MAX_WORD + 1)

/* Encodes text[0, len) into out [TOK_ENCODE_MAX(len)]; returns the number of ids written.
 * `carry` continues a word from the previous call (words only); with final = 1 the text ends here
 * and the carried word is emitted. carry NULL: text[0, len) is a whole text (final implied).
 * Unknown words give TOK_UNK. Cannot fail. */
size_t tok_encode(const tok *t, tok_carry *carry, const char *text, size_t len, int final,
                  int32_t *out);

/* 1 if decoding puts a space between token `prev` and token `id` (prev < 0: id is the first).
 * Always 0 for TOK_BYTES. For printing tokens one at a time as they are sampled. */
int tok_space_before(const tok *t, int32_t prev, int32_t id);
/* Decodes ids [n] into a NUL-terminated string *out (caller frees with free()); *out_len (may be
 * NULL) gets its length, which for TOK_BYTES may include NUL bytes. MOE_ERR_INVALID_ARG for an id
 * outside [0, vocab) (nothing allocated), MOE_ERR_NOMEM. */
moe_status tok_decode(const tok *t, const int32_t *ids, size_t n, char **out, size_t *out_len);

/* ---- storing a tokenizer -------------------------------------------------------------------- *
 * One line of printable ASCII, e.g. for a safetensors __metadata__ value:
 *   "moe-tokenizer 1 bytes"
 *   "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10000 size=N" + " piece" per id 2..N-1
 * where a piece's bytes outside 0x21..0x7e, and '%', are written %XX (uppercase hex). The form is
 * canonical: tok_serialize(tok_parse(s)) == s for every accepted s. */

/* *out is malloc'd (caller frees with free()). MOE_ERR_NOMEM. */
moe_status tok_serialize(const tok *t, char **out);
/* Full validation: exact header, settings in range, exactly size-2 pieces, each a token the rule
 * above can produce (lowercase when lowercase=1), canonical escapes, no duplicates, nothing after
 * the last piece. MOE_ERR_FORMAT with the reason and the offset on any of these; *out untouched
 * on failure. */
moe_status tok_parse(tok **out, const char *s);

#endif
