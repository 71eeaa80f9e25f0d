/* internal.h - helpers shared by the library's source files; not installed, not public. */
#ifndef MOE_INTERNAL_H
#define MOE_INTERNAL_H

#include "moe.h"
#include <stddef.h>

/* Records a formatted message as moe_last_error() for this thread and returns `s`,
 * so error paths read:  return moe_fail(MOE_ERR_CONFIG, "k=%d exceeds n=%d", k, n); */
moe_status moe_fail(moe_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Clears moe_last_error() (called by successful top-level operations that report errors). */
void moe_clear_error(void);
/* MOE_OK with moe_last_error() cleared: how a public call returns success. */
/* Seconds on the monotonic clock (base/clock.c). */
double moe_clock_s(void);

static inline moe_status moe_ok(void) {
    moe_clear_error();
    return MOE_OK;
}

/* A model's parameter and gradient arenas handed to the caller (each output may be NULL). */
static inline moe_status moe_arena_out(float *p, float *g, size_t n, float **params, float **grads, size_t *count) {
    if (params) *params = p;
    if (grads) *grads = g;
    if (count) *count = n;
    return moe_ok();
}

/* Aligned allocation (64 bytes) of `count` floats; NULL on failure or count overflow.
 * moe_free_aligned(NULL) is harmless. */
float *moe_alloc_floats(size_t count);
/* buffers from this size up are given in (transparent) huge pages when the kernel allows */
#define MOE_HUGE_BYTES ((size_t)64 << 20)
/* p [count] = 0, split over the threads when large */
void moe_zero_floats(float *p, size_t count);
void moe_free_aligned(void *p);

/* A workspace of many buffers in one allocation: each entry names where its pointer goes and
 * how many bytes it needs; moe_bufs_alloc carves them out of one 64-byte-aligned block (each
 * buffer 64-byte aligned) and returns the block, or NULL (pointers untouched) when memory is
 * short or the sizes overflow. moe_free_aligned(block) frees them all. */
typedef struct {
    void *ptr; /* the address of a float* / int* / double* to set */
    size_t bytes;
} moe_buf;
void *moe_bufs_alloc(const moe_buf *list, int count);
#define MOE_BUF(p, count) ((moe_buf){(void *)&(p), sizeof *(p) * (size_t)(count)})

/* A parameter arena: tensors start on 64-byte boundaries (16 floats), so a tensor of n floats
 * takes MOE_ARENA_PAD(n); moe_alloc_arena gives zeroed params and grads [count], or 0 (both NULL)
 * when memory is short. */
#define MOE_ARENA_PAD(n) (((size_t)(n) + 15) & ~(size_t)15)
int moe_alloc_arena(float **params, float **grads, size_t count);

/* 1 if all `count` floats are finite. */
int moe_all_finite(const float *x, size_t count);

#endif
