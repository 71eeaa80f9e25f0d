/* tokenizer.c - byte and word tokenizers: counting a vocabulary in a stream of chunks, encoding
 * with a carry across chunks, decoding, and a canonical one-line text form (see tokenizer.h).
 *
 * One scanner (scan) cuts text into tokens for both counting and encoding, so the two can never
 * disagree. Words live in a small open-addressing hash table (wmap) whose keys are slices of one
 * growing byte arena; the builder keeps counts in it, a frozen tokenizer keeps ids.
 */
#define _POSIX_C_SOURCE 200809L
#define _FILE_OFFSET_BITS 64

#include "data/tokenizer.h"

#include "base/internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_DEFAULT_CHUNK ((size_t)1 << 20)
#define TOK_MAGIC "moe-tokenizer 1 "
/* a vocabulary larger than this is refused (parse) or cut (build): ids are int32 and the pieces'
 * offsets uint32 */
#define TOK_MAX_SIZE 50000000

/* ---- the cutting rule ------------------------------------------------------------------------ */

static int is_word_byte(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '\'' ||
           c >= 0x80;
}

static int is_space_byte(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* What the scanner hands out: a word or single-byte token (bytes, len), a newline or an over-long
 * run (TOK_UNK). The callback returns 0, or -1 to stop the scan (out of memory). */
typedef enum { EMIT_PIECE, EMIT_NEWLINE, EMIT_UNK } emit_kind;
typedef int (*emit_fn)(void *ctx, emit_kind kind, const unsigned char *bytes, size_t len);

static int flush_run(tok_carry *c, emit_fn emit, void *ctx) {
    int r = 0;
    if (c->overlong) {
        r = emit(ctx, EMIT_UNK, NULL, 0);
    } else if (c->len > 0) {
        int a = 0, z = c->len; /* the core run [a, z) without leading/trailing apostrophes */
        while (a < z && c->buf[a] == '\'') a++;
        while (z > a && c->buf[z - 1] == '\'') z--;
        for (int i = 0; i < a && r == 0; i++) r = emit(ctx, EMIT_PIECE, c->buf + i, 1);
        if (z > a && r == 0) r = emit(ctx, EMIT_PIECE, c->buf + a, (size_t)(z - a));
        for (int i = z; i < c->len && r == 0; i++) r = emit(ctx, EMIT_PIECE, c->buf + i, 1);
    }
    c->len = 0;
    c->overlong = 0;
    return r;
}

static int scan(tok_carry *c, int lowercase, const unsigned char *s, size_t len, int final,
                emit_fn emit, void *ctx) {
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = s[i];
        if (is_word_byte(ch)) {
            if (lowercase && ch >= 'A' && ch <= 'Z') ch = (unsigned char)(ch - 'A' + 'a');
            if (c->overlong) continue;
            if (c->len == TOK_MAX_WORD) {
                c->overlong = 1;
                continue;
            }
            c->buf[c->len++] = ch;
            continue;
        }
        if ((c->len > 0 || c->overlong) && flush_run(c, emit, ctx)) return -1;
        if (ch == '\n') {
            if (emit(ctx, EMIT_NEWLINE, NULL, 0)) return -1;
        } else if (!is_space_byte(ch)) {
            if (emit(ctx, EMIT_PIECE, &ch, 1)) return -1;
        }
    }
    if (final && flush_run(c, emit, ctx)) return -1;
    return 0;
}

/* 1 if `p` [len] is a token the rule can produce (and lowercase if required): one byte that is
 * not a space or newline, or a run of word bytes without leading/trailing apostrophes. */
static int valid_piece(const unsigned char *p, size_t len, int lowercase) {
    if (len == 0) return 0;
    if (len == 1) return p[0] != '\n' && !is_space_byte(p[0]) && !(lowercase && p[0] >= 'A' && p[0] <= 'Z');
    if (len > TOK_MAX_WORD || p[0] == '\'' || p[len - 1] == '\'') return 0;
    for (size_t i = 0; i < len; i++)
        if (!is_word_byte(p[i]) || (lowercase && p[i] >= 'A' && p[i] <= 'Z')) return 0;
    return 1;
}

/* ---- wmap: byte string -> uint64, open addressing, linear probing -------------------------- */

typedef struct {
    uint64_t hash;
    uint64_t val;
    uint32_t off; /* key bytes at arena + off */
    uint32_t len; /* 0 marks an empty slot (keys are never empty) */
} wslot;

typedef struct {
    wslot *slots;
    size_t cap; /* a power of two */
    size_t n;
    unsigned char *arena;
    size_t arena_len, arena_cap;
} wmap;

static uint64_t hash_bytes(const unsigned char *p, size_t len) {
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, then a final mix for the low bits */
    for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    return h ^ (h >> 33);
}

static void wmap_free(wmap *m) {
    free(m->slots);
    free(m->arena);
    memset(m, 0, sizeof *m);
}

static int wmap_init(wmap *m, size_t cap) {
    memset(m, 0, sizeof *m);
    m->slots = calloc(cap, sizeof *m->slots);
    m->cap = cap;
    return m->slots ? 0 : -1;
}

static wslot *wmap_find(const wmap *m, const unsigned char *p, size_t len, uint64_t h) {
    size_t i = (size_t)h & (m->cap - 1);
    for (;;) {
        wslot *s = &m->slots[i];
        if (s->len == 0) return s;
        if (s->hash == h && s->len == len && memcmp(m->arena + s->off, p, len) == 0) return s;
        i = (i + 1) & (m->cap - 1);
    }
}

static int wmap_grow(wmap *m) {
    size_t ncap = m->cap * 2;
    wslot *ns = calloc(ncap, sizeof *ns);
    if (!ns) return -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].len == 0) continue;
        size_t j = (size_t)m->slots[i].hash & (ncap - 1);
        while (ns[j].len != 0) j = (j + 1) & (ncap - 1);
        ns[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return 0;
}

/* The slot of key p [len], inserted with val 0 if new (*added = 1). NULL when out of memory. */
static wslot *wmap_upsert(wmap *m, const unsigned char *p, size_t len, int *added) {
    uint64_t h = hash_bytes(p, len);
    wslot *s = wmap_find(m, p, len, h);
    *added = 0;
    if (s->len != 0) return s;
    if ((m->n + 1) * 2 > m->cap) {
        if (wmap_grow(m)) return NULL;
        s = wmap_find(m, p, len, h);
    }
    if (m->arena_len + len > m->arena_cap) {
        size_t ncap = m->arena_cap ? m->arena_cap * 2 : 4096;
        while (ncap < m->arena_len + len) ncap *= 2;
        if (ncap > UINT32_MAX) return NULL;
        unsigned char *na = realloc(m->arena, ncap);
        if (!na) return NULL;
        m->arena = na;
        m->arena_cap = ncap;
    }
    memcpy(m->arena + m->arena_len, p, len);
    s->hash = h;
    s->val = 0;
    s->off = (uint32_t)m->arena_len;
    s->len = (uint32_t)len;
    m->arena_len += len;
    m->n++;
    *added = 1;
    return s;
}

/* ---- the frozen tokenizer -------------------------------------------------------------------- */

struct tok {
    tok_kind kind;
    int lowercase, min_count, max_vocab;
    int32_t size;   /* vocabulary size */
    char *pieces;   /* every id's bytes, back to back */
    uint32_t *off;  /* [size + 1]: id i is pieces[off[i], off[i+1]) */
    wmap map;       /* words: piece -> id, for ids >= 2 */
};

tok_config tok_config_default(tok_kind kind) {
    tok_config c = {kind, 0, 2, 10000};
    return c;
}

static moe_status check_config(const tok_config *cfg) {
    if (!cfg) return moe_fail(MOE_ERR_INVALID_ARG, "tokenizer config is NULL");
    if (cfg->kind != TOK_BYTES && cfg->kind != TOK_WORDS)
        return moe_fail(MOE_ERR_CONFIG, "unknown tokenizer kind %d", (int)cfg->kind);
    if (cfg->kind == TOK_BYTES) return MOE_OK;
    if (cfg->lowercase != 0 && cfg->lowercase != 1)
        return moe_fail(MOE_ERR_CONFIG, "lowercase must be 0 or 1, not %d", cfg->lowercase);
    if (cfg->min_count < 1) return moe_fail(MOE_ERR_CONFIG, "min_count must be >= 1, not %d", cfg->min_count);
    if (cfg->max_vocab != 0 && (cfg->max_vocab < 2 || cfg->max_vocab > TOK_MAX_SIZE))
        return moe_fail(MOE_ERR_CONFIG, "max_vocab must be 0 (no limit) or in [2, %d], not %d",
                        TOK_MAX_SIZE, cfg->max_vocab);
    return MOE_OK;
}

void tok_free(tok *t) {
    if (!t) return;
    free(t->pieces);
    free(t->off);
    wmap_free(&t->map);
    free(t);
}

/* A tokenizer with `size` ids whose pieces are filled in by the caller via tok_add_piece. */
static tok *tok_alloc(tok_kind kind, int32_t size, size_t piece_bytes) {
    tok *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->kind = kind;
    t->size = 0;
    t->pieces = malloc(piece_bytes ? piece_bytes : 1);
    t->off = malloc(((size_t)size + 1) * sizeof *t->off);
    if (!t->pieces || !t->off || (kind == TOK_WORDS && wmap_init(&t->map, 64))) {
        tok_free(t);
        return NULL;
    }
    t->off[0] = 0;
    return t;
}

/* Appends the next id's piece (room reserved by tok_alloc). Words from id 2 also go into the map;
 * returns -1 on a duplicate or out of memory (*dup says which). */
static int tok_add_piece(tok *t, const unsigned char *p, size_t len, int *dup) {
    *dup = 0;
    int32_t id = t->size;
    if (t->kind == TOK_WORDS && id >= 2) {
        int added;
        wslot *s = wmap_upsert(&t->map, p, len, &added);
        if (!s) return -1;
        if (!added) {
            *dup = 1;
            return -1;
        }
        s->val = (uint64_t)id;
    }
    memcpy(t->pieces + t->off[id], p, len);
    t->off[id + 1] = t->off[id] + (uint32_t)len;
    t->size++;
    return 0;
}

moe_status tok_create_bytes(tok **out) {
    if (!out) return moe_fail(MOE_ERR_INVALID_ARG, "tok_create_bytes: out is NULL");
    tok *t = tok_alloc(TOK_BYTES, 256, 256);
    if (!t) return moe_fail(MOE_ERR_NOMEM, "out of memory for the byte tokenizer");
    for (int i = 0; i < 256; i++) {
        unsigned char b = (unsigned char)i;
        int dup;
        tok_add_piece(t, &b, 1, &dup); /* cannot fail: no map for bytes */
    }
    *out = t;
    return MOE_OK;
}

tok_kind tok_get_kind(const tok *t) { return t->kind; }
int tok_lowercase(const tok *t) { return t->lowercase; }
int32_t tok_vocab_size(const tok *t) { return t->size; }

const char *tok_piece(const tok *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->size) {
        *len = 0;
        return NULL;
    }
    *len = t->off[id + 1] - t->off[id];
    return t->pieces + t->off[id];
}

int32_t tok_lookup(const tok *t, const char *bytes, size_t len) {
    const unsigned char *p = (const unsigned char *)bytes;
    if (t->kind == TOK_BYTES) return len == 1 ? (int32_t)p[0] : -1;
    if (len == 1 && p[0] == '\n') return TOK_NEWLINE;
    if (len == 5 && memcmp(p, "<unk>", 5) == 0) return TOK_UNK;
    if (len == 0) return -1;
    wslot *s = wmap_find(&t->map, p, len, hash_bytes(p, len));
    return s->len ? (int32_t)s->val : -1;
}

/* ---- building ------------------------------------------------------------------------------ */

struct tok_builder {
    tok_config cfg;
    wmap counts;
    tok_carry carry;
};

moe_status tok_builder_create(tok_builder **out, const tok_config *cfg) {
    if (!out) return moe_fail(MOE_ERR_INVALID_ARG, "tok_builder_create: out is NULL");
    moe_status st = check_config(cfg);
    if (st != MOE_OK) return st;
    tok_builder *b = calloc(1, sizeof *b);
    if (!b || wmap_init(&b->counts, 1024)) {
        free(b);
        return moe_fail(MOE_ERR_NOMEM, "out of memory for the vocabulary counts");
    }
    b->cfg = *cfg;
    *out = b;
    return MOE_OK;
}

void tok_builder_free(tok_builder *b) {
    if (!b) return;
    wmap_free(&b->counts);
    free(b);
}

static int count_emit(void *ctx, emit_kind kind, const unsigned char *p, size_t len) {
    if (kind != EMIT_PIECE) return 0;
    int added;
    wslot *s = wmap_upsert(ctx, p, len, &added);
    if (!s) return -1;
    s->val++;
    return 0;
}

moe_status tok_builder_add(tok_builder *b, const char *text, size_t len, int final) {
    if (!b || (!text && len > 0)) return moe_fail(MOE_ERR_INVALID_ARG, "tok_builder_add: NULL argument");
    if (b->cfg.kind == TOK_BYTES) return MOE_OK;
    if (scan(&b->carry, b->cfg.lowercase, (const unsigned char *)text, len, final, count_emit, &b->counts))
        return moe_fail(MOE_ERR_NOMEM, "out of memory while counting words (%zu distinct so far)",
                        b->counts.n);
    return MOE_OK;
}

/* A kept word while sorting: falling count, then memcmp of the bytes (a prefix first). */
typedef struct {
    const unsigned char *p;
    size_t len;
    uint64_t count;
} cand_word;

static int cmp_cand(const void *pa, const void *pb) {
    const cand_word *a = pa, *b = pb;
    if (a->count != b->count) return a->count > b->count ? -1 : 1;
    int c = memcmp(a->p, b->p, a->len < b->len ? a->len : b->len);
    if (c != 0) return c;
    return a->len < b->len ? -1 : (a->len > b->len);
}

moe_status tok_builder_finish(tok_builder *b, tok **out) {
    if (!b || !out) return moe_fail(MOE_ERR_INVALID_ARG, "tok_builder_finish: NULL argument");
    if (b->cfg.kind == TOK_BYTES) return tok_create_bytes(out);
    moe_status st = tok_builder_add(b, NULL, 0, 1);
    if (st != MOE_OK) return st;

    /* the candidates: words seen at least min_count times */
    size_t nc = 0, bytes = 6; /* "<unk>" + "\n" */
    cand_word *cand = malloc((b->counts.n ? b->counts.n : 1) * sizeof *cand);
    if (!cand) return moe_fail(MOE_ERR_NOMEM, "out of memory while sorting the vocabulary");
    for (size_t i = 0; i < b->counts.cap; i++) {
        const wslot *w = &b->counts.slots[i];
        if (w->len && w->val >= (uint64_t)b->cfg.min_count)
            cand[nc++] = (cand_word){b->counts.arena + w->off, w->len, w->val};
    }
    qsort(cand, nc, sizeof *cand, cmp_cand);
    size_t limit = b->cfg.max_vocab ? (size_t)b->cfg.max_vocab : TOK_MAX_SIZE;
    if (nc > limit - 2) nc = limit - 2;
    for (size_t i = 0; i < nc; i++) bytes += cand[i].len;

    tok *t = tok_alloc(TOK_WORDS, (int32_t)(nc + 2), bytes);
    if (!t) {
        free(cand);
        return moe_fail(MOE_ERR_NOMEM, "out of memory for a vocabulary of %zu words", nc + 2);
    }
    t->lowercase = b->cfg.lowercase;
    t->min_count = b->cfg.min_count;
    t->max_vocab = b->cfg.max_vocab;
    int dup, bad = tok_add_piece(t, (const unsigned char *)"<unk>", 5, &dup);
    bad |= tok_add_piece(t, (const unsigned char *)"\n", 1, &dup);
    for (size_t i = 0; i < nc && !bad; i++) bad = tok_add_piece(t, cand[i].p, cand[i].len, &dup);
    free(cand);
    if (bad) {
        tok_free(t);
        return moe_fail(MOE_ERR_NOMEM, "out of memory for the vocabulary's index");
    }
    *out = t;
    return MOE_OK;
}

moe_status tok_build_from_buffer(tok **out, const tok_config *cfg, const char *text, size_t len) {
    tok_builder *b = NULL;
    moe_status st = tok_builder_create(&b, cfg);
    if (st != MOE_OK) return st;
    st = tok_builder_add(b, text, len, 1);
    if (st == MOE_OK) st = tok_builder_finish(b, out);
    tok_builder_free(b);
    return st;
}

moe_status tok_build_from_file(tok **out, const tok_config *cfg, const char *path, uint64_t offset,
                               uint64_t length, size_t chunk) {
    if (!out || !path) return moe_fail(MOE_ERR_INVALID_ARG, "tok_build_from_file: NULL argument");
    if (chunk == 0) chunk = TOK_DEFAULT_CHUNK;
    tok_builder *b = NULL;
    moe_status st = tok_builder_create(&b, cfg);
    if (st != MOE_OK) return st;
    FILE *fp = fopen(path, "rb");
    char *buf = malloc(chunk);
    off_t size = 0;
    if (!fp) st = moe_fail(MOE_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    else if (!buf) st = moe_fail(MOE_ERR_NOMEM, "out of memory for a %zu-byte read buffer", chunk);
    else if (fseeko(fp, 0, SEEK_END) != 0 || (size = ftello(fp)) < 0)
        st = moe_fail(MOE_ERR_IO, "%s: cannot find its size: %s", path, strerror(errno));
    else if (offset > (uint64_t)size)
        st = moe_fail(MOE_ERR_IO, "%s: byte %llu lies beyond its end (%lld bytes)", path,
                      (unsigned long long)offset, (long long)size);
    else if (fseeko(fp, (off_t)offset, SEEK_SET) != 0)
        st = moe_fail(MOE_ERR_IO, "%s: cannot seek to byte %llu: %s", path, (unsigned long long)offset,
                      strerror(errno));
    uint64_t left = length;
    while (st == MOE_OK && left > 0) {
        size_t want = left < chunk ? (size_t)left : chunk;
        size_t got = fread(buf, 1, want, fp);
        if (got < want && ferror(fp)) {
            st = moe_fail(MOE_ERR_IO, "reading %s: %s", path, strerror(errno));
            break;
        }
        if (got == 0 && length != UINT64_MAX) {
            st = moe_fail(MOE_ERR_IO, "%s ends before byte %llu of the range asked for", path,
                          (unsigned long long)(offset + length));
            break;
        }
        if (length != UINT64_MAX) left -= got;
        st = tok_builder_add(b, buf, got, 0);
        if (got == 0) break; /* end of file, reading to the end */
    }
    if (st == MOE_OK) st = tok_builder_finish(b, out);
    free(buf);
    if (fp) fclose(fp);
    tok_builder_free(b);
    return st;
}

/* ---- encoding and decoding -------------------------------------------------------------------- */

typedef struct {
    const tok *t;
    int32_t *out;
    size_t n;
} enc_ctx;

static int encode_emit(void *ctx, emit_kind kind, const unsigned char *p, size_t len) {
    enc_ctx *e = ctx;
    int32_t id = TOK_UNK;
    if (kind == EMIT_NEWLINE) id = TOK_NEWLINE;
    else if (kind == EMIT_PIECE) {
        wslot *s = wmap_find(&e->t->map, p, len, hash_bytes(p, len));
        if (s->len) id = (int32_t)s->val;
    }
    e->out[e->n++] = id;
    return 0;
}

size_t tok_encode(const tok *t, tok_carry *carry, const char *text, size_t len, int final,
                  int32_t *out) {
    if (t->kind == TOK_BYTES) {
        for (size_t i = 0; i < len; i++) out[i] = (int32_t)(unsigned char)text[i];
        return len;
    }
    enc_ctx e = {t, out, 0};
    tok_carry whole = {0};
    if (!carry) { /* a whole text */
        carry = &whole;
        final = 1;
    }
    scan(carry, t->lowercase, (const unsigned char *)text, len, final, encode_emit, &e);
    return e.n;
}

static int piece_is_one_of(const tok *t, int32_t id, const char *set) {
    size_t len;
    const char *p = tok_piece(t, id, &len);
    return p && len == 1 && p[0] != '\0' && strchr(set, p[0]) != NULL;
}

int tok_space_before(const tok *t, int32_t prev, int32_t id) {
    if (t->kind == TOK_BYTES || prev < 0) return 0;
    if (prev == TOK_NEWLINE || id == TOK_NEWLINE) return 0;
    if (piece_is_one_of(t, id, ".,;:!?)]}")) return 0;
    if (piece_is_one_of(t, prev, "([{")) return 0;
    return 1;
}

moe_status tok_decode(const tok *t, const int32_t *ids, size_t n, char **out, size_t *out_len) {
    if (!t || !out || (!ids && n > 0)) return moe_fail(MOE_ERR_INVALID_ARG, "tok_decode: NULL argument");
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->size)
            return moe_fail(MOE_ERR_INVALID_ARG, "token %zu: id %d outside the vocabulary [0, %d)", i,
                            (int)ids[i], (int)t->size);
        total += t->off[ids[i] + 1] - t->off[ids[i]] + 1;
    }
    char *s = malloc(total);
    if (!s) return moe_fail(MOE_ERR_NOMEM, "out of memory decoding %zu tokens", n);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (tok_space_before(t, i ? ids[i - 1] : -1, ids[i])) s[k++] = ' ';
        size_t len;
        const char *p = tok_piece(t, ids[i], &len);
        memcpy(s + k, p, len);
        k += len;
    }
    s[k] = '\0';
    *out = s;
    if (out_len) *out_len = k;
    return MOE_OK;
}

/* ---- the text form --------------------------------------------------------------------------- */

static int needs_escape(unsigned char c) { return c < 0x21 || c > 0x7e || c == '%'; }

moe_status tok_serialize(const tok *t, char **out) {
    if (!t || !out) return moe_fail(MOE_ERR_INVALID_ARG, "tok_serialize: NULL argument");
    if (t->kind == TOK_BYTES) {
        *out = malloc(sizeof TOK_MAGIC "bytes");
        if (!*out) return moe_fail(MOE_ERR_NOMEM, "out of memory serialising the tokenizer");
        memcpy(*out, TOK_MAGIC "bytes", sizeof TOK_MAGIC "bytes");
        return MOE_OK;
    }
    size_t cap = 160 + 3 * (size_t)t->off[t->size] + (size_t)t->size;
    char *s = malloc(cap);
    if (!s) return moe_fail(MOE_ERR_NOMEM, "out of memory serialising the tokenizer");
    int k = snprintf(s, cap, TOK_MAGIC "words lowercase=%d min_count=%d max_vocab=%d size=%d",
                     t->lowercase, t->min_count, t->max_vocab, (int)t->size);
    size_t n = (size_t)k;
    static const char hex[] = "0123456789ABCDEF";
    for (int32_t id = 2; id < t->size; id++) {
        s[n++] = ' ';
        for (uint32_t i = t->off[id]; i < t->off[id + 1]; i++) {
            unsigned char c = (unsigned char)t->pieces[i];
            if (needs_escape(c)) {
                s[n++] = '%';
                s[n++] = hex[c >> 4];
                s[n++] = hex[c & 15];
            } else {
                s[n++] = (char)c;
            }
        }
    }
    s[n] = '\0';
    *out = s;
    return MOE_OK;
}

/* Parses "<name>=<decimal>" at *p: digits only, no sign, no leading zero, at most 9 digits. */
static int parse_field(const char **p, const char *name, int *val) {
    size_t nl = strlen(name);
    if (strncmp(*p, name, nl) != 0 || (*p)[nl] != '=') return -1;
    const char *q = *p + nl + 1;
    if (*q < '0' || *q > '9' || (q[0] == '0' && q[1] >= '0' && q[1] <= '9')) return -1;
    long v = 0;
    int digits = 0;
    while (*q >= '0' && *q <= '9') {
        if (++digits > 9) return -1;
        v = v * 10 + (*q++ - '0');
    }
    *val = (int)v;
    *p = q;
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1; /* lowercase hex is not canonical */
}

moe_status tok_parse(tok **out, const char *s) {
    if (!out || !s) return moe_fail(MOE_ERR_INVALID_ARG, "tok_parse: NULL argument");
    if (strncmp(s, TOK_MAGIC, strlen(TOK_MAGIC)) != 0)
        return moe_fail(MOE_ERR_FORMAT, "tokenizer: the text does not start with \"%s\"", TOK_MAGIC);
    const char *p = s + strlen(TOK_MAGIC);
    if (strcmp(p, "bytes") == 0) return tok_create_bytes(out);
    if (strncmp(p, "words ", 6) != 0)
        return moe_fail(MOE_ERR_FORMAT, "tokenizer: unknown kind at offset %zu (expected \"bytes\" or \"words\")",
                        (size_t)(p - s));
    p += 6;
    tok_config cfg = {TOK_WORDS, 0, 0, 0};
    int size = 0;
    static const char *names[4] = {"lowercase", "min_count", "max_vocab", "size"};
    int *vals[4] = {&cfg.lowercase, &cfg.min_count, &cfg.max_vocab, &size};
    for (int i = 0; i < 4; i++) {
        if (parse_field(&p, names[i], vals[i]) || (i < 3 && *p++ != ' '))
            return moe_fail(MOE_ERR_FORMAT, "tokenizer: expected %s=<number>%s at offset %zu", names[i],
                            i < 3 ? " and a space" : "", (size_t)(p - s));
    }
    if (check_config(&cfg) != MOE_OK) {
        char why[200]; /* moe_fail may not read the buffer it writes */
        snprintf(why, sizeof why, "%s", moe_last_error());
        return moe_fail(MOE_ERR_FORMAT, "tokenizer: bad settings: %s", why);
    }
    if (size < 2 || size > TOK_MAX_SIZE || (cfg.max_vocab && size > cfg.max_vocab))
        return moe_fail(MOE_ERR_FORMAT, "tokenizer: size=%d outside [2, %d]", size,
                        cfg.max_vocab ? cfg.max_vocab : TOK_MAX_SIZE);
    /* the pieces' bytes are no more than the text's: that bounds the allocation by the input */
    size_t rest = strlen(p);
    if ((size_t)size - 2 > rest / 2)
        return moe_fail(MOE_ERR_FORMAT, "tokenizer: size=%d but the text holds at most %zu pieces", size, rest / 2);
    tok *t = tok_alloc(TOK_WORDS, size, rest + 6);
    if (!t) return moe_fail(MOE_ERR_NOMEM, "out of memory parsing a tokenizer of %d ids", size);
    t->lowercase = cfg.lowercase;
    t->min_count = cfg.min_count;
    t->max_vocab = cfg.max_vocab;
    int dup;
    tok_add_piece(t, (const unsigned char *)"<unk>", 5, &dup);
    tok_add_piece(t, (const unsigned char *)"\n", 1, &dup);
    unsigned char piece[TOK_MAX_WORD];
    moe_status st = MOE_OK;
    for (int id = 2; id < size && st == MOE_OK; id++) {
        size_t at = (size_t)(p - s);
        if (*p++ != ' ') {
            st = moe_fail(MOE_ERR_FORMAT, "tokenizer: expected a space before piece %d at offset %zu", id, at);
            break;
        }
        size_t len = 0;
        while (*p && *p != ' ') {
            unsigned char c = (unsigned char)*p;
            int hi = -1, lo = -1;
            if (c == '%') {
                hi = hexval(p[1]);
                lo = hi < 0 ? -1 : hexval(p[2]);
                if (lo < 0 || !needs_escape((unsigned char)(hi * 16 + lo))) {
                    st = moe_fail(MOE_ERR_FORMAT, "tokenizer: bad or needless %%XX escape in piece %d at offset %zu",
                                  id, (size_t)(p - s));
                    break;
                }
                c = (unsigned char)(hi * 16 + lo);
                p += 3;
            } else if (needs_escape(c)) {
                st = moe_fail(MOE_ERR_FORMAT, "tokenizer: byte 0x%02x must be escaped (piece %d, offset %zu)", c,
                              id, (size_t)(p - s));
                break;
            } else {
                p++;
            }
            if (len == TOK_MAX_WORD) {
                st = moe_fail(MOE_ERR_FORMAT, "tokenizer: piece %d is longer than %d bytes", id, TOK_MAX_WORD);
                break;
            }
            piece[len++] = c;
        }
        if (st != MOE_OK) break;
        if (!valid_piece(piece, len, cfg.lowercase)) {
            st = moe_fail(MOE_ERR_FORMAT, "tokenizer: piece %d (offset %zu) is not a token the %sword rule can produce",
                          id, at + 1, cfg.lowercase ? "lowercase " : "");
        } else if (tok_add_piece(t, piece, len, &dup)) {
            st = dup ? moe_fail(MOE_ERR_FORMAT, "tokenizer: piece %d (offset %zu) repeats an earlier one", id, at + 1)
                     : moe_fail(MOE_ERR_NOMEM, "out of memory parsing the tokenizer");
        }
    }
    if (st == MOE_OK && *p != '\0')
        st = moe_fail(MOE_ERR_FORMAT, "tokenizer: unexpected text after the last of %d pieces, at offset %zu", size,
                      (size_t)(p - s));
    if (st != MOE_OK) {
        tok_free(t);
        return st;
    }
    *out = t;
    return MOE_OK;
}
