/* fuzz_idx.c - IDX files (MNIST's format), plain or gzip-compressed, on any bytes. */
#include "fuzz_util.h"
#include "moe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size, 0, ".idx");
    moe_idx m;
    memset(&m, 0, sizeof m);
    if (path && moe_idx_load(path, &m) == MOE_OK) {
        volatile unsigned sum = 0;
        for (size_t i = 0; i < m.numel; i++) sum += m.data[i];
    }
    moe_idx_free(&m);
    return 0;
}
