/* fuzz_lm_ckpt.c - language-model checkpoints on any bytes: what `moe info` reads (the header's
 * settings checked against its tensors, no weights), then load (settings, tokenizer, weights),
 * encode, decode and score a few tokens with what loaded. */
#include "fuzz_util.h"
#include "moe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size, 0, ".safetensors");
    if (!path) return 0;
    moe_st *f = NULL;
    if (moe_st_open(&f, path) == MOE_OK) {
        moe_lm_config cfg;
        int64_t total = 0, active = 0;
        if (moe_lm_ckpt_config(f, &cfg) == MOE_OK) moe_lm_config_param_counts(&cfg, &total, &active);
        moe_st_free(f);
    }
    moe_lm_ckpt *c = NULL;
    if (moe_lm_ckpt_load(&c, path) != MOE_OK) return 0;
    int32_t *ids = NULL;
    size_t n = 0;
    if (moe_lm_ckpt_encode(c, "the fox\n", 8, &ids, &n) == MOE_OK && n >= 2) {
        char *text = NULL;
        if (moe_lm_ckpt_decode(c, ids, n, &text, NULL) == MOE_OK) free(text);
        moe_lm *lm = moe_lm_ckpt_model(c);
        moe_lm_stats s;
        if (moe_lm_get_config(lm).d <= 256) moe_lm_step(lm, ids, 1, (int)n - 1, 0, &s);
    }
    free(ids);
    moe_lm_ckpt_free(c);
    return 0;
}
