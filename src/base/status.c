/* status.c - status words and the per-thread "last error" message. */
#define _DEFAULT_SOURCE /* madvise */
#include "base/internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static _Thread_local char last_error[512];

const char *moe_status_str(moe_status s) {
    switch (s) {
    case MOE_OK: return "ok";
    case MOE_ERR_INVALID_ARG: return "invalid argument";
    case MOE_ERR_CONFIG: return "invalid configuration";
    case MOE_ERR_SHAPE: return "shape mismatch";
    case MOE_ERR_NOMEM: return "out of memory";
    case MOE_ERR_IO: return "input/output error";
    case MOE_ERR_TRUNCATED: return "file truncated";
    case MOE_ERR_FORMAT: return "malformed file";
    case MOE_ERR_DTYPE: return "unsupported dtype";
    case MOE_ERR_MISSING: return "missing tensor or setting";
    case MOE_ERR_NONFINITE: return "NaN or Inf in input";
    case MOE_ERR_STATE: return "call out of order";
    case MOE_ERR_UNSUPPORTED: return "not supported by this build";
    case MOE_ERR_COMM: return "communication between processes failed";
    case MOE_ERR_DIVERGED: return "training diverged";
    }
    return "unknown status";
}

const char *moe_last_error(void) { return last_error; }

void moe_clear_error(void) { last_error[0] = '\0'; }

moe_status moe_fail(moe_status s, const char *fmt, ...) {
    /* format into a local buffer first: an argument may be moe_last_error() itself, as when
     * a caller adds context to a lower layer's message */
    char buf[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(last_error, buf, sizeof buf);
    return s;
}

float *moe_alloc_floats(size_t count) {
    if (count == 0) count = 1;
    if (count > ((size_t)-1) / sizeof(float) - (2u << 20)) return NULL;
    if (count * sizeof(float) < MOE_HUGE_BYTES) {
        size_t bytes = (count * sizeof(float) + 63) & ~(size_t)63;
        return aligned_alloc(64, bytes);
    }
    /* a large buffer (a model of many experts) in transparent huge pages where the kernel gives
     * them on request: 512 times fewer page faults to fill it and fewer TLB misses to read it */
    const size_t huge = (size_t)2 << 20, bytes = (count * sizeof(float) + huge - 1) & ~(huge - 1);
    void *p = aligned_alloc(huge, bytes);
#ifdef MADV_HUGEPAGE
    if (p) (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

void moe_zero_floats(float *p, size_t count) {
    /* in parallel: the first touch of a large buffer is mostly the kernel's page faults */
    const size_t chunk = (size_t)1 << 20;
    const int64_t nchunks = (int64_t)((count + chunk - 1) / chunk);
#pragma omp parallel for schedule(static) if (nchunks > 4)
    for (int64_t c = 0; c < nchunks; c++) {
        const size_t a = (size_t)c * chunk, n = count - a < chunk ? count - a : chunk;
        memset(p + a, 0, sizeof(float) * n);
    }
}

void moe_free_aligned(void *p) { free(p); }

void *moe_bufs_alloc(const moe_buf *list, int count) {
    size_t total = 0;
    for (int i = 0; i < count; i++) {
        size_t b = (list[i].bytes + 63) & ~(size_t)63;
        if (b < list[i].bytes || total + b < total) return NULL;
        total += b;
    }
    char *block = (char *)moe_alloc_floats(total / sizeof(float) + 1);
    if (!block) return NULL;
    size_t off = 0;
    for (int i = 0; i < count; i++) {
        *(void **)list[i].ptr = block + off;
        off += (list[i].bytes + 63) & ~(size_t)63;
    }
    return block;
}

int moe_all_finite(const float *x, size_t count) {
    /* on the bits (an all-ones exponent is Inf or NaN), in blocks that the compiler vectorises,
     * stopping at the first block with one */
    const uint32_t *u = (const uint32_t *)(const void *)x;
    for (size_t b = 0; b < count; b += 4096) {
        const size_t e = count - b < 4096 ? count : b + 4096;
        uint32_t bad = 0;
        for (size_t i = b; i < e; i++) bad |= (u[i] & 0x7f800000u) == 0x7f800000u;
        if (bad) return 0;
    }
    return 1;
}

int moe_alloc_arena(float **params, float **grads, size_t count) {
    *params = moe_alloc_floats(count);
    *grads = moe_alloc_floats(count);
    if (!*params || !*grads) {
        moe_free_aligned(*params);
        moe_free_aligned(*grads);
        *params = *grads = NULL;
        return 0;
    }
    memset(*params, 0, sizeof(float) * count);
    memset(*grads, 0, sizeof(float) * count);
    return 1;
}
