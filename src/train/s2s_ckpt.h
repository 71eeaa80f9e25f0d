/* s2s_ckpt.h - the translation model's checkpoints (kind "seq2seq" of train/ckpt_table.h's
 * format): writing one from a training run, and the model, its vocabularies and its optimiser
 * state read back. Internal; the public moe_s2s_ckpt_* live in s2s_ckpt.c too. */
#ifndef MOE_S2S_CKPT_H
#define MOE_S2S_CKPT_H

#include "base/ptable.h"
#include "moe.h"
#include "train/optset.h"
#include "train/s2s_corpus.h"

#include <stdint.h>

/* Where a run stands: the next batch is batch_in_epoch of epoch; steps done; seconds trained. */
typedef struct {
    int epoch, batch_in_epoch;
    int64_t step;
    double elapsed;
} s2s_pos;

/* Writes the checkpoint atomically (collective with comm: rank 0 gathers the experts and
 * writes). */
moe_status s2s_ckpt_write(const char *path, moe_comm *comm, const moe_s2s_train_config *tc, moe_s2s *m,
                          const s2s_corpus *c, const optset *opt, const s2s_pos *pos);
/* The model of a checkpoint with its parameters and random streams, and its vocabularies (the
 * caller owns all three); with comm, its experts split over the ranks. */
moe_status s2s_model_from_ckpt(const moe_st *f, moe_comm *comm, moe_s2s **out, tok **ts, tok **tt);
/* The optimisers' state: per tensor, or (format version 1) per arena. */
moe_status s2s_optim_from_ckpt(const moe_st *f, const ptable *pt, optset *opt);
/* "xent", "mixer" or "scst" */
const char *s2s_objective_name(moe_s2s_objective o);
/* The position of the run that wrote it. */
moe_status s2s_pos_from_ckpt(const moe_st *f, s2s_pos *pos);

#endif
