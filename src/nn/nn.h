/* nn.h - dense building blocks around the MoE layer (internal, not installed): a linear layer,
 * ReLU, softmax + cross-entropy, accuracy and a seeded initialiser. Each operation is a
 * forward/backward pair on flat row-major buffers (llm.c style); every backward ACCUMULATES
 * (+=) into its gradients, so buffers can be zeroed once per step with one memset.
 *
 *   in [B,i] --linear--> [B,o] --relu--> ... --linear--> logits [B,C] --softmax_xent--> loss
 */
#ifndef MOE_NN_H
#define MOE_NN_H

#include <stddef.h>
#include <stdint.h>

/* out [B,o] = in [B,i] W [i,o] + b [o]   (b may be NULL; out is overwritten) */
void linear_forward(float *out, const float *in, const float *W, const float *b, int B, int i,
                    int o);
/* Backward of linear_forward given dout [B,o]:
 *   din [B,i] += dout W^T   (din may be NULL, e.g. for the first layer)
 *   dW  [i,o] += in^T dout
 *   db  [o]   += sum over rows of dout   (db may be NULL) */
void linear_backward(float *din, float *dW, float *db, const float *dout, const float *in,
                     const float *W, int B, int i, int o);

/* out [count] = max(in, 0); out may be the same buffer as in. */
void relu_forward(float *out, const float *in, size_t count);
/* din [count] += dout * (out > 0), with `out` the forward's output. */
void relu_backward(float *din, const float *dout, const float *out, size_t count);

/* probs [B,C] = softmax(logits [B,C]) row by row; returns the mean over rows of
 * -log probs[b, labels[b]]. losses [B] gets each row's loss (may be NULL).
 * labels [B] must lie in [0, C); the caller checks. */
double softmax_xent_forward(float *losses, float *probs, const float *logits, const int *labels,
                            int B, int C);
/* Backward of the mean loss: dlogits [B,C] += (probs - onehot(labels)) / B. */
void softmax_xent_backward(float *dlogits, const float *probs, const int *labels, int B, int C);

/* Number of rows b whose highest score (first one on ties) is at column labels[b]. */
int argmax_correct(const float *scores, const int *labels, int B, int C);

/* x [count] uniform in [-a, a), value j a pure function of (seed, j). */
void nn_init_uniform(float *x, size_t count, float a, uint64_t seed);

#endif
