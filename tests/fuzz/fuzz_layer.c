/* fuzz_layer.c - layer files (SPEC 1.5) on any bytes: load, and a small layer runs a forward and
 * backward of two tokens. */
#include "fuzz_util.h"
#include "moe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size, 0, ".safetensors");
    moe_layer *l = NULL;
    if (!path || moe_layer_load(&l, path) != MOE_OK) return 0;
    const moe_layer_config c = moe_layer_get_config(l);
    if ((int64_t)c.d * c.n <= 4096) {
        float *x = calloc(2 * (size_t)c.d, sizeof(float)), *y = calloc(2 * (size_t)c.d, sizeof(float));
        float *dx = calloc(2 * (size_t)c.d, sizeof(float));
        for (int i = 0; x && i < 2 * c.d; i++) x[i] = (float)(i % 7) - 3.0f;
        if (x && y && dx && moe_layer_forward(l, y, x, 2, MOE_TRAIN, NULL, NULL) == MOE_OK) moe_layer_backward(l, dx, y);
        free(x), free(y), free(dx);
    }
    moe_layer_free(l);
    return 0;
}
