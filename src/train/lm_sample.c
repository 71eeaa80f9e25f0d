/* lm_sample.c - drawing text from a trained language model (moe_lm_ckpt_sample): the prompt
 * fed one token at a time, then each next token drawn from the softmax of the logits at a
 * temperature, optionally over the top-k only. Draw s uses moe_rng_uniform(seed, s), so the
 * same seed gives the same text in the CLI, in C and in Python. */
#include "base/internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The top_k-th largest of logits [V] (partial selection in scratch [V]); -inf keeps them all. */
static float topk_threshold(const float *logits, float *scratch, int V, int top_k) {
    if (top_k <= 0 || top_k >= V) return -INFINITY;
    memcpy(scratch, logits, sizeof(float) * (size_t)V);
    for (int a = 0; a < top_k; a++) {
        int best = a;
        for (int b = a + 1; b < V; b++)
            if (scratch[b] > scratch[best]) best = b;
        const float t = scratch[a];
        scratch[a] = scratch[best];
        scratch[best] = t;
    }
    return scratch[top_k - 1];
}

/* One token from logits [V]: softmax at temperature over those >= the top-k threshold, the
 * inverse CDF at uniform u. pr [V] is scratch. */
static int32_t draw(const float *logits, float *pr, int V, double temperature, int top_k, float u01) {
    const float thr = topk_threshold(logits, pr, V, top_k);
    double mx = -INFINITY, sum = 0;
    for (int v = 0; v < V; v++)
        if (logits[v] >= thr && logits[v] > mx) mx = logits[v];
    for (int v = 0; v < V; v++) {
        pr[v] = logits[v] >= thr ? (float)exp((logits[v] - mx) / temperature) : 0.0f;
        sum += pr[v];
    }
    const double u = u01 * sum;
    double acc = 0;
    for (int v = 0; v < V; v++) {
        acc += pr[v];
        if (u < acc) return v;
    }
    return V - 1;
}

moe_status moe_lm_ckpt_sample(moe_lm_ckpt *c, const char *prompt, size_t prompt_len, int length, double temperature,
                              int top_k, uint64_t seed, char **text, size_t *text_len) {
    if (!c || !prompt || !text) return moe_fail(MOE_ERR_INVALID_ARG, "checkpoint, prompt and text must not be NULL");
    *text = NULL;
    if (length < 0 || length > (1 << 24)) return moe_fail(MOE_ERR_INVALID_ARG, "length %d is outside [0, 2^24]", length);
    if (!(temperature >= 1e-3 && temperature <= 100))
        return moe_fail(MOE_ERR_INVALID_ARG, "temperature %g is outside [0.001, 100]", temperature);
    if (top_k < 0) return moe_fail(MOE_ERR_INVALID_ARG, "top_k %d must be >= 0 (0: the whole vocabulary)", top_k);
    moe_lm *lm = moe_lm_ckpt_model(c);
    const int V = moe_lm_get_config(lm).vocab;
    int32_t *ids = NULL;
    size_t n = 0;
    moe_status st = moe_lm_ckpt_encode(c, prompt, prompt_len, &ids, &n);
    if (st) return st;
    if (n == 0) {
        free(ids);
        return moe_fail(MOE_ERR_INVALID_ARG, "the prompt encodes to no tokens: give some text");
    }
    int32_t *out = malloc(sizeof(int32_t) * (n + (size_t)length));
    float *logits = malloc(sizeof(float) * (size_t)V), *pr = malloc(sizeof(float) * (size_t)V);
    if (!out || !logits || !pr) st = moe_fail(MOE_ERR_NOMEM, "cannot allocate the sample's buffers");
    if (!st) memcpy(out, ids, sizeof(int32_t) * n);
    moe_lm_reset_state(lm);
    for (size_t i = 0; i < n && !st; i++) st = moe_lm_next_logits(lm, &ids[i], 1, logits);
    size_t total = n;
    for (int s = 0; s < length && !st; s++) {
        int32_t next = draw(logits, pr, V, temperature, top_k, moe_rng_uniform(seed, (uint64_t)s));
        out[total++] = next;
        st = moe_lm_next_logits(lm, &next, 1, logits);
    }
    if (!st) st = moe_lm_ckpt_decode(c, out, total, text, text_len);
    free(ids);
    free(out);
    free(logits);
    free(pr);
    return st;
}
