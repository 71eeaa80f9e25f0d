/* idx.c - reads IDX files, the format of MNIST and Fashion-MNIST, plain or gzip-compressed
 * (told apart by the first two bytes, gzip's 0x1f 0x8b), into one byte array.
 *
 * File layout (all sizes big-endian):
 *
 *   +------+------+------+------+----------------------------+-----------------------------+
 *   | 0x00 | 0x00 | type | ndim | ndim x uint32 sizes        | prod(sizes) items, row-major |
 *   +------+------+------+------+----------------------------+-----------------------------+
 *
 * Only type 0x08 (unsigned byte) is read. Nothing in the header is trusted: ndim must be 1..4,
 * the product of the sizes must fit in size_t, and the data must be exactly that long. The
 * buffer grows as data actually arrives, so a header promising gigabytes on a small file fails
 * with MOE_ERR_TRUNCATED instead of a huge allocation. */
#define _POSIX_C_SOURCE 200809L
#define _FILE_OFFSET_BITS 64

#include "base/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef MOE_HAVE_ZLIB
#include <zlib.h>
#endif

#define IDX_TYPE_U8 0x08
#define IDX_MAX_DIMS 4
/* First allocation for the data; doubled as data arrives, up to what the header promises. */
#define IDX_FIRST_CHUNK ((size_t)1 << 20)

/* A byte source: a plain FILE or a gzip stream. */
typedef struct {
    const char *path;
    FILE *f;
#ifdef MOE_HAVE_ZLIB
    gzFile gz;
#endif
} idx_src;

/* Reads up to `len` bytes into `buf`; *got says how many arrived (fewer only at the end of the
 * data). MOE_OK at a clean end of data; an error status for a read error or a corrupt or cut-off
 * gzip stream. */
static moe_status src_read(idx_src *s, void *buf, size_t len, size_t *got) {
    *got = 0;
#ifdef MOE_HAVE_ZLIB
    if (s->gz) {
        while (*got < len) {
            size_t want = len - *got;
            if (want > ((size_t)1 << 30)) want = (size_t)1 << 30; /* gzread takes an unsigned int */
            int r = gzread(s->gz, (char *)buf + *got, (unsigned)want);
            if (r > 0) *got += (size_t)r;
            int err = Z_OK;
            const char *msg = gzerror(s->gz, &err);
            /* zlib's message reads "<path>: <what>"; keep the what */
            size_t plen = strlen(s->path);
            if (strncmp(msg, s->path, plen) == 0 && strncmp(msg + plen, ": ", 2) == 0) msg += plen + 2;
            if (err == Z_BUF_ERROR)
                return moe_fail(MOE_ERR_TRUNCATED, "%s: the gzip stream ends early (%s)", s->path, msg);
            if (err == Z_ERRNO)
                return moe_fail(MOE_ERR_IO, "%s: read failed: %s", s->path, strerror(errno));
            if (err == Z_MEM_ERROR)
                return moe_fail(MOE_ERR_NOMEM, "%s: out of memory while decompressing", s->path);
            if (err != Z_OK || r < 0)
                return moe_fail(MOE_ERR_FORMAT, "%s: corrupt gzip data (%s)", s->path, msg);
            if (r == 0) break; /* end of the stream */
        }
        return MOE_OK;
    }
#endif
    *got = fread(buf, 1, len, s->f);
    if (*got < len && ferror(s->f))
        return moe_fail(MOE_ERR_IO, "%s: read failed: %s", s->path, strerror(errno));
    return MOE_OK;
}

static void src_close(idx_src *s) {
    if (s->f) fclose(s->f);
    s->f = NULL;
#ifdef MOE_HAVE_ZLIB
    if (s->gz) gzclose(s->gz);
    s->gz = NULL;
#endif
}

/* Opens `path`, choosing plain or gzip by its first two bytes. */
static moe_status src_open(idx_src *s, const char *path) {
    memset(s, 0, sizeof *s);
    s->path = path;
    s->f = fopen(path, "rb");
    if (!s->f) return moe_fail(MOE_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    unsigned char m[2] = {0, 0};
    size_t got = fread(m, 1, 2, s->f);
    if (got < 2 && ferror(s->f)) {
        moe_status st = moe_fail(MOE_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        src_close(s);
        return st;
    }
    if (got == 2 && m[0] == 0x1f && m[1] == 0x8b) {
#ifdef MOE_HAVE_ZLIB
        src_close(s);
        s->gz = gzopen(path, "rb");
        if (!s->gz) return moe_fail(MOE_ERR_IO, "cannot open %s: %s", path, strerror(errno));
        gzbuffer(s->gz, 1 << 17);
        return MOE_OK;
#else
        src_close(s);
        return moe_fail(MOE_ERR_FORMAT,
                        "%s is gzip-compressed, but libmoe was built without zlib: install zlib "
                        "(zlib1g-dev) and rebuild, or gunzip the file",
                        path);
#endif
    }
    rewind(s->f);
    return MOE_OK;
}

/* Reads the header and data of an opened source into `out` (data owned by `out`). */
static moe_status read_idx(idx_src *s, moe_idx *out) {
    const char *path = s->path;
    unsigned char hdr[4 + 4 * IDX_MAX_DIMS];
    size_t got;
    moe_status st = src_read(s, hdr, 4, &got);
    if (st) return st;
    if (got < 4)
        return moe_fail(MOE_ERR_TRUNCATED, "%s: %zu bytes, too short for an IDX header (4 bytes of magic)",
                        path, got);
    if (hdr[0] != 0 || hdr[1] != 0)
        return moe_fail(MOE_ERR_FORMAT,
                        "%s is not an IDX file: its magic starts 0x%02x 0x%02x instead of 0x00 0x00",
                        path, hdr[0], hdr[1]);
    if (hdr[2] != IDX_TYPE_U8)
        return moe_fail(MOE_ERR_DTYPE,
                        "%s: IDX item type 0x%02x is not supported (only 0x08, unsigned byte)", path,
                        hdr[2]);
    const int ndim = hdr[3];
    if (ndim < 1 || ndim > IDX_MAX_DIMS)
        return moe_fail(MOE_ERR_FORMAT, "%s: IDX header has %d dimensions (1 to %d supported)", path,
                        ndim, IDX_MAX_DIMS);
    st = src_read(s, hdr + 4, 4 * (size_t)ndim, &got);
    if (st) return st;
    if (got < 4 * (size_t)ndim)
        return moe_fail(MOE_ERR_TRUNCATED, "%s: the file ends inside the IDX header (%d sizes expected)",
                        path, ndim);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        const unsigned char *p = hdr + 4 + 4 * i;
        uint32_t v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        out->shape[i] = v;
        if (v != 0 && numel > SIZE_MAX / v)
            return moe_fail(MOE_ERR_FORMAT, "%s: IDX sizes overflow (the product of %d sizes exceeds size_t)",
                            path, ndim);
        numel *= v;
    }

    /* Data: grow the buffer as bytes arrive, never beyond what the header promised. */
    size_t cap = numel < IDX_FIRST_CHUNK ? numel : IDX_FIRST_CHUNK, have = 0;
    uint8_t *data = malloc(cap ? cap : 1);
    if (!data) return moe_fail(MOE_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, cap);
    for (;;) {
        st = src_read(s, data + have, cap - have, &got);
        have += got;
        if (st || have < cap || have == numel) break;
        size_t ncap = cap > numel / 2 ? numel : cap * 2;
        uint8_t *nd = realloc(data, ncap);
        if (!nd) {
            st = moe_fail(MOE_ERR_NOMEM, "%s: cannot allocate %zu bytes for the IDX data", path, ncap);
            break;
        }
        data = nd;
        cap = ncap;
    }
    if (!st && have < numel)
        st = moe_fail(MOE_ERR_TRUNCATED, "%s: the IDX header promises %zu data bytes, the file has only %zu",
                      path, numel, have);
    if (!st) {
        unsigned char extra;
        st = src_read(s, &extra, 1, &got);
        if (!st && got)
            st = moe_fail(MOE_ERR_FORMAT, "%s: extra bytes after the %zu data bytes the IDX header promises",
                          path, numel);
    }
    if (st) {
        free(data);
        return st;
    }
    out->ndim = ndim;
    out->numel = numel;
    out->data = data;
    return MOE_OK;
}

moe_status moe_idx_load(const char *path, moe_idx *out) {
    if (!out) return moe_fail(MOE_ERR_INVALID_ARG, "out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return moe_fail(MOE_ERR_INVALID_ARG, "path is NULL");
    idx_src s;
    moe_status st = src_open(&s, path);
    if (st) return st;
    st = read_idx(&s, out);
    src_close(&s);
    if (st) {
        memset(out, 0, sizeof *out);
        return st;
    }
    return moe_ok();
}

void moe_idx_free(moe_idx *m) {
    if (!m) return;
    free(m->data);
    memset(m, 0, sizeof *m);
}
