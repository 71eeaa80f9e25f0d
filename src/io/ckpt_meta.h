/* ckpt_meta.h - checkpoint metadata (internal, not installed): writing settings as decimal
 * strings into a safetensors __metadata__ and reading them back with range checks. Shared by the
 * language model's and the translation model's checkpoints. */
#ifndef MOE_CKPT_META_H
#define MOE_CKPT_META_H

#include "base/internal.h"
#include "moe.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* A writer and the first error; every call after an error does nothing. w NULL: a rank that
 * does not write. */

typedef struct {
    moe_st_writer *w;
    moe_status st;
} meta_w;

static inline void meta_str(meta_w *m, const char *k, const char *v) {
    if (m->w && !m->st) m->st = moe_st_writer_meta(m->w, k, v); /* no writer: not rank 0 */
}
static inline void meta_i64(meta_w *m, const char *k, int64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%" PRId64, v);
    meta_str(m, k, b);
}
static inline void meta_u64(meta_w *m, const char *k, uint64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%" PRIu64, v);
    meta_str(m, k, b);
}
static inline void meta_f(meta_w *m, const char *k, double v) {
    char b[48];
    snprintf(b, sizeof b, "%.9g", v);
    meta_str(m, k, b);
}

/* An integer setting within [lo, hi]: a value read from a file is checked before anything is
 * sized or indexed with it (one that does not fit 64 bits is out of range too). */
static inline moe_status get_i64_in(const moe_st *f, const char *k, int64_t lo, int64_t hi, int64_t *v) {
    const char *s = moe_st_meta(f, k);
    if (!s) return moe_fail(MOE_ERR_MISSING, "checkpoint lacks the setting '%s'", k);
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s || *end) return moe_fail(MOE_ERR_FORMAT, "checkpoint setting %s='%s' is not an integer", k, s);
    if (errno == ERANGE || x < lo || x > hi)
        return moe_fail(MOE_ERR_FORMAT, "checkpoint setting %s=%s is outside [%" PRId64 ", %" PRId64 "]", k, s, lo, hi);
    *v = x;
    return MOE_OK;
}
static inline moe_status get_int_in(const moe_st *f, const char *k, int lo, int hi, int *v) {
    int64_t x = 0;
    moe_status st = get_i64_in(f, k, lo, hi, &x);
    if (!st) *v = (int)x;
    return st;
}
static inline moe_status get_i64(const moe_st *f, const char *k, int64_t *v) {
    return get_i64_in(f, k, INT64_MIN, INT64_MAX, v);
}
static inline moe_status get_int(const moe_st *f, const char *k, int *v) {
    return get_int_in(f, k, -2147483647 - 1, 2147483647, v);
}
/* Any 64-bit count (random streams' seeds and counters, hashes). */
static inline moe_status get_u64(const moe_st *f, const char *k, uint64_t *v) {
    const char *s = moe_st_meta(f, k);
    if (!s) return moe_fail(MOE_ERR_MISSING, "checkpoint lacks the setting '%s'", k);
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (end == s || *end || s[0] == '-' || errno == ERANGE)
        return moe_fail(MOE_ERR_FORMAT, "checkpoint setting %s='%s' is not a 64-bit count", k, s);
    *v = x;
    return MOE_OK;
}
static inline moe_status get_float(const moe_st *f, const char *k, float *v) {
    const char *s = moe_st_meta(f, k);
    if (!s) return moe_fail(MOE_ERR_MISSING, "checkpoint lacks the setting '%s'", k);
    char *end;
    double x = strtod(s, &end);
    if (end == s || *end || !isfinite(x))
        return moe_fail(MOE_ERR_FORMAT, "checkpoint setting %s='%s' is not a number", k, s);
    *v = (float)x;
    return MOE_OK;
}

#endif
