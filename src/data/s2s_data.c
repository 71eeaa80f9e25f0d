/* s2s_data.c - parallel text for the translation model: the Ding dictionary parser, user files,
 * the hash split, vocabularies and length-bucketed batches (see s2s_data.h). */
#include "base/internal.h"
#include "base/rng.h"
#include "data/s2s_data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef MOE_HAVE_ZLIB
#include <zlib.h>
#endif

void s2s_pairs_free(s2s_pairs *p) {
    if (!p) return;
    free(p->src);
    free(p->tgt);
    free(p->src_off);
    free(p->tgt_off);
    memset(p, 0, sizeof *p);
}

static int grow_bytes(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 1;
    size_t nc = *cap ? *cap : 4096;
    while (nc < need) nc *= 2;
    char *b = realloc(*buf, nc);
    if (!b) return 0;
    *buf = b;
    *cap = nc;
    return 1;
}

moe_status s2s_pairs_add(s2s_pairs *p, const char *s, size_t ls, const char *t, size_t lt) {
    if (p->n + 2 > (int)p->cap || !p->src_off) {
        size_t nc = p->cap ? p->cap * 2 : 1024;
        size_t *a = realloc(p->src_off, sizeof(size_t) * nc), *b = a ? realloc(p->tgt_off, sizeof(size_t) * nc) : NULL;
        if (a) p->src_off = a;
        if (!a || !b) return moe_fail(MOE_ERR_NOMEM, "out of memory reading sentence pairs");
        p->tgt_off = b;
        if (!p->cap) p->src_off[0] = p->tgt_off[0] = 0;
        p->cap = nc;
    }
    if (!grow_bytes(&p->src, &p->src_cap, p->src_bytes + ls + 1) || !grow_bytes(&p->tgt, &p->tgt_cap, p->tgt_bytes + lt + 1))
        return moe_fail(MOE_ERR_NOMEM, "out of memory reading sentence pairs");
    memcpy(p->src + p->src_bytes, s, ls);
    p->src[p->src_bytes + ls] = 0;
    memcpy(p->tgt + p->tgt_bytes, t, lt);
    p->tgt[p->tgt_bytes + lt] = 0;
    p->src_bytes += ls + 1;
    p->tgt_bytes += lt + 1;
    p->n++;
    p->src_off[p->n] = p->src_bytes;
    p->tgt_off[p->n] = p->tgt_bytes;
    return MOE_OK;
}

/* ---- the Ding dictionary ---------------------------------------------------------------------- */
static int b64v(int ch) {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    return -1;
}

/* dictd's index numbers: base64 digits, most significant first */
static int b64num(const char *s, size_t n, uint64_t *v) {
    *v = 0;
    if (n == 0 || n > 10) return 0;
    for (size_t i = 0; i < n; i++) {
        int x = b64v((unsigned char)s[i]);
        if (x < 0) return 0;
        *v = *v * 64 + (uint64_t)x;
    }
    return 1;
}

static moe_status slurp_gz(const char *path, char **out, size_t *len) {
#ifdef MOE_HAVE_ZLIB
    gzFile g = gzopen(path, "rb");
    if (!g) return moe_fail(MOE_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 24, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            gzclose(g);
            return moe_fail(MOE_ERR_NOMEM, "out of memory reading %s", path);
        }
        if (n + (1 << 20) > cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                buf = NULL;
                continue;
            }
            buf = b;
            cap *= 2;
        }
        int r = gzread(g, buf + n, 1 << 20);
        if (r < 0) {
            int e;
            const char *msg = gzerror(g, &e);
            moe_status st = moe_fail(MOE_ERR_FORMAT, "%s: not readable as gzip data (%s)", path, msg);
            free(buf);
            gzclose(g);
            return st;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    gzclose(g);
    *out = buf;
    *len = n;
    return MOE_OK;
#else
    (void)out;
    (void)len;
    return moe_fail(MOE_ERR_UNSUPPORTED, "%s is gzip-compressed and this build has no zlib", path);
#endif
}

static moe_status slurp(const char *path, char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return moe_fail(MOE_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        char *b = realloc(buf, cap * 2 + 1);
        if (!b) free(buf);
        buf = b;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf) return moe_fail(MOE_ERR_NOMEM, "out of memory reading %s", path);
    if (err) {
        free(buf);
        return moe_fail(MOE_ERR_IO, "cannot read %s", path);
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return MOE_OK;
}

/* Removes every bracketed span open..close (not nested) from s[0, n) in place; returns the new
 * length. An unclosed bracket keeps the rest. */
static size_t strip_spans(char *s, size_t n, char open, char close) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == open) {
            size_t j = i + 1;
            while (j < n && s[j] != close) j++;
            if (j < n) {
                i = j;
                continue;
            }
        }
        s[o++] = s[i];
    }
    return o;
}

/* trims and collapses runs of spaces */
static size_t squeeze(char *s, size_t n) {
    size_t o = 0;
    int sp = 1;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i] == '\t' ? ' ' : s[i];
        if (ch == ' ') {
            if (!sp) s[o++] = ' ';
            sp = 1;
        } else {
            s[o++] = ch;
            sp = 0;
        }
    }
    while (o > 0 && s[o - 1] == ' ') o--;
    return o;
}

static int count_words(const char *s, size_t n) {
    int w = 0, in = 0;
    for (size_t i = 0; i < n; i++) {
        int sp = s[i] == ' ';
        if (!sp && !in) w++;
        in = !sp;
    }
    return w;
}

/* The German side of a headword line: every IPA transcription " /.../" out (an alternative in
 * parentheses has its own: "drei Achtel /.../ (3/8 /.../)"), then grammar tags <...>, the
 * parenthesised alternatives and abbreviations, {...} and [...]. */
static size_t clean_headword(char *s, size_t n) {
    n = strip_spans(s, n, '<', '>');
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '/' && i > 0 && s[i - 1] == ' ') {
            const char *close = memchr(s + i + 1, '/', n - i - 1);
            if (close) {
                i = (size_t)(close - s);
                continue;
            }
        }
        s[o++] = s[i];
    }
    n = strip_spans(s, o, '(', ')');
    n = strip_spans(s, n, '{', '}');
    n = strip_spans(s, n, '[', ']');
    return squeeze(s, n);
}

/* The first English translation: annotations [...], <...>, {...} and optional parts (...) out,
 * then up to the first ',' or ';' */
static size_t clean_english(char *s, size_t n) {
    n = strip_spans(s, n, '[', ']');
    n = strip_spans(s, n, '(', ')');
    n = strip_spans(s, n, '<', '>');
    n = strip_spans(s, n, '{', '}');
    for (size_t i = 0; i < n; i++)
        if (s[i] == ',' || s[i] == ';') {
            n = i;
            break;
        }
    return squeeze(s, n);
}

moe_status s2s_read_ding(const char *dict, const char *index, int min_words, s2s_pairs *out) {
    if (!dict || !out) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    memset(out, 0, sizeof *out);
    char idx_path[4096];
    if (!index) {
        size_t L = strlen(dict);
        const char *suf = ".dict.dz";
        size_t ls = strlen(suf);
        if (L < ls || strcmp(dict + L - ls, suf) != 0 || L + 8 > sizeof idx_path)
            return moe_fail(MOE_ERR_INVALID_ARG, "%s: expected a dictd file named *.dict.dz (its index beside it)", dict);
        memcpy(idx_path, dict, L - ls);
        memcpy(idx_path + L - ls, ".index", 7);
        index = idx_path;
    }
    char *data = NULL, *ix = NULL;
    size_t dn = 0, xn = 0;
    moe_status st = slurp_gz(dict, &data, &dn);
    if (!st) st = slurp(index, &ix, &xn);
    if (st) {
        free(data);
        return st;
    }
    /* each distinct entry once: the index lists an entry under several headwords */
    size_t seen_cap = 1 << 20;
    uint64_t *seen = calloc(seen_cap, sizeof(uint64_t)); /* open addressing on offset+1 */
    char *line = malloc(1 << 16);
    if (!seen || !line) st = moe_fail(MOE_ERR_NOMEM, "out of memory");
    size_t pos = 0, nseen = 0;
    int lineno = 0;
    while (!st && pos < xn) {
        size_t e = pos;
        while (e < xn && ix[e] != '\n') e++;
        lineno++;
        const char *l = ix + pos;
        size_t ll = e - pos;
        pos = e + 1;
        const char *t1 = memchr(l, '\t', ll);
        const char *t2 = t1 ? memchr(t1 + 1, '\t', ll - (size_t)(t1 + 1 - l)) : NULL;
        uint64_t off, len;
        if (!t1 || !t2 || !b64num(t1 + 1, (size_t)(t2 - t1 - 1), &off) ||
            !b64num(t2 + 1, ll - (size_t)(t2 + 1 - l), &len) || off + len > dn) {
            st = moe_fail(MOE_ERR_FORMAT, "%s:%d: not a dictd index line (headword TAB offset TAB length)", index, lineno);
            break;
        }
        if (ll >= 2 && l[0] == '0' && l[1] == '0') continue; /* 00-database-* entries */
        if (nseen * 2 > seen_cap) {
            st = moe_fail(MOE_ERR_FORMAT, "%s: more than %zu entries", index, seen_cap / 2);
            break;
        }
        size_t h = (size_t)(rng_mix64(off) & (seen_cap - 1));
        int dup = 0;
        while (seen[h]) {
            if (seen[h] == off + 1) {
                dup = 1;
                break;
            }
            h = (h + 1) & (seen_cap - 1);
        }
        if (dup) continue;
        seen[h] = off + 1;
        nseen++;
        /* entry text: headword line, then the English line */
        const char *ent = data + off, *end = ent + len;
        const char *nl = memchr(ent, '\n', len);
        if (!nl || nl + 1 >= end) continue;
        const char *en = nl + 1, *enl = memchr(en, '\n', (size_t)(end - en));
        if (!enl) enl = end;
        size_t gl = (size_t)(nl - ent), el = (size_t)(enl - en);
        if (gl + el + 2 > (1 << 16)) continue;
        char *g = line, *eng = line + gl + 1;
        memcpy(g, ent, gl);
        memcpy(eng, en, el);
        gl = clean_headword(g, gl);
        el = clean_english(eng, el);
        if (gl == 0 || el == 0 || count_words(g, gl) < min_words) continue;
        st = s2s_pairs_add(out, g, gl, eng, el);
    }
    free(seen);
    free(line);
    free(data);
    free(ix);
    if (!st && out->n == 0) st = moe_fail(MOE_ERR_FORMAT, "%s: no entries with %d or more German words", dict, min_words);
    if (st) s2s_pairs_free(out);
    return st;
}

/* ---- user files --------------------------------------------------------------------------------- */
static int count_lines(const char *b, size_t n) {
    int c = 0;
    for (size_t i = 0; i < n; i++) c += b[i] == '\n';
    return c + (n > 0 && b[n - 1] != '\n');
}

moe_status s2s_read_parallel(const char *src, const char *tgt, s2s_pairs *out) {
    if (!src || !tgt || !out) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    memset(out, 0, sizeof *out);
    char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    moe_status st = slurp(src, &a, &na);
    if (!st) st = slurp(tgt, &b, &nb);
    if (!st) {
        int la = count_lines(a, na), lb = count_lines(b, nb);
        if (la != lb)
            st = moe_fail(MOE_ERR_FORMAT, "%s has %d lines but %s has %d: the files must pair line by line", src, la, tgt, lb);
        else if (la == 0)
            st = moe_fail(MOE_ERR_FORMAT, "%s and %s are empty", src, tgt);
    }
    size_t pa = 0, pb = 0;
    for (int line = 1; !st && pa < na; line++) {
        size_t ea = pa, eb = pb;
        while (ea < na && a[ea] != '\n') ea++;
        while (eb < nb && b[eb] != '\n') eb++;
        size_t la = ea - pa, lb = eb - pb;
        if (la && a[pa + la - 1] == '\r') la--;
        if (lb && b[pb + lb - 1] == '\r') lb--;
        size_t ca = squeeze(a + pa, la), cb = squeeze(b + pb, lb);
        if (ca == 0 || cb == 0)
            st = moe_fail(MOE_ERR_FORMAT, "%s:%d is empty: every line needs a sentence on both sides", ca ? tgt : src, line);
        else
            st = s2s_pairs_add(out, a + pa, ca, b + pb, cb);
        pa = ea + 1;
        pb = eb + 1;
    }
    free(a);
    free(b);
    if (st) s2s_pairs_free(out);
    return st;
}

int s2s_split_of(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    const int r = (int)(rng_mix64(h) % 100);
    return r < 90 ? 0 : (r < 95 ? 1 : 2);
}

/* ---- vocabularies and encoding ------------------------------------------------------------------ */
moe_status s2s_build_vocab(const s2s_pairs *p, int side, int min_count, int max_vocab, tok **out) {
    tok_config tc = tok_config_default(TOK_WORDS);
    tc.lowercase = 1;
    tc.min_count = min_count;
    tc.max_vocab = max_vocab;
    tok_builder *b = NULL;
    moe_status st = tok_builder_create(&b, &tc);
    for (int i = 0; i < p->n && !st; i++) {
        const char *s = side ? p->tgt + p->tgt_off[i] : p->src + p->src_off[i];
        if (s2s_split_of(p->src + p->src_off[i]) != 0) continue;
        st = tok_builder_add(b, s, strlen(s), 1);
    }
    if (!st) st = tok_builder_finish(b, out);
    tok_builder_free(b);
    return st;
}

void s2s_data_free(s2s_data *d) {
    if (!d) return;
    free(d->src_ids);
    free(d->tgt_ids);
    free(d->src_off);
    free(d->tgt_off);
    free(d->split);
    memset(d, 0, sizeof *d);
}

moe_status s2s_data_encode(const s2s_pairs *p, const tok *ts, const tok *tt, int max_words, int drop_long,
                           s2s_data *out) {
    memset(out, 0, sizeof *out);
    const size_t n = (size_t)p->n;
    out->src_ids = malloc(sizeof(int32_t) * (p->src_bytes + n + 1));
    out->tgt_ids = malloc(sizeof(int32_t) * (p->tgt_bytes + 2 * n + 1));
    out->src_off = malloc(sizeof(int64_t) * (n + 1));
    out->tgt_off = malloc(sizeof(int64_t) * (n + 1));
    out->split = malloc(n + 1);
    int32_t *buf = malloc(sizeof(int32_t) * TOK_ENCODE_MAX(65536));
    moe_status st = MOE_OK;
    if (!out->src_ids || !out->tgt_ids || !out->src_off || !out->tgt_off || !out->split || !buf)
        st = moe_fail(MOE_ERR_NOMEM, "out of memory encoding %d pairs", p->n);
    int64_t ns = 0, nt = 0;
    uint64_t h = 0x5132;
    if (!st) out->src_off[0] = out->tgt_off[0] = 0;
    for (size_t i = 0; i < n && !st; i++) {
        const char *s = p->src + p->src_off[i], *t = p->tgt + p->tgt_off[i];
        const size_t ls = strlen(s), lt = strlen(t);
        if (ls > 65536 || lt > 65536) {
            if (drop_long) {
                out->dropped_long++;
                continue;
            }
            st = moe_fail(MOE_ERR_FORMAT, "pair %zu has a line of over 64 KiB", i + 1);
            break;
        }
        size_t a = tok_encode(ts, NULL, s, ls, 1, buf);
        size_t b = tok_encode(tt, NULL, t, lt, 1, buf + a);
        if (a == 0 || b == 0 || (int)a > max_words || (int)b > max_words) {
            if (drop_long || a == 0 || b == 0) {
                out->dropped_long++;
                continue;
            }
            st = moe_fail(MOE_ERR_FORMAT, "pair %zu has %zu source and %zu target words, more than --max-words %d: raise it or shorten the line",
                          i + 1, a, b, max_words);
            break;
        }
        const int k = out->n++;
        memcpy(out->src_ids + ns, buf, sizeof(int32_t) * a);
        memcpy(out->tgt_ids + nt, buf + a, sizeof(int32_t) * b);
        out->tgt_ids[nt + (int64_t)b] = TOK_NEWLINE;
        ns += (int64_t)a;
        nt += (int64_t)b + 1;
        out->src_off[k + 1] = ns;
        out->tgt_off[k + 1] = nt;
        out->split[k] = (uint8_t)s2s_split_of(s);
        if ((int)a > out->max_src) out->max_src = (int)a;
        if ((int)b + 1 > out->max_tgt) out->max_tgt = (int)b + 1;
        for (size_t j = 0; j < a; j++) h = rng_mix64(h ^ (uint64_t)(uint32_t)buf[j]);
        h = rng_mix64(h ^ 0xabcdefULL);
        for (size_t j = 0; j < b; j++) h = rng_mix64(h ^ (uint64_t)(uint32_t)buf[a + j]);
        h = rng_mix64(h ^ (uint64_t)out->split[k]);
    }
    free(buf);
    out->hash = h;
    if (!st && out->n == 0) st = moe_fail(MOE_ERR_FORMAT, "no sentence pairs left after tokenising (all empty or longer than %d words)", max_words);
    if (st) s2s_data_free(out);
    return st;
}

/* ---- batches ------------------------------------------------------------------------------------ */
void s2s_batches_free(s2s_batches *b) {
    if (!b) return;
    free(b->idx);
    free(b->start);
    memset(b, 0, sizeof *b);
}

static void shuffle_ints(int *a, int n, uint64_t key, uint64_t ctr) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng_u64_key(key, ctr + (uint64_t)i) % (uint64_t)(i + 1));
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

moe_status s2s_make_batches(const s2s_data *d, int split, int B, int shuffle, uint64_t seed, uint64_t epoch,
                            s2s_batches *out) {
    memset(out, 0, sizeof *out);
    if (B < 1) return moe_fail(MOE_ERR_CONFIG, "batch size %d must be >= 1", B);
    int n = 0;
    for (int i = 0; i < d->n; i++) n += d->split[i] == split;
    const int L = d->max_src + 1;
    int *cnt = calloc((size_t)L + 1, sizeof(int));
    out->idx = malloc(sizeof(int) * (size_t)(n + 1));
    out->start = malloc(sizeof(int) * (size_t)(n + L + 2));
    int *bidx = malloc(sizeof(int) * (size_t)(n + L + 2));
    if (!cnt || !out->idx || !out->start || !bidx) {
        free(cnt);
        free(bidx);
        s2s_batches_free(out);
        return moe_fail(MOE_ERR_NOMEM, "out of memory for batches");
    }
    /* counting sort by source length, then in-order within a length */
    for (int i = 0; i < d->n; i++)
        if (d->split[i] == split) cnt[d->src_off[i + 1] - d->src_off[i]]++;
    int *first = calloc((size_t)L + 1, sizeof(int));
    if (!first) {
        free(cnt);
        free(bidx);
        s2s_batches_free(out);
        return moe_fail(MOE_ERR_NOMEM, "out of memory for batches");
    }
    for (int l = 1; l <= L; l++) first[l] = first[l - 1] + cnt[l - 1];
    for (int i = 0; i < d->n; i++) /* cnt becomes the fill pointer, then is restored */
        if (d->split[i] == split) {
            const int64_t l = d->src_off[i + 1] - d->src_off[i];
            out->idx[first[l] + --cnt[l]] = i;
        }
    for (int i = 0; i < d->n; i++)
        if (d->split[i] == split) cnt[d->src_off[i + 1] - d->src_off[i]]++;
    for (int l = 0; l < L; l++) /* filled back to front: put each length in data order */
        for (int a = first[l], z = first[l] + cnt[l] - 1; a < z; a++, z--) {
            int t = out->idx[a];
            out->idx[a] = out->idx[z];
            out->idx[z] = t;
        }
    const uint64_t key = rng_key(seed ^ 0x62617463ULL);
    int nb = 0;
    int *tmp = malloc(sizeof(int) * (size_t)(n + 1)), *len = malloc(sizeof(int) * (size_t)(n + L + 2));
    if (!tmp || !len) {
        free(tmp);
        free(len);
        free(cnt);
        free(first);
        free(bidx);
        s2s_batches_free(out);
        return moe_fail(MOE_ERR_NOMEM, "out of memory for batches");
    }
    for (int l = 0; l < L; l++) {
        if (!cnt[l]) continue;
        if (shuffle) shuffle_ints(out->idx + first[l], cnt[l], key, (epoch * 1024 + (uint64_t)l) << 32);
        for (int o = 0; o < cnt[l]; o += B) {
            bidx[nb] = first[l] + o;
            len[nb++] = cnt[l] - o < B ? cnt[l] - o : B;
        }
    }
    int *perm = malloc(sizeof(int) * (size_t)(nb + 1));
    for (int j = 0; perm && j < nb; j++) perm[j] = j;
    if (perm && shuffle) shuffle_ints(perm, nb, key, (epoch * 1024 + 1023) << 32);
    int o = 0;
    for (int j = 0; perm && j < nb; j++) {
        out->start[j] = o;
        memcpy(tmp + o, out->idx + bidx[perm[j]], sizeof(int) * (size_t)len[perm[j]]);
        o += len[perm[j]];
    }
    out->start[nb] = o;
    if (perm) memcpy(out->idx, tmp, sizeof(int) * (size_t)n);
    out->nbatch = nb;
    free(perm);
    free(tmp);
    free(len);
    free(cnt);
    free(first);
    free(bidx);
    if (!perm) {
        s2s_batches_free(out);
        return moe_fail(MOE_ERR_NOMEM, "out of memory for batches");
    }
    return MOE_OK;
}
