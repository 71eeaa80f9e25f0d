/* safetensors.c - reads and atomically writes safetensors files, the checkpoint format of libmoe
 * (parameters, optimiser state, golden test data).
 *
 * File layout:
 *
 *   +---------+----------------------+----------------------------------------------+
 *   | N (u64, | JSON header, N bytes | data area: tensor bytes at [begin, end)      |
 *   |  LE)    | {"name": {...}, ...} | relative to the start of this area           |
 *   +---------+----------------------+----------------------------------------------+
 *
 * Each header key names a tensor {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]};
 * the optional key "__metadata__" holds an object of string -> string.
 *
 * Reading loads the whole file into one buffer, with the data area placed on an 8-byte boundary
 * whatever N is, so tensors can be handed out in place. The header goes through a small JSON
 * parser that builds an array of nodes (jnode); a second pass checks those nodes against the
 * layout above. Nothing read from the file is trusted: lengths, offsets and shape products are
 * all checked for range and overflow before use.
 *
 * Writing builds the header in memory, pads it with spaces so the data area starts 8-aligned,
 * and goes through <path>.tmp.<pid> + fsync + rename + fsync(directory), so that after a crash
 * or a full disk `path` holds either the complete old file or the complete new one.
 */
#define _POSIX_C_SOURCE 200809L
#define _FILE_OFFSET_BITS 64

#include "base/internal.h"
#include "io/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The reference implementation refuses headers above 100 MB; a bigger N means a corrupt or
 * foreign file, and trusting it would make us allocate whatever the file asks for. */
#define ST_MAX_HEADER 100000000ull
/* Files of at least this many bytes are mapped rather than read (when their data is aligned). */
#define ST_MAP_MIN (64u << 10)
/* Deep enough for any real header (which nests 3 levels), shallow enough for the C stack. */
#define JSON_MAX_DEPTH 64
#define NONE UINT32_MAX

static const struct {
    const char *name;
    size_t size;
} dtype_info[] = {
    [MOE_F32] = {"F32", 4}, [MOE_F64] = {"F64", 8}, [MOE_I32] = {"I32", 4},  [MOE_I64] = {"I64", 8},
    [MOE_U8] = {"U8", 1},   [MOE_F16] = {"F16", 2}, [MOE_BF16] = {"BF16", 2},
};
#define N_DTYPES ((int)(sizeof dtype_info / sizeof dtype_info[0]))

/* Length of the valid UTF-8 sequence starting at s (n bytes available), or 0. Overlong forms,
 * UTF-16 surrogates and code points above U+10FFFF are invalid (RFC 3629). */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0; /* overlong */
        if (c == 0xED) hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90; /* overlong */
        if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

static int utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    while (n > 0) {
        size_t k = utf8_seq(p, n);
        if (k == 0) return 0;
        p += k;
        n -= k;
    }
    return 1;
}

static size_t utf8_put(char *d, uint32_t cp) {
    unsigned char *u = (unsigned char *)d;
    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        u[0] = (unsigned char)(0xC0 | (cp >> 6));
        u[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        u[0] = (unsigned char)(0xE0 | (cp >> 12));
        u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    u[0] = (unsigned char)(0xF0 | (cp >> 18));
    u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ------------------------------------------------------------------------------------------ */
/* JSON parser. Values become nodes in one growing array and refer to each other by index, so  */
/* the array can be reallocated while parsing. An object's children alternate key, value.      */

enum { J_NULL, J_FALSE, J_TRUE, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct {
    uint8_t type;
    uint32_t first; /* first child of an array or object, NONE if empty */
    uint32_t next;  /* next sibling, NONE if last */
    uint32_t count; /* elements of an array, members of an object */
    uint32_t len;   /* bytes of a decoded string or of a number's text */
    const char *s;  /* string: decoded, NUL-terminated, in the pool; number: its text */
} jnode;

typedef struct {
    const char *p, *start, *end; /* cursor over the header text */
    jnode *nodes;
    uint32_t n, cap;
    /* Decoded strings. A decoded string plus its NUL is always shorter than its quoted source,
     * so a pool as long as the header never overflows and never moves. */
    char *pool;
    size_t pool_len;
    const char *err; /* first error and the header offset where it was found */
    size_t err_at;
    int nomem;
} jparser;

/* A function, not an inline test, because on 64-bit hosts a uint32_t count never overflows and
 * the compiler would warn about the comparison. */
static int mul_overflows(size_t a, size_t b) { return b != 0 && a > SIZE_MAX / b; }

static int jfail(jparser *jp, const char *msg) {
    if (!jp->err) {
        jp->err = msg;
        jp->err_at = (size_t)(jp->p - jp->start);
    }
    return -1;
}

static int jnew(jparser *jp, int type, uint32_t *out) {
    if (jp->n == jp->cap) {
        if (jp->cap >= UINT32_MAX / 2) return jfail(jp, "too many JSON values");
        uint32_t cap = jp->cap ? jp->cap * 2 : 64;
        if (mul_overflows(cap, sizeof(jnode))) {
            jp->nomem = 1;
            return jfail(jp, "out of memory");
        }
        jnode *grown = realloc(jp->nodes, (size_t)cap * sizeof(jnode));
        if (!grown) {
            jp->nomem = 1;
            return jfail(jp, "out of memory");
        }
        jp->nodes = grown;
        jp->cap = cap;
    }
    jnode *x = &jp->nodes[jp->n];
    memset(x, 0, sizeof *x);
    x->type = (uint8_t)type;
    x->first = x->next = NONE;
    *out = jp->n++;
    return 0;
}

static void jskip(jparser *jp) {
    while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
        jp->p++;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int jhex4(jparser *jp, uint32_t *v) {
    if (jp->end - jp->p < 4) return jfail(jp, "truncated \\u escape");
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) {
        char c = jp->p[i];
        uint32_t d;
        if (c >= '0' && c <= '9') d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = (uint32_t)(c - 'A' + 10);
        else return jfail(jp, "bad hex digit in \\u escape");
        x = x * 16 + d;
    }
    jp->p += 4;
    *v = x;
    return 0;
}

static int jstring(jparser *jp, uint32_t *out) {
    uint32_t id;
    if (jnew(jp, J_STR, &id)) return -1;
    char *dst = jp->pool + jp->pool_len, *d = dst;
    jp->p++; /* opening quote */
    for (;;) {
        if (jp->p >= jp->end) return jfail(jp, "unterminated string");
        unsigned char c = (unsigned char)*jp->p;
        if (c == '"') {
            jp->p++;
            break;
        }
        if (c < 0x20) return jfail(jp, "control character inside a string");
        if (c >= 0x80) {
            size_t k = utf8_seq((const unsigned char *)jp->p, (size_t)(jp->end - jp->p));
            if (k == 0) return jfail(jp, "invalid UTF-8 in a string");
            memcpy(d, jp->p, k);
            d += k;
            jp->p += k;
            continue;
        }
        if (c != '\\') {
            *d++ = (char)c;
            jp->p++;
            continue;
        }
        if (jp->end - jp->p < 2) return jfail(jp, "unterminated escape");
        char e = jp->p[1];
        jp->p += 2;
        switch (e) {
        case '"': *d++ = '"'; break;
        case '\\': *d++ = '\\'; break;
        case '/': *d++ = '/'; break;
        case 'b': *d++ = '\b'; break;
        case 'f': *d++ = '\f'; break;
        case 'n': *d++ = '\n'; break;
        case 'r': *d++ = '\r'; break;
        case 't': *d++ = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (jhex4(jp, &cp)) return -1;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return jfail(jp, "unpaired low surrogate");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                /* Characters above U+FFFF come as a UTF-16 pair: \uD83D\uDE00. */
                if (jp->end - jp->p < 2 || jp->p[0] != '\\' || jp->p[1] != 'u')
                    return jfail(jp, "unpaired high surrogate");
                jp->p += 2;
                if (jhex4(jp, &lo)) return -1;
                if (lo < 0xDC00 || lo > 0xDFFF) return jfail(jp, "unpaired high surrogate");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            d += utf8_put(d, cp);
            break;
        }
        default: return jfail(jp, "unknown escape in a string");
        }
    }
    *d = '\0';
    jp->nodes[id].s = dst;
    jp->nodes[id].len = (uint32_t)(d - dst);
    jp->pool_len += (size_t)(d - dst) + 1;
    *out = id;
    return 0;
}

/* Checks the JSON number grammar; the value is interpreted later, by whoever needs it. */
static int jnumber(jparser *jp, uint32_t *out) {
    const char *s = jp->p, *p = s, *e = jp->end;
    if (p < e && *p == '-') p++;
    if (p == e || !is_digit(*p)) return jfail(jp, "bad number");
    if (*p == '0') p++;
    else
        while (p < e && is_digit(*p)) p++;
    if (p < e && *p == '.') {
        p++;
        if (p == e || !is_digit(*p)) return jfail(jp, "bad number");
        while (p < e && is_digit(*p)) p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-')) p++;
        if (p == e || !is_digit(*p)) return jfail(jp, "bad number");
        while (p < e && is_digit(*p)) p++;
    }
    uint32_t id;
    if (jnew(jp, J_NUM, &id)) return -1;
    jp->nodes[id].s = s;
    jp->nodes[id].len = (uint32_t)(p - s);
    jp->p = p;
    *out = id;
    return 0;
}

static int jliteral(jparser *jp, const char *word, int type, uint32_t *out) {
    size_t n = strlen(word);
    if ((size_t)(jp->end - jp->p) < n || memcmp(jp->p, word, n) != 0)
        return jfail(jp, "unexpected character");
    jp->p += n;
    return jnew(jp, type, out);
}

static int jvalue(jparser *jp, int depth, uint32_t *out);

/* Appends child to parent's list; `last` is the parent's current last child. */
static void jlink(jparser *jp, uint32_t parent, uint32_t *last, uint32_t child) {
    if (*last == NONE) jp->nodes[parent].first = child;
    else jp->nodes[*last].next = child;
    *last = child;
}

static int jcontainer(jparser *jp, int depth, uint32_t *out) {
    int is_obj = *jp->p == '{';
    char close = is_obj ? '}' : ']';
    uint32_t id, last = NONE;
    if (depth >= JSON_MAX_DEPTH) return jfail(jp, "JSON nested too deeply");
    if (jnew(jp, is_obj ? J_OBJ : J_ARR, &id)) return -1;
    jp->p++;
    jskip(jp);
    if (jp->p < jp->end && *jp->p == close) {
        jp->p++;
        *out = id;
        return 0;
    }
    for (;;) {
        uint32_t key, val;
        if (is_obj) {
            jskip(jp);
            if (jp->p >= jp->end || *jp->p != '"') return jfail(jp, "expected a string key");
            if (jstring(jp, &key)) return -1;
            jskip(jp);
            if (jp->p >= jp->end || *jp->p != ':') return jfail(jp, "expected ':'");
            jp->p++;
            jlink(jp, id, &last, key);
        }
        if (jvalue(jp, depth + 1, &val)) return -1;
        jlink(jp, id, &last, val);
        jp->nodes[id].count++;
        jskip(jp);
        if (jp->p >= jp->end) return jfail(jp, is_obj ? "unterminated object" : "unterminated array");
        if (*jp->p == ',') {
            jp->p++;
            continue;
        }
        if (*jp->p == close) {
            jp->p++;
            break;
        }
        return jfail(jp, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    *out = id;
    return 0;
}

static int jvalue(jparser *jp, int depth, uint32_t *out) {
    jskip(jp);
    if (jp->p >= jp->end) return jfail(jp, "unexpected end of header");
    switch (*jp->p) {
    case '{':
    case '[': return jcontainer(jp, depth, out);
    case '"': return jstring(jp, out);
    case 't': return jliteral(jp, "true", J_TRUE, out);
    case 'f': return jliteral(jp, "false", J_FALSE, out);
    case 'n': return jliteral(jp, "null", J_NULL, out);
    default:
        if (*jp->p == '-' || is_digit(*jp->p)) return jnumber(jp, out);
        return jfail(jp, "unexpected character");
    }
}

/* Parses text[0..n) as exactly one JSON value with optional surrounding whitespace. */
static int jparse(jparser *jp, const char *text, size_t n, uint32_t *root) {
    jp->p = jp->start = text;
    jp->end = text + n;
    if (jvalue(jp, 0, root)) return -1;
    jskip(jp);
    if (jp->p != jp->end) return jfail(jp, "trailing characters after the JSON value");
    return 0;
}

/* A number node as a non-negative integer. JSON would allow 2.0 or 1e3, but a shape or offset
 * written that way means a confused writer, so only plain digits are accepted. */
static const char *jnum_u64(const jnode *x, uint64_t *v) {
    if (x->type != J_NUM) return "is not a number";
    if (x->s[0] == '-') return "is negative";
    uint64_t acc = 0;
    for (uint32_t i = 0; i < x->len; i++) {
        if (!is_digit(x->s[i])) return "is not an integer";
        unsigned d = (unsigned)(x->s[i] - '0');
        if (acc > (UINT64_MAX - d) / 10) return "is too large";
        acc = acc * 10 + d;
    }
    *v = acc;
    return NULL;
}

/* A string node usable as a C string: an escaped \u0000 inside would silently cut it short. */
static int jcstr(const jnode *x) { return x->type == J_STR && strlen(x->s) == x->len; }

/* ------------------------------------------------------------------------------------------ */
/* Reader                                                                                      */

typedef struct {
    moe_tensor t;        /* what moe_st_at/get hand out */
    uint64_t begin, end; /* byte range within the data area */
    void *copy;          /* aligned copy when begin is not a multiple of the element size */
} st_entry;

typedef struct {
    const char *key;
    int idx;
} name_ref;

typedef struct {
    const char *key, *val;
} st_meta;

struct moe_st {
    unsigned char *buf; /* the whole file; data area at an 8-byte boundary (moved there when read) */
    size_t mapped;      /* > 0: buf is the file mapped read-only, this many bytes (not a copy) */
    char *pool;         /* decoded header strings: tensor names, metadata */
    st_entry *tensors;  /* in file order */
    int count;
    name_ref *by_name; /* tensors sorted by name: bsearch, and duplicates sit side by side */
    st_meta *meta;     /* in file order */
    int nmeta;
    name_ref *meta_by_key;
};

static int cmp_name_ref(const void *a, const void *b) {
    const name_ref *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

static int cmp_range(const void *a, const void *b) {
    const st_entry *x = *(st_entry *const *)a, *y = *(st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Reads n bytes; a short read is TRUNCATED (the file shrank under us) unless the stream says
 * it was an error. Chunks keep each fread well below 2 GB for C libraries that mind. */
static moe_status read_full(FILE *fp, void *dst, size_t n, const char *path) {
    unsigned char *p = dst;
    while (n > 0) {
        size_t chunk = n < ((size_t)1 << 30) ? n : ((size_t)1 << 30);
        size_t got = fread(p, 1, chunk, fp);
        if (got != chunk) {
            if (ferror(fp)) return moe_fail(MOE_ERR_IO, "reading %s: %s", path, strerror(errno));
            return moe_fail(MOE_ERR_TRUNCATED, "%s ended early while being read", path);
        }
        p += got;
        n -= got;
    }
    return MOE_OK;
}

/* Loads the file into f->buf; on success *hdr_len is N, and *data_off and *data_len locate the
 * data area in f->buf. */
static moe_status st_load(moe_st *f, FILE *fp, const char *path, uint64_t *hdr_len, size_t *data_off,
                          size_t *data_len) {
    struct stat sb;
    unsigned char lenbuf[8];
    moe_status s;
    if (fstat(fileno(fp), &sb) != 0) return moe_fail(MOE_ERR_IO, "stat %s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) return moe_fail(MOE_ERR_IO, "cannot read %s: %s", path, strerror(EISDIR));
    if (!S_ISREG(sb.st_mode)) return moe_fail(MOE_ERR_IO, "cannot read %s: not a regular file", path);
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8)
        return moe_fail(MOE_ERR_TRUNCATED, "%s is %llu bytes, too short for the 8-byte header length",
                        path, (unsigned long long)size);
    if ((s = read_full(fp, lenbuf, 8, path)) != MOE_OK) return s;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | lenbuf[i];
    if (n > ST_MAX_HEADER)
        return moe_fail(MOE_ERR_FORMAT, "%s: header length %llu is over the 100 MB limit; not a safetensors file?",
                        path, (unsigned long long)n);
    if (n > size - 8)
        return moe_fail(MOE_ERR_TRUNCATED, "%s: header length %llu but only %llu bytes follow", path,
                        (unsigned long long)n, (unsigned long long)(size - 8));
    uint64_t off = (8 + n + 7) & ~(uint64_t)7, dlen = size - 8 - n;
    if (dlen > SIZE_MAX - off)
        return moe_fail(MOE_ERR_NOMEM, "%s: %llu bytes do not fit in this address space", path,
                        (unsigned long long)size);
    if (off == 8 + n && size >= ST_MAP_MIN) {
        /* the data area is aligned in the file itself (moe's writer pads the header): map it, so
         * a checkpoint of many GB is not copied into the heap (an atomic save replaces the file
         * by rename, so the mapped one stays intact) */
        void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fileno(fp), 0);
        if (m != MAP_FAILED) {
            f->buf = m;
            f->mapped = (size_t)size;
            *hdr_len = n;
            *data_off = (size_t)off;
            *data_len = (size_t)dlen;
            return MOE_OK;
        }
    }
    f->buf = malloc((size_t)(off + dlen));
    if (!f->buf) return moe_fail(MOE_ERR_NOMEM, "%s: cannot allocate %llu bytes", path, (unsigned long long)(off + dlen));
    memcpy(f->buf, lenbuf, 8);
    memset(f->buf + 8 + n, ' ', (size_t)(off - 8 - n)); /* the alignment gap: defined bytes */
    if ((s = read_full(fp, f->buf + 8, (size_t)n, path)) != MOE_OK) return s;
    if ((s = read_full(fp, f->buf + off, (size_t)dlen, path)) != MOE_OK) return s;
    *hdr_len = n;
    *data_off = (size_t)off;
    *data_len = (size_t)dlen;
    return MOE_OK;
}

/* Checks one tensor entry {"dtype", "shape", "data_offsets"} and fills e (not its data). */
static moe_status st_tensor(const jparser *jp, const char *path, const char *name, uint32_t v,
                            uint64_t data_len, st_entry *e) {
    const jnode *nd = jp->nodes;
    uint32_t dt = NONE, sh = NONE, off = NONE;
    if (nd[v].type != J_OBJ) return moe_fail(MOE_ERR_FORMAT, "%s: tensor \"%s\" is not a JSON object", path, name);
    for (uint32_t k = nd[v].first; k != NONE; k = nd[nd[k].next].next) {
        uint32_t val = nd[k].next, *slot = NULL;
        if (jcstr(&nd[k])) {
            if (strcmp(nd[k].s, "dtype") == 0) slot = &dt;
            else if (strcmp(nd[k].s, "shape") == 0) slot = &sh;
            else if (strcmp(nd[k].s, "data_offsets") == 0) slot = &off;
        }
        if (!slot) return moe_fail(MOE_ERR_FORMAT, "%s: tensor \"%s\" has unknown field \"%s\"", path, name, nd[k].s);
        if (*slot != NONE) return moe_fail(MOE_ERR_FORMAT, "%s: tensor \"%s\" repeats \"%s\"", path, name, nd[k].s);
        *slot = val;
    }
    if (dt == NONE || sh == NONE || off == NONE)
        return moe_fail(MOE_ERR_FORMAT, "%s: tensor \"%s\" lacks \"%s\"", path, name,
                        dt == NONE ? "dtype" : sh == NONE ? "shape" : "data_offsets");

    if (nd[dt].type != J_STR) return moe_fail(MOE_ERR_FORMAT, "%s: dtype of \"%s\" is not a string", path, name);
    int d = 0;
    while (d < N_DTYPES && !(jcstr(&nd[dt]) && strcmp(nd[dt].s, dtype_info[d].name) == 0)) d++;
    if (d == N_DTYPES) return moe_fail(MOE_ERR_DTYPE, "%s: tensor \"%s\" has unsupported dtype \"%s\"", path, name, nd[dt].s);

    if (nd[sh].type != J_ARR) return moe_fail(MOE_ERR_FORMAT, "%s: shape of \"%s\" is not an array", path, name);
    if (nd[sh].count > MOE_MAX_DIMS)
        return moe_fail(MOE_ERR_FORMAT, "%s: tensor \"%s\" has %u dimensions, more than the %d supported", path,
                        name, (unsigned)nd[sh].count, MOE_MAX_DIMS);
    int ndim = 0, has_zero = 0;
    for (uint32_t x = nd[sh].first; x != NONE; x = nd[x].next) {
        uint64_t dim;
        const char *why = jnum_u64(&nd[x], &dim);
        if (!why && dim > (uint64_t)INT64_MAX) why = "is too large";
        if (why) return moe_fail(MOE_ERR_FORMAT, "%s: shape entry %d of \"%s\" %s", path, ndim, name, why);
        e->t.shape[ndim++] = (int64_t)dim;
        has_zero |= dim == 0;
    }
    /* A zero anywhere makes the product 0 even if the other dimensions alone would overflow. */
    size_t numel = 1;
    for (int i = 0; i < ndim && !has_zero; i++) {
        uint64_t dim = (uint64_t)e->t.shape[i];
        if (dim > SIZE_MAX / numel)
            return moe_fail(MOE_ERR_FORMAT, "%s: shape of \"%s\" overflows the element count", path, name);
        numel *= (size_t)dim;
    }
    if (has_zero) numel = 0;
    if (numel > SIZE_MAX / dtype_info[d].size)
        return moe_fail(MOE_ERR_FORMAT, "%s: shape of \"%s\" overflows the byte count", path, name);
    size_t bytes = numel * dtype_info[d].size;

    if (nd[off].type != J_ARR || nd[off].count != 2)
        return moe_fail(MOE_ERR_FORMAT, "%s: data_offsets of \"%s\" is not a [begin, end] pair", path, name);
    uint32_t b = nd[off].first, en = nd[b].next;
    const char *why = jnum_u64(&nd[b], &e->begin);
    if (!why) why = jnum_u64(&nd[en], &e->end);
    if (why) return moe_fail(MOE_ERR_FORMAT, "%s: a data offset of \"%s\" %s", path, name, why);
    if (e->end < e->begin)
        return moe_fail(MOE_ERR_FORMAT, "%s: data_offsets of \"%s\" end (%llu) before they begin (%llu)", path, name,
                        (unsigned long long)e->end, (unsigned long long)e->begin);
    if (e->end - e->begin != (uint64_t)bytes)
        return moe_fail(MOE_ERR_FORMAT, "%s: \"%s\" is %s with %zu elements = %zu bytes, but data_offsets span %llu",
                        path, name, dtype_info[d].name, numel, bytes, (unsigned long long)(e->end - e->begin));
    if (e->end > data_len)
        return moe_fail(MOE_ERR_TRUNCATED, "%s: \"%s\" bytes [%llu, %llu) run past the %llu-byte data area: the file is cut short",
                        path, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                        (unsigned long long)data_len);
    e->t.name = name;
    e->t.dtype = (moe_dtype)d;
    e->t.ndim = ndim;
    e->t.numel = numel;
    return MOE_OK;
}

static moe_status st_metadata(moe_st *f, const jparser *jp, const char *path, uint32_t v) {
    const jnode *nd = jp->nodes;
    if (nd[v].type != J_OBJ) return moe_fail(MOE_ERR_FORMAT, "%s: __metadata__ is not a JSON object", path);
    if (nd[v].count > 0) {
        f->meta = malloc(nd[v].count * sizeof *f->meta);
        f->meta_by_key = malloc(nd[v].count * sizeof *f->meta_by_key);
        if (!f->meta || !f->meta_by_key) return moe_fail(MOE_ERR_NOMEM, "%s: out of memory for metadata", path);
    }
    for (uint32_t k = nd[v].first; k != NONE; k = nd[nd[k].next].next) {
        const jnode *val = &nd[nd[k].next];
        if (!jcstr(&nd[k])) return moe_fail(MOE_ERR_FORMAT, "%s: a metadata key contains a NUL character", path);
        if (val->type != J_STR)
            return moe_fail(MOE_ERR_FORMAT, "%s: metadata value for \"%s\" is not a string", path, nd[k].s);
        if (!jcstr(val))
            return moe_fail(MOE_ERR_FORMAT, "%s: metadata value for \"%s\" contains a NUL character", path, nd[k].s);
        f->meta[f->nmeta].key = nd[k].s;
        f->meta[f->nmeta].val = val->s;
        f->meta_by_key[f->nmeta].key = nd[k].s;
        f->meta_by_key[f->nmeta].idx = f->nmeta;
        f->nmeta++;
    }
    if (f->nmeta > 1) qsort(f->meta_by_key, (size_t)f->nmeta, sizeof *f->meta_by_key, cmp_name_ref);
    for (int i = 1; i < f->nmeta; i++)
        if (strcmp(f->meta_by_key[i - 1].key, f->meta_by_key[i].key) == 0)
            return moe_fail(MOE_ERR_FORMAT, "%s: metadata key \"%s\" appears twice", path, f->meta_by_key[i].key);
    return MOE_OK;
}

/* Walks the parsed header, fills f's tables and points every tensor at its aligned data. */
static moe_status st_build(moe_st *f, const jparser *jp, uint32_t root, const char *path, unsigned char *data,
                           size_t data_len) {
    const jnode *nd = jp->nodes;
    moe_status s;
    int have_meta = 0;
    if (nd[root].type != J_OBJ) return moe_fail(MOE_ERR_FORMAT, "%s: header is not a JSON object", path);
    if (nd[root].count > INT_MAX) return moe_fail(MOE_ERR_FORMAT, "%s: too many tensors", path);
    if (nd[root].count > 0) {
        f->tensors = calloc(nd[root].count, sizeof *f->tensors);
        f->by_name = malloc(nd[root].count * sizeof *f->by_name);
        if (!f->tensors || !f->by_name) return moe_fail(MOE_ERR_NOMEM, "%s: out of memory for the tensor table", path);
    }
    for (uint32_t k = nd[root].first; k != NONE; k = nd[nd[k].next].next) {
        const char *name = nd[k].s;
        if (!jcstr(&nd[k])) return moe_fail(MOE_ERR_FORMAT, "%s: a tensor name contains a NUL character", path);
        if (strcmp(name, "__metadata__") == 0) {
            if (have_meta) return moe_fail(MOE_ERR_FORMAT, "%s: __metadata__ appears twice", path);
            have_meta = 1;
            if ((s = st_metadata(f, jp, path, nd[k].next)) != MOE_OK) return s;
            continue;
        }
        st_entry *e = &f->tensors[f->count];
        if ((s = st_tensor(jp, path, name, nd[k].next, data_len, e)) != MOE_OK) return s;
        f->by_name[f->count].key = name;
        f->by_name[f->count].idx = f->count;
        f->count++;
    }
    if (f->count == 0) return MOE_OK;

    qsort(f->by_name, (size_t)f->count, sizeof *f->by_name, cmp_name_ref);
    for (int i = 1; i < f->count; i++)
        if (strcmp(f->by_name[i - 1].key, f->by_name[i].key) == 0)
            return moe_fail(MOE_ERR_FORMAT, "%s: tensor \"%s\" appears twice", path, f->by_name[i].key);

    /* Overlaps: in order of begin, each non-empty range must start at or after the furthest end
     * seen so far. Empty ranges hold no bytes and so overlap nothing. */
    st_entry **order = malloc((size_t)f->count * sizeof *order);
    if (!order) return moe_fail(MOE_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < f->count; i++) order[i] = &f->tensors[i];
    qsort(order, (size_t)f->count, sizeof *order, cmp_range);
    const st_entry *prev = NULL;
    for (int i = 0; i < f->count; i++) {
        const st_entry *e = order[i];
        if (e->begin == e->end) continue;
        if (prev && e->begin < prev->end) {
            s = moe_fail(MOE_ERR_FORMAT, "%s: tensors \"%s\" [%llu, %llu) and \"%s\" [%llu, %llu) overlap", path,
                         prev->t.name, (unsigned long long)prev->begin, (unsigned long long)prev->end, e->t.name,
                         (unsigned long long)e->begin, (unsigned long long)e->end);
            free(order);
            return s;
        }
        if (!prev || e->end > prev->end) prev = e;
    }
    free(order);

    /* The data area is 8-aligned, so a tensor is aligned unless its own offset is not a
     * multiple of its element size (contiguous writers put a U8[3] before an F32); those few
     * are copied to fresh memory rather than refusing a valid file. */
    for (int i = 0; i < f->count; i++) {
        st_entry *e = &f->tensors[i];
        size_t size = dtype_info[e->t.dtype].size, bytes = (size_t)(e->end - e->begin);
        if (bytes == 0) {
            e->t.data = data; /* never read; any aligned address will do */
        } else if (e->begin % size == 0) {
            e->t.data = data + e->begin;
        } else {
            e->copy = malloc(bytes);
            if (!e->copy) return moe_fail(MOE_ERR_NOMEM, "%s: out of memory copying \"%s\"", path, e->t.name);
            memcpy(e->copy, data + e->begin, bytes);
            e->t.data = e->copy;
        }
    }
    return MOE_OK;
}

moe_status moe_st_open(moe_st **out, const char *path) {
    if (!out || !path) return moe_fail(MOE_ERR_INVALID_ARG, "moe_st_open: NULL argument");
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return moe_fail(MOE_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    moe_st *f = calloc(1, sizeof *f);
    if (!f) {
        fclose(fp);
        return moe_fail(MOE_ERR_NOMEM, "out of memory opening %s", path);
    }
    uint64_t n = 0;
    size_t data_off = 0, data_len = 0;
    moe_status s = st_load(f, fp, path, &n, &data_off, &data_len);
    fclose(fp); /* read-only stream: everything wanted has been read and checked already */
    if (s != MOE_OK) {
        moe_st_free(f);
        return s;
    }

    jparser jp;
    uint32_t root = NONE;
    memset(&jp, 0, sizeof jp);
    f->pool = malloc((size_t)n + 1);
    if (!f->pool) {
        moe_st_free(f);
        return moe_fail(MOE_ERR_NOMEM, "out of memory parsing the header of %s", path);
    }
    jp.pool = f->pool;
    if (jparse(&jp, (const char *)f->buf + 8, (size_t)n, &root) != 0) {
        s = jp.nomem ? moe_fail(MOE_ERR_NOMEM, "out of memory parsing the header of %s", path)
                     : moe_fail(MOE_ERR_FORMAT, "%s: bad JSON header at byte %zu: %s", path, jp.err_at, jp.err);
    } else {
        s = st_build(f, &jp, root, path, f->buf + data_off, data_len);
    }
    free(jp.nodes);
    if (s != MOE_OK) {
        moe_st_free(f);
        return s;
    }
    *out = f;
    return moe_ok();
}

void moe_st_free(moe_st *f) {
    if (!f) return;
    for (int i = 0; i < f->count; i++) free(f->tensors[i].copy);
    free(f->tensors);
    free(f->by_name);
    free(f->meta);
    free(f->meta_by_key);
    free(f->pool);
    if (f->mapped) munmap(f->buf, f->mapped);
    else free(f->buf);
    free(f);
}

int moe_st_count(const moe_st *f) { return f ? f->count : 0; }

const char *moe_dtype_str(moe_dtype d) { return (int)d >= 0 && (int)d < N_DTYPES ? dtype_info[d].name : "?"; }
size_t moe_dtype_size(moe_dtype d) { return (int)d >= 0 && (int)d < N_DTYPES ? dtype_info[d].size : 0; }

moe_status moe_st_at(const moe_st *f, int i, moe_tensor *t) {
    if (!f || !t) return moe_fail(MOE_ERR_INVALID_ARG, "moe_st_at: NULL argument");
    if (i < 0 || i >= f->count)
        return moe_fail(MOE_ERR_INVALID_ARG, "tensor index %d out of range [0, %d)", i, f->count);
    *t = f->tensors[i].t;
    return moe_ok();
}

static const name_ref *find_name(const name_ref *refs, int n, const char *key) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(refs[mid].key, key);
        if (c == 0) return &refs[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* `t` may be NULL to ask only whether the tensor exists. */
moe_status moe_st_get(const moe_st *f, const char *name, moe_tensor *t) {
    if (!f || !name) return moe_fail(MOE_ERR_INVALID_ARG, "moe_st_get: NULL argument");
    const name_ref *r = find_name(f->by_name, f->count, name);
    if (!r) return moe_fail(MOE_ERR_MISSING, "no tensor named \"%s\"", name);
    if (t) *t = f->tensors[r->idx].t;
    return moe_ok();
}

/* `t` and `data` may each be NULL when the caller does not want them. */
moe_status moe_st_get_f32(const moe_st *f, const char *name, moe_tensor *t, const float **data) {
    moe_tensor tmp;
    moe_status s = moe_st_get(f, name, &tmp);
    if (s != MOE_OK) return s;
    if (tmp.dtype != MOE_F32)
        return moe_fail(MOE_ERR_DTYPE, "tensor \"%s\" is %s, not F32", name, dtype_info[tmp.dtype].name);
    if (t) *t = tmp;
    if (data) *data = tmp.data;
    return moe_ok();
}

const char *moe_st_meta(const moe_st *f, const char *key) {
    if (!f || !key) return NULL;
    const name_ref *r = find_name(f->meta_by_key, f->nmeta, key);
    return r ? f->meta[r->idx].val : NULL;
}

int moe_st_meta_count(const moe_st *f) { return f ? f->nmeta : 0; }

moe_status moe_st_meta_at(const moe_st *f, int i, const char **key, const char **value) {
    if (!f || !key || !value) return moe_fail(MOE_ERR_INVALID_ARG, "moe_st_meta_at: NULL argument");
    if (i < 0 || i >= f->nmeta)
        return moe_fail(MOE_ERR_INVALID_ARG, "metadata index %d out of range [0, %d)", i, f->nmeta);
    *key = f->meta[i].key;
    *value = f->meta[i].val;
    return moe_ok();
}

/* ------------------------------------------------------------------------------------------ */
/* Writer                                                                                      */

typedef struct {
    char *name;
    moe_dtype dtype;
    int ndim;
    int64_t shape[MOE_MAX_DIMS];
    size_t bytes;
    const void *data; /* the caller's, not copied */
} wtensor;

typedef struct {
    char *key, *val;
} wmeta;

struct moe_st_writer {
    wtensor *t;
    int n, cap;
    wmeta *m;
    int nm, mcap;
};

static char *copy_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (c) memcpy(c, s, n);
    return c;
}

moe_status moe_st_writer_create(moe_st_writer **out) {
    if (!out) return moe_fail(MOE_ERR_INVALID_ARG, "moe_st_writer_create: NULL argument");
    *out = calloc(1, sizeof **out);
    if (!*out) return moe_fail(MOE_ERR_NOMEM, "out of memory creating a safetensors writer");
    return moe_ok();
}

void moe_st_writer_free(moe_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    for (int i = 0; i < w->nm; i++) {
        free(w->m[i].key);
        free(w->m[i].val);
    }
    free(w->t);
    free(w->m);
    free(w);
}

/* Grows an array of `*cap` elements of `size` bytes to hold one more. */
static int grow(void **arr, int *cap, int n, size_t size) {
    if (n < *cap) return 0;
    if (*cap > INT_MAX / 2 || (size_t)(*cap ? *cap * 2 : 16) > SIZE_MAX / size) return -1;
    int c = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, (size_t)c * size);
    if (!p) return -1;
    *arr = p;
    *cap = c;
    return 0;
}

moe_status moe_st_writer_add(moe_st_writer *w, const char *name, moe_dtype dtype, int ndim,
                             const int64_t *shape, const void *data) {
    if (!w || !name) return moe_fail(MOE_ERR_INVALID_ARG, "moe_st_writer_add: NULL argument");
    if (name[0] == '\0') return moe_fail(MOE_ERR_INVALID_ARG, "tensor name is empty");
    if (strcmp(name, "__metadata__") == 0)
        return moe_fail(MOE_ERR_INVALID_ARG, "\"__metadata__\" is reserved and cannot name a tensor");
    if (!utf8_valid(name)) return moe_fail(MOE_ERR_INVALID_ARG, "tensor name \"%s\" is not valid UTF-8", name);
    if ((int)dtype < 0 || (int)dtype >= N_DTYPES)
        return moe_fail(MOE_ERR_INVALID_ARG, "tensor \"%s\": unknown dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > MOE_MAX_DIMS)
        return moe_fail(MOE_ERR_INVALID_ARG, "tensor \"%s\": ndim %d outside [0, %d]", name, ndim, MOE_MAX_DIMS);
    if (ndim > 0 && !shape) return moe_fail(MOE_ERR_INVALID_ARG, "tensor \"%s\": NULL shape", name);
    size_t numel = 1;
    int has_zero = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return moe_fail(MOE_ERR_INVALID_ARG, "tensor \"%s\": shape[%d] = %lld is negative", name, i,
                            (long long)shape[i]);
        has_zero |= shape[i] == 0;
    }
    for (int i = 0; i < ndim && !has_zero; i++) {
        if ((uint64_t)shape[i] > SIZE_MAX / numel)
            return moe_fail(MOE_ERR_INVALID_ARG, "tensor \"%s\": shape overflows the element count", name);
        numel *= (size_t)shape[i];
    }
    if (has_zero) numel = 0;
    if (numel > SIZE_MAX / dtype_info[dtype].size)
        return moe_fail(MOE_ERR_INVALID_ARG, "tensor \"%s\": shape overflows the byte count", name);
    size_t bytes = numel * dtype_info[dtype].size;
    if (bytes > 0 && !data) return moe_fail(MOE_ERR_INVALID_ARG, "tensor \"%s\": NULL data", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return moe_fail(MOE_ERR_INVALID_ARG, "tensor \"%s\" was already added", name);
    if (grow((void **)&w->t, &w->cap, w->n, sizeof *w->t) != 0)
        return moe_fail(MOE_ERR_NOMEM, "out of memory adding tensor \"%s\"", name);
    wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = copy_str(name))) return moe_fail(MOE_ERR_NOMEM, "out of memory adding tensor \"%s\"", name);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->bytes = bytes;
    t->data = data;
    w->n++;
    return moe_ok();
}

moe_status moe_st_writer_meta(moe_st_writer *w, const char *key, const char *value) {
    if (!w || !key || !value) return moe_fail(MOE_ERR_INVALID_ARG, "moe_st_writer_meta: NULL argument");
    if (!utf8_valid(key) || !utf8_valid(value))
        return moe_fail(MOE_ERR_INVALID_ARG, "metadata \"%s\" is not valid UTF-8", key);
    char *v = copy_str(value);
    if (!v) return moe_fail(MOE_ERR_NOMEM, "out of memory storing metadata \"%s\"", key);
    for (int i = 0; i < w->nm; i++) {
        if (strcmp(w->m[i].key, key) == 0) {
            free(w->m[i].val);
            w->m[i].val = v;
            return moe_ok();
        }
    }
    char *k = copy_str(key);
    if (!k || grow((void **)&w->m, &w->mcap, w->nm, sizeof *w->m) != 0) {
        free(k);
        free(v);
        return moe_fail(MOE_ERR_NOMEM, "out of memory storing metadata \"%s\"", key);
    }
    w->m[w->nm].key = k;
    w->m[w->nm].val = v;
    w->nm++;
    return moe_ok();
}

/* A growing string; after an allocation failure it stops growing and remembers that. */
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (n > SIZE_MAX - b->len - 1) {
        b->oom = 1;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_cat(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf *b, uint64_t v) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_put(b, tmp, (size_t)n);
}

/* A JSON string literal. Bytes >= 0x80 are already checked UTF-8 and go through unchanged. */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[8];
        switch (c) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        default:
            if (c < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                sb_put(b, esc, 6);
            } else {
                sb_put(b, p, 1);
            }
        }
    }
    sb_put(b, "\"", 1);
}

/* The header, padded with spaces so that 8 + its length is a multiple of 8. */
static moe_status build_header(const moe_st_writer *w, sbuf *b) {
    uint64_t offset = 0;
    sb_cat(b, "{");
    if (w->nm > 0) {
        sb_cat(b, "\"__metadata__\":{");
        for (int i = 0; i < w->nm; i++) {
            if (i) sb_cat(b, ",");
            sb_json_str(b, w->m[i].key);
            sb_cat(b, ":");
            sb_json_str(b, w->m[i].val);
        }
        sb_cat(b, "}");
    }
    for (int i = 0; i < w->n; i++) {
        const wtensor *t = &w->t[i];
        if (i || w->nm) sb_cat(b, ",");
        sb_json_str(b, t->name);
        sb_cat(b, ":{\"dtype\":\"");
        sb_cat(b, dtype_info[t->dtype].name);
        sb_cat(b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d) sb_cat(b, ",");
            sb_u64(b, (uint64_t)t->shape[d]);
        }
        sb_cat(b, "],\"data_offsets\":[");
        sb_u64(b, offset);
        sb_cat(b, ",");
        if (t->bytes > UINT64_MAX - offset) return moe_fail(MOE_ERR_INVALID_ARG, "tensors total more than 2^64 bytes");
        offset += t->bytes;
        sb_u64(b, offset);
        sb_cat(b, "]}");
    }
    sb_cat(b, "}");
    while (!b->oom && (8 + b->len) % 8 != 0) sb_cat(b, " ");
    if (b->oom) return moe_fail(MOE_ERR_NOMEM, "out of memory building the safetensors header");
    if (b->len > ST_MAX_HEADER)
        return moe_fail(MOE_ERR_INVALID_ARG, "header of %zu bytes is over the 100 MB that readers accept", b->len);
    return MOE_OK;
}

static moe_status write_all(FILE *fp, const void *p, size_t n, const char *tmp) {
    if (n > 0 && fwrite(p, 1, n, fp) != n) return moe_fail(MOE_ERR_IO, "writing %s: %s", tmp, strerror(errno));
    return MOE_OK;
}

static moe_status write_body(const moe_st_writer *w, FILE *fp, const sbuf *hdr, const char *tmp) {
    unsigned char lenbuf[8];
    uint64_t n = hdr->len;
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)(n >> (8 * i)); /* little-endian on any host */
    moe_status s = write_all(fp, lenbuf, 8, tmp);
    if (s == MOE_OK) s = write_all(fp, hdr->p, hdr->len, tmp);
    for (int i = 0; i < w->n && s == MOE_OK; i++) s = write_all(fp, w->t[i].data, w->t[i].bytes, tmp);
    return s;
}

moe_status moe_st_writer_write(moe_st_writer *w, const char *path) {
    if (!w || !path) return moe_fail(MOE_ERR_INVALID_ARG, "moe_st_writer_write: NULL argument");
    if (path[0] == '\0') return moe_fail(MOE_ERR_INVALID_ARG, "moe_st_writer_write: empty path");
    sbuf hdr = {0};
    moe_status s = build_header(w, &hdr);
    if (s != MOE_OK) {
        free(hdr.p);
        return s;
    }
    char *tmp = atomic_tmp_name(path);
    if (!tmp) {
        free(hdr.p);
        return moe_fail(MOE_ERR_NOMEM, "out of memory writing %s", path);
    }
    atomic_remove_stale(path); /* what a writer killed mid-save left */

    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        /* Nothing was created, so nothing is removed: `tmp` may be someone else's. */
        s = moe_fail(MOE_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        free(hdr.p);
        return s;
    }
    s = write_body(w, fp, &hdr, tmp);
    free(hdr.p);
    /* stdio buffers: a full disk may only show up at fflush, and only fsync proves the bytes
     * reached the device. fclose is called exactly once, whatever happened before. */
    if (s == MOE_OK && fflush(fp) != 0) s = moe_fail(MOE_ERR_IO, "writing %s: %s", tmp, strerror(errno));
    if (s == MOE_OK && fsync(fileno(fp)) != 0) s = moe_fail(MOE_ERR_IO, "fsync %s: %s", tmp, strerror(errno));
    int rc = fclose(fp);
    if (s == MOE_OK && rc != 0) s = moe_fail(MOE_ERR_IO, "closing %s: %s", tmp, strerror(errno));
    if (s == MOE_OK && rename(tmp, path) != 0)
        s = moe_fail(MOE_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (s != MOE_OK) {
        remove(tmp);
        free(tmp);
        return s;
    }
    free(tmp);
    if ((s = atomic_sync_dir(path)) != MOE_OK) return s;
    return moe_ok();
}
