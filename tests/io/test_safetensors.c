/* test_safetensors.c - checks src/io/safetensors.c: round trips through the writer and reader,
 * hand-written files (unpadded headers, escapes), every malformed-file error with its own
 * status, and the atomic writer's behaviour when writing fails (old file kept, no temporaries).
 *
 * Files go to a fresh mkdtemp directory under /tmp that is removed at the end. argv[1] (the
 * golden directory) is not needed here.
 */
#define _XOPEN_SOURCE 700

#include "moe.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64];

/* every FAIL line says what the library reported last */
#define T_FAIL_DETAIL moe_last_error()
#include "testutil.h"

/* After a failing call: the status is the expected one and the library said why. */
#define CHECK_FAIL(s, want, what)                                                                  \
    CHECK((s) == (want) && moe_last_error()[0] != '\0', "%s: got %s (%d), want %s (%d)", what,     \
          moe_status_str(s), (int)(s), moe_status_str(want), (int)(want))

static const char *path_of(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_dir, name);
    return buf;
}

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    size_t w = fwrite(p, 1, n, fp);
    return (fclose(fp) != 0 || w != n) ? -1 : 0;
}

/* A file as another writer might produce it: length prefix (hdr_len, normally strlen(hdr)),
 * header text as given (no padding), then `data`. */
static int write_raw(const char *path, uint64_t hdr_len, const char *hdr, const void *data, size_t dlen) {
    size_t h = strlen(hdr), total = 8 + h + dlen;
    unsigned char *b = malloc(total);
    if (!b) return -1;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hdr_len >> (8 * i));
    memcpy(b + 8, hdr, h);
    if (dlen) memcpy(b + 8 + h, data, dlen);
    int rc = write_bytes(path, b, total);
    free(b);
    return rc;
}

/* Writes the header + data as a file and expects moe_st_open to fail with `want`. */
static void expect_bad(const char *what, const char *hdr, const void *data, size_t dlen, moe_status want) {
    char p[256];
    path_of(p, sizeof p, "bad.safetensors");
    if (write_raw(p, strlen(hdr), hdr, data, dlen) != 0) {
        CHECK(0, "%s: cannot write test file", what);
        return;
    }
    moe_st *f = (moe_st *)1;
    moe_status s = moe_st_open(&f, p);
    CHECK_FAIL(s, want, what);
    CHECK(f == NULL, "%s: handle not NULL after failure", what);
    moe_st_free(s == MOE_OK ? f : NULL);
    remove(p);
}

/* Names in g_dir containing ".tmp." (leftover temporaries of the atomic writer). */
static int count_tmp_files(void) {
    DIR *d = opendir(g_dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

static int is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int aligned(const void *p, size_t a) { return ((uintptr_t)p % a) == 0; }

/* Writes one F32 tensor "v" of `n` floats all equal to `val`. */
static moe_status write_one(const char *path, float val, size_t n) {
    float *x = malloc(n * sizeof *x);
    moe_st_writer *w = NULL;
    if (!x) return MOE_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) x[i] = val;
    int64_t shape[1] = {(int64_t)n};
    moe_status s = moe_st_writer_create(&w);
    if (s == MOE_OK) s = moe_st_writer_add(w, "v", MOE_F32, 1, shape, x);
    if (s == MOE_OK) s = moe_st_writer_write(w, path);
    moe_st_writer_free(w);
    free(x);
    return s;
}

/* 1 if `path` opens and its tensor "v" has n floats, all equal to `val`. */
static int holds(const char *path, float val, size_t n) {
    moe_st *f = NULL;
    moe_tensor t;
    const float *x = NULL;
    int ok = moe_st_open(&f, path) == MOE_OK && moe_st_get_f32(f, "v", &t, &x) == MOE_OK && t.numel == n;
    for (size_t i = 0; ok && i < n; i++) ok = x[i] == val;
    moe_st_free(f);
    return ok;
}

static void test_round_trip(void) {
    char p[256];
    path_of(p, sizeof p, "round.safetensors");
    static const float w32[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    static const int64_t ids[4] = {INT64_MIN, -1, 0, INT64_MAX};
    static const double scalar = 3.141592653589793;
    static const uint8_t bytes[3] = {0, 127, 255};
    static const int32_t i32[4] = {INT32_MIN, -7, 7, INT32_MAX};
    static const uint16_t f16[2] = {0x3C00, 0xC000}, bf16[2] = {0x3F80, 0x4000};
    const char *odd = "layer.0/\"quoted\"\\n\xC3\xA9v\n\x01";
    const char *esc = "quote\" backslash\\ nl\n tab\t cr\r ctl\x01\x1f caf\xC3\xA9 \xF0\x9F\x98\x80 /slash";

    struct {
        const char *name;
        moe_dtype dt;
        int ndim;
        int64_t shape[3];
        const void *data;
        size_t elsize;
    } tt[] = {
        {"w", MOE_F32, 2, {2, 3}, w32, 4},   {"ids", MOE_I64, 1, {4}, ids, 8},
        {"scalar", MOE_F64, 0, {0}, &scalar, 8}, {"empty", MOE_F32, 2, {0, 5}, NULL, 4},
        {"bytes", MOE_U8, 1, {3}, bytes, 1}, /* leaves the next tensor at an odd offset */
        {"i32", MOE_I32, 2, {2, 2}, i32, 4}, {"half", MOE_F16, 1, {2}, f16, 2},
        {"bf", MOE_BF16, 2, {1, 2}, bf16, 2}, {odd, MOE_F32, 1, {1}, w32, 4},
    };
    const int nt = (int)(sizeof tt / sizeof tt[0]);

    moe_st_writer *w = NULL;
    moe_status s = moe_st_writer_create(&w);
    CHECK(s == MOE_OK && w, "writer_create");
    if (!w) return;
    int added = 0;
    for (int i = 0; i < nt; i++)
        added += moe_st_writer_add(w, tt[i].name, tt[i].dt, tt[i].ndim, tt[i].shape, tt[i].data) == MOE_OK;
    CHECK(added == nt, "added %d of %d tensors", added, nt);
    int metas = moe_st_writer_meta(w, "plain", "value") == MOE_OK;
    metas += moe_st_writer_meta(w, "k", "old") == MOE_OK;
    metas += moe_st_writer_meta(w, esc, esc) == MOE_OK;
    metas += moe_st_writer_meta(w, "k", "new") == MOE_OK; /* replaces "old" in place */
    CHECK(metas == 4, "writer_meta");
    s = moe_st_writer_write(w, p);
    CHECK(s == MOE_OK, "writer_write: %s", moe_status_str(s));
    moe_st_writer_free(w);

    /* The raw layout: padded header, __metadata__ first, data contiguous to the end. */
    FILE *fp = fopen(p, "rb");
    unsigned char head[8 + 16] = {0};
    long fsize = -1;
    if (fp) {
        if (fread(head, 1, sizeof head, fp) != sizeof head) head[0] = 0;
        if (fseek(fp, 0, SEEK_END) == 0) fsize = ftell(fp);
        fclose(fp);
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | head[i];
    CHECK((8 + n) % 8 == 0, "header length %llu leaves the data area unaligned", (unsigned long long)n);
    CHECK(memcmp(head + 8, "{\"__metadata__\"", 15) == 0, "header does not start with __metadata__");
    size_t data_total = 0;
    for (int i = 0; i < nt; i++) {
        size_t numel = 1;
        for (int d = 0; d < tt[i].ndim; d++) numel *= (size_t)tt[i].shape[d];
        data_total += numel * tt[i].elsize;
    }
    CHECK(fsize >= 0 && (uint64_t)fsize == 8 + n + data_total, "file is %ld bytes, want %llu", fsize,
          (unsigned long long)(8 + n + data_total));

    moe_st *f = NULL;
    s = moe_st_open(&f, p);
    CHECK(s == MOE_OK && f, "open round trip: %s", moe_status_str(s));
    if (!f) return;
    CHECK(moe_st_count(f) == nt, "count %d, want %d", moe_st_count(f), nt);
    int good = 0;
    for (int i = 0; i < nt && i < moe_st_count(f); i++) {
        moe_tensor a, b;
        if (moe_st_at(f, i, &a) != MOE_OK || moe_st_get(f, tt[i].name, &b) != MOE_OK) continue;
        size_t numel = 1;
        for (int d = 0; d < tt[i].ndim; d++) numel *= (size_t)tt[i].shape[d];
        int ok = strcmp(a.name, tt[i].name) == 0 && a.data == b.data && a.dtype == tt[i].dt &&
                 a.ndim == tt[i].ndim && a.numel == numel && aligned(a.data, tt[i].elsize);
        for (int d = 0; ok && d < a.ndim; d++) ok = a.shape[d] == tt[i].shape[d];
        if (ok && numel) ok = memcmp(a.data, tt[i].data, numel * tt[i].elsize) == 0;
        if (!ok) printf("  tensor %d \"%s\" differs after the round trip\n", i, tt[i].name);
        good += ok;
    }
    CHECK(good == nt, "%d of %d tensors came back identical, in order, aligned", good, nt);

    moe_tensor t;
    CHECK(moe_st_get(f, "scalar", &t) == MOE_OK && t.ndim == 0 && t.numel == 1 &&
              *(const double *)t.data == scalar, "scalar");
    CHECK(moe_st_get(f, "empty", &t) == MOE_OK && t.numel == 0 && t.ndim == 2 && t.shape[0] == 0,
          "zero-size tensor");

    const char *k = NULL, *v = NULL;
    CHECK(moe_st_meta_count(f) == 3, "meta count %d, want 3", moe_st_meta_count(f));
    CHECK(moe_st_meta_at(f, 0, &k, &v) == MOE_OK && strcmp(k, "plain") == 0 && strcmp(v, "value") == 0,
          "meta_at(0) is plain=value");
    CHECK(moe_st_meta(f, "k") && strcmp(moe_st_meta(f, "k"), "new") == 0, "repeated meta key keeps the last value");
    CHECK(moe_st_meta(f, esc) && strcmp(moe_st_meta(f, esc), esc) == 0, "meta with escapes round trips");
    CHECK(moe_st_meta(f, "absent") == NULL, "absent meta key gives NULL");

    s = moe_st_get(f, "absent", &t);
    CHECK_FAIL(s, MOE_ERR_MISSING, "get of an absent name");
    const float *x = NULL;
    s = moe_st_get_f32(f, "ids", &t, &x);
    CHECK_FAIL(s, MOE_ERR_DTYPE, "get_f32 of an I64 tensor");
    s = moe_st_get_f32(f, "w", &t, &x);
    CHECK(s == MOE_OK && x && x[0] == 1.5f && x[2] == 3.25f && t.numel == 6, "get_f32 of an F32 tensor");
    s = moe_st_at(f, nt, &t);
    CHECK_FAIL(s, MOE_ERR_INVALID_ARG, "at() past the end");
    moe_st_free(f);
    remove(p);
}

/* A header another writer left unpadded: 8 + N is odd, so the data must be moved to be aligned.
 * Also checks \u escapes (one a surrogate pair) decode to UTF-8. */
static void test_unpadded(void) {
    char p[256];
    path_of(p, sizeof p, "unpadded.safetensors");
    const char *hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[12,13]},"
                      " \"caf\\u00e9 \\ud83d\\ude00\" : {\"shape\":[1], \"dtype\":\"F64\",\"data_offsets\":[13,21]}}";
    CHECK((8 + strlen(hdr)) % 8 != 0, "test header is accidentally padded");
    unsigned char data[21];
    const float a[3] = {1.0f, -2.5f, 1e10f};
    const double c = -0.125;
    memcpy(data, a, 12);
    data[12] = 9;
    memcpy(data + 13, &c, 8);
    CHECK(write_raw(p, strlen(hdr), hdr, data, sizeof data) == 0, "write unpadded file");
    moe_st *f = NULL;
    moe_status s = moe_st_open(&f, p);
    CHECK(s == MOE_OK, "open unpadded file: %s", moe_status_str(s));
    const float *x = NULL;
    moe_tensor t;
    if (f && moe_st_get_f32(f, "a", &t, &x) == MOE_OK)
        CHECK(aligned(x, 8) && x[0] == 1.0f && x[1] == -2.5f && x[2] == 1e10f, "floats of an unpadded file");
    else
        CHECK(0, "tensor a of the unpadded file");
    s = f ? moe_st_get(f, "caf\xC3\xA9 \xF0\x9F\x98\x80", &t) : MOE_ERR_STATE;
    CHECK(s == MOE_OK && t.dtype == MOE_F64 && aligned(t.data, 8) && *(const double *)t.data == c,
          "F64 at odd offset 13 under a \\u-escaped name");
    moe_st_free(f);
    remove(p);
}

static void test_malformed(void) {
    static const unsigned char zeros[64];
    char p[256];
    path_of(p, sizeof p, "bad.safetensors");
    moe_st *f = NULL;
    moe_status s;

    /* Files shorter than what they announce. */
    CHECK(write_bytes(p, "\x10\x00\x00", 3) == 0, "write short file");
    s = moe_st_open(&f, p);
    CHECK_FAIL(s, MOE_ERR_TRUNCATED, "file shorter than 8 bytes");
    CHECK(write_raw(p, 1000, "{}", NULL, 0) == 0, "write file");
    s = moe_st_open(&f, p);
    CHECK_FAIL(s, MOE_ERR_TRUNCATED, "header length larger than the file");
    CHECK(write_raw(p, (uint64_t)1 << 40, "{}", NULL, 0) == 0, "write file");
    s = moe_st_open(&f, p);
    CHECK_FAIL(s, MOE_ERR_FORMAT, "absurd header length (2^40)");
    s = moe_st_open(&f, g_dir);
    CHECK_FAIL(s, MOE_ERR_IO, "directory given as a file");
    path_of(p, sizeof p, "does-not-exist.safetensors");
    s = moe_st_open(&f, p);
    CHECK_FAIL(s, MOE_ERR_IO, "missing file");
    CHECK(strstr(moe_last_error(), "No such file") != NULL, "missing file names the reason: %s", moe_last_error());

    const char *T = "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]";
    char h[512];
    snprintf(h, sizeof h, "{\"a\":{%s}}", T);
    expect_bad("data area shorter than the offsets", h, zeros, 4, MOE_ERR_TRUNCATED);
    expect_bad("bad JSON (trailing comma)", "{\"a\":{\"dtype\":\"F32\",}}", NULL, 0, MOE_ERR_FORMAT);
    expect_bad("bad JSON (unterminated)", "{\"a\":{", NULL, 0, MOE_ERR_FORMAT);
    expect_bad("bad JSON (leading zero)", "{\"__metadata__\":{}, \"x\": 01}", NULL, 0, MOE_ERR_FORMAT);
    expect_bad("empty header", "", NULL, 0, MOE_ERR_FORMAT);
    expect_bad("trailing garbage", "{} x", NULL, 0, MOE_ERR_FORMAT);
    expect_bad("two JSON values", "{}{}", NULL, 0, MOE_ERR_FORMAT);
    expect_bad("header is an array", "[]", NULL, 0, MOE_ERR_FORMAT);
    expect_bad("unknown dtype", "{\"a\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]}}", zeros, 8,
               MOE_ERR_DTYPE);
    snprintf(h, sizeof h, "{\"a\":{%s},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", T);
    expect_bad("offsets past the data area (file cut short)", h, zeros, 8, MOE_ERR_TRUNCATED);
    snprintf(h, sizeof h, "{\"a\":{%s},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", T);
    expect_bad("overlapping ranges", h, zeros, 12, MOE_ERR_FORMAT);
    snprintf(h, sizeof h, "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]},\"a\":{%s}}", T);
    expect_bad("overlapping ranges (listed out of order)", h, zeros, 8, MOE_ERR_FORMAT);
    expect_bad("shape and offsets disagree", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
               zeros, 12, MOE_ERR_FORMAT);
    snprintf(h, sizeof h, "{\"a\":{%s},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", T);
    expect_bad("duplicate tensor names", h, zeros, 16, MOE_ERR_FORMAT);
    expect_bad("missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", zeros, 8, MOE_ERR_FORMAT);
    expect_bad("negative shape", "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", NULL, 0,
               MOE_ERR_FORMAT);
    expect_bad("non-integer shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", zeros, 8,
               MOE_ERR_FORMAT);
    expect_bad("end before begin", "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", zeros, 8,
               MOE_ERR_FORMAT);
    expect_bad("shape product overflows",
               "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4294967297],\"data_offsets\":[0,0]}}",
               NULL, 0, MOE_ERR_FORMAT);
    expect_bad("non-string metadata value", "{\"__metadata__\":{\"n\":3}}", NULL, 0, MOE_ERR_FORMAT);
    expect_bad("lone surrogate", "{\"__metadata__\":{\"n\":\"\\ud800\"}}", NULL, 0, MOE_ERR_FORMAT);
    expect_bad("invalid UTF-8", "{\"__metadata__\":{\"n\":\"\xff\"}}", NULL, 0, MOE_ERR_FORMAT);
    expect_bad("raw newline inside a string", "{\"__metadata__\":{\"n\":\"a\nb\"}}", NULL, 0, MOE_ERR_FORMAT);
    expect_bad("bad escape", "{\"__metadata__\":{\"n\":\"\\x41\"}}", NULL, 0, MOE_ERR_FORMAT);

    /* 100000 nested arrays would overflow the stack of an unbounded recursive parser. */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 64);
    if (deep) {
        size_t m = (size_t)sprintf(deep, "{\"__metadata__\":{\"n\":");
        for (size_t i = 0; i < depth; i++) deep[m++] = '[';
        for (size_t i = 0; i < depth; i++) deep[m++] = ']';
        strcpy(deep + m, "}}");
        expect_bad("deep nesting", deep, NULL, 0, MOE_ERR_FORMAT);
        CHECK(strstr(moe_last_error(), "nested") != NULL, "deep nesting reported as such");
        free(deep);
    }
}

/* A zero dimension makes numel 0 even when the other dimensions' product would overflow. */
static void test_zero_dims(void) {
    char p[256];
    path_of(p, sizeof p, "zero.safetensors");
    const char *hdr = "{\"z\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,0],\"data_offsets\":[0,0]}}";
    moe_st *f = NULL;
    moe_tensor t;
    moe_status s = write_raw(p, strlen(hdr), hdr, NULL, 0) == 0 ? moe_st_open(&f, p) : MOE_ERR_IO;
    CHECK(s == MOE_OK && moe_st_get(f, "z", &t) == MOE_OK && t.numel == 0 && t.shape[1] == 4294967296LL,
          "huge shape with a zero dimension read as empty");
    moe_st_free(f);

    moe_st_writer *w = NULL;
    const int64_t shape[3] = {INT64_MAX, INT64_MAX, 0};
    s = moe_st_writer_create(&w);
    if (s == MOE_OK) s = moe_st_writer_add(w, "z", MOE_F32, 3, shape, NULL);
    moe_st_writer_free(w);
    CHECK(s == MOE_OK, "writer accepts a huge shape with a zero dimension");
    remove(p);
}

/* Many tensors: lookup by name must find each one (sorted index, not file order). */
static void test_many(void) {
    char p[256], name[32];
    path_of(p, sizeof p, "many.safetensors");
    enum { N = 3000 };
    static int32_t vals[N];
    moe_st_writer *w = NULL;
    int ok = moe_st_writer_create(&w) == MOE_OK;
    for (int i = 0; i < N && ok; i++) {
        vals[i] = i * 7;
        snprintf(name, sizeof name, "t%d", (i * 7919) % N);
        ok = moe_st_writer_add(w, name, MOE_I32, 0, NULL, &vals[i]) == MOE_OK;
    }
    ok = ok && moe_st_writer_write(w, p) == MOE_OK;
    moe_st_writer_free(w);
    CHECK(ok, "write %d tensors", N);
    moe_st *f = NULL;
    int found = 0;
    if (moe_st_open(&f, p) == MOE_OK) {
        for (int i = 0; i < N; i++) {
            moe_tensor t;
            snprintf(name, sizeof name, "t%d", (i * 7919) % N);
            found += moe_st_get(f, name, &t) == MOE_OK && *(const int32_t *)t.data == i * 7;
        }
    }
    CHECK(found == N, "found %d of %d tensors by name", found, N);
    moe_st_free(f);
    remove(p);
}

/* Files of 64 KB and more are mapped, not read, when their data is aligned (as the writer makes
 * it): the same contents either way, an unaligned one is still read, a cut one refused. */
static void test_large(void) {
    char p[256];
    path_of(p, sizeof p, "large.safetensors");
    enum { N = 40000 };
    float *a = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) a[i] = (float)i * 0.5f - 7.0f;
    const int64_t sh[1] = {N};
    moe_st_writer *w = NULL;
    int ok = moe_st_writer_create(&w) == MOE_OK && moe_st_writer_add(w, "a", MOE_F32, 1, sh, a) == MOE_OK &&
             moe_st_writer_meta(w, "k", "v") == MOE_OK && moe_st_writer_write(w, p) == MOE_OK;
    moe_st_writer_free(w);
    CHECK(ok, "write a large file");
    for (int round = 0; round < 2; round++) {
        moe_st *f = NULL;
        const float *x = NULL;
        moe_tensor t;
        CHECK(moe_st_open(&f, p) == MOE_OK && moe_st_get_f32(f, "a", &t, &x) == MOE_OK && t.numel == N &&
                  memcmp(x, a, sizeof(float) * N) == 0 &&
                  (round == 1 || (moe_st_meta(f, "k") && strcmp(moe_st_meta(f, "k"), "v") == 0)),
              "round %d: the large file's tensor and metadata", round);
        moe_st_free(f);
        if (round == 0) { /* the same data behind an unpadded header: read, not mapped */
            const char *hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[40000],\"data_offsets\":[0,160000]}}";
            CHECK((8 + strlen(hdr)) % 8 != 0, "the unpadded header is accidentally padded");
            CHECK(write_raw(p, strlen(hdr), hdr, a, sizeof(float) * N) == 0, "write the unpadded large file");
        }
    }
    char hdr[128] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[40000],\"data_offsets\":[0,160000]}}";
    while ((8 + strlen(hdr)) % 8) strcat(hdr, " "); /* padded as the writer pads: the mapped path */
    CHECK(write_raw(p, strlen(hdr), hdr, a, sizeof(float) * (N - 1)) == 0, "write a cut large file");
    moe_st *f = NULL;
    CHECK_FAIL(moe_st_open(&f, p), MOE_ERR_TRUNCATED, "a large file cut short");
    CHECK(f == NULL, "no handle for the cut file");
    free(a);
    remove(p);
}

static void test_writer_args(void) {
    moe_st_writer *w = NULL;
    float x[4] = {0};
    int64_t sh[MOE_MAX_DIMS + 1] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, neg[1] = {-2}, two[1] = {2};
    if (moe_st_writer_create(&w) != MOE_OK) {
        CHECK(0, "writer_create");
        return;
    }
    moe_status s = moe_st_writer_add(w, "a", MOE_F32, 1, two, x);
    CHECK(s == MOE_OK, "add a");
    s = moe_st_writer_add(w, "a", MOE_F32, 1, two, x);
    CHECK_FAIL(s, MOE_ERR_INVALID_ARG, "duplicate name");
    s = moe_st_writer_add(w, "__metadata__", MOE_F32, 1, two, x);
    CHECK_FAIL(s, MOE_ERR_INVALID_ARG, "name __metadata__");
    s = moe_st_writer_add(w, "", MOE_F32, 1, two, x);
    CHECK_FAIL(s, MOE_ERR_INVALID_ARG, "empty name");
    s = moe_st_writer_add(w, "b", MOE_F32, MOE_MAX_DIMS + 1, sh, x);
    CHECK_FAIL(s, MOE_ERR_INVALID_ARG, "too many dimensions");
    s = moe_st_writer_add(w, "b", MOE_F32, 1, neg, x);
    CHECK_FAIL(s, MOE_ERR_INVALID_ARG, "negative dimension");
    s = moe_st_writer_add(w, "b", MOE_F32, 1, two, NULL);
    CHECK_FAIL(s, MOE_ERR_INVALID_ARG, "NULL data");
    s = moe_st_writer_add(w, "b", MOE_F32, MOE_MAX_DIMS, sh, x);
    CHECK(s == MOE_OK, "add with MOE_MAX_DIMS dimensions");
    moe_st_writer_free(w);
    moe_st_writer_free(NULL);
    moe_st_free(NULL);
    CHECK(moe_st_count(NULL) == 0 && moe_st_meta_count(NULL) == 0 && moe_st_meta(NULL, "k") == NULL,
          "NULL handles");

    /* An empty writer makes a valid file with no tensors. */
    char p[256];
    path_of(p, sizeof p, "empty.safetensors");
    moe_st *f = NULL;
    s = moe_st_writer_create(&w);
    if (s == MOE_OK) s = moe_st_writer_write(w, p);
    moe_st_writer_free(w);
    if (s == MOE_OK) s = moe_st_open(&f, p);
    CHECK(s == MOE_OK && moe_st_count(f) == 0 && moe_st_meta_count(f) == 0, "empty file round trip");
    moe_st_free(f);
    remove(p);
}

static void test_atomic_write(void) {
    char p[256], q[256], tmp[300];
    moe_status s;

    /* Into a directory that does not exist. */
    path_of(q, sizeof q, "nodir/out.safetensors");
    s = write_one(q, 1.0f, 4);
    CHECK_FAIL(s, MOE_ERR_IO, "write into a missing directory");
    path_of(q, sizeof q, "nodir");
    CHECK(access(q, F_OK) != 0 && count_tmp_files() == 0, "failed write left files behind");

    /* Overwriting an existing file. */
    path_of(p, sizeof p, "ckpt.safetensors");
    s = write_one(p, 1.0f, 4);
    CHECK(s == MOE_OK && holds(p, 1.0f, 4), "first write");
    s = write_one(p, 2.0f, 8);
    CHECK(s == MOE_OK && holds(p, 2.0f, 8), "overwrite");
    CHECK(count_tmp_files() == 0, "temporary left after a successful write");

    /* `path` is a directory: the rename fails after the temporary was written. */
    path_of(q, sizeof q, "adir");
    CHECK(mkdir(q, 0700) == 0, "mkdir");
    s = write_one(q, 3.0f, 4);
    CHECK_FAIL(s, MOE_ERR_IO, "write over a directory");
    CHECK(is_dir(q) && count_tmp_files() == 0, "failed rename left the directory changed or a temporary");
    rmdir(q);

    /* The temporary cannot be created: the old file stays as it was. */
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
    CHECK(mkdir(tmp, 0700) == 0, "mkdir %s", tmp);
    s = write_one(p, 4.0f, 4);
    CHECK_FAIL(s, MOE_ERR_IO, "write whose temporary is blocked");
    CHECK(holds(p, 2.0f, 8), "old file changed by a failed write");
    CHECK(is_dir(tmp), "writer removed a temporary path it had not created");
    rmdir(tmp);

    /* The disk "fills up" mid-write (file size limit): old file kept, temporary removed. */
    struct rlimit old, lim;
    int limited = getrlimit(RLIMIT_FSIZE, &old) == 0;
    lim = old;
    lim.rlim_cur = 4096; /* lowering the soft limit is always allowed */
    signal(SIGXFSZ, SIG_IGN); /* get EFBIG from write() instead of being killed */
    limited = limited && setrlimit(RLIMIT_FSIZE, &lim) == 0;
    s = limited ? write_one(p, 5.0f, 1 << 16) : MOE_OK;
    if (limited) setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, SIG_DFL);
    CHECK(limited, "cannot set RLIMIT_FSIZE: %s", strerror(errno));
    CHECK_FAIL(s, MOE_ERR_IO, "write that runs out of space");
    CHECK(strstr(moe_last_error(), "large") != NULL, "reason for the failed write: %s", moe_last_error());
    CHECK(holds(p, 2.0f, 8) && count_tmp_files() == 0, "a write that failed midway changed the old file");
    remove(p);
}

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    char p[512];
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (is_dir(p)) remove_dir(p);
        else remove(p);
    }
    closedir(d);
    rmdir(dir);
}

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    strcpy(g_dir, "/tmp/moe_test_st_XXXXXX");
    if (!mkdtemp(g_dir)) {
        printf("test_safetensors: cannot create a temporary directory: %s\n", strerror(errno));
        return 1;
    }
    test_round_trip();
    test_unpadded();
    test_malformed();
    test_zero_dims();
    test_many();
    test_large();
    test_writer_args();
    test_atomic_write();
    remove_dir(g_dir);
    return test_finish("test_safetensors");
}
