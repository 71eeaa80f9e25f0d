/* rng.h - the counter-based generator inline (internal), so that loops drawing one value per
 * element (dropout masks) vectorise; rng.c exports the same functions as moe_rng_*. A value
 * depends only on (seed, counter): SplitMix64's finaliser applied to seed and counter. */
#ifndef MOE_RNG_H
#define MOE_RNG_H

#include <stdint.h>

static inline uint64_t rng_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* two rounds so that nearby seeds and nearby counters decorrelate */
static inline uint64_t rng_u64(uint64_t seed, uint64_t counter) {
    return rng_mix64(rng_mix64(seed + 0x9e3779b97f4a7c15ULL) ^ (counter * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL));
}

/* uniform in [0, 1) with 24 bits */
static inline float rng_uniform(uint64_t seed, uint64_t counter) {
    return (float)(rng_u64(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

#endif
