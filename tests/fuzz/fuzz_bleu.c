/* fuzz_bleu.c - BLEU on any token sequences: the input's bytes are a hypothesis and a reference
 * (split at the first 0xff byte) of ids 0..254, scored with every smoothing; the score must be
 * a number in [0, 1]. */
#include "fuzz_util.h"
#include "moe.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int32_t *ids = malloc(sizeof(int32_t) * (size + 1));
    if (!ids) return 0;
    size_t nh = size;
    for (size_t i = 0; i < size; i++) {
        ids[i] = data[i];
        if (data[i] == 0xff && nh == size) nh = i;
    }
    const size_t nr = nh < size ? size - nh - 1 : 0;
    moe_bleu_stats s, acc;
    memset(&acc, 0, sizeof acc);
    if (moe_bleu_stats_sentence(&s, ids, nh, ids + nh + (nh < size), nr) == MOE_OK) {
        moe_bleu_stats_add(&acc, &s);
        moe_bleu_stats_add(&acc, &s);
        for (int m = MOE_BLEU_NONE; m <= MOE_BLEU_PLUS1; m++) {
            const double b = moe_bleu_score(&acc, (moe_bleu_smoothing)m);
            if (!(b >= 0.0 && b <= 1.0 + 1e-12)) abort(); /* a finding: BLEU out of range */
        }
    }
    free(ids);
    return 0;
}
