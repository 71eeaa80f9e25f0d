/* s2s.h - the pieces of the sequence-to-sequence model that the trainer needs beyond the public
 * API (internal, not installed): the encoder on its own, step-by-step sampling from the decoder,
 * and the decoder's teacher-forced pass over given inputs.
 *
 * One REINFORCE step is
 *   s2s_encode(train) -> s2s_sample (decoder step by step, inputs are its own samples)
 *   -> s2s_decode (the same decoder over those inputs at once, caches kept) -> coefficients
 *   -> moe_s2s_backward.
 * Dropout masks are a pure function of (seed, step counter, position (t, b, j)), so the sampling
 * pass and the teacher-forced pass of one step see the same masks: the sampled tokens come from
 * the distribution whose log-probability is differentiated. (The decoder's MoE samples without
 * gate noise; the noisy top-k of the training pass may pick other experts for some rows.)
 */
#ifndef MOE_S2S_H
#define MOE_S2S_H

#include "moe.h"

#include <stddef.h>
#include <stdint.h>

/* Runs the encoder on src [B,Ts] (batch-major). train = 1 starts a new training step: a fresh
 * set of dropout masks and gate noise for everything until the next train encode. */
moe_status s2s_encode(moe_s2s *m, const int32_t *src, int B, int Ts, int train);

/* After s2s_encode: decodes all B rows step by step for at most max_len steps. Row b is forced
 * to ref[b][0..force[b]) (teacher forcing, force[b] <= ref_len[b]) and then continues with its
 * own choices: the argmax (greedy = 1) or a draw from p (u = moe_rng_uniform(seed, ctr + t*B + b)).
 * out [B,max_len] gets the whole sequence including the forced prefix and the end mark when one
 * was produced; len [B] its length. train: the encoder's step's dropout masks (as s2s_decode). */
moe_status s2s_sample(moe_s2s *m, const int32_t *ref, const int *ref_len, int ref_stride,
                      const int *force, int max_len, int greedy, int train, uint64_t seed,
                      uint64_t ctr, int32_t *out, int *len);

/* After s2s_encode: the teacher-forced decoder over in [B,Tt] as moe_s2s_forward. */
moe_status s2s_decode(moe_s2s *m, const int32_t *in, const int32_t *tgt, const float *coef, int Tt,
                      int train, double *loss);

/* Replaces the last s2s_decode's coefficients [B,Tt] (batch-major) before moe_s2s_backward:
 * REINFORCE's depend on the baseline, which reads the decode's hidden states. The targets are
 * those of the decode (the coefficient of a position the decode masked must stay 0 unless its
 * target was valid). */
moe_status s2s_set_coef(moe_s2s *m, const float *coef);
/* The MoE layers' balancing losses within the last s2s_decode's loss. */
double s2s_last_aux(const moe_s2s *m);

/* The attention output hc [B,Tt,d] of the last s2s_decode, time-major: row (t, b) at
 * (t*B + b)*d. The baseline's regressors read it. */
const float *s2s_hidden(const moe_s2s *m);

/* The baseline regressors ("baseline.w", "baseline.b") are the last tensors of the dense arena:
 * params[s2s_baseline_offset(m), count) holds them and nothing else, so an optimiser of the
 * model can stop before them and another can step them on their own. */
size_t s2s_baseline_offset(const moe_s2s *m);
/* The seed of the dropout masks (the model's creation seed), for checkpoints. */
uint64_t s2s_get_seed(const moe_s2s *m);
void s2s_set_seed(moe_s2s *m, uint64_t seed);
/* Training-step counter (dropout masks), for checkpoints. */
uint64_t s2s_get_step_counter(const moe_s2s *m);
void s2s_set_step_counter(moe_s2s *m, uint64_t c);

#endif
