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

/* Two rounds so that nearby seeds and nearby counters decorrelate. The seed's round depends on
 * the seed alone: a loop over counters computes it once (rng_key) and draws with the key. */
static inline uint64_t rng_key(uint64_t seed) { return rng_mix64(seed + 0x9e3779b97f4a7c15ULL); }
static inline uint64_t rng_u64_key(uint64_t key, uint64_t counter) {
    return rng_mix64(key ^ (counter * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL));
}
static inline uint64_t rng_u64(uint64_t seed, uint64_t counter) { return rng_u64_key(rng_key(seed), counter); }

/* uniform in [0, 1) with 24 bits */
static inline float rng_uniform_key(uint64_t key, uint64_t counter) {
    return (float)(rng_u64_key(key, counter) >> 40) * (1.0f / 16777216.0f);
}
static inline float rng_uniform(uint64_t seed, uint64_t counter) { return rng_uniform_key(rng_key(seed), counter); }

#endif
