/* fuzz_s2s_ckpt.c - translation checkpoints on any bytes: load (settings, both vocabularies,
 * weights), then translate a sentence greedily and with a beam. */
#include "fuzz_util.h"
#include "moe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size, 0, ".safetensors");
    moe_s2s_ckpt *c = NULL;
    if (!path || moe_s2s_ckpt_load(&c, path) != MOE_OK) return 0;
    if (moe_s2s_get_config(moe_s2s_ckpt_model(c)).d <= 256)
        for (int beam = 1; beam <= 2; beam++) {
            char *out = NULL;
            if (moe_s2s_ckpt_translate(c, "haus baum", beam, 1.0f, &out, NULL) == MOE_OK) free(out);
        }
    moe_s2s_ckpt_free(c);
    return 0;
}
