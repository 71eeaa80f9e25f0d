/* test_textdata.c - the tokenizers (src/data/tokenizer.c) and the streaming text source
 * (src/data/textdata.c) on small files written into a fresh mkdtemp directory:
 *   - byte tokenizer: exact round trip of all 256 byte values;
 *   - word tokenizer: the cutting rule, <unk> for rare/unseen/over-long words, max_vocab with ties
 *     broken by bytes, lowercasing, decode spacing, chunking (1-byte chunks give the same ids);
 *   - a vocabulary streamed from a file in tiny chunks equals the one from the same bytes in one
 *     buffer (also for a byte range);
 *   - the text form: round trip with odd bytes, and a list of malformed strings rejected;
 *   - td_open: missing / directory / empty / NUL / non-UTF-8 files refused, a few bad bytes allowed;
 *   - the split: blocks tile the file and end at newlines, the documented rule reproduced here,
 *     every group of 20 has one valid and one test block, identical on reopening, token counts
 *     of the splits add up to the whole file's;
 *   - the iterator: every token of every batch checked against the split's sequence built here,
 *     across wrap-around, for words and bytes; the overlap of consecutive calls; save/restore of
 *     the position into the same and a fresh iterator; mismatched positions refused; a file that
 *     shrinks under an iterator;
 *   - the fortunes corpus builder on a fake directory (and on the real one if installed).
 */
#define _XOPEN_SOURCE 700

#include "data/textdata.h"
#include "data/tokenizer.h"
#include "testutil.h"

#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64];

static char *path_in(const char *name) {
    static char buf[8][256];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static const char *write_file(const char *name, const char *data, size_t len) {
    const char *p = path_in(name);
    FILE *fp = fopen(p, "wb");
    if (!fp || (len && fwrite(data, 1, len, fp) != len) || fclose(fp) != 0) {
        fprintf(stderr, "cannot write %s\n", p);
        exit(2);
    }
    return p;
}

static char *read_all(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    *len = fread(s, 1, (size_t)n, fp);
    s[*len] = '\0';
    fclose(fp);
    return s;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

/* Deterministic English-like text: a skewed choice of words (ASCII, UTF-8, with apostrophes and
 * capitals), punctuation, quotes, tabs, newlines and blank lines, and now and then a word longer
 * than TOK_MAX_WORD. */
static char *gen_text(uint64_t seed, size_t target, size_t *len) {
    static const char *words[] = {"the", "a", "cat", "dog", "sat", "on", "mat", "don't", "it's", "The",
                                  "café", "naïve", "Über", "run", "ran", "42", "x1", "Dog", "zebra",
                                  "quick", "brown", "fox", "jumps", "over", "lazy", "rare1", "rare2", "émigré"};
    const int nw = (int)(sizeof words / sizeof *words);
    size_t cap = target + 256, n = 0;
    char *s = malloc(cap);
    for (uint64_t i = 0; n < target; i++) {
        uint64_t r = t_mix(seed * 1000003ULL + i);
        int w = (int)((r % (uint64_t)nw) * ((r >> 20) % (uint64_t)nw) / (uint64_t)nw);
        int q = (int)((r >> 40) % 100);
        const char *word = words[w];
        if (q == 0) {
            for (int j = 0; j < TOK_MAX_WORD + 6; j++) s[n++] = 'L';
        } else if (q == 1) {
            n += (size_t)sprintf(s + n, "'%s'", word);
        } else if (q == 2) {
            n += (size_t)sprintf(s + n, "(%s)", word);
        } else {
            n += (size_t)sprintf(s + n, "%s", word);
        }
        int sep = (int)((r >> 50) % 40);
        const char *sp = sep < 3 ? ", " : sep < 5 ? ". " : sep == 5 ? "!\n" : sep == 6 ? "\n\n" : sep < 10 ? "\n"
                       : sep == 10 ? "\t" : sep == 11 ? " \"" : " ";
        n += (size_t)sprintf(s + n, "%s", sp);
    }
    s[n++] = '\n';
    s[n] = '\0';
    *len = n;
    return s;
}

/* ---------------------------------------------------------------------------------------------- */

static void test_bytes_tokenizer(void) {
    tok *t = NULL;
    CHECK(tok_create_bytes(&t) == MOE_OK, "tok_create_bytes");
    CHECK(tok_vocab_size(t) == 256 && tok_get_kind(t) == TOK_BYTES, "byte vocab %d", (int)tok_vocab_size(t));
    char text[300];
    for (int i = 0; i < 300; i++) text[i] = (char)(unsigned char)((i * 7 + 3) % 256);
    int32_t ids[300 + TOK_MAX_WORD + 1];
    size_t n = tok_encode(t, NULL, text, 300, 1, ids);
    int ok = n == 300;
    for (size_t i = 0; i < n && ok; i++) ok = ids[i] == (int32_t)(unsigned char)text[i];
    CHECK(ok, "byte ids are the byte values (n=%zu)", n);
    char *back = NULL;
    size_t blen = 0;
    CHECK(tok_decode(t, ids, n, &back, &blen) == MOE_OK && blen == 300 && memcmp(back, text, 300) == 0,
          "byte decode is exact, NUL bytes included");
    free(back);
    int inv = 1;
    for (int32_t id = 0; id < 256 && inv; id++) {
        size_t len;
        const char *p = tok_piece(t, id, &len);
        inv = p && len == 1 && tok_lookup(t, p, len) == id && !tok_space_before(t, id ? id - 1 : 0, id);
    }
    CHECK(inv, "byte pieces: lookup(piece(id)) == id, no spaces");
    int32_t bad = 256;
    CHECK(tok_decode(t, &bad, 1, &back, &blen) == MOE_ERR_INVALID_ARG, "id 256 refused");
    tok_free(t);
    tok_free(NULL);
    tok_builder_free(NULL);
}

static size_t enc_all(const tok *t, const char *s, size_t len, int32_t *out) {
    tok_carry c = {0};
    return tok_encode(t, &c, s, len, 1, out);
}

static int ids_are(const tok *t, const char *text, const char *const *expect, int n) {
    int32_t ids[256];
    size_t got = enc_all(t, text, strlen(text), ids);
    if ((int)got != n) {
        fprintf(stderr, "  \"%s\": %zu tokens, expected %d\n", text, got, n);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        int32_t want = expect[i] ? tok_lookup(t, expect[i], strlen(expect[i])) : TOK_UNK;
        if (ids[i] != want || (expect[i] && want < 0)) {
            fprintf(stderr, "  \"%s\": token %d is %d, expected %d (%s)\n", text, i, (int)ids[i], (int)want,
                    expect[i] ? expect[i] : "<unk>");
            return 0;
        }
    }
    return 1;
}

static void test_words_tokenizer(void) {
    const char *train = "Hello, world! Don't 'quote' me.\nhello world (x) world\tcafé café x \n"
                        "b a c b a c d";
    tok_config cfg = tok_config_default(TOK_WORDS);
    cfg.min_count = 1;
    cfg.max_vocab = 0;
    tok *t = NULL;
    CHECK(tok_build_from_buffer(&t, &cfg, train, strlen(train)) == MOE_OK, "build words: %s", moe_last_error());
    if (!t) return;
    CHECK(tok_lookup(t, "<unk>", 5) == TOK_UNK && tok_lookup(t, "\n", 1) == TOK_NEWLINE, "reserved ids");
    {
        const char *e[] = {"Don't", "'", "quote", "'", "me", "."};
        CHECK(ids_are(t, "Don't 'quote' me.", e, 6), "apostrophes: inside words kept, at the ends split off");
    }
    {
        const char *e[] = {"Hello", ",", "\n", "world", "(", "x", ")", "\n", "café", NULL, NULL};
        CHECK(ids_are(t, "Hello,\n  world\t(x)\r\ncafé unseen zzz", e, 11),
              "punctuation, newline, spaces, UTF-8, unk");
    }
    {
        char longw[TOK_MAX_WORD + 20];
        memset(longw, 'a', sizeof longw);
        snprintf(longw + TOK_MAX_WORD + 1, 19, " world");
        const char *e[] = {NULL, "world"};
        CHECK(ids_are(t, longw, e, 2), "a run of TOK_MAX_WORD+1 bytes is one <unk>");
    }
    /* frequency order with ties by bytes: counts world 3, a/b/c 2 ... */
    size_t len;
    const char *p2 = tok_piece(t, 2, &len);
    CHECK(p2 && len == 5 && memcmp(p2, "world", 5) == 0, "id 2 is the most frequent word");
    int32_t ia = tok_lookup(t, "a", 1), ib = tok_lookup(t, "b", 1), ic = tok_lookup(t, "c", 1);
    CHECK(ia >= 2 && ia + 1 == ib && ib + 1 == ic, "ties by bytes: a=%d b=%d c=%d", (int)ia, (int)ib, (int)ic);
    int inv = 1;
    for (int32_t id = 0; id < tok_vocab_size(t) && inv; id++) {
        const char *p = tok_piece(t, id, &len);
        inv = p && tok_lookup(t, p, len) == id;
    }
    CHECK(inv, "lookup(piece(id)) == id for every word id");
    CHECK(tok_piece(t, tok_vocab_size(t), &len) == NULL && len == 0, "piece beyond the vocabulary is NULL");

    /* chunking: one byte at a time, or any split point, gives the same ids */
    const char *txt = "Don't stop 'quoting' café-naïve words\nacross  chunk boundaries.";
    size_t tl = strlen(txt);
    int32_t whole[128], part[128 + TOK_MAX_WORD + 1];
    size_t nw = enc_all(t, txt, tl, whole), np = 0;
    tok_carry c = {0};
    for (size_t i = 0; i < tl; i++) np += tok_encode(t, &c, txt + i, 1, 0, part + np);
    np += tok_encode(t, &c, NULL, 0, 1, part + np);
    CHECK(np == nw && memcmp(part, whole, nw * sizeof *whole) == 0, "1-byte chunks: %zu vs %zu ids", np, nw);
    CHECK(tok_encode(t, NULL, txt, tl, 0, part) == nw && memcmp(part, whole, nw * sizeof *whole) == 0,
          "carry NULL encodes a whole text");
    int same = 1;
    for (size_t cut = 0; cut <= tl && same; cut++) {
        tok_carry c2 = {0};
        size_t k = tok_encode(t, &c2, txt, cut, 0, part);
        k += tok_encode(t, &c2, txt + cut, tl - cut, 1, part + k);
        same = k == nw && memcmp(part, whole, nw * sizeof *whole) == 0;
    }
    CHECK(same, "every single cut gives the same ids");

    /* decode spacing */
    const char *dtxt = "hello , world !\nfoo ( bar ) zzz .";
    int32_t ids[64];
    size_t n = enc_all(t, dtxt, strlen(dtxt), ids);
    char *out = NULL;
    CHECK(tok_decode(t, ids, n, &out, &len) == MOE_OK && strcmp(out, "hello, world!\n<unk> (<unk>) <unk>.") == 0 &&
              len == strlen(out),
          "decode spacing: \"%s\"", out ? out : "(null)");
    free(out);
    int32_t bad = -1;
    out = NULL;
    CHECK(tok_decode(t, &bad, 1, &out, NULL) == MOE_ERR_INVALID_ARG && out == NULL, "negative id refused");
    tok_free(t);

    /* max_vocab keeps the most frequent, ties by bytes; min_count drops rare words */
    const char *tie = "b a c b a c d";
    cfg.max_vocab = 4;
    CHECK(tok_build_from_buffer(&t, &cfg, tie, strlen(tie)) == MOE_OK && tok_vocab_size(t) == 4, "max_vocab 4");
    {
        const char *e[] = {"a", "b", NULL, NULL};
        CHECK(ids_are(t, "a b c d", e, 4), "max_vocab: a, b kept (tie with c broken by bytes); c, d -> <unk>");
    }
    tok_free(t);
    cfg.max_vocab = 0;
    cfg.min_count = 2;
    CHECK(tok_build_from_buffer(&t, &cfg, tie, strlen(tie)) == MOE_OK && tok_vocab_size(t) == 5, "min_count 2");
    {
        const char *e[] = {"a", "b", "c", NULL};
        CHECK(ids_are(t, "a b c d", e, 4), "min_count: d (seen once) -> <unk>");
    }
    tok_free(t);
    cfg.min_count = 1;
    cfg.lowercase = 1;
    const char *up = "The the THE tHe Café";
    CHECK(tok_build_from_buffer(&t, &cfg, up, strlen(up)) == MOE_OK && tok_vocab_size(t) == 4, "lowercase vocab");
    {
        const char *e[] = {"the", "the", "café"};
        CHECK(ids_are(t, "THE tHE CAFé", e, 3), "lowercase folds ASCII only");
    }
    tok_free(t);

    /* bad configs */
    tok_builder *b = NULL;
    cfg = tok_config_default(TOK_WORDS);
    cfg.min_count = 0;
    CHECK(tok_builder_create(&b, &cfg) == MOE_ERR_CONFIG && b == NULL, "min_count 0 refused");
    cfg = tok_config_default(TOK_WORDS);
    cfg.max_vocab = 1;
    CHECK(tok_builder_create(&b, &cfg) == MOE_ERR_CONFIG, "max_vocab 1 refused");
    cfg = tok_config_default((tok_kind)7);
    CHECK(tok_builder_create(&b, &cfg) == MOE_ERR_CONFIG, "unknown kind refused");
}

static char *ser(const tok *t) {
    char *s = NULL;
    if (tok_serialize(t, &s) != MOE_OK) return NULL;
    return s;
}

static void test_vocab_from_file(void) {
    size_t len;
    char *text = gen_text(11, 20000, &len);
    const char *path = write_file("vocab.txt", text, len);
    for (int lower = 0; lower <= 1; lower++) {
        tok_config cfg = tok_config_default(TOK_WORDS);
        cfg.lowercase = lower;
        cfg.max_vocab = 20;
        tok *a = NULL, *b = NULL, *c = NULL, *d = NULL;
        CHECK(tok_build_from_buffer(&a, &cfg, text, len) == MOE_OK, "from buffer");
        CHECK(tok_build_from_file(&b, &cfg, path, 0, UINT64_MAX, 7) == MOE_OK, "from file, 7-byte chunks: %s",
              moe_last_error());
        CHECK(tok_build_from_file(&c, &cfg, path, 0, UINT64_MAX, 0) == MOE_OK, "from file, default chunks");
        char *sa = a ? ser(a) : NULL, *sb = b ? ser(b) : NULL, *sc = c ? ser(c) : NULL;
        CHECK(sa && sb && strcmp(sa, sb) == 0, "lower=%d: 7-byte chunks give the buffer's vocabulary", lower);
        CHECK(sa && sc && strcmp(sa, sc) == 0, "lower=%d: 1 MiB chunks give the buffer's vocabulary", lower);
        CHECK(a && tok_vocab_size(a) == 20, "max_vocab reached on generated text");
        /* a byte range, cut mid-word on both sides */
        CHECK(tok_build_from_file(&d, &cfg, path, 1001, 7003, 5) == MOE_OK, "from a file range");
        tok *e = NULL;
        tok_build_from_buffer(&e, &cfg, text + 1001, 7003);
        char *sd = d ? ser(d) : NULL, *se = e ? ser(e) : NULL;
        CHECK(sd && se && strcmp(sd, se) == 0, "lower=%d: a file range equals the same bytes in a buffer", lower);
        free(sa), free(sb), free(sc), free(sd), free(se);
        tok_free(a), tok_free(b), tok_free(c), tok_free(d), tok_free(e);
    }
    /* a different chunk size mid-word really changes nothing, but a different text does */
    tok_config cfg = tok_config_default(TOK_WORDS);
    tok *x = NULL;
    CHECK(tok_build_from_file(&x, &cfg, path, 0, 10, 3) == MOE_OK && x && tok_vocab_size(x) == 2,
          "10 bytes, min_count 2: only the reserved ids");
    tok_free(x);
    x = NULL;
    CHECK(tok_build_from_file(&x, &cfg, path, len - 5, 10, 3) == MOE_ERR_IO && x == NULL, "range past the end");
    CHECK(tok_build_from_file(&x, &cfg, path, len + 1, UINT64_MAX, 3) == MOE_ERR_IO, "offset past the end");
    CHECK(tok_build_from_file(&x, &cfg, path_in("nope.txt"), 0, UINT64_MAX, 3) == MOE_ERR_IO, "missing file");
    free(text);
}

static void test_serialize(void) {
    /* words with every kind of odd byte: controls, DEL, '%', 0xff, a NUL byte */
    static const char odd[] = "ab%cd \x01 \x7f \xff\xfe \x80x ab%cd \x01 \x7f \xff\xfe \x80x \0 \0 "
                              "Zz Zz % % 100% 100% it's it's '' ''";
    tok_config cfg = tok_config_default(TOK_WORDS);
    cfg.min_count = 1;
    tok *t = NULL, *u = NULL;
    CHECK(tok_build_from_buffer(&t, &cfg, odd, sizeof odd - 1) == MOE_OK, "odd vocabulary");
    char *s = t ? ser(t) : NULL, *s2 = NULL;
    int ascii = s != NULL;
    for (const char *p = s; p && *p && ascii; p++) ascii = *p >= 0x20 && *p <= 0x7e;
    CHECK(ascii, "the text form is printable ASCII: %s", s ? s : "(null)");
    CHECK(s && tok_parse(&u, s) == MOE_OK, "parse back: %s", moe_last_error());
    if (u) s2 = ser(u);
    CHECK(s && s2 && strcmp(s, s2) == 0, "serialize(parse(s)) == s");
    int same = t && u && tok_vocab_size(t) == tok_vocab_size(u) && tok_lowercase(t) == tok_lowercase(u);
    for (int32_t id = 0; same && id < tok_vocab_size(t); id++) {
        size_t la, lb;
        const char *pa = tok_piece(t, id, &la), *pb = tok_piece(u, id, &lb);
        same = la == lb && memcmp(pa, pb, la) == 0;
    }
    CHECK(same, "every piece survives the round trip byte for byte");
    CHECK(t && tok_lookup(t, "\0", 1) >= 2 && tok_lookup(t, "\xff\xfe", 2) >= 2 && tok_lookup(t, "%", 1) >= 2,
          "NUL, 0xff 0xfe and %% are pieces");
    int32_t ia[64], ib[64];
    size_t na = t ? enc_all(t, odd, sizeof odd - 1, ia) : 0, nb = u ? enc_all(u, odd, sizeof odd - 1, ib) : 1;
    CHECK(na == nb && memcmp(ia, ib, na * sizeof *ia) == 0, "parsed tokenizer encodes identically");
    free(s), free(s2);
    tok_free(t), tok_free(u);

    tok *bt = NULL, *bu = NULL;
    tok_create_bytes(&bt);
    s = bt ? ser(bt) : NULL;
    CHECK(s && strcmp(s, "moe-tokenizer 1 bytes") == 0 && tok_parse(&bu, s) == MOE_OK && bu &&
              tok_get_kind(bu) == TOK_BYTES,
          "bytes round trip");
    free(s);
    tok_free(bt), tok_free(bu);

    const char *good = "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the %25 don't";
    u = NULL;
    CHECK(tok_parse(&u, good) == MOE_OK && u && tok_vocab_size(u) == 5 && tok_lookup(u, "%", 1) == 3,
          "the base string parses: %s", moe_last_error());
    tok_free(u);
    static const char *bad[] = {
        "",
        "moe-tokenizer 2 bytes",
        "moe-tokenizer 1 bytes ",
        "moe-tokenizer 1 chars",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=6 the %25 don't",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=4 the %25 don't",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the %25 don't ",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the  don't",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the the don't",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the %e9 don't",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the %2 don't",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the %zz don't",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the %41 don't",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the %2C don't",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the \x80 don't",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the , %0A",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the , %20",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the , a.b",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the , 'tis",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the , <unk>",
        "moe-tokenizer 1 words lowercase=1 min_count=2 max_vocab=10 size=5 the , The",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=10 size=5 the , "
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "moe-tokenizer 1 words lowercase=2 min_count=2 max_vocab=10 size=5 the %25 don't",
        "moe-tokenizer 1 words lowercase=0 min_count=0 max_vocab=10 size=5 the %25 don't",
        "moe-tokenizer 1 words lowercase=0 min_count=-1 max_vocab=10 size=5 the %25 don't",
        "moe-tokenizer 1 words lowercase=0 min_count=02 max_vocab=10 size=5 the %25 don't",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=1 size=5 the %25 don't",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=4 size=5 the %25 don't",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=0 size=999999999 the %25 don't",
        "moe-tokenizer 1 words lowercase=0 min_count=2 max_vocab=0 size=99999999999 the %25 don't",
        "moe-tokenizer 1 words lowercase=0  min_count=2 max_vocab=10 size=5 the %25 don't",
        "moe-tokenizer 1 words min_count=2 lowercase=0 max_vocab=10 size=5 the %25 don't",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        u = NULL;
        moe_status st = tok_parse(&u, bad[i]);
        CHECK(st == MOE_ERR_FORMAT && u == NULL && moe_last_error()[0] != '\0', "malformed #%zu accepted (%d): %s",
              i, (int)st, bad[i]);
        tok_free(u);
    }
}

/* ---------------------------------------------------------------------------------------------- */

static void test_open_errors(void) {
    td_file *f = NULL;
    CHECK(td_open(&f, path_in("missing.txt"), 0) == MOE_ERR_IO && f == NULL, "missing file -> MOE_ERR_IO");
    CHECK(td_open(&f, g_dir, 0) == MOE_ERR_IO && f == NULL, "a directory -> MOE_ERR_IO");
    CHECK(td_open(&f, write_file("empty.txt", "", 0), 0) == MOE_ERR_FORMAT && strstr(moe_last_error(), "empty"),
          "empty file -> MOE_ERR_FORMAT (%s)", moe_last_error());
    static const char nul[] = "looks like text\0but is not";
    CHECK(td_open(&f, write_file("nul.bin", nul, sizeof nul), 0) == MOE_ERR_FORMAT &&
              strstr(moe_last_error(), "UTF-8"),
          "NUL byte -> MOE_ERR_FORMAT (%s)", moe_last_error());
    char bin[4000];
    for (int i = 0; i < 4000; i++) bin[i] = (char)(unsigned char)(0x80 + (t_mix((uint64_t)i) % 0x7f));
    CHECK(td_open(&f, write_file("hi.bin", bin, sizeof bin), 0) == MOE_ERR_FORMAT &&
              strstr(moe_last_error(), "UTF-8"),
          "high bytes without NUL -> MOE_ERR_FORMAT (%s)", moe_last_error());
    /* Latin-1 text: one bad byte in 30 is over the 1%% tolerance; two in 4000 are under it */
    char lat[4000];
    for (int i = 0; i < 4000; i++) lat[i] = (i % 30 == 29) ? (char)0xe9 : (i % 7 == 6 ? ' ' : 'a');
    CHECK(td_open(&f, write_file("latin1.txt", lat, sizeof lat), 0) == MOE_ERR_FORMAT, "Latin-1 text refused");
    for (int i = 0; i < 4000; i++) lat[i] = (i == 100 || i == 3000) ? (char)0xe9 : (i % 7 == 6 ? '\n' : 'a');
    CHECK(td_open(&f, write_file("fewbad.txt", lat, sizeof lat), 0) == MOE_OK && f, "two stray bytes tolerated: %s",
          moe_last_error());
    td_free(f);
    f = NULL;
    static const char ovl[] = "overlong \xc0\xaf and surrogate \xed\xa0\x80 x";
    CHECK(td_open(&f, write_file("ovl.txt", ovl, sizeof ovl - 1), 0) == MOE_ERR_FORMAT,
          "overlong/surrogate count as invalid");
    static const char utf[] = "grüße, café, 日本語, emoji \xf0\x9f\x98\x80\n";
    CHECK(td_open(&f, write_file("utf.txt", utf, sizeof utf - 1), 0) == MOE_OK, "valid UTF-8 accepted");
    td_free(f);
    f = NULL;
    static const char cut[] = "ends in a cut sequence \xe6\x97";
    CHECK(td_open(&f, write_file("cut.txt", cut, sizeof cut - 1), 0) == MOE_OK,
          "one cut sequence at the end tolerated");
    td_free(f);
    td_free(NULL);
    td_iter_free(NULL);
}

/* The split's token sequence, built here from td_block + tok_encode, block by block. */
static int32_t *split_seq(const td_file *f, const char *text, const tok *t, td_split s, size_t *n) {
    td_info in = td_get_info(f);
    int32_t *seq = malloc((in.size + TOK_MAX_WORD + 1) * sizeof *seq);
    *n = 0;
    for (int64_t i = 0; i < in.nblocks; i++) {
        uint64_t off, len;
        td_split sp;
        td_block(f, i, &off, &len, &sp);
        if (sp != s) continue;
        tok_carry c = {0};
        *n += tok_encode(t, &c, text + off, (size_t)len, 1, seq + *n);
    }
    return seq;
}

static td_split expected_split(int64_t i) {
    uint64_t g = (uint64_t)i / 20, pos = (uint64_t)i % 20;
    uint64_t v = moe_rng_u64(TD_SPLIT_SEED, 2 * g) % 20, t = moe_rng_u64(TD_SPLIT_SEED, 2 * g + 1) % 19;
    if (t >= v) t++;
    return pos == v ? TD_VALID : pos == t ? TD_TEST : TD_TRAIN;
}

static void test_split(void) {
    size_t len;
    char *text = gen_text(5, 40000, &len);
    const char *path = write_file("split.txt", text, len);
    td_file *f = NULL, *g = NULL;
    CHECK(td_open(&f, path, 0) == MOE_OK && f, "open: %s", moe_last_error());
    CHECK(td_open(&g, path, 0) == MOE_OK && g, "reopen");
    if (!f || !g) return;
    td_info in = td_get_info(f), ig = td_get_info(g);
    CHECK(in.size == len && in.block_size < 65536 && in.size >= 40 * (uint64_t)in.block_size &&
              in.size < 80 * (uint64_t)in.block_size,
          "automatic block size %zu for %llu bytes", in.block_size, (unsigned long long)in.size);
    CHECK(in.nblocks >= 20 && in.blocks[TD_VALID] > 0 && in.blocks[TD_TEST] > 0 && in.blocks[TD_TRAIN] > 0,
          "all splits non-empty: %lld/%lld/%lld", (long long)in.blocks[0], (long long)in.blocks[1],
          (long long)in.blocks[2]);
    CHECK(in.blocks[0] + in.blocks[1] + in.blocks[2] == in.nblocks && in.bytes[0] + in.bytes[1] + in.bytes[2] == len,
          "split counts add up");
    uint64_t next = 0;
    int tiles = 1, nl = 1, rule = 1, det = 1, groups = 1;
    int gv = 0, gt = 0;
    for (int64_t i = 0; i < in.nblocks; i++) {
        uint64_t off, blen, o2, l2;
        td_split s, s2;
        td_block(f, i, &off, &blen, &s);
        td_block(g, i, &o2, &l2, &s2);
        tiles &= off == next && blen > 0;
        next = off + blen;
        nl &= text[off + blen - 1] == '\n';
        rule &= s == expected_split(i);
        det &= off == o2 && blen == l2 && s == s2;
        gv += s == TD_VALID;
        gt += s == TD_TEST;
        if (i % 20 == 19) {
            groups &= gv == 1 && gt == 1;
            gv = gt = 0;
        }
    }
    CHECK(tiles && next == len, "blocks tile the file");
    CHECK(nl, "every block ends after a newline");
    CHECK(rule, "splits follow the documented rule");
    CHECK(det && in.nblocks == ig.nblocks, "identical on reopening");
    CHECK(groups, "each full group of 20 has exactly one valid and one test block");
    CHECK(td_block(f, in.nblocks, NULL, NULL, NULL) == MOE_ERR_INVALID_ARG && td_block(f, -1, NULL, NULL, NULL),
          "block index checked");

    /* token counts: the splits add up to the whole file, for bytes and words */
    tok *bt = NULL, *wt = NULL;
    tok_create_bytes(&bt);
    tok_config cfg = tok_config_default(TOK_WORDS);
    CHECK(td_build_tokenizer(f, TD_TRAIN, &cfg, &wt) == MOE_OK && wt, "vocabulary from train: %s", moe_last_error());
    if (!wt) return;
    uint64_t cb[3] = {0}, cw[3] = {0};
    for (int s = 0; s < 3; s++) {
        CHECK(td_count_tokens(f, (td_split)s, bt, &cb[s]) == MOE_OK, "count bytes");
        CHECK(td_count_tokens(f, (td_split)s, wt, &cw[s]) == MOE_OK, "count words");
        size_t n;
        int32_t *seq = split_seq(f, text, wt, (td_split)s, &n);
        CHECK(n == cw[s] && cb[s] == in.bytes[s], "%s: %llu word tokens counted, %zu here", td_split_name((td_split)s),
              (unsigned long long)cw[s], n);
        free(seq);
    }
    int32_t *all = malloc((len + TOK_MAX_WORD + 1) * sizeof *all);
    size_t nall = enc_all(wt, text, len, all);
    CHECK(cb[0] + cb[1] + cb[2] == len, "bytes: train+valid+test = file size");
    CHECK(cw[0] + cw[1] + cw[2] == nall, "words: train+valid+test %llu = whole-file encoding %zu",
          (unsigned long long)(cw[0] + cw[1] + cw[2]), nall);
    free(all);
    /* the train vocabulary equals one counted here over the train blocks' bytes */
    tok_builder *b = NULL;
    tok_builder_create(&b, &cfg);
    for (int64_t i = 0; i < in.nblocks; i++) {
        uint64_t off, blen;
        td_split s;
        td_block(f, i, &off, &blen, &s);
        if (s == TD_TRAIN) tok_builder_add(b, text + off, (size_t)blen, 1);
    }
    tok *ref = NULL;
    tok_builder_finish(b, &ref);
    char *s1 = ser(wt), *s2 = ref ? ser(ref) : NULL;
    CHECK(s1 && s2 && strcmp(s1, s2) == 0, "td_build_tokenizer counts the train blocks only");
    free(s1), free(s2);
    tok_free(ref);
    tok_builder_free(b);
    tok_free(bt), tok_free(wt);
    td_free(f), td_free(g);

    /* no newline for a long way: cut at the nominal end, never inside a UTF-8 sequence */
    char *line = malloc(10000);
    for (int i = 0; i < 10000;) {
        if (i % 5 == 0 && i + 2 <= 10000) {
            line[i++] = (char)0xc3, line[i++] = (char)0xa9;
        } else {
            line[i++] = 'x';
        }
    }
    f = NULL;
    CHECK(td_open(&f, write_file("longline.txt", line, 10000), 1000) == MOE_OK && f, "open one long line");
    if (f) {
        td_info li = td_get_info(f);
        int ok = li.nblocks >= 9 && li.nblocks <= 10;
        for (int64_t i = 0; i < li.nblocks && ok; i++) {
            uint64_t off, blen;
            td_block(f, i, &off, &blen, NULL);
            ok = ((unsigned char)line[off] & 0xc0) != 0x80 && blen >= (i + 1 < li.nblocks ? 1000u : 1u) &&
                 blen <= 1003;
        }
        CHECK(ok, "long line cut into %lld blocks of ~1000 bytes at character boundaries", (long long)li.nblocks);
        td_free(f);
    }
    free(line);

    /* a small file: too few blocks for valid/test */
    const char *small = "one line\ntwo lines\nthree\n";
    f = NULL;
    CHECK(td_open(&f, write_file("small.txt", small, strlen(small)), 0) == MOE_OK && f, "open small");
    if (f) {
        td_info si = td_get_info(f);
        td_split empty = si.blocks[TD_VALID] == 0 ? TD_VALID : TD_TEST;
        CHECK(si.blocks[empty] == 0, "a 3-block file has an empty held-out split");
        tok *bt2 = NULL, *w2 = NULL;
        tok_create_bytes(&bt2);
        td_iter *it = NULL;
        uint64_t n = 99;
        CHECK(td_iter_create(&it, f, bt2, empty, 1, 4) == MOE_ERR_MISSING && it == NULL &&
                  strstr(moe_last_error(), "empty"),
              "iterator on an empty split -> MOE_ERR_MISSING (%s)", moe_last_error());
        CHECK(td_count_tokens(f, empty, bt2, &n) == MOE_OK && n == 0, "count on an empty split is 0");
        cfg = tok_config_default(TOK_WORDS);
        CHECK(td_build_tokenizer(f, empty, &cfg, &w2) == MOE_ERR_MISSING && w2 == NULL, "vocab from an empty split");
        CHECK(td_iter_create(&it, f, bt2, TD_TRAIN, 1000, 4) == MOE_ERR_MISSING, "more streams than tokens");
        CHECK(td_iter_create(&it, f, bt2, TD_TRAIN, 0, 4) == MOE_ERR_CONFIG, "B = 0 refused");
        CHECK(td_iter_create(&it, f, bt2, TD_TRAIN, 1, 0) == MOE_ERR_CONFIG, "T = 0 refused");
        tok_free(bt2);
        td_free(f);
    }
    free(text);
}

/* Runs `steps` calls and checks every token against seq (the split's sequence, n tokens). */
static void check_batches(td_iter *it, const int32_t *seq, size_t n, int B, int T, int steps, const char *what) {
    uint64_t L = n / (uint64_t)B;
    int32_t *tk = malloc((size_t)B * (T + 1) * sizeof *tk), *prev = malloc((size_t)B * (T + 1) * sizeof *prev);
    int ok = 1, overlap = 1, status = 1;
    uint64_t first = td_iter_get_pos(it).step;
    size_t spe = (size_t)td_iter_steps_per_epoch(it);
    int32_t **concat = calloc((size_t)B, sizeof *concat);
    for (int b = 0; b < B; b++) concat[b] = malloc((spe * (size_t)T + 1) * sizeof **concat);
    for (int k = 0; k < steps; k++) {
        if (td_iter_next(it, tk) != MOE_OK) {
            status = 0;
            break;
        }
        uint64_t step = first + (uint64_t)k;
        for (int b = 0; b < B; b++)
            for (int i = 0; i <= T; i++) {
                int32_t want = seq[((uint64_t)b * L + step * (uint64_t)T + (uint64_t)i) % n];
                if (tk[b * (T + 1) + i] != want && ok) {
                    fprintf(stderr, "  %s: step %llu stream %d token %d: %d, expected %d\n", what,
                            (unsigned long long)step, b, i, (int)tk[b * (T + 1) + i], (int)want);
                    ok = 0;
                }
                if (i < T && (size_t)k < spe) concat[b][(size_t)k * T + (size_t)i] = tk[b * (T + 1) + i];
            }
        if (k > 0)
            for (int b = 0; b < B; b++) overlap &= tk[b * (T + 1)] == prev[b * (T + 1) + T];
        memcpy(prev, tk, (size_t)B * (T + 1) * sizeof *tk);
    }
    CHECK(status, "%s: td_iter_next failed: %s", what, moe_last_error());
    CHECK(ok, "%s: every token of %d batches is the split's token at (b*L + step*T + i) mod N", what, steps);
    CHECK(overlap, "%s: each call starts with the previous call's last token", what);
    if (first == 0 && (size_t)steps >= spe) {
        int cat = 1;
        for (int b = 0; b < B && cat; b++)
            cat = memcmp(concat[b], seq + (size_t)b * L, spe * (size_t)T * sizeof *seq) == 0;
        CHECK(cat, "%s: stream b's inputs over one epoch are its slice [b*L, b*L + %zu*T)", what, spe);
    }
    for (int b = 0; b < B; b++) free(concat[b]);
    free(concat);
    free(tk), free(prev);
}

static void test_iterator(void) {
    size_t len;
    char *text = gen_text(23, 30000, &len);
    const char *path = write_file("iter.txt", text, len);
    td_file *f = NULL;
    CHECK(td_open(&f, path, 512) == MOE_OK && f, "open with 512-byte blocks");
    if (!f) return;
    td_info in = td_get_info(f);
    CHECK(in.block_size == 512 && in.nblocks > 40, "%lld blocks", (long long)in.nblocks);
    tok *wt = NULL, *bt = NULL;
    tok_config cfg = tok_config_default(TOK_WORDS);
    td_build_tokenizer(f, TD_TRAIN, &cfg, &wt);
    tok_create_bytes(&bt);
    if (!wt || !bt) return;

    struct {
        const tok *t;
        td_split s;
        int B, T;
        const char *name;
    } cases[] = {{wt, TD_TRAIN, 3, 5, "words/train"}, {wt, TD_VALID, 2, 7, "words/valid"},
                 {bt, TD_TRAIN, 4, 33, "bytes/train"}, {bt, TD_TEST, 1, 9000, "bytes/test, T > TD_READ_CHUNK"},
                 {wt, TD_TEST, 5, 1, "words/test T=1"}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        size_t n;
        int32_t *seq = split_seq(f, text, cases[c].t, cases[c].s, &n);
        td_iter *it = NULL;
        CHECK(td_iter_create(&it, f, cases[c].t, cases[c].s, cases[c].B, cases[c].T) == MOE_OK && it, "%s: create: %s",
              cases[c].name, moe_last_error());
        if (!it) {
            free(seq);
            continue;
        }
        CHECK(td_iter_ntokens(it) == n, "%s: N = %llu, %zu here", cases[c].name,
              (unsigned long long)td_iter_ntokens(it), n);
        /* past the end of the split at least twice, so the wrap-around is checked */
        int steps = (int)(2 * n / (size_t)cases[c].T + 3);
        if (steps > 3000) steps = 3000;
        check_batches(it, seq, n, cases[c].B, cases[c].T, steps, cases[c].name);
        double want = (double)steps * cases[c].T / (double)(n / (size_t)cases[c].B);
        CHECK(td_iter_epoch(it) > want - 1e-9 && td_iter_epoch(it) < want + 1e-9, "%s: epoch %.3f, expected %.3f",
              cases[c].name, td_iter_epoch(it), want);
        td_iter_free(it);
        free(seq);
    }

    /* save/restore: same iterator and a fresh one continue exactly like the uninterrupted run */
    int B = 3, T = 11, K = 37, M = 60;
    td_iter *a = NULL, *c = NULL;
    td_iter_create(&a, f, wt, TD_TRAIN, B, T);
    td_iter_create(&c, f, wt, TD_TRAIN, B, T);
    if (a && c) {
        size_t bsz = (size_t)B * (T + 1);
        int32_t *ref = malloc((size_t)M * bsz * sizeof *ref), *got = malloc(bsz * sizeof *got);
        for (int k = 0; k < K; k++) td_iter_next(a, got);
        td_pos pos = td_iter_get_pos(a);
        CHECK(pos.step == (uint64_t)K && pos.B == B && pos.T == T && pos.split == TD_TRAIN &&
                  pos.ntokens == td_iter_ntokens(a),
              "position after %d steps", K);
        for (int k = 0; k < M; k++) td_iter_next(a, ref + (size_t)k * bsz);
        int same_fresh = td_iter_set_pos(c, &pos) == MOE_OK, same_back = td_iter_set_pos(a, &pos) == MOE_OK;
        for (int k = 0; k < M && same_fresh && same_back; k++) {
            same_fresh = td_iter_next(c, got) == MOE_OK && memcmp(got, ref + (size_t)k * bsz, bsz * sizeof *got) == 0;
            same_back = td_iter_next(a, got) == MOE_OK && memcmp(got, ref + (size_t)k * bsz, bsz * sizeof *got) == 0;
        }
        CHECK(same_fresh, "a fresh iterator restored to step %d gives the same %d batches", K, M);
        CHECK(same_back, "rewinding the same iterator gives the same %d batches", M);
        td_pos p0 = pos;
        p0.step = 0;
        td_iter *d = NULL;
        td_iter_create(&d, f, wt, TD_TRAIN, B, T);
        int32_t *first = malloc(bsz * sizeof *first);
        td_iter_next(d, first);
        CHECK(td_iter_set_pos(a, &p0) == MOE_OK && td_iter_next(a, got) == MOE_OK &&
                  memcmp(got, first, bsz * sizeof *got) == 0,
              "restoring step 0 gives the first batch again");
        td_iter_free(d);
        free(first);
        td_pos badp = pos;
        badp.B = B + 1;
        CHECK(td_iter_set_pos(a, &badp) == MOE_ERR_CONFIG, "position with another B refused");
        badp = pos;
        badp.ntokens++;
        CHECK(td_iter_set_pos(a, &badp) == MOE_ERR_CONFIG, "position from other data refused");
        badp = pos;
        badp.split = TD_VALID;
        CHECK(td_iter_set_pos(a, &badp) == MOE_ERR_CONFIG, "position of another split refused");
        CHECK(td_iter_get_pos(a).step == 1, "a refused position leaves the iterator where it was");
        free(ref), free(got);
    }
    td_iter_free(a), td_iter_free(c);

    /* the file shrinks under an iterator: reads fail, then the iterator refuses until repositioned */
    const char *path2 = write_file("shrink.txt", text, len);
    td_file *f2 = NULL;
    td_iter *s = NULL;
    td_open(&f2, path2, 512);
    if (f2 && td_iter_create(&s, f2, bt, TD_TRAIN, 2, 8) == MOE_OK) {
        int32_t tk[18];
        CHECK(truncate(path2, 100) == 0, "truncate");
        moe_status st = MOE_OK;
        for (int k = 0; k < 2000 && st == MOE_OK; k++) st = td_iter_next(s, tk);
        CHECK(st == MOE_ERR_TRUNCATED, "reading a shrunk file -> MOE_ERR_TRUNCATED (%d)", (int)st);
        CHECK(td_iter_next(s, tk) == MOE_ERR_STATE, "then MOE_ERR_STATE until repositioned");
    }
    td_iter_free(s);
    td_free(f2);

    tok_free(wt), tok_free(bt);
    td_free(f);
    free(text);
}

/* ---------------------------------------------------------------------------------------------- */

static void test_fortunes(void) {
    char fdir[256];
    snprintf(fdir, sizeof fdir, "%s/fortunes", g_dir);
    mkdir(fdir, 0700);
    char sub[300];
    snprintf(sub, sizeof sub, "%s/off", fdir);
    mkdir(sub, 0700);
    write_file("fortunes/zeta", "z1\n%\nz2\n", 8);
    write_file("fortunes/alpha", "a1\n%\n", 5);
    write_file("fortunes/alpha.dat", "\0\0\0\2junk", 8);
    write_file("fortunes/beta", "", 0);
    write_file("fortunes/gamma", "g1", 2);
    write_file("fortunes/.hidden", "hidden\n", 7);
    write_file("fortunes/off/rude", "rude\n%\n", 7);
    char link[300];
    snprintf(link, sizeof link, "%s/alpha.u8", fdir);
    CHECK(symlink("alpha", link) == 0, "symlink");
    snprintf(link, sizeof link, "%s/linked", fdir);
    CHECK(symlink("zeta", link) == 0, "symlink");
    const char *out = path_in("corpus.txt");
    int nf = 0;
    uint64_t nb = 0;
    CHECK(td_build_fortunes(fdir, out, &nf, &nb) == MOE_OK, "build fortunes: %s", moe_last_error());
    size_t len = 0;
    char *got = read_all(out, &len);
    const char *want = "a1\n%\ng1\n%\nz1\n%\nz2\n%\n";
    CHECK(got && len == strlen(want) && memcmp(got, want, len) == 0, "corpus: \"%s\"", got ? got : "(null)");
    CHECK(nf == 4 && nb == strlen(want), "4 files (alpha beta gamma zeta), %llu bytes: %d",
          (unsigned long long)nb, nf);
    free(got);
    char tmpname[400];
    snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", out, (long)getpid());
    CHECK(access(tmpname, F_OK) != 0, "no temporary left behind");

    CHECK(td_build_fortunes(path_in("no-such-dir"), out, NULL, NULL) == MOE_ERR_IO &&
              strstr(moe_last_error(), "fortunes"),
          "missing directory -> MOE_ERR_IO naming the package: %s", moe_last_error());
    char edir[256];
    snprintf(edir, sizeof edir, "%s/emptyfortunes", g_dir);
    mkdir(edir, 0700);
    write_file("emptyfortunes/x.dat", "junk", 4);
    CHECK(td_build_fortunes(edir, out, NULL, NULL) == MOE_ERR_MISSING, "no fortune files -> MOE_ERR_MISSING");

    /* the real corpus, when the package is installed */
    struct stat sb;
    if (stat(TD_FORTUNES_DIR, &sb) != 0) {
        printf("test_textdata: %s absent, real-corpus checks skipped\n", TD_FORTUNES_DIR);
        return;
    }
    const char *real = path_in("fortunes.txt");
    nf = 0;
    CHECK(td_build_fortunes(NULL, real, &nf, &nb) == MOE_OK && nf > 10 && nb > 1000000,
          "default corpus: %d files, %llu bytes: %s", nf, (unsigned long long)nb, moe_last_error());
    td_file *f = NULL;
    CHECK(td_open(&f, real, 0) == MOE_OK && f, "open the default corpus: %s", moe_last_error());
    if (f) {
        td_info in = td_get_info(f);
        CHECK(in.size == nb && in.nblocks >= 40 && in.blocks[TD_VALID] >= 2 && in.blocks[TD_TEST] >= 2,
              "default corpus: %lld blocks of %zu, %lld valid, %lld test", (long long)in.nblocks, in.block_size,
              (long long)in.blocks[TD_VALID], (long long)in.blocks[TD_TEST]);
        td_free(f);
    }
}

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    snprintf(g_dir, sizeof g_dir, "/tmp/moe_textdata_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_bytes_tokenizer();
    test_words_tokenizer();
    test_vocab_from_file();
    test_serialize();
    test_open_errors();
    test_split();
    test_iterator();
    test_fortunes();
    nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_finish("test_textdata");
}
