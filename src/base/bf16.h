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
 * A value whose rounding up would overflow to Inf stays at the largest finite one. Branch-free,
 * so that loops over it vectorise. */
static inline uint16_t f32_to_bf16_sr(float f, uint32_t r) {
    const uint32_t u = f32_bits(f), v = u + (r & 0xffffu);
    const uint16_t up = bf16_special(v) ? (uint16_t)(u >> 16) : (uint16_t)(v >> 16);
    return bf16_special(u) ? bf16_keep_special(u) : up;
}

static inline void bf16_widen(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(src[i]);
}

/* The 16 random bits of element g (its place in the whole tensor) under key: one 64-bit draw
 * serves 4 neighbouring elements, g's lane of counter g / 4 */
static inline uint32_t bf16_sr_bits(uint64_t key, uint64_t g) {
    return (uint32_t)(rng_u64_key(key, g >> 2) >> (16 * (g & 3))) & 0xffffu;
}

/* dst[i] = the stochastic rounding of src[i], element i being element first + i of the tensor.
 * In blocks: the block's draws first, then their 16-bit lanes, then the roundings (each loop
 * vectorises). */
static inline void bf16_store_sr(uint16_t *dst, const float *src, size_t n, uint64_t key, uint64_t first) {
    enum { BLK = 256 };
    uint64_t r[BLK / 4 + 2];
    uint16_t bits[BLK + 8];
    for (size_t i0 = 0; i0 < n; i0 += BLK) {
        const size_t len = n - i0 < BLK ? n - i0 : BLK;
        const uint64_t a = first + i0, g0 = a >> 2, ng = ((a + len + 3) >> 2) - g0;
        for (uint64_t k = 0; k < ng; k++) r[k] = rng_u64_key(key, g0 + k);
        for (uint64_t k = 0; k < ng; k++)
            for (int j = 0; j < 4; j++) bits[4 * k + (uint64_t)j] = (uint16_t)(r[k] >> (16 * j));
        const uint16_t *b = bits + (a & 3);
        for (size_t i = 0; i < len; i++) dst[i0 + i] = f32_to_bf16_sr(src[i0 + i], b[i]);
    }
}

/* 1 when no value is NaN or Inf */
static inline int bf16_all_finite(const uint16_t *p, size_t n) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad |= (p[i] & 0x7f80u) == 0x7f80u;
    return !bad;
}

#endif
