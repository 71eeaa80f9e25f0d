/* model_table.h - the language model's, the translation model's and the classifier's tensors
 * as one parameter table each (base/ptable.h), for the trainers, the optimiser, checkpoints and
 * `moe info`; lm.c, s2s.c and classifier.c build them with the model. Internal. */
#ifndef MOE_MODEL_TABLE_H
#define MOE_MODEL_TABLE_H

#include "base/ptable.h"
#include "moe.h"

/* Groups: "lm" (embedding, LSTMs, softmax) and, with an FFN, "moe" (the layer). Built with
 * the model, owned by it. */
const ptable *lm_table(const moe_lm *m);
/* Groups: "s2s" (embeddings, LSTMs, attention, output), "moe0" and "moe1" (the encoder's and
 * decoder's MoE layers, when present) and "baseline" (MIXER's per-step reward regressors, named
 * s2s.baseline.* like the rest of the dense arena, stepped by their own optimiser). */
const ptable *s2s_table(const moe_s2s *m);
/* Groups: "clf" (the two dense layers) and "moe" (the hidden MoE layer). */
const ptable *clf_table(const moe_clf *m);

/* Without making a model (memory plans): the floats of the language model's dense arena
 * (*factored, may be NULL: those of the factored optimiser's second moment), and of its
 * workspace for a step of B streams of T tokens. */
size_t lm_dense_floats(const moe_lm_config *cfg, size_t *factored);
size_t lm_ws_floats(const moe_lm_config *cfg, int T, int B);
/* The settings of the language model's middle layer (ffn moe: the MoE; dense: one expert of
 * hidden k*h) */
moe_layer_config lm_ffn_config(const moe_lm_config *cfg);

/* Without making a model: the i-th tensor (from 0) of a language model of these settings as
 * lm_table names it ("lm.embedding.weight", "moe.experts.w1"), its rank and full shape; 0 past
 * the last. What a checkpoint's header is checked against before any weight is read. */
int lm_config_tensor(const moe_lm_config *cfg, int i, char name[PT_NAME], int *ndim, int64_t shape[3]);

/* moe_lm_create (comm NULL) or moe_lm_create_sharded, with the FFN layer made with `flags`
 * (moe/layer_table.h): LAYER_FUSED for fused updates (no expert gradients; the trainer sets its
 * updater), LAYER_BF16 with it for bfloat16 expert weights; 0 for a plain layer */
moe_status lm_create_opts(moe_lm **out, const moe_lm_config *cfg, uint64_t seed, moe_comm *comm, int flags);

/* Group indices of the tables above */
enum { LM_GROUP = 0, LM_MOE_GROUP = 1 };

#endif
