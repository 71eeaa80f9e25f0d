/* textdata.c - a text file as blocks, split into train/valid/test, and read back as batches of
 * token streams for truncated BPTT (see textdata.h for the rules), plus the fortunes corpus.
 *
 * Reading is positional (pread on one descriptor), so any number of streams and iterators share
 * a td_file without a shared file position. A stream is a cursor into its split:
 *
 *   split blocks:  [blk 0 ][blk 1   ][blk 2 ] ... [blk m-1]   (file blocks of this split, in order)
 *                            ^ off: bytes of blk 1 read so far
 *   stream:  read TD_READ_CHUNK bytes at the cursor -> tok_encode (carry across chunks, final at
 *            the block's end) -> pend [tokens made, not yet handed out] -> T+1 per call, keep 1
 *
 * Jumping to token p (at creation and on restore) finds p's block by a binary search of the
 * split's token prefix sums (cum), then tokenises that block from its start and drops the tokens
 * before p. Everything else reads forward.
 */
#define _POSIX_C_SOURCE 200809L
#define _FILE_OFFSET_BITS 64

#include "data/textdata.h"

#include "base/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TD_CHECK_BYTES ((size_t)64 << 10) /* the UTF-8 check looks at this much of the file */
#define TD_AUTO_BLOCK ((size_t)64 << 10)
#define TD_MIN_AUTO_BLOCK 64
#define TD_MIN_BLOCKS 40
#define TD_GROUP 20
#define TD_MAX_BLOCK ((size_t)1 << 30)
#define TD_PASS_CHUNK ((size_t)64 << 10) /* read size of the counting passes */

const char *td_split_name(td_split s) {
    switch (s) {
    case TD_TRAIN: return "train";
    case TD_VALID: return "valid";
    case TD_TEST: return "test";
    }
    return "?";
}

struct td_file {
    char *path;
    int fd;
    uint64_t size;
    size_t block_size;
    int64_t nblocks;
    uint64_t *start;  /* [nblocks + 1]: block i is [start[i], start[i+1]) */
    uint8_t *split;   /* [nblocks] */
};

/* Reads exactly n bytes at `off` unless the file ends first (*got says how many arrived). */
static moe_status pread_full(const td_file *f, void *buf, size_t n, uint64_t off, size_t *got) {
    *got = 0;
    while (*got < n) {
        ssize_t r = pread(f->fd, (char *)buf + *got, n - *got, (off_t)(off + *got));
        if (r < 0) {
            if (errno == EINTR) continue;
            return moe_fail(MOE_ERR_IO, "reading %s: %s", f->path, strerror(errno));
        }
        if (r == 0) break;
        *got += (size_t)r;
    }
    return MOE_OK;
}

/* Like pread_full, but the file must still hold all n bytes (it may have shrunk since td_open). */
static moe_status read_exact(const td_file *f, void *buf, size_t n, uint64_t off) {
    size_t got;
    moe_status st = pread_full(f, buf, n, off, &got);
    if (st == MOE_OK && got < n)
        st = moe_fail(MOE_ERR_TRUNCATED, "%s is shorter than when it was opened (%llu bytes then)", f->path,
                      (unsigned long long)f->size);
    return st;
}

/* Invalid UTF-8 sequences in s [n] (overlongs, surrogates and > U+10FFFF count as invalid); a
 * sequence cut by the end of s counts only if `whole` (s is the whole file). *nul gets the offset
 * of the first NUL byte, or n if none. */
static size_t utf8_invalid(const unsigned char *s, size_t n, int whole, size_t *nul) {
    size_t bad = 0, i = 0;
    *nul = n;
    while (i < n) {
        unsigned char c = s[i];
        if (c == 0) {
            *nul = i;
            return bad;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
        if (c >= 0xc2 && c <= 0xdf) need = 1;
        else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else {
            bad++;
            i++;
            continue;
        }
        if (i + need >= n && !whole) break; /* cut by the window: judged by the next window */
        int ok = i + need < n && s[i + 1] >= lo && s[i + 1] <= hi;
        for (size_t j = 2; ok && j <= need; j++) ok = s[i + j] >= 0x80 && s[i + j] <= 0xbf;
        if (ok) {
            i += need + 1;
        } else {
            bad++;
            i++;
        }
    }
    return bad;
}

/* The end of the block that starts at `start` with nominal size bs (rule 2 in textdata.h). */
static moe_status block_end(const td_file *f, uint64_t start, size_t bs, unsigned char *buf, size_t bufsize,
                            uint64_t *end) {
    uint64_t nominal = start + bs;
    if (nominal >= f->size) {
        *end = f->size;
        return MOE_OK;
    }
    uint64_t pos = nominal - 1, limit = nominal - 1 + bs;
    while (pos < limit && pos < f->size) {
        size_t want = bufsize;
        if (limit - pos < want) want = (size_t)(limit - pos);
        size_t got;
        moe_status st = pread_full(f, buf, want, pos, &got);
        if (st != MOE_OK) return st;
        if (got == 0) break;
        const unsigned char *nl = memchr(buf, '\n', got);
        if (nl) {
            *end = pos + (uint64_t)(nl - buf) + 1;
            return MOE_OK;
        }
        pos += got;
    }
    if (pos >= f->size) {
        *end = f->size;
        return MOE_OK;
    }
    /* no newline nearby: cut at the nominal end, but not inside a UTF-8 sequence */
    uint64_t e = nominal;
    size_t got;
    moe_status st = pread_full(f, buf, 3, e, &got);
    if (st != MOE_OK) return st;
    for (size_t i = 0; i < got && (buf[i] & 0xc0) == 0x80; i++) e++;
    *end = e;
    return MOE_OK;
}

static td_split split_of_block(int64_t i) {
    uint64_t g = (uint64_t)(i / TD_GROUP), pos = (uint64_t)(i % TD_GROUP);
    uint64_t v = moe_rng_u64(TD_SPLIT_SEED, 2 * g) % TD_GROUP;
    uint64_t t = moe_rng_u64(TD_SPLIT_SEED, 2 * g + 1) % (TD_GROUP - 1);
    if (t >= v) t++;
    return pos == v ? TD_VALID : pos == t ? TD_TEST : TD_TRAIN;
}

void td_free(td_file *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    free(f->path);
    free(f->start);
    free(f->split);
    free(f);
}

moe_status td_open(td_file **out, const char *path, size_t block_size) {
    if (!out || !path) return moe_fail(MOE_ERR_INVALID_ARG, "td_open: NULL argument");
    if (block_size > TD_MAX_BLOCK)
        return moe_fail(MOE_ERR_CONFIG, "block size %zu is above the limit of %zu", block_size, TD_MAX_BLOCK);
    td_file *f = calloc(1, sizeof *f);
    unsigned char *buf = malloc(TD_CHECK_BYTES);
    moe_status st = MOE_OK;
    if (f) f->fd = -1;
    if (!f || !buf || !(f->path = strdup(path))) {
        free(buf);
        td_free(f);
        return moe_fail(MOE_ERR_NOMEM, "out of memory opening %s", path);
    }
    f->fd = open(path, O_RDONLY);
    struct stat sb;
    if (f->fd < 0) st = moe_fail(MOE_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    else if (fstat(f->fd, &sb) != 0) st = moe_fail(MOE_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode)) st = moe_fail(MOE_ERR_IO, "%s is not a regular file", path);
    else if (sb.st_size == 0) st = moe_fail(MOE_ERR_FORMAT, "%s is empty: there is no text to read", path);
    if (st == MOE_OK) {
        f->size = (uint64_t)sb.st_size;
        size_t n = f->size < TD_CHECK_BYTES ? (size_t)f->size : TD_CHECK_BYTES, nul, bad = 0;
        st = read_exact(f, buf, n, 0);
        if (st == MOE_OK) bad = utf8_invalid(buf, n, n == f->size, &nul);
        if (st == MOE_OK && nul < n)
            st = moe_fail(MOE_ERR_FORMAT, "%s does not look like UTF-8 text: it has a NUL byte at offset %zu", path,
                          nul);
        else if (st == MOE_OK && bad > 2 + n / 100)
            st = moe_fail(MOE_ERR_FORMAT,
                          "%s does not look like UTF-8 text: %zu invalid UTF-8 sequences in its first %zu bytes",
                          path, bad, n);
    }
    if (st == MOE_OK) {
        size_t bs = block_size;
        if (bs == 0)
            for (bs = TD_AUTO_BLOCK; bs > TD_MIN_AUTO_BLOCK && f->size < (uint64_t)TD_MIN_BLOCKS * bs;) bs /= 2;
        f->block_size = bs;
        uint64_t cap = f->size / bs + 2; /* every block but the last is >= bs bytes */
        f->start = malloc((size_t)cap * sizeof *f->start);
        f->split = malloc((size_t)cap);
        if (!f->start || !f->split) st = moe_fail(MOE_ERR_NOMEM, "out of memory for the blocks of %s", path);
        uint64_t pos = 0;
        int64_t nb = 0;
        while (st == MOE_OK && pos < f->size) {
            uint64_t end;
            st = block_end(f, pos, bs, buf, TD_CHECK_BYTES, &end);
            if (st != MOE_OK) break;
            f->start[nb] = pos;
            f->split[nb] = (uint8_t)split_of_block(nb);
            nb++;
            pos = end;
        }
        if (st == MOE_OK) {
            f->start[nb] = f->size;
            f->nblocks = nb;
        }
    }
    free(buf);
    if (st != MOE_OK) {
        td_free(f);
        return st;
    }
    *out = f;
    return MOE_OK;
}

td_info td_get_info(const td_file *f) {
    td_info in;
    memset(&in, 0, sizeof in);
    in.size = f->size;
    in.block_size = f->block_size;
    in.nblocks = f->nblocks;
    for (int64_t i = 0; i < f->nblocks; i++) {
        in.blocks[f->split[i]]++;
        in.bytes[f->split[i]] += f->start[i + 1] - f->start[i];
    }
    return in;
}

moe_status td_block(const td_file *f, int64_t i, uint64_t *offset, uint64_t *length, td_split *split) {
    if (!f || i < 0 || i >= f->nblocks)
        return moe_fail(MOE_ERR_INVALID_ARG, "block %lld outside [0, %lld)", (long long)i,
                        (long long)(f ? f->nblocks : 0));
    if (offset) *offset = f->start[i];
    if (length) *length = f->start[i + 1] - f->start[i];
    if (split) *split = (td_split)f->split[i];
    return MOE_OK;
}

/* The file indices of split s's blocks, in file order: *idx (caller frees) [*n]. */
static moe_status split_blocks(const td_file *f, td_split s, int64_t **idx, int64_t *n) {
    *n = 0;
    *idx = NULL;
    if (s != TD_TRAIN && s != TD_VALID && s != TD_TEST)
        return moe_fail(MOE_ERR_INVALID_ARG, "unknown split %d", (int)s);
    *idx = malloc(((size_t)f->nblocks + 1) * sizeof **idx);
    if (!*idx) return moe_fail(MOE_ERR_NOMEM, "out of memory for the block list of %s", f->path);
    for (int64_t i = 0; i < f->nblocks; i++)
        if (f->split[i] == (uint8_t)s) (*idx)[(*n)++] = i;
    return MOE_OK;
}

static moe_status empty_split(const td_file *f, td_split s) {
    return moe_fail(MOE_ERR_MISSING,
                    "the %s split of %s is empty: the file has only %lld blocks of about %zu bytes, and the "
                    "%s split needs a group of %d blocks; use a larger file or a smaller block size",
                    td_split_name(s), f->path, (long long)f->nblocks, f->block_size, td_split_name(s), TD_GROUP);
}

/* One streaming pass over the blocks idx [n]: each block read in TD_PASS_CHUNK pieces; with a
 * builder the tokens are counted into it, with a tokenizer each block's token count goes to
 * cum[k+1] = cum[k] + count (cum [n+1]). */
static moe_status split_pass(const td_file *f, const int64_t *idx, int64_t n, tok_builder *b, const tok *t,
                             uint64_t *cum) {
    char *buf = malloc(TD_PASS_CHUNK);
    int32_t *ids = t ? malloc(TOK_ENCODE_MAX(TD_PASS_CHUNK) * sizeof *ids) : NULL;
    moe_status st = MOE_OK;
    if (!buf || (t && !ids)) st = moe_fail(MOE_ERR_NOMEM, "out of memory for a read buffer");
    if (cum) cum[0] = 0;
    for (int64_t k = 0; k < n && st == MOE_OK; k++) {
        uint64_t off = f->start[idx[k]], end = f->start[idx[k] + 1], count = 0;
        tok_carry carry = {0};
        while (off < end && st == MOE_OK) {
            size_t len = end - off < TD_PASS_CHUNK ? (size_t)(end - off) : TD_PASS_CHUNK;
            st = read_exact(f, buf, len, off);
            if (st != MOE_OK) break;
            off += len;
            if (b) st = tok_builder_add(b, buf, len, off == end);
            else count += tok_encode(t, &carry, buf, len, off == end, ids);
        }
        if (cum) cum[k + 1] = cum[k] + count;
    }
    free(buf);
    free(ids);
    return st;
}

moe_status td_build_tokenizer(const td_file *f, td_split s, const tok_config *cfg, tok **out) {
    if (!f || !cfg || !out) return moe_fail(MOE_ERR_INVALID_ARG, "td_build_tokenizer: NULL argument");
    int64_t *idx = NULL, n = 0;
    moe_status st = split_blocks(f, s, &idx, &n);
    if (st != MOE_OK) return st;
    tok_builder *b = NULL;
    if (n == 0) st = empty_split(f, s);
    if (st == MOE_OK) st = tok_builder_create(&b, cfg);
    if (st == MOE_OK && cfg->kind == TOK_WORDS) st = split_pass(f, idx, n, b, NULL, NULL);
    if (st == MOE_OK) st = tok_builder_finish(b, out);
    tok_builder_free(b);
    free(idx);
    return st;
}

/* cum [n+1] token prefix sums of the blocks idx [n] under t (byte lengths for TOK_BYTES). */
static moe_status split_cum(const td_file *f, const int64_t *idx, int64_t n, const tok *t, uint64_t *cum) {
    if (tok_get_kind(t) == TOK_WORDS) return split_pass(f, idx, n, NULL, t, cum);
    cum[0] = 0;
    for (int64_t k = 0; k < n; k++) cum[k + 1] = cum[k] + (f->start[idx[k] + 1] - f->start[idx[k]]);
    return MOE_OK;
}

moe_status td_count_tokens(const td_file *f, td_split s, const tok *t, uint64_t *count) {
    if (!f || !t || !count) return moe_fail(MOE_ERR_INVALID_ARG, "td_count_tokens: NULL argument");
    int64_t *idx = NULL, n = 0;
    moe_status st = split_blocks(f, s, &idx, &n);
    if (st != MOE_OK) return st;
    uint64_t *cum = malloc(((size_t)n + 1) * sizeof *cum);
    if (!cum) st = moe_fail(MOE_ERR_NOMEM, "out of memory counting tokens");
    if (st == MOE_OK) st = split_cum(f, idx, n, t, cum);
    if (st == MOE_OK) *count = cum[n];
    free(cum);
    free(idx);
    return st;
}

/* ---- the batch iterator ---------------------------------------------------------------------- */

typedef struct {
    int64_t blk;     /* index into the iterator's block list */
    uint64_t off;    /* bytes of that block already read */
    tok_carry carry; /* a word cut by the last read */
    int32_t *pend;   /* [npend] tokens made and not yet handed out (pend_cap allocated) */
    size_t npend;
} td_stream;

struct td_iter {
    const td_file *f;
    const tok *t;
    td_split split;
    int B, T;
    int64_t nblk;  /* blocks in the split */
    int64_t *blk;  /* [nblk] their file indices */
    uint64_t *cum; /* [nblk + 1] token prefix sums */
    uint64_t ntok, slice; /* N and L = N / B */
    uint64_t step;
    int broken;           /* a failed read left the streams inconsistent */
    char *chunk;          /* [TD_READ_CHUNK] read buffer, shared by the streams */
    size_t pend_cap;
    td_stream *s;         /* [B] */
};

void td_iter_free(td_iter *it) {
    if (!it) return;
    if (it->s)
        for (int b = 0; b < it->B; b++) free(it->s[b].pend);
    free(it->s);
    free(it->chunk);
    free(it->cum);
    free(it->blk);
    free(it);
}

/* Tokenises forward from the stream's cursor until it holds at least `want` pending tokens. */
static moe_status stream_fill(td_iter *it, td_stream *s, size_t want) {
    while (s->npend < want) {
        int64_t fb = it->blk[s->blk];
        uint64_t bstart = it->f->start[fb], blen = it->f->start[fb + 1] - bstart;
        size_t n = blen - s->off < TD_READ_CHUNK ? (size_t)(blen - s->off) : TD_READ_CHUNK;
        moe_status st = read_exact(it->f, it->chunk, n, bstart + s->off);
        if (st != MOE_OK) return st;
        s->off += n;
        int final = s->off == blen;
        s->npend += tok_encode(it->t, &s->carry, it->chunk, n, final, s->pend + s->npend);
        if (final) {
            s->blk = (s->blk + 1) % it->nblk;
            s->off = 0;
        }
    }
    return MOE_OK;
}

/* Puts the stream at token p of the split (0 <= p < N). */
static moe_status stream_seek(td_iter *it, td_stream *s, uint64_t p) {
    int64_t lo = 0, hi = it->nblk - 1; /* the block k with cum[k] <= p < cum[k+1] */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (it->cum[mid] <= p) lo = mid;
        else hi = mid - 1;
    }
    s->blk = lo;
    s->off = 0;
    memset(&s->carry, 0, sizeof s->carry);
    s->npend = 0;
    uint64_t skip = p - it->cum[lo];
    while (skip > 0) {
        moe_status st = stream_fill(it, s, 1);
        if (st != MOE_OK) return st;
        size_t d = s->npend < skip ? s->npend : (size_t)skip;
        memmove(s->pend, s->pend + d, (s->npend - d) * sizeof *s->pend);
        s->npend -= d;
        skip -= d;
    }
    return MOE_OK;
}

static moe_status seek_all(td_iter *it, uint64_t step) {
    uint64_t adv = (step * (uint64_t)it->T) % it->ntok;
    for (int b = 0; b < it->B; b++) {
        moe_status st = stream_seek(it, &it->s[b], ((uint64_t)b * it->slice + adv) % it->ntok);
        if (st != MOE_OK) {
            it->broken = 1;
            return st;
        }
    }
    it->step = step;
    it->broken = 0;
    return MOE_OK;
}

moe_status td_iter_create(td_iter **out, const td_file *f, const tok *t, td_split s, int B, int T) {
    if (!out || !f || !t) return moe_fail(MOE_ERR_INVALID_ARG, "td_iter_create: NULL argument");
    if (B < 1 || T < 1 || T > (1 << 24))
        return moe_fail(MOE_ERR_CONFIG, "batch B=%d and steps T=%d must be >= 1 (T <= %d)", B, T, 1 << 24);
    td_iter *it = calloc(1, sizeof *it);
    if (!it) return moe_fail(MOE_ERR_NOMEM, "out of memory for an iterator");
    it->f = f;
    it->t = t;
    it->split = s;
    it->B = B;
    it->T = T;
    moe_status st = split_blocks(f, s, &it->blk, &it->nblk);
    if (st == MOE_OK && it->nblk == 0) st = empty_split(f, s);
    if (st == MOE_OK && !(it->cum = malloc(((size_t)it->nblk + 1) * sizeof *it->cum)))
        st = moe_fail(MOE_ERR_NOMEM, "out of memory for the iterator's block table");
    if (st == MOE_OK) st = split_cum(f, it->blk, it->nblk, t, it->cum);
    if (st == MOE_OK) {
        it->ntok = it->cum[it->nblk];
        if (it->ntok < (uint64_t)B)
            st = moe_fail(MOE_ERR_MISSING, "the %s split of %s has %llu tokens, fewer than the %d streams asked for",
                          td_split_name(s), f->path, (unsigned long long)it->ntok, B);
        it->slice = it->ntok / (uint64_t)B;
    }
    if (st == MOE_OK) {
        it->pend_cap = (size_t)T + 1 + TOK_ENCODE_MAX(TD_READ_CHUNK);
        it->chunk = malloc(TD_READ_CHUNK);
        it->s = calloc((size_t)B, sizeof *it->s);
        if (!it->chunk || !it->s) st = moe_fail(MOE_ERR_NOMEM, "out of memory for %d streams", B);
        for (int b = 0; b < B && st == MOE_OK; b++)
            if (!(it->s[b].pend = malloc(it->pend_cap * sizeof *it->s[b].pend)))
                st = moe_fail(MOE_ERR_NOMEM, "out of memory for %d streams of %d tokens", B, T + 1);
    }
    if (st == MOE_OK) st = seek_all(it, 0);
    if (st != MOE_OK) {
        td_iter_free(it);
        return st;
    }
    *out = it;
    return MOE_OK;
}

moe_status td_iter_next(td_iter *it, int32_t *tokens) {
    if (!it || !tokens) return moe_fail(MOE_ERR_INVALID_ARG, "td_iter_next: NULL argument");
    if (it->broken)
        return moe_fail(MOE_ERR_STATE, "the iterator failed earlier: reposition it with td_iter_set_pos");
    size_t w = (size_t)it->T + 1;
    for (int b = 0; b < it->B; b++) {
        td_stream *s = &it->s[b];
        moe_status st = stream_fill(it, s, w);
        if (st != MOE_OK) {
            it->broken = 1;
            return st;
        }
        memcpy(tokens + (size_t)b * w, s->pend, w * sizeof *tokens);
        /* hand out T+1, keep the last: it is the first input of the next call */
        memmove(s->pend, s->pend + it->T, (s->npend - (size_t)it->T) * sizeof *s->pend);
        s->npend -= (size_t)it->T;
    }
    it->step++;
    return MOE_OK;
}

td_pos td_iter_get_pos(const td_iter *it) {
    td_pos p = {it->step, it->ntok, (int32_t)it->split, it->B, it->T};
    return p;
}

moe_status td_iter_set_pos(td_iter *it, const td_pos *pos) {
    if (!it || !pos) return moe_fail(MOE_ERR_INVALID_ARG, "td_iter_set_pos: NULL argument");
    if (pos->split != (int32_t)it->split || pos->B != it->B || pos->T != it->T || pos->ntokens != it->ntok)
        return moe_fail(MOE_ERR_CONFIG,
                        "saved data position (split %s, B=%d, T=%d, %llu tokens) does not match this iterator "
                        "(split %s, B=%d, T=%d, %llu tokens): different data, tokenizer or batch shape",
                        td_split_name((td_split)pos->split), (int)pos->B, (int)pos->T,
                        (unsigned long long)pos->ntokens, td_split_name(it->split), it->B, it->T,
                        (unsigned long long)it->ntok);
    if (pos->step > UINT64_MAX / (uint64_t)it->T)
        return moe_fail(MOE_ERR_CONFIG, "saved step %llu is out of range", (unsigned long long)pos->step);
    return seek_all(it, pos->step);
}

uint64_t td_iter_ntokens(const td_iter *it) { return it->ntok; }

double td_iter_epoch(const td_iter *it) { return (double)it->step * (double)it->T / (double)it->slice; }

uint64_t td_iter_steps_per_epoch(const td_iter *it) { return it->slice / (uint64_t)it->T; }

/* ---- the fortunes corpus --------------------------------------------------------------------- */

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static char *join_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* The names of the fortune files in dir, sorted: *names [*n] (caller frees each and the array). */
static moe_status list_fortunes(const char *dir, char ***names, int *n) {
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT || errno == ENOTDIR)
            return moe_fail(MOE_ERR_IO,
                            "fortune directory %s not found: the default corpus comes from the Debian package "
                            "`fortunes` (apt-get install fortunes), or give a text file of your own",
                            dir);
        return moe_fail(MOE_ERR_IO, "cannot open the directory %s: %s", dir, strerror(errno));
    }
    moe_status st = MOE_OK;
    int cap = 0;
    struct dirent *e;
    while (st == MOE_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || ends_with(e->d_name, ".dat") || ends_with(e->d_name, ".u8")) continue;
        char *full = join_path(dir, e->d_name);
        struct stat sb;
        if (!full) {
            st = moe_fail(MOE_ERR_NOMEM, "out of memory listing %s", dir);
            break;
        }
        int regular = lstat(full, &sb) == 0 && S_ISREG(sb.st_mode);
        free(full);
        if (!regular) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(*names, (size_t)cap * sizeof *nn);
            if (!nn) {
                st = moe_fail(MOE_ERR_NOMEM, "out of memory listing %s", dir);
                break;
            }
            *names = nn;
        }
        if (!((*names)[*n] = strdup(e->d_name))) st = moe_fail(MOE_ERR_NOMEM, "out of memory listing %s", dir);
        else (*n)++;
    }
    closedir(d);
    if (st == MOE_OK && *n == 0) st = moe_fail(MOE_ERR_MISSING, "no fortune files in %s", dir);
    if (st == MOE_OK) qsort(*names, (size_t)*n, sizeof **names, cmp_names);
    return st;
}

static moe_status write_bytes(FILE *out, const void *p, size_t n, const char *path) {
    if (n > 0 && fwrite(p, 1, n, out) != n) return moe_fail(MOE_ERR_IO, "writing %s: %s", path, strerror(errno));
    return MOE_OK;
}

/* Appends the file `src` to `out`, then "\n" if it does not end with one and a "%" line if its
 * last line is not one already. An empty file adds nothing. */
static moe_status append_fortune(FILE *out, const char *src, const char *tmp, char *buf, size_t bufsize,
                                 uint64_t *written) {
    FILE *in = fopen(src, "rb");
    if (!in) return moe_fail(MOE_ERR_IO, "cannot open %s: %s", src, strerror(errno));
    moe_status st = MOE_OK;
    char tail[3] = {0, 0, 0}; /* the last three bytes so far */
    uint64_t total = 0;
    for (;;) {
        size_t got = fread(buf, 1, bufsize, in);
        if (got < bufsize && ferror(in)) {
            st = moe_fail(MOE_ERR_IO, "reading %s: %s", src, strerror(errno));
            break;
        }
        if (got == 0) break;
        st = write_bytes(out, buf, got, tmp);
        if (st != MOE_OK) break;
        for (size_t i = got > 3 ? got - 3 : 0; i < got; i++) {
            tail[0] = tail[1];
            tail[1] = tail[2];
            tail[2] = buf[i];
        }
        total += got;
    }
    fclose(in);
    if (st != MOE_OK || total == 0) {
        *written += total;
        return st;
    }
    if (tail[2] != '\n') {
        st = write_bytes(out, "\n", 1, tmp);
        tail[0] = tail[1];
        tail[1] = tail[2];
        tail[2] = '\n';
        total++;
    }
    /* the last line is "%" when the text ends "\n%\n" or is exactly "%\n" */
    int closed = tail[1] == '%' && (tail[0] == '\n' || total == 2);
    if (st == MOE_OK && !closed) {
        st = write_bytes(out, "%\n", 2, tmp);
        total += 2;
    }
    *written += total;
    return st;
}

moe_status td_build_fortunes(const char *dir, const char *out_path, int *nfiles, uint64_t *nbytes) {
    if (!out_path) return moe_fail(MOE_ERR_INVALID_ARG, "td_build_fortunes: out_path is NULL");
    if (!dir) dir = TD_FORTUNES_DIR;
    char **names;
    int n;
    moe_status st = list_fortunes(dir, &names, &n);
    size_t tlen = strlen(out_path) + 32;
    char *tmp = st == MOE_OK ? malloc(tlen) : NULL;
    char *buf = st == MOE_OK ? malloc(TD_PASS_CHUNK) : NULL;
    FILE *out = NULL;
    uint64_t written = 0;
    if (st == MOE_OK && (!tmp || !buf)) st = moe_fail(MOE_ERR_NOMEM, "out of memory building %s", out_path);
    if (st == MOE_OK) {
        snprintf(tmp, tlen, "%s.tmp.%ld", out_path, (long)getpid());
        if (!(out = fopen(tmp, "wb"))) st = moe_fail(MOE_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    }
    for (int i = 0; i < n && st == MOE_OK; i++) {
        char *src = join_path(dir, names[i]);
        if (!src) st = moe_fail(MOE_ERR_NOMEM, "out of memory building %s", out_path);
        else st = append_fortune(out, src, tmp, buf, TD_PASS_CHUNK, &written);
        free(src);
    }
    if (out) {
        if (st == MOE_OK && (fflush(out) != 0 || fsync(fileno(out)) != 0))
            st = moe_fail(MOE_ERR_IO, "writing %s: %s", tmp, strerror(errno));
        if (fclose(out) != 0 && st == MOE_OK) st = moe_fail(MOE_ERR_IO, "closing %s: %s", tmp, strerror(errno));
        if (st == MOE_OK && rename(tmp, out_path) != 0)
            st = moe_fail(MOE_ERR_IO, "cannot rename %s to %s: %s", tmp, out_path, strerror(errno));
        if (st != MOE_OK) unlink(tmp);
    }
    if (st == MOE_OK) {
        if (nfiles) *nfiles = n;
        if (nbytes) *nbytes = written;
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    free(tmp);
    free(buf);
    return st;
}
