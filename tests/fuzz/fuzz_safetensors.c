/* fuzz_safetensors.c - the safetensors reader on any bytes: open, then every tensor and every
 * metadata entry read back (the data of an F32 tensor summed, so that a bad range faults). */
#include "fuzz_util.h"
#include "moe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size, 0, ".safetensors");
    moe_st *f = NULL;
    if (!path || moe_st_open(&f, path) != MOE_OK) return 0;
    volatile float sink = 0.0f;
    for (int i = 0; i < moe_st_count(f); i++) {
        moe_tensor t;
        const float *x;
        if (moe_st_at(f, i, &t) == MOE_OK && moe_st_get_f32(f, t.name, &t, &x) == MOE_OK)
            for (size_t j = 0; j < t.numel; j++) sink += x[j];
    }
    for (int i = 0; i < moe_st_meta_count(f); i++) {
        const char *k, *v;
        if (moe_st_meta_at(f, i, &k, &v) == MOE_OK) sink += (float)strlen(k) + (float)strlen(v);
    }
    moe_st_free(f);
    return 0;
}
