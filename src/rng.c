/* rng.c - counter-based random numbers. A value depends only on (seed, counter), so any draw
 * can be replayed, run in any order or on any thread, and a resumed run continues exactly by
 * restoring one counter. The mixer is SplitMix64's finaliser applied to seed and counter. */
#include "moe.h"

#include <math.h>

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t moe_rng_u64(uint64_t seed, uint64_t counter) {
    /* two rounds so that nearby seeds and nearby counters decorrelate */
    return mix64(mix64(seed + 0x9e3779b97f4a7c15ULL) ^ (counter * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL));
}

float moe_rng_uniform(uint64_t seed, uint64_t counter) {
    return (float)(moe_rng_u64(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

float moe_rng_normal(uint64_t seed, uint64_t counter) {
    /* Box-Muller on two 53-bit uniforms drawn from one 128-bit hash (two sub-counters). */
    uint64_t a = moe_rng_u64(seed, 2 * counter), b = moe_rng_u64(seed, 2 * counter + 1);
    double u1 = ((double)(a >> 11) + 1.0) * (1.0 / 9007199254740993.0); /* (0, 1] */
    double u2 = (double)(b >> 11) * (1.0 / 9007199254740992.0);         /* [0, 1) */
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
