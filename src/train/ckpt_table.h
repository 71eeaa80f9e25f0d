/* ckpt_table.h - a parameter table and its optimiser state in a checkpoint (one layout for every
 * model; see ckpt_table.c). Internal. */
#ifndef MOE_CKPT_TABLE_H
#define MOE_CKPT_TABLE_H

#include "base/ptable.h"
#include "io/ckpt_meta.h"
#include "moe.h"
#include "train/optset.h"

/* The largest step count a checkpoint may hold (Adam's bias corrections raise beta to it; a
 * larger value is a damaged file, not a long run). */
#define CKPT_MAX_STEP (INT64_C(1) << 53)
/* The largest model sizes a checkpoint's settings may give (the models' own limits are the same
 * or tighter); the parameters they imply must also fit in the file (ckpt_check_holds). */
#define CKPT_MAX_VOCAB (1 << 24)
#define CKPT_MAX_DIM (1 << 16)
#define CKPT_MAX_EXPERTS (1 << 20)

/* One format for every kind of checkpoint: metadata format = "moe-checkpoint", format_version,
 * kind ("lm", "seq2seq"). Version 1 was a format string of each kind's own (legacy_format). */
#define CKPT_FORMAT "moe-checkpoint"
#define CKPT_VERSION 2
/* The version of f if it is a checkpoint of `kind` (1 for the kind's legacy format string),
 * else MOE_ERR_FORMAT naming what it is; `what` names the kind in the message. */
moe_status ckpt_check_format(const moe_st *f, const char *kind, const char *legacy_format, const char *what,
                             int *version);

/* A checkpoint being written: rank 0 collects the tensors (gathering every rank's experts of an
 * expert tensor) and alone writes the file; every rank makes the same calls (collective when
 * comm has several ranks). The first error is kept and later calls do nothing; ckw_end returns
 * it on every rank. */
typedef struct {
    moe_comm *comm; /* NULL: one process */
    int rank, ranks;
    meta_w m;       /* the metadata (m.w is NULL except on rank 0) */
    void **keep;    /* names and gathered buffers, freed at the end */
    int nkeep, capkeep;
    int stopped;    /* the ranks agreed that one cannot go on: no more gathers */
} ckw;

/* Starts a checkpoint of `kind` with its format metadata. */
moe_status ckw_begin(ckw *o, moe_comm *comm, const char *kind);
/* A tensor of this process's shape; ne > 0 and ne < n: dim 0 holds experts [e0, e0 + ne) of n,
 * split over the ranks as n*r/P, gathered into all n. */
void ckw_tensor(ckw *o, const char *name, int ndim, const int64_t *shape, const float *data, int e0, int ne, int n);
/* A buffer freed with the checkpoint (NULL records an out-of-memory error). */
void *ckw_keep(ckw *o, void *p);
/* Every tensor of the table, and the optimiser state of the groups that have one (os may be
 * NULL: parameters only). */
void ckw_table(ckw *o, const ptable *pt, const optset *os);
/* Writes the file atomically on rank 0 (unless an error came first), frees everything and
 * returns rank 0's verdict on every rank. */
moe_status ckw_end(ckw *o, const char *path);

/* Stored tensor `name` exists with dtype dt and full shape shape[ndim]; nothing is read */
moe_status ckpt_check_tensor(const moe_st *f, const char *name, moe_dtype dt, int ndim, const int64_t *shape);

/* Tensor `name` of f, of exactly shape[ndim], into dst (finite values only). */
moe_status ckpt_get_tensor(const moe_st *f, const char *name, int ndim, const int64_t *shape, float *dst);
/* Version 1 of the translation checkpoint kept one optimiser's state per arena: `<key>.m`,
 * `<key>.v` (1-D, the optimiser's own layout) and the metadata `<key>.step`. */
moe_status ckpt_get_optim_arena(const moe_st *f, moe_adam *a, const char *key);
/* Every tensor of the table from f, dimension by dimension against the table's full shapes;
 * a process reads its own experts' slice. */
moe_status ckpt_get_params(const moe_st *f, const ptable *pt);
/* The optimiser state (moments and step counts) of every group that has an optimiser. */
moe_status ckpt_get_optim(const moe_st *f, const ptable *pt, optset *os);

/* Whether the file's tensors hold at least `floats` values: the parameters that a checkpoint's
 * settings imply are allocated only if the file could hold them, so a damaged d or n is refused
 * (naming `what`) before a huge allocation, not by the allocator. */
moe_status ckpt_check_holds(const moe_st *f, double floats, const char *what);

#endif
