/* bf16.h - bfloat16 storage (the upper 16 bits of a float32) for expert weights: widening to
 * float32 for arithmetic, and the two roundings back: to nearest even (loading, initialising) and
 * stochastic (updates, so that a small update survives in expectation: E[round(x)] = x).
 * Internal, inline so that the loops over a weight matrix vectorise.
 *
 * The stochastic rounding of element i draws its 16 random bits from a counter-based generator
 * (rng.h) keyed by the caller; the caller makes the key from the seed, the step and the tensor,
 * and i is the element's place in the whole (all-rank) tensor, so that the bits do not depend on
 * thread or rank counts and a resumed run rounds as the straight one. */
#ifndef MOE_BF16_H
#define MOE_BF16_H

#include "base/rng.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline float bf16_to_f32(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* NaN stays a (quiet) NaN; Inf stays Inf */
static inline int bf16_special(uint32_t u) { return (u & 0x7f800000u) == 0x7f800000u; }
static inline uint16_t bf16_keep_special(uint32_t u) {
    return (uint16_t)((u >> 16) | ((u & 0x007fffffu) ? 0x0040u : 0u));
}

/* round to nearest, ties to even */
static inline uint16_t f32_to_bf16(float f) {
    const uint32_t u = f32_bits(f);
    if (bf16_special(u)) return bf16_keep_special(u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* stochastic: rounds up with probability (the dropped 16 bits) / 2^16, given 16 uniform bits r.
 * A value whose rounding up would overflow to Inf stays at the largest finite one. */
static inline uint16_t f32_to_bf16_sr(float f, uint32_t r) {
    const uint32_t u = f32_bits(f);
    if (bf16_special(u)) return bf16_keep_special(u);
    const uint32_t v = u + (r & 0xffffu);
    return bf16_special(v) ? (uint16_t)(u >> 16) : (uint16_t)(v >> 16);
}

static inline void bf16_widen(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(src[i]);
}

/* dst[i] = the stochastic rounding of src[i], element i's bits drawn at counter first + i */
static inline void bf16_store_sr(uint16_t *dst, const float *src, size_t n, uint64_t key, uint64_t first) {
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_bf16_sr(src[i], (uint32_t)(rng_u64_key(key, first + i) >> 48));
}

/* 1 when no value is NaN or Inf */
static inline int bf16_all_finite(const uint16_t *p, size_t n) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad |= (p[i] & 0x7f80u) == 0x7f80u;
    return !bad;
}

#endif
