/* lstm.h - the recurrent pieces of the language model (internal, not installed): an LSTM layer
 * with PyTorch's equations and parameter layout, token embedding, and inverted dropout with a
 * counter-based mask. Each operation is a forward/backward pair on flat row-major buffers;
 * every backward ACCUMULATES (+=) into parameter gradients.
 *
 *   tokens [T,B] --embedding--> [T,B,E] --dropout--> --lstm--> h [T,B,H] --dropout--> MoE ...
 *
 * Sequence buffers are time-major: row (t, b) of a [T,B,W] buffer starts at (t*B + b) * W, so
 * all T*B rows of a step range form one matrix for BLAS.
 */
#ifndef MOE_LSTM_H
#define MOE_LSTM_H

#include "moe.h"

#include <stddef.h>
#include <stdint.h>

/* ---- LSTM ----------------------------------------------------------------------------------
 * One layer, PyTorch's torch.nn.LSTM (gate order i, f, g, o), parameters in its layout:
 *   W_ih [4H,D], W_hh [4H,H], b_ih [4H], b_hh [4H]   (rows 0..H-1 feed i, H..2H-1 f, ...)
 * For t = 0..T-1, with h_{-1} = h0 and c_{-1} = c0:
 *   a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh          [B,4H]
 *   i, f, o = sigmoid(a_t[i|f|o]),  g = tanh(a_t[g])
 *   c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t)          [B,H]
 *
 * Forward cache (lstm_cache_floats(T,B,H) floats), written by forward, read by backward:
 *   acts [T,B,4H]  i, f, g, o after their nonlinearities
 *   c    [T,B,H]   cell states c_0 .. c_{T-1}
 *   h0   [B,H]     copies of the initial state, so that the caller may pass the same buffers
 *   c0   [B,H]     as (h0, c0) and (hT, cT) (the state carried from batch to batch)
 * tanh(c_t) is recomputed in backward rather than stored.
 *
 * Truncated BPTT: feed the previous batch's (hT, cT) as this batch's (h0, c0) and do not pass
 * any gradient back across the boundary (ignore dh0/dc0, or pass NULL). Nothing else is
 * needed: backward only looks at this batch's steps. */

/* Floats of the forward cache: T*B*5H + 2*B*H. */
size_t lstm_cache_floats(int T, int B, int H);
/* Floats of backward's scratch: gate gradients [T,B,4H] plus two [B,H] running gradients. */
size_t lstm_scratch_floats(int T, int B, int H);

/* x [T,B,D] -> h [T,B,H] (D: the input size, torch's input_size). h0, c0 [B,H] may be NULL
 * (zeros). hT, cT [B,H] receive the final state (each may be NULL) and may be the same buffers
 * as h0, c0. h must not overlap x, h0, c0 or cache. Keep x, h and cache unchanged until
 * lstm_backward. T = 0 copies (h0, c0) to (hT, cT). */
void lstm_forward(float *h /* [T,B,H] */, float *hT /* [B,H] */, float *cT /* [B,H] */,
                  float *cache /* [lstm_cache_floats] */, const float *x /* [T,B,D] */,
                  const float *h0 /* [B,H] */, const float *c0 /* [B,H] */,
                  const float *w_ih /* [4H,D] */, const float *w_hh /* [4H,H] */,
                  const float *b_ih /* [4H] */, const float *b_hh /* [4H] */, int T, int B, int D,
                  int H);

/* Backward of the last lstm_forward given dh [T,B,H] = dL/dh_t for every output and the
 * gradients arriving at the final state, dhT, dcT [B,H] (NULL = zero; dhT adds to dh[T-1]).
 *   dx [T,B,D] +=  (may be NULL)
 *   dw_ih [4H,D], dw_hh [4H,H], db_ih [4H], db_hh [4H] +=
 *   dh0, dc0 [B,H] = dL/dh0, dL/dc0, overwritten (each may be NULL)
 * x, h and cache are the forward's; scratch holds lstm_scratch_floats(T,B,H) floats. */
void lstm_backward(float *dx /* [T,B,D] += */, float *dw_ih /* [4H,D] += */,
                   float *dw_hh /* [4H,H] += */, float *db_ih /* [4H] += */,
                   float *db_hh /* [4H] += */, float *dh0 /* [B,H] */, float *dc0 /* [B,H] */,
                   float *scratch /* [lstm_scratch_floats] */, const float *dh /* [T,B,H] */,
                   const float *dhT /* [B,H] */, const float *dcT /* [B,H] */,
                   const float *x /* [T,B,D] */, const float *h /* [T,B,H] */,
                   const float *cache /* [lstm_cache_floats] */, const float *w_ih /* [4H,D] */,
                   const float *w_hh /* [4H,H] */, int T, int B, int D, int H);

/* ---- Embedding -----------------------------------------------------------------------------
 * out [N,E] row r = W_emb [tokens[r]] (N = T*B for a [T,B] batch of tokens). Checks every token
 * first: MOE_ERR_INVALID_ARG (out untouched) if one lies outside [0, V). */
moe_status embedding_forward(float *out /* [N,E] */, const int32_t *tokens /* [N] */,
                             const float *w_emb /* [V,E] */, int N, int V, int E);
/* dW_emb [V,E] += scatter of dout rows: row tokens[r] gets dout [r]. Tokens must be valid (as
 * checked by embedding_forward). Repeated tokens add up in row order, for any thread count. */
void embedding_backward(float *dw_emb /* [V,E] += */, const float *dout /* [N,E] */,
                        const int32_t *tokens /* [N] */, int N, int E);

/* ---- Dropout -------------------------------------------------------------------------------
 * Inverted dropout: out_j = x_j / (1-p) if kept, else 0, with element j kept iff
 * moe_rng_uniform(seed, counter + j) >= p. The mask is a pure function of (seed, counter), so
 * backward recomputes it instead of storing it, and a run replays exactly. A call uses the
 * counters [counter, counter + count): advance yours by `count` after each forward.
 * p <= 0 copies; p >= 1 gives zeros. */

/* out [count] = dropout(x); out may be the same buffer as x. */
void dropout_forward(float *out, const float *x, size_t count, float p, uint64_t seed,
                     uint64_t counter);
/* dx [count] += dout * mask / (1-p), with the forward's (p, seed, counter). dx must not be the
 * same buffer as dout. */
void dropout_backward(float *dx, const float *dout, size_t count, float p, uint64_t seed,
                      uint64_t counter);

/* The same over this process's rows [b0, b0 + B) of every step of a time-major batch of Bg rows:
 * row (t, b) of out and x [T,B,d] uses the counters from counter + ((t*Bg + b0 + b)*d), so ranks
 * holding slices of a batch draw together the masks of one process holding all of it. Bg = B
 * (b0 = 0): one call over T*B*d. fwd 1: dropout_forward, 0: dropout_backward. */
void dropout_rows(int fwd, float *out, const float *x, int T, int B, int Bg, int b0, int d, float p, uint64_t seed,
                  uint64_t counter);

#endif
