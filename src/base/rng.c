/* rng.c - counter-based random numbers. A value depends only on (seed, counter), so any draw
 * can be replayed, run in any order or on any thread, and a resumed run continues exactly by
 * restoring one counter. The mixer is SplitMix64's finaliser applied to seed and counter. */
#include "moe.h"
#include "base/rng.h"

#include <math.h>

uint64_t moe_rng_u64(uint64_t seed, uint64_t counter) { return rng_u64(seed, counter); }

float moe_rng_uniform(uint64_t seed, uint64_t counter) { return rng_uniform(seed, counter); }

/* Box-Muller on two 53-bit uniforms from sub-counters 2p and 2p+1 of pair p = counter / 2:
 * an even counter takes r cos(t), the odd one r sin(t), so a bulk fill pays one log and one
 * sincos per two normals and each value is still a pure function of (seed, counter). */
static inline void normal_pair(uint64_t seed, uint64_t p, double *c, double *s) {
    uint64_t a = moe_rng_u64(seed, 2 * p), b = moe_rng_u64(seed, 2 * p + 1);
    double u1 = ((double)(a >> 11) + 1.0) * (1.0 / 9007199254740993.0); /* (0, 1] */
    double u2 = (double)(b >> 11) * (1.0 / 9007199254740992.0);         /* [0, 1) */
    double r = sqrt(-2.0 * log(u1)), t = 6.283185307179586 * u2;
    *c = r * cos(t);
    *s = r * sin(t);
}

static inline void normal_pair_out(float *o, uint64_t seed, uint64_t p) {
    double c, s;
    normal_pair(seed, p, &c, &s);
    o[0] = (float)c;
    o[1] = (float)s;
}

float moe_rng_normal(uint64_t seed, uint64_t counter) {
    double c, s;
    normal_pair(seed, counter >> 1, &c, &s);
    return (float)((counter & 1) ? s : c);
}

void moe_rng_normal_fill(float *out, size_t count, uint64_t seed, uint64_t counter) {
    if (count == 0) return;
    size_t i = 0;
    if (counter & 1) { /* leading odd counter: the second half of its pair */
        out[0] = moe_rng_normal(seed, counter);
        i = 1;
    }
    const size_t pairs = (count - i) / 2;
    const uint64_t p0 = (counter + i) >> 1;
    float *o = out + i;
    if (pairs > 4096) {
#pragma omp parallel for schedule(static)
        for (size_t j = 0; j < pairs; j++) normal_pair_out(o + 2 * j, seed, p0 + j);
    } else { /* no region at all: a short fill is often called inside one, once per token */
        for (size_t j = 0; j < pairs; j++) normal_pair_out(o + 2 * j, seed, p0 + j);
    }
    i += 2 * pairs;
    if (i < count) out[i] = moe_rng_normal(seed, counter + i);
}
