/* moe.h - the one public header of libmoe: sparsely-gated mixture-of-experts layers
 * (Shazeer et al. 2017) trained in C.
 *
 * Conventions
 *   - Every fallible call returns moe_status. MOE_OK is 0. Nothing here prints, exits or aborts
 *     (not even in a job of several processes: see moe_comm_world).
 *   - moe_last_error() gives a sentence about the failure of the last call in the calling thread.
 *   - Handles are opaque; moe_x_free(NULL) does nothing.
 *   - Ownership: what a call returns through a pointer is owned by the handle it came from
 *     ("owned by the layer") and valid until that handle is freed, unless the comment says
 *     "the caller frees". Pointers the caller passes are read during the call only, except
 *     where the comment says "borrowed": then the library keeps the pointer, and the caller
 *     must keep the memory alive (and unchanged) as long as the comment says.
 *   - A call that fills a caller's buffer names the buffer's size in floats/ints/ids in its
 *     comment ([B, n] ...); the caller allocates at least that much.
 *   - Tensors are float32, row-major, shapes given in comments as [rows, cols].
 *   - Backward functions ACCUMULATE (+=) into gradients; zero them with moe_layer_zero_grad().
 */
#ifndef MOE_H
#define MOE_H

#include <stddef.h>
#include <stdint.h>

/* The version of this header. CMakeLists.txt reads these three lines for project(VERSION), the
 * shared library's file name and SOVERSION (MAJOR), moe.pc and moeConfigVersion.cmake: they are
 * the one place the version is written. */
#define MOE_VERSION_MAJOR 0
#define MOE_VERSION_MINOR 16
#define MOE_VERSION_PATCH 0
/* 0.10: the language model's training and checkpoint API became moe_lm_train, moe_lm_train_config,
 * moe_lm_progress, moe_lm_callback, MOE_LM_TRAIN ... and moe_lm_ckpt_* (before: moe_train,
 * moe_train_config, moe_train_progress, moe_train_callback, MOE_PROGRESS_* and moe_ckpt_*), named
 * like the translation model's moe_s2s_*. The library is at 0.x: no aliases are kept. */
/* 0.11: moe_lm_train_config.fused (fused expert updates); moe_lm_plan's `factored` argument
 * became `flags` (MOE_PLAN_FACTORED = 1, as before, | MOE_PLAN_FUSED). A layer's arena holds the
 * router's weights first, then the experts' (tensor names and files unchanged). */
/* 0.12: bfloat16 expert weights: moe_lm_train_config.bf16, MOE_PLAN_BF16, moe_param.data_bf16
 * (moe_param grew by a pointer at its end). */
/* 0.13: moe_layer_backward_aux (the balancing losses' upstream gradient, for autograd
 * frameworks), moe_lm_ckpt_config and moe_lm_config_param_counts (a checkpoint's settings and
 * sizes without building its model), moe_lm_ckpt_sample (what `moe sample` draws). */
/* 0.14: moe_bleu_bootstrap_pair (paired bootstrap of corpus BLEU), moe_s2s_ckpt_eval (smoothed
 * BLEU, exact matches and per-sentence statistics of a translation checkpoint). */
/* 0.15: moe_s2s_train_config.mixer_from_end (MIXER's s counted from each reference's end; the
 * struct grew by an int at its end). */
/* 0.16: moe_s2s_train_config.rl_xent (in the sampled epochs, the share of a batch's rows trained
 * by cross-entropy on their references: a mixed objective; the struct grew by a float at its end). */
/* MAJOR * 10000 + MINOR * 100 + PATCH, to compare with moe_version_number(). */
#define MOE_VERSION_NUMBER (MOE_VERSION_MAJOR * 10000 + MOE_VERSION_MINOR * 100 + MOE_VERSION_PATCH)

/* Marks the functions libmoe exports. The library is compiled with -fvisibility=hidden, so a
 * function of the shared library is callable from outside exactly when it is declared here
 * with MOE_API. */
#if defined(__GNUC__) && __GNUC__ >= 4
#define MOE_API __attribute__((visibility("default")))
#else
#define MOE_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the library a program runs with (which, for the shared library, may differ from
 * the header it was compiled with): "MAJOR.MINOR.PATCH", e.g. "0.9.0"; a static string, never
 * NULL. moe_version_number() is its MAJOR * 10000 + MINOR * 100 + PATCH. The shared library's
 * SOVERSION is MAJOR: it is the file libmoe.so.MAJOR that a program loads. */
MOE_API const char *moe_version(void);
MOE_API int moe_version_number(void);

/* ------------------------------------------------------------------------------------------ */
/* Status codes. Append-only: values never change meaning.                                     */
typedef enum {
    MOE_OK = 0,
    MOE_ERR_INVALID_ARG = 1, /* NULL pointer, negative count, unknown name */
    MOE_ERR_CONFIG = 2,      /* impossible layer settings: k < 1, k > n, a zero size, ... */
    MOE_ERR_SHAPE = 3,       /* a tensor's shape does not match what the layer expects */
    MOE_ERR_NOMEM = 4,       /* allocation failed */
    MOE_ERR_IO = 5,          /* open/read/write/fsync/rename failed (errno in the message) */
    MOE_ERR_TRUNCATED = 6,   /* file shorter than its header says */
    MOE_ERR_FORMAT = 7,      /* malformed file: bad header, bad JSON, overlapping data, ... */
    MOE_ERR_DTYPE = 8,       /* tensor has a dtype this call cannot use */
    MOE_ERR_MISSING = 9,     /* a required tensor or setting is absent */
    MOE_ERR_NONFINITE = 10,  /* NaN or Inf found in an input */
    MOE_ERR_STATE = 11,      /* call out of order, e.g. backward without a forward */
    MOE_ERR_UNSUPPORTED = 12, /* this build lacks the feature (e.g. MPI) */
    MOE_ERR_COMM = 13,       /* a collective across processes failed, or the ranks disagree */
    MOE_ERR_DIVERGED = 14,   /* training diverged (a loss far above its level): stopped, the last
                                checkpoint written before it kept */
} moe_status;

/* Words for a status ("invalid configuration", ...). Never NULL. */
MOE_API const char *moe_status_str(moe_status s);
/* A sentence about why the last failing call in this thread failed (e.g. "k=5 exceeds n=4");
 * never NULL. Per thread: another thread's failures do not change it. A call that returns a
 * status other than MOE_OK sets it; a call that returns MOE_OK leaves it empty (""), even when
 * it tolerated a failure inside; calls that return no moe_status leave it as it was. The
 * pointer is to this thread's buffer, whose contents the next fallible call changes. */
MOE_API const char *moe_last_error(void);

/* ------------------------------------------------------------------------------------------ */
/* safetensors files (reading and atomic writing).                                             */
typedef enum { MOE_F32 = 0, MOE_F64, MOE_I32, MOE_I64, MOE_U8, MOE_F16, MOE_BF16 } moe_dtype;
/* The dtype's name in a safetensors header ("F32", "BF16", ...; "?" for a value outside the
 * enum) and its size in bytes (0 outside the enum). */
MOE_API const char *moe_dtype_str(moe_dtype d);
MOE_API size_t moe_dtype_size(moe_dtype d);

#define MOE_MAX_DIMS 8
typedef struct {
    const char *name;            /* owned by the file handle */
    moe_dtype dtype;
    int ndim;                    /* 0 for a scalar */
    int64_t shape[MOE_MAX_DIMS];
    size_t numel;                /* product of shape (1 for a scalar) */
    const void *data;            /* little-endian, aligned for dtype; owned by the file handle */
} moe_tensor;

typedef struct moe_st moe_st; /* an opened safetensors file: read into memory, or (files of 64 KB
                               * or more whose data is 8-aligned, as moe writes them) mapped read-only */

/* Reads and validates `path`: header length against file size, JSON syntax, dtypes, shapes
 * against byte ranges, ranges inside the data area and not overlapping. */
MOE_API moe_status moe_st_open(moe_st **out, const char *path);
MOE_API void moe_st_free(moe_st *f);
MOE_API int moe_st_count(const moe_st *f);
/* Fills *t with tensor i (0 <= i < moe_st_count); its name and data point into the file handle,
 * valid until moe_st_free. */
MOE_API moe_status moe_st_at(const moe_st *f, int i, moe_tensor *t);
/* The same by name (t may be NULL: only whether it exists); MOE_ERR_MISSING if absent. */
MOE_API moe_status moe_st_get(const moe_st *f, const char *name, moe_tensor *t);
/* Like moe_st_get but also requires dtype F32; *data (if data is not NULL) = its numel floats,
 * owned by the file handle. t may be NULL. */
MOE_API moe_status moe_st_get_f32(const moe_st *f, const char *name, moe_tensor *t, const float **data);
/* __metadata__ entries, owned by the file handle; NULL if absent. */
MOE_API const char *moe_st_meta(const moe_st *f, const char *key);
MOE_API int moe_st_meta_count(const moe_st *f);
/* Entry i (0 <= i < moe_st_meta_count): *key and *value point into the file handle. */
MOE_API moe_status moe_st_meta_at(const moe_st *f, int i, const char **key, const char **value);

typedef struct moe_st_writer moe_st_writer; /* collects tensors, then writes one file */
MOE_API moe_status moe_st_writer_create(moe_st_writer **out);
MOE_API void moe_st_writer_free(moe_st_writer *w);
/* Records a tensor: `name` and `shape` [ndim] are copied; `data` (numel * the dtype's size
 * bytes) is borrowed, NOT copied: it must stay valid and unchanged until moe_st_writer_write()
 * has returned. Names must be unique. ndim 0 = scalar. */
MOE_API moe_status moe_st_writer_add(moe_st_writer *w, const char *name, moe_dtype dtype, int ndim,
                                     const int64_t *shape, const void *data);
/* Adds a __metadata__ string entry (copied). A repeated key replaces the earlier value. */
MOE_API moe_status moe_st_writer_meta(moe_st_writer *w, const char *key, const char *value);
/* Writes atomically: `path`.tmp.<pid>, fsync, rename, fsync of the directory. On failure the old
 * file at `path` (if any) is untouched and the temporary is removed. */
MOE_API moe_status moe_st_writer_write(moe_st_writer *w, const char *path);

/* ------------------------------------------------------------------------------------------ */
/* The sparsely-gated MoE layer (SPEC 1.1-1.5).                                                */
typedef struct {
    int d;              /* model width: input and output size */
    int h;              /* expert hidden size */
    int n;              /* number of experts */
    int k;              /* experts per token, 1 <= k <= n */
    int bias;           /* 1: experts have b1 [n,h] and b2 [n,d]; 0: none (the paper) */
    float w_importance; /* weight of CV(Importance)^2 */
    float w_load;       /* weight of CV(Load)^2 */
    float noise_eps;    /* sigma = softplus(x W_noise) + noise_eps */
    int groups;         /* 0: one gate over n experts. a > 0: hierarchical (SPEC 1.6): a primary
                           gate picks k_groups of a groups of n/a experts, then each chosen
                           group's own gate picks k of its n/a: k_groups * k experts per token */
    int k_groups;       /* groups per token when hierarchical */
} moe_layer_config;

/* d=512 h=1024 n=16 k=4 bias=0 w_importance=w_load=0.1 noise_eps=0.01 */
MOE_API moe_layer_config moe_layer_config_default(void);
/* MOE_OK or MOE_ERR_CONFIG with the reason in moe_last_error(). */
MOE_API moe_status moe_layer_config_check(const moe_layer_config *cfg);

typedef struct moe_layer moe_layer;

typedef enum { MOE_EVAL = 0, MOE_TRAIN = 1 } moe_mode;

/* Statistics of the last forward pass. */
typedef struct {
    float loss_importance; /* w_importance * CV(Importance)^2 */
    float loss_load;       /* w_load * CV(Load)^2 */
    float cv_importance;   /* CV of Importance over the n experts */
    float cv_load;         /* CV of Load (the smooth estimator in training, counts otherwise) */
    float max_mean_load;   /* max over experts of routed-token count / mean count */
    int B;                 /* tokens in the batch */
} moe_layer_stats;

/* Allocates a layer: gate weights zero (SPEC 1.3), experts from a seeded uniform
 * (+-1/sqrt(fan_in)), biases zero. The seed also starts the noise stream. */
MOE_API moe_status moe_layer_create(moe_layer **out, const moe_layer_config *cfg, uint64_t seed);
MOE_API void moe_layer_free(moe_layer *l);
MOE_API moe_layer_config moe_layer_get_config(const moe_layer *l);

/* y [B,d] = MoE(x [B,d]). In MOE_TRAIN the gate adds noise: `noise` [B,n] gives the standard
 * normal draws eps (for replaying another framework's run; hierarchical: [B, a + n], each row
 * the primary gate's a draws, then group i's n/a draws at a + i*n/a); NULL draws them from the layer's
 * counter-based stream (seed, call counter), so the same seed gives the same run.
 * `noise` is ignored in MOE_EVAL, and copied. `stats` may be NULL.
 * Keeps what backward needs until the next forward, and `x` is borrowed for that: the layer
 * keeps the pointer, not a copy, and moe_layer_backward reads it, so the caller keeps x alive
 * and unchanged from this call until the backward of this forward (or until the next forward
 * or moe_layer_free, when no backward follows).
 * Fails with MOE_ERR_NONFINITE on NaN/Inf in x or noise, leaving the layer unchanged. */
MOE_API moe_status moe_layer_forward(moe_layer *l, float *y, const float *x, int B, moe_mode mode,
                                     const float *noise, moe_layer_stats *stats);

/* Backward of the last forward for the total loss  sum(y * dy) + L_importance + L_load:
 * parameter gradients += into the layer's gradient buffers, dx [B,d] += (dx may be NULL);
 * dy [B,d]; B is the last forward's. Reads the forward's x (borrowed, see moe_layer_forward).
 * MOE_ERR_STATE without a preceding forward. */
MOE_API moe_status moe_layer_backward(moe_layer *l, float *dx, const float *dy);
/* The same for the total loss  sum(y * dy) + aux_grad * (L_importance + L_load): aux_grad is
 * the upstream gradient of the balancing loss (1 gives moe_layer_backward's bits; 0 leaves the
 * balancing losses out; a framework's autograd passes what reaches its aux output). */
MOE_API moe_status moe_layer_backward_aux(moe_layer *l, float *dx, const float *dy, float aux_grad);

/* From the last forward (MOE_ERR_STATE before one), into the caller's buffers:
 *   gates       [B, n] floats, B the last forward's (this rank's tokens for a sharded layer):
 *               the dense gates, zero off each token's chosen experts (k of them; k_groups * k
 *               for a hierarchical layer, whose gates are the primary gate's times the group's)
 *   counts      [n] ints: tokens routed to each expert (each token counts at each of its
 *               experts; a sharded layer: over all ranks' tokens)
 *   importance  [n] floats, load [n] floats: Importance and Load (SPEC 1.4; a sharded layer:
 *               over the whole batch of all ranks) */
MOE_API moe_status moe_layer_gates(const moe_layer *l, float *gates);
MOE_API moe_status moe_layer_counts(const moe_layer *l, int *counts);
MOE_API moe_status moe_layer_importance(const moe_layer *l, float *importance);
MOE_API moe_status moe_layer_load_vec(const moe_layer *l, float *load);

/* Parameters, in the order of SPEC 1.5: gate.w_gate, gate.w_noise, experts.w1, [experts.b1],
 * experts.w2, [experts.b2]; a hierarchical layer's gate.* are the primary gate's [d, a] and
 * gate2.w_gate, gate2.w_noise [a, d, n/a] follow (the groups' gates). All live in one contiguous
 * arena (and grads in a parallel one). */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[3];
    size_t numel;
    float *data; /* owned by the layer (or model) it came from, like name; NULL when the
                    tensor is stored in bfloat16 (data_bf16) */
    float *grad; /* owned by the layer (or model); same layout as data */
    /* An expert tensor's dim 0 indexes experts: this process holds experts
     * [expert_first, expert_first + shape[0]) of `experts` (all of them unless the layer is
     * split over ranks). experts = 0: not an expert tensor. */
    int expert_first, experts;
    /* The experts' w1 and w2 of a model trained with bfloat16 expert weights
     * (moe_lm_train_config.bf16): their values as bfloat16 (the upper 16 bits of a float32),
     * data and grad NULL. NULL for every float32 tensor. */
    uint16_t *data_bf16;
} moe_param;

MOE_API int moe_layer_num_params(const moe_layer *l);
MOE_API moe_status moe_layer_param(moe_layer *l, int i, moe_param *p);
MOE_API moe_status moe_layer_find_param(moe_layer *l, const char *name, moe_param *p);
/* Whole arenas (for an optimiser): *params and *grads (each may be NULL) get the layer's own
 * buffers of *count floats each, valid until moe_layer_free. The arena holds the router's
 * weights first, then the experts'. A layer that keeps no expert gradients (the MoE of a model
 * loaded for inference by moe_lm_ckpt_load, or trained with fused updates) gives *grads NULL,
 * and its expert tensors' moe_param.grad is NULL. */
MOE_API moe_status moe_layer_arena(moe_layer *l, float **params, float **grads, size_t *count);
MOE_API void moe_layer_zero_grad(moe_layer *l);
/* Copies `count` floats (dst/src [count]) out of/into the named parameter; MOE_ERR_SHAPE if
 * count differs from its numel. set_param rejects NaN/Inf. */
MOE_API moe_status moe_layer_get_param(const moe_layer *l, const char *name, float *dst, size_t count);
MOE_API moe_status moe_layer_set_param(moe_layer *l, const char *name, const float *src, size_t count);

/* Noise stream position (for exact resume). */
MOE_API void moe_layer_get_rng(const moe_layer *l, uint64_t *seed, uint64_t *counter);
MOE_API void moe_layer_set_rng(moe_layer *l, uint64_t seed, uint64_t counter);

/* ------------------------------------------------------------------------------------------ */
/* Expert parallelism over processes (SPEC 1.7): each expert lives on one rank; the gate is
 * replicated. Needs a build with MPI (moe_have_mpi()); without it these calls give
 * MOE_ERR_UNSUPPORTED. mpi.h is never needed by callers.                                      */
typedef struct moe_comm moe_comm;
MOE_API int moe_have_mpi(void); /* 1 if this build has the MPI backend */
/* Initialises MPI if nobody has (threads: MPI_THREAD_FUNNELED: only the calling thread talks
 * to MPI) and returns a handle on (a duplicate of) MPI_COMM_WORLD; the caller frees it with
 * moe_comm_free after every layer and model that uses it.
 *
 * Failures in a job of several processes. The library never ends the job: a call fails on the
 * ranks where it fails and returns the status there. It fails on every rank together when the
 * reason is the same on all (the same impossible settings) or is checked together
 * (moe_comm_check_same; the agreement on settings in moe_layer_create_sharded and moe_lm_train;
 * a checkpoint that one rank cannot help write in moe_lm_train). A call that fails on one rank
 * only in the middle of the work (a sharded layer's forward or backward, a training step: NaN
 * in one rank's input, memory, ...) may leave the other ranks waiting for it in a collective:
 * the application must then end the job, with moe_comm_abort or by exiting with a non-zero
 * status under mpirun (both end every rank). The moe command does so after printing
 * "moe: error (rank R): ...". */
MOE_API moe_status moe_comm_world(moe_comm **out, int *argc, char ***argv);
/* Frees the handle; finalises MPI if moe_comm_world initialised it. NULL is harmless. */
MOE_API void moe_comm_free(moe_comm *c);
MOE_API int moe_comm_rank(const moe_comm *c);
MOE_API int moe_comm_size(const moe_comm *c);
/* In place: buf[count] = the sum over ranks (the same order on every rank). */
MOE_API moe_status moe_comm_allreduce_sum(moe_comm *c, float *buf, size_t count);
/* How long one collective may wait for the other ranks (seconds; default 300; <= 0: forever).
 * Past it, the rank asks every other rank whether it is there and the collective fails with
 * MOE_ERR_COMM naming the ranks that did not answer (stopped, hung or dead); the handle is then
 * unusable and the application ends the job (moe_comm_abort). The ranks answer while they wait
 * in a collective of their own. */
MOE_API moe_status moe_comm_set_timeout(moe_comm *c, double seconds);
/* Every rank must pass the same value (settings, sizes); MOE_ERR_COMM naming `what` if not. */
MOE_API moe_status moe_comm_check_same(moe_comm *c, int64_t value, const char *what);
/* For applications (the library never calls it): ends every rank of the job with exit status
 * `code` (MPI_Abort; c NULL: MPI_COMM_WORLD) and does not return, e.g. for a rank that cannot
 * go on while the others wait for it. In a build without MPI it does nothing and returns. */
MOE_API void moe_comm_abort(moe_comm *c, int code);

/* A layer whose experts are split over the ranks of `comm`: rank r holds experts
 * [n*r/P, n*(r+1)/P) (P <= n; uneven counts are fine), the parameters of a layer created with
 * the same seed on one process. Every rank calls forward and backward with its own tokens
 * (any B per rank); the tokens travel to their experts' ranks and back (MPI_Alltoallv), so
 * together the ranks compute exactly the layer applied to the concatenation of their batches
 * (rank 0's tokens first): the same y, the balancing losses over the whole batch, and, after
 * backward, the same gradients (the gate's summed over ranks, each expert's on its rank).
 * Seeded noise is drawn for each token's global position. `comm` is borrowed: it must outlive
 * the layer. */
MOE_API moe_status moe_layer_create_sharded(moe_layer **out, const moe_layer_config *cfg, uint64_t seed,
                                            moe_comm *comm);
/* Where a sharded layer's tokens sit in the whole batch, for its seeded noise: T blocks of
 * `rows` consecutive tokens, block t at t * stride + first (a time-major [T, B] batch whose B
 * streams are split over ranks: rows = this rank's streams, stride = B). rows = 0 (the default):
 * the concatenation of the ranks' batches. */
MOE_API moe_status moe_layer_set_noise_layout(moe_layer *l, int rows, int stride, int first);
/* Time a sharded layer has spent in collectives and the bytes of token rows it has sent to and
 * received from other ranks, since it was created (all zero for a plain layer). Each output
 * pointer may be NULL. */
MOE_API void moe_layer_comm_stats(const moe_layer *l, double *seconds, uint64_t *sent, uint64_t *received);
/* The experts this layer holds: [first, first + count). A plain layer holds them all. */
MOE_API void moe_layer_shard(const moe_layer *l, int *first, int *count);

/* Save/load in the SPEC 1.5 layout (settings in __metadata__ as strings). Save is atomic.
 * Load checks every tensor's presence, dtype and shape against the metadata. */
MOE_API moe_status moe_layer_save(const moe_layer *l, const char *path);
MOE_API moe_status moe_layer_load(moe_layer **out, const char *path);
/* Reads the settings from an opened file's metadata and tensor shapes. */
MOE_API moe_status moe_layer_config_from_st(const moe_st *f, moe_layer_config *cfg);
/* Copies the parameters from an opened file into an existing layer of matching shape. */
MOE_API moe_status moe_layer_load_st(moe_layer *l, const moe_st *f);

/* Threads used by the layer (OpenMP and BLAS); <= 0 means all cores. */
MOE_API void moe_set_threads(int nthreads);
MOE_API int moe_get_threads(void);

/* How a layer's expert products share the threads: AUTO (a new layer's) picks by rows per
 * expert; BLAS runs experts in turn with multi-threaded products; EXPERTS runs experts in
 * parallel, one thread each. A setting of the layer: the results are the same bits for each.
 * (0.10: replaces the process-wide moe_set_parallel.) */
typedef enum { MOE_PAR_AUTO = 0, MOE_PAR_BLAS = 1, MOE_PAR_EXPERTS = 2 } moe_parallel;
MOE_API moe_status moe_layer_set_parallel(moe_layer *l, moe_parallel p);

/* ------------------------------------------------------------------------------------------ */
/* BLEU (SPEC 3.4) over token ids, one reference: the score nltk 3.8's sentence_bleu and
 * corpus_bleu give with weights (0.25,)*4 and the same smoothing, to 1e-9.                     */
typedef enum {
    MOE_BLEU_NONE = 0,    /* unsmoothed; an order without matches scores log(DBL_MIN), as nltk */
    MOE_BLEU_METHOD1 = 1, /* Chen and Cherry 1: epsilon 0.1 matches for orders without any */
    MOE_BLEU_METHOD2 = 2, /* Chen and Cherry 2: +1 to matches and totals for n >= 2 */
    MOE_BLEU_METHOD3 = 3, /* Chen and Cherry 3 (NIST): 1 / (2^k total) for the k-th empty order */
    MOE_BLEU_PLUS1 = 4,   /* BLEU+1: +1 to matches and totals of every order */
} moe_bleu_smoothing;

typedef struct {
    int64_t match[4]; /* clipped n-gram matches, n = 1..4 */
    int64_t total[4]; /* hypothesis n-grams, at least 1 each (nltk's denominator) */
    int64_t hyp_len, ref_len;
} moe_bleu_stats;

/* The statistics of one hypothesis hyp [nh] against its reference ref [nr] (token ids; either
 * may be empty), into *s. */
MOE_API moe_status moe_bleu_stats_sentence(moe_bleu_stats *s, const int32_t *hyp, size_t nh, const int32_t *ref, size_t nr);
/* acc += s: corpus BLEU is the score of the summed statistics. */
MOE_API void moe_bleu_stats_add(moe_bleu_stats *acc, const moe_bleu_stats *s);
/* BLEU in [0, 1] (0 when no unigram matches, as nltk). */
MOE_API double moe_bleu_score(const moe_bleu_stats *s, moe_bleu_smoothing smoothing);

/* Paired bootstrap resampling (Koehn, 2004) of corpus BLEU over n test sentences: a [n] and b [n]
 * are two systems' per-sentence statistics on the same sentences in the same order (b NULL: A's
 * interval only). Each of `resamples` draws n sentences with replacement (the same ones for
 * both), seeded (the counter-based generator: the same seed, the same result). Scores in [0, 1]
 * with `smoothing` applied to the corpus sums. */
typedef struct {
    double bleu_a, bleu_b;     /* corpus BLEU of each on the whole set */
    double a_lo, a_hi;         /* 95% interval of A's score (2.5th and 97.5th percentiles) */
    double b_lo, b_hi;         /* B's */
    double delta_lo, delta_hi; /* of A's score minus B's */
    double p_a_better;         /* the fraction of resamples where A scores strictly higher */
    double p_b_better;         /* where B does (ties count in neither) */
    int resamples;
} moe_bleu_bootstrap;
MOE_API moe_status moe_bleu_bootstrap_pair(const moe_bleu_stats *a, const moe_bleu_stats *b, size_t n, int resamples,
                                           moe_bleu_smoothing smoothing, uint64_t seed, moe_bleu_bootstrap *out);

/* ------------------------------------------------------------------------------------------ */
/* Adam, and the paper's memory-saving variant (SPEC 1.7): beta1 = 0 keeps no first moment, and
 * `factored` keeps the second moment of each declared matrix [rows, cols] as row and column
 * means R, C with V_ij = R_i C_j / mean(R) (rows + cols floats instead of rows * cols).
 * Parameters that no declared matrix covers (biases) keep a full second moment.               */
typedef struct {
    float beta1, beta2, eps;
    float weight_decay; /* decoupled (AdamW) when > 0 */
    int factored;       /* 1: factored second moment for the declared matrices */
} moe_adam_config;

MOE_API moe_adam_config moe_adam_config_default(void);  /* 0.9, 0.999, 1e-8, 0, not factored */
MOE_API moe_adam_config moe_adam_config_factored(void); /* the paper's: beta1 = 0, factored */
typedef struct moe_adam moe_adam;
/* An optimiser for `count` parameters (moe_adam_step's params and grads are [count]). */
MOE_API moe_status moe_adam_create(moe_adam **out, size_t count, const moe_adam_config *cfg);
MOE_API void moe_adam_free(moe_adam *a);
/* Declares params[offset, offset + count*rows*cols) to be `count` matrices [rows, cols] (row
 * major), e.g. the n experts' w1 [n, d, h]. Call before the first step; blocks must not overlap.
 * Without cfg.factored the declaration changes nothing. */
MOE_API moe_status moe_adam_set_matrices(moe_adam *a, size_t offset, int64_t count, int64_t rows, int64_t cols);
/* params[count] -= lr * mhat / (sqrt(vhat) + eps) (mhat = the gradient when beta1 = 0); params
 * and grads [count], the count of moe_adam_create.
 * MOE_ERR_NONFINITE (params untouched) if a gradient is NaN/Inf. */
MOE_API moe_status moe_adam_step(moe_adam *a, float *params, const float *grads, float lr);
/* The optimiser's state, for checkpoints: writable views into it, owned by the optimiser and
 * valid until moe_adam_free. Fixes the layout of the declared matrices (no more
 * moe_adam_set_matrices after it). */
typedef struct {
    float *m;       /* [m_count] first moment; NULL and m_count 0 when beta1 = 0 */
    size_t m_count;
    float *v;       /* [v_count] second moment (per element, or R and C of factored matrices) */
    size_t v_count;
    int64_t *step;  /* steps taken */
} moe_adam_state_view;
MOE_API moe_status moe_adam_state(moe_adam *a, moe_adam_state_view *state);
/* The state of one parameter, params[offset, offset + len) (for checkpoints that store it per
 * tensor): writable m (NULL when beta1 = 0; else len floats) and v (*v_len floats: len, or
 * count * (rows + cols) for a factored block, which the range must then cover exactly), views
 * into the optimiser as moe_adam_state's. m, v and v_len may each be NULL. */
MOE_API moe_status moe_adam_range_state(moe_adam *a, size_t offset, size_t len, float **m, float **v, size_t *v_len);

/* ------------------------------------------------------------------------------------------ */
/* The paper's language model (SPEC 2): embedding -> LSTM -> MoE -> LSTM -> softmax, dropout on
 * each layer's output and a residual connection after each layer but the softmax; the MoE output
 * goes through a sigmoid. The MoE runs on all T*B positions of a batch at once.               */
typedef enum {
    MOE_FFN_MOE = 0,   /* the sparsely-gated MoE layer */
    MOE_FFN_DENSE = 1, /* compute-matched baseline: one dense FFN d -> k*h -> d */
    MOE_FFN_NONE = 2,  /* baseline without the middle layer */
} moe_ffn_kind;

typedef struct {
    int vocab;          /* V */
    int d;              /* embedding, LSTM and MoE width */
    moe_ffn_kind ffn;
    int n, k, h;        /* experts, experts per token, expert hidden size */
    float w_importance, w_load, noise_eps;
    float dropout;      /* probability of dropping, on every layer's output but the softmax */
    int groups, k_groups; /* > 0: the MoE is hierarchical (SPEC 1.6): groups of n/groups experts,
                             k_groups groups and k experts in each per token */
} moe_lm_config;

/* vocab 256, d 128, MoE n 16 k 2 h 256, w_importance = w_load = 0.1, noise_eps 0.01, dropout 0.1 */
MOE_API moe_lm_config moe_lm_config_default(void);

typedef struct moe_lm moe_lm;

typedef struct {
    double loss;           /* mean cross-entropy, nats per predicted token */
    double aux;            /* L_importance + L_load of the MoE (0 without one) */
    moe_layer_stats moe;   /* the MoE layer's statistics for this batch */
    int64_t tokens;        /* predicted tokens in the batch (T*B) */
    double flops;          /* matrix-product FLOPs of this call (forward, + backward if trained) */
} moe_lm_stats;

MOE_API moe_status moe_lm_create(moe_lm **out, const moe_lm_config *cfg, uint64_t seed);
/* The same model with the MoE's experts split over the ranks of comm (moe_layer_create_sharded);
 * everything else is replicated (data parallelism). `comm` is borrowed: it must outlive the
 * model. */
MOE_API moe_status moe_lm_create_sharded(moe_lm **out, const moe_lm_config *cfg, uint64_t seed, moe_comm *comm);
/* Data parallelism: this model's batches are streams [b0, b0 + B) of a global batch of Bglobal
 * streams. Dropout masks become those of the global positions, and the loss gradient is scaled
 * by B / Bglobal: the sum of the ranks' gradients is the gradient of the global mean loss. */
MOE_API moe_status moe_lm_set_slice(moe_lm *m, int b0, int Bglobal);
MOE_API void moe_lm_free(moe_lm *m);
MOE_API moe_lm_config moe_lm_get_config(const moe_lm *m);

/* One batch. tokens [B, T+1] (copied): row b is stream b; inputs are columns 0..T-1, targets 1..T.
 * The LSTM state is carried from the previous call (truncated backpropagation through time).
 * train = 1: dropout and gate noise on, and gradients += for loss + aux;
 * train = 0: evaluation, no gradients. Errors leave the parameters unchanged. stats may be NULL. */
MOE_API moe_status moe_lm_step(moe_lm *m, const int32_t *tokens, int B, int T, int train,
                               moe_lm_stats *stats);
/* Zero the carried LSTM state (start of a new pass over data). */
MOE_API void moe_lm_reset_state(moe_lm *m);
/* Next-token logits [B, V] floats (V = cfg.vocab; log-probabilities) after feeding tokens [B]
 * one step (evaluation mode, state carried). */
MOE_API moe_status moe_lm_next_logits(moe_lm *m, const int32_t *tokens, int B, float *logits);

/* Parameters: the dense ones (embedding, LSTMs, softmax) and the MoE layer's, in two arenas.
 * moe_lm_param and moe_lm_arena give the dense ones (names like "lstm1.w_ih"; the arena's
 * *params and *grads [*count floats], each output may be NULL), owned by the model; the MoE's
 * come from its layer, moe_lm_moe (owned by the model: not to be freed; NULL for
 * MOE_FFN_NONE; the dense FFN baseline is a layer of one expert). */
MOE_API int moe_lm_num_params(const moe_lm *m);
MOE_API moe_status moe_lm_param(moe_lm *m, int i, moe_param *p);
MOE_API moe_status moe_lm_arena(moe_lm *m, float **params, float **grads, size_t *count);
MOE_API moe_layer *moe_lm_moe(moe_lm *m);
/* Every tensor of the model in one list, the table the trainer, the optimiser and checkpoints
 * work from: names carry their group ("lm.embedding.weight", "moe.experts.w1"), expert tensors
 * say which experts this process holds. Owned by the model. */
MOE_API int moe_lm_num_tensors(const moe_lm *m);
MOE_API moe_status moe_lm_tensor(moe_lm *m, int i, moe_param *p);
MOE_API void moe_lm_zero_grad(moe_lm *m);
/* Parameter counts: total, and active per token (the MoE counts k of its n experts). */
MOE_API void moe_lm_param_counts(const moe_lm *m, int64_t *total, int64_t *active);
/* The same counts from a configuration alone, without building the model. */
MOE_API moe_status moe_lm_config_param_counts(const moe_lm_config *cfg, int64_t *total, int64_t *active);

/* The model's random streams and carried state, for checkpoints that resume exactly. */
typedef struct {
    uint64_t seed, dropout_counter, moe_seed, moe_counter;
} moe_lm_rng;
MOE_API moe_lm_rng moe_lm_get_rng(const moe_lm *m);
MOE_API void moe_lm_set_rng(moe_lm *m, const moe_lm_rng *r);
/* The carried LSTM state for B streams: state [4*B*d floats] = h1, c1, h2, c2, each [B,d]
 * (get: zeros when no state of B streams is carried; set: copied). */
MOE_API moe_status moe_lm_get_state(const moe_lm *m, float *state, int B);
MOE_API moe_status moe_lm_set_state(moe_lm *m, const float *state, int B);

/* ------------------------------------------------------------------------------------------ */
/* Training the language model on a text file, with checkpoints that resume exactly.           */
typedef struct {
    const char *data;          /* any UTF-8 text file; split 90/5/5 into train/valid/test blocks */
    int words;                 /* 0: byte (character) tokens; 1: word tokens */
    int min_count, max_vocab;  /* words: rarer words, and those past max_vocab, become <unk> */
    int lowercase;             /* words: fold ASCII case */
    int batch, bptt;           /* B parallel streams, T steps of backpropagation per batch */
    int64_t steps;             /* stop when this many steps are done (0: no step bound) */
    double minutes;            /* stop after this much wall time in this run (0: none) */
    float lr;                  /* peak learning rate (Adam) */
    int warmup;                /* linear warm-up steps, then lr * sqrt(warmup / step) */
    float clip;                /* clip the global gradient norm to this (0: off) */
    const char *optim;         /* "adam" or "factored" (beta1 = 0, factored second moment,
                                  SPEC 1.7); NULL: adam, or the checkpoint's on resume */
    int log_every, eval_every, eval_batches, ckpt_every; /* in steps; eval_batches 0 = whole split */
    const char *checkpoint;    /* written atomically every ckpt_every steps and at the end */
    uint64_t seed;
    moe_comm *comm;            /* NULL: one process; else data parallel over its ranks, the
                                  MoE's experts split over them; rank 0 calls back and writes
                                  (used during moe_lm_train only) */
    int fused;                 /* 1: fused expert updates: each expert is stepped as soon as
                                  backward has made its gradient, and no gradient of the
                                  experts is kept (their memory: none instead of as much as
                                  the weights). Clipping then clips each expert's gradient by
                                  its own norm and the rest of the model by the rest's norm;
                                  without clipping the steps are the same bits as with 0.
                                  With the factored optimiser, an expert that got no token
                                  costs nothing in that step. 0: off */
    int bf16;                  /* 1 (needs fused = 1): the experts' weight matrices w1, w2 are
                                  stored in bfloat16, half their float32 memory; products and
                                  accumulation stay float32 (each matrix is widened as it is
                                  used) and every update is rounded back stochastically, with
                                  bits drawn from the seed and the step, so a resumed run stays
                                  exact. Checkpoints store them as BF16; resume with the same
                                  setting. 0: float32 */
} moe_lm_train_config;

MOE_API moe_lm_train_config moe_lm_train_config_default(void);

/* The memory of a training run, from its settings alone (nothing is allocated), in bytes, per
 * process: parameters, their gradients, the optimiser's state, one step's activations and
 * workspaces, and what this process may use (the cgroup's memory limit, else MemAvailable; 0
 * when neither can be read). With `ranks` processes each holds its share of the experts and
 * batch/ranks of the streams. An estimate from the buffers the code allocates; the process's own
 * code and libraries (some tens of MB) are not in it. */
typedef struct {
    int64_t params, grads, optim, activations, total;
    int64_t available;
} moe_mem_plan;
/* flags: MOE_PLAN_FACTORED (the factored optimiser), MOE_PLAN_FUSED (fused expert updates: no
 * expert gradients, moe_lm_train_config.fused), MOE_PLAN_BF16 (with MOE_PLAN_FUSED: bfloat16
 * expert weights, moe_lm_train_config.bf16) */
enum { MOE_PLAN_FACTORED = 1, MOE_PLAN_FUSED = 2, MOE_PLAN_BF16 = 4 };
MOE_API moe_status moe_lm_plan(const moe_lm_config *mc, int batch, int bptt, int flags, int ranks, moe_mem_plan *out);
/* The plan of moe_lm_train(tc, mc, resume, ...) without training or allocating the model: the
 * vocabulary from the data (word tokens: read once) or the checkpoint, the optimiser as
 * moe_lm_train chooses it. moe_lm_train refuses (MOE_ERR_NOMEM, naming what would fit) a run
 * whose plan exceeds `available`. */
MOE_API moe_status moe_lm_train_plan(const moe_lm_train_config *tc, const moe_lm_config *mc, const char *resume,
                                     moe_mem_plan *out);
/* Bytes this process may still allocate: the cgroup limit less its usage, else MemAvailable
 * (0: unknown). */
MOE_API int64_t moe_mem_available(void);

typedef enum { MOE_LM_TRAIN = 0, MOE_LM_VALID, MOE_LM_CHECKPOINT, MOE_LM_START } moe_lm_progress_kind;

typedef struct {
    moe_lm_progress_kind kind;
    int64_t step, steps;       /* steps done; the target (0 when only time-bounded) */
    double loss, ppl, aux;     /* TRAIN: means over the steps since the last report */
    double lr, grad_norm;
    double tokens_per_s, gflops, elapsed_s, eta_s, epoch;
    double cv_importance, cv_load, max_mean_load; /* means over the interval */
    const int64_t *expert_tokens; /* [n] tokens routed to each expert over the interval */
    int n;
    double valid_loss, valid_ppl; /* VALID */
    int64_t params_total, params_active, vocab; /* START */
    int64_t optim_floats;      /* START: floats of optimiser state (both moments) */
    int ranks;                 /* processes of the run (1 without MPI) */
    double comm_fraction;      /* TRAIN, ranks > 1: share of rank 0's time in collectives */
    double exchange_bytes;     /* TRAIN, ranks > 1: token rows sent + received by rank 0 per step */
    const char *path;          /* CHECKPOINT: the file written */
} moe_lm_progress;

/* Called at each report; return non-zero to stop (a checkpoint is written first). `p` and what
 * it points to (expert_tokens [n], path) are valid during the call only. */
typedef int (*moe_lm_callback)(const moe_lm_progress *p, void *user);

/* Trains from scratch (resume = NULL, model settings from mc) or continues the checkpoint at
 * `resume` (mc may be NULL; if given it must agree with the checkpoint, as must the data file,
 * tokenizer, batch and bptt: anything else is MOE_ERR_CONFIG with the difference named).
 * N steps, then N more from the checkpoint, give the same parameters as 2N straight (same
 * thread count). */
MOE_API moe_status moe_lm_train(const moe_lm_train_config *tc, const moe_lm_config *mc, const char *resume,
                                moe_lm_callback cb, void *user);

/* A trained model from a checkpoint, with its tokenizer. */
typedef struct moe_lm_ckpt moe_lm_ckpt;
MOE_API moe_status moe_lm_ckpt_load(moe_lm_ckpt **out, const char *path);
/* The model configuration stored in an open checkpoint (moe_st_open), range-checked, without
 * reading any weights: what `moe info` prints of a checkpoint of many GB in well under a second.
 * MOE_ERR_FORMAT when the file is not a language-model checkpoint. */
MOE_API moe_status moe_lm_ckpt_config(const moe_st *f, moe_lm_config *cfg);
MOE_API void moe_lm_ckpt_free(moe_lm_ckpt *c);
/* The model, owned by the checkpoint handle (not to be freed; valid until moe_lm_ckpt_free).
 * It is for inference: its MoE layer keeps no expert gradients, so that a model of billions of
 * parameters loads in the memory of its weights; a training step on it (moe_lm_step with train)
 * fails with MOE_ERR_STATE. To train on, resume the checkpoint with moe_lm_train. */
MOE_API moe_lm *moe_lm_ckpt_model(moe_lm_ckpt *c);
/* Settings and progress stored in the checkpoint ("step", "data", "tokenizer.kind", ...);
 * the strings are owned by the checkpoint handle. */
MOE_API const char *moe_lm_ckpt_meta(const moe_lm_ckpt *c, const char *key);
MOE_API int moe_lm_ckpt_meta_count(const moe_lm_ckpt *c);
MOE_API moe_status moe_lm_ckpt_meta_at(const moe_lm_ckpt *c, int i, const char **key, const char **value);
/* text [len bytes] -> *ids [*n] (malloc'ed, the caller frees) and ids [n] -> *text
 * (malloc'ed, NUL-terminated, the caller frees; *len its length when len is not NULL). */
MOE_API moe_status moe_lm_ckpt_encode(const moe_lm_ckpt *c, const char *text, size_t len, int32_t **ids, size_t *n);
MOE_API moe_status moe_lm_ckpt_decode(const moe_lm_ckpt *c, const int32_t *ids, size_t n, char **text, size_t *len);
/* Text from the model: the prompt [prompt_len bytes] fed in, then `length` tokens drawn, each
 * from the softmax of the logits at `temperature` (0.001 .. 100) over the top_k largest (0: all);
 * draw s is moe_rng_uniform(seed, s), so a seed gives the same text everywhere. *text (prompt and
 * continuation, malloc'ed, NUL-terminated; the caller frees), *text_len its length (may be NULL).
 * The model's carried state is reset first. */
MOE_API moe_status moe_lm_ckpt_sample(moe_lm_ckpt *c, const char *prompt, size_t prompt_len, int length,
                                      double temperature, int top_k, uint64_t seed, char **text, size_t *text_len);
/* Mean cross-entropy (nats per token) of the model on one split of a text file
 * (0 train, 1 valid, 2 test), B streams of T steps, at most max_batches (0 = all). */
MOE_API moe_status moe_lm_ckpt_eval(moe_lm_ckpt *c, const char *path, int split, int B, int T, int64_t max_batches,
                                    double *loss, uint64_t *tokens);

/* ------------------------------------------------------------------------------------------ */
/* Sequence-to-sequence translation (issue 4, SPEC 3): an LSTM encoder (the first layer
 * optionally bidirectional), an LSTM decoder with attention (Luong's "general" score), and
 * optionally an MoE layer between the two LSTM layers of each side, as in the MoE paper's
 * translation model. Token sequences are batch-major [B, T] int32 in this API.                 */
typedef struct {
    int src_vocab, tgt_vocab;
    int d;              /* embedding, LSTM, MoE and attention width */
    int layers;         /* LSTM layers on each side: 1 or 2 */
    int bidir;          /* 1: the first encoder layer also reads right to left (outputs summed) */
    int moe;            /* 1: x + sigmoid(MoE(x)) between the two layers of each side */
    int n, k, h;        /* the MoE layers' experts, experts per token, hidden size */
    float w_importance, w_load, noise_eps;
    float dropout;      /* on embeddings, on the input of layer 2 and on the attention output */
    int max_len;        /* longest target in tokens with its end mark: one baseline regressor
                           per step (REINFORCE) and the decoding limit */
    int eos;            /* target id that ends a sentence; it also starts the decoder */
} moe_s2s_config;

/* d 128, layers 2, bidir 1, moe 1 (n 8, k 2, h 256, 0.1/0.1, noise 0.01), dropout 0.1,
 * max_len 16, eos 1; the vocabulary sizes are the caller's. */
MOE_API moe_s2s_config moe_s2s_config_default(void);
typedef struct moe_s2s moe_s2s;
MOE_API moe_status moe_s2s_create(moe_s2s **out, const moe_s2s_config *cfg, uint64_t seed);
/* The same model for data parallelism over the ranks of comm: the MoE layers' experts split over
 * them (moe_layer_create_sharded), everything else replicated. Each rank then runs its rows of
 * every batch, after moe_s2s_set_slice; the forward, backward and decoding calls are collective
 * (every rank makes them, with B = 0 where it has no rows). `comm` is borrowed: it must outlive
 * the model. */
MOE_API moe_status moe_s2s_create_sharded(moe_s2s **out, const moe_s2s_config *cfg, uint64_t seed, moe_comm *comm);
/* This model's B rows of the next batches are rows [b0, b0 + B) of a batch of Bglobal: dropout
 * masks, gate noise and sampled tokens are drawn by global row, so the ranks together compute
 * what one process computes on the whole batch. Bglobal 0: the rows are the whole batch. */
MOE_API moe_status moe_s2s_set_slice(moe_s2s *m, int b0, int Bglobal);
MOE_API void moe_s2s_free(moe_s2s *m);
MOE_API moe_s2s_config moe_s2s_get_config(const moe_s2s *m);
/* The dense parameters (one arena; names like "enc1.w_ih", "att.w", "baseline.w"), owned by the
 * model; moe_s2s_arena's *params and *grads are [*count floats] (each output may be NULL). */
MOE_API int moe_s2s_num_params(const moe_s2s *m);
MOE_API moe_status moe_s2s_param(moe_s2s *m, int i, moe_param *p);
MOE_API moe_status moe_s2s_find_param(moe_s2s *m, const char *name, moe_param *p);
MOE_API moe_status moe_s2s_arena(moe_s2s *m, float **params, float **grads, size_t *count);
/* The MoE layer of a side (0 encoder, 1 decoder), owned by the model (not to be freed); NULL
 * without MoE. */
MOE_API moe_layer *moe_s2s_moe(moe_s2s *m, int side);
/* Every tensor of the model in one list (groups "s2s", "moe0", "moe1", "baseline"; names
 * "s2s.enc1.w_ih", "moe0.experts.w1", ...), as moe_lm_tensor. Owned by the model. */
MOE_API int moe_s2s_num_tensors(const moe_s2s *m);
MOE_API moe_status moe_s2s_tensor(moe_s2s *m, int i, moe_param *p);
MOE_API void moe_s2s_zero_grad(moe_s2s *m);

/* Teacher-forced forward of a batch: the decoder reads in [B,Tt] (in[b][0] is normally eos) and
 * position (b,t) scores tgt[b][t]. Returns in *loss
 *     sum over (b,t) of coef[b][t] * -log p(tgt[b][t] | in[b][..t], src[b])  + the MoE losses,
 * so coef = 1/N on real tokens gives mean cross-entropy and coef = -(r - baseline)/N gives the
 * REINFORCE surrogate; coef 0 masks a position (its tgt is not looked at). All sources of a
 * batch have the same length Ts. MOE_TRAIN: dropout and gate noise on. Keeps what
 * moe_s2s_backward needs (copies: src, in, tgt and coef are read during the call only). */
MOE_API moe_status moe_s2s_forward(moe_s2s *m, const int32_t *src /* [B,Ts] */, int B, int Ts,
                                   const int32_t *in /* [B,Tt] */, const int32_t *tgt /* [B,Tt] */,
                                   const float *coef /* [B,Tt] */, int Tt, moe_mode mode, double *loss);
/* Gradients of the last forward's loss += into every parameter's gradient. */
MOE_API moe_status moe_s2s_backward(moe_s2s *m);
/* Greedy decoding of B sources src [B,Ts]: out [B,max_len] ids without the end mark (row b's
 * first len[b] are set), len [B] ints (max_len <= cfg.max_len; a sentence that never ends stops
 * there). */
MOE_API moe_status moe_s2s_greedy(moe_s2s *m, const int32_t *src, int B, int Ts, int max_len, int32_t *out,
                                  int *len);
/* Beam search for one source src [Ts]: the best finished hypothesis by sum log p / len^alpha
 * (alpha 0: plain sum), `beam` hypotheses kept per step: out [max_len] ids (the first *len set). */
MOE_API moe_status moe_s2s_beam(moe_s2s *m, const int32_t *src, int Ts, int beam, float alpha, int max_len,
                                int32_t *out, int *len);

/* Training the translation model (issue 4): cross-entropy, MIXER (SPEC 3.3) or SCST (SPEC 3.2)
 * on the Ding dictionary (SPEC 4) or two parallel files; checkpoints as moe_lm_train's.          */
typedef enum { MOE_OBJ_XENT = 0, MOE_OBJ_MIXER = 1, MOE_OBJ_SCST = 2 } moe_s2s_objective;

typedef struct {
    const char *dict;      /* dictd data of the Ding dictionary (its .index beside it); or */
    const char *src_file, *tgt_file; /* two files of one sentence a line (split 90/5/5 by hash) */
    const char *out_dir;   /* model.safetensors and log.jsonl go here */
    moe_s2s_objective objective;
    int epochs;            /* stop after this epoch; 0: n_xent + (MIXER stages) * n_xer */
    int64_t max_steps;     /* stop after this many steps in all (0: no limit), mid-epoch too */
    int n_xent, n_xer, delta; /* MIXER: N_XENT cross-entropy epochs, then stages of N_XE+R
                                 epochs with s = T, T - delta, ... (T = cfg.max_len), the last
                                 at s = 0; SCST: n_xent epochs of cross-entropy, then SCST */
    int batch;
    float lr, lr_rl;       /* Adam; lr_rl for the epochs with sampling (0: lr), default 5e-4: pure
                              REINFORCE at the cross-entropy rate 2e-3 collapsed on the Ding data */
    float clip;            /* global gradient-norm clip (0: none) */
    uint64_t seed;
    moe_bleu_smoothing reward; /* sentence BLEU smoothing of the reward (BLEU+1 by default) */
    int min_count, max_vocab;  /* word vocabularies of the training split */
    int max_words;         /* longest sentence kept, in words (dictionary: longer pairs dropped;
                              user files: an error) */
    int min_words;         /* dictionary: entries with at least this many German words */
    int valid_sentences;   /* validation BLEU on the first this many (0: all) */
    int log_every;         /* steps between progress reports */
    int ckpt_every;        /* steps between checkpoints (0: at each epoch's end only) */
    float baseline_lr;     /* learning rate of the baseline regressors (their own Adam) */
    double minutes;        /* stop after this much wall time in this run (0: no bound) */
    moe_comm *comm;        /* NULL: one process; else data parallel over its ranks (each runs
                              its rows of every batch, the MoE layers' experts split over
                              them), the same result as one process; rank 0 calls back and
                              writes. Every rank must call moe_s2s_train with the same settings. */
    int mixer_from_end;    /* MIXER: 0 forces the first min(s, L) tokens of a reference of L
                              tokens (SPEC 3.3 as written); 1 samples its last T - s tokens
                              (forces max(0, L - (T - s))), so that every sentence, short or
                              long, meets REINFORCE from the first stage after s = T */
    float rl_xent;         /* in the epochs that sample (MIXER's stages, SCST), each row of a batch
                              is trained by cross-entropy on its whole reference with this
                              probability instead of sampled: the mixed objective
                              rl_xent * XENT + (1 - rl_xent) * REINFORCE, in expectation (0 to 1;
                              default 0: REINFORCE as the papers write it). The draw depends on
                              the seed, the step and the row only. */
} moe_s2s_train_config;

MOE_API moe_s2s_train_config moe_s2s_train_config_default(void);

typedef enum { MOE_S2S_START = 0, MOE_S2S_TRAIN, MOE_S2S_EPOCH, MOE_S2S_CHECKPOINT } moe_s2s_progress_kind;

typedef struct {
    moe_s2s_progress_kind kind;
    int64_t step, steps;   /* steps done and planned */
    int epoch, epochs;     /* epochs done (EPOCH: the one just finished) */
    const char *phase;     /* "xent", "mixer" or "scst" for the current epoch */
    int s;                 /* MIXER: tokens under cross-entropy (-1 outside MIXER stages) */
    double loss;           /* TRAIN: mean cross-entropy of the teacher-forced tokens */
    double reward;         /* TRAIN: mean reward of the sampled sequences (NaN: none) */
    double baseline_err;   /* TRAIN: MIXER's baseline mean squared error; SCST: mean |r - r_greedy| */
    double valid_bleu;     /* EPOCH: corpus BLEU x 100 of greedy decoding on the valid split */
    double tokens_per_s, elapsed_s, eta_s, lr;
    double cv_load, max_mean_load; /* the decoder MoE's, over the interval (0 without MoE) */
    int64_t params_total;  /* START */
    int src_vocab, tgt_vocab, train_pairs, valid_pairs, test_pairs, dropped;
    const char *path;      /* CHECKPOINT */
} moe_s2s_progress;
/* Called at each report; non-zero stops. `p` and its strings are valid during the call only. */
typedef int (*moe_s2s_callback)(const moe_s2s_progress *p, void *user);

/* Trains from scratch (resume NULL) or continues a checkpoint (mc may be NULL: the checkpoint's
 * model). Resuming with the same settings continues exactly; with another objective it starts
 * that objective's schedule at the checkpoint's epoch (how MIXER and SCST start from a
 * cross-entropy model). */
MOE_API moe_status moe_s2s_train(const moe_s2s_train_config *tc, const moe_s2s_config *mc, const char *resume,
                                 moe_s2s_callback cb, void *user);

/* A trained translation model with its vocabularies. */
typedef struct moe_s2s_ckpt moe_s2s_ckpt;
MOE_API moe_status moe_s2s_ckpt_load(moe_s2s_ckpt **out, const char *path);
MOE_API void moe_s2s_ckpt_free(moe_s2s_ckpt *c);
/* The model and the stored settings, owned by the checkpoint handle (valid until
 * moe_s2s_ckpt_free; the model is not to be freed). */
MOE_API moe_s2s *moe_s2s_ckpt_model(moe_s2s_ckpt *c);
MOE_API const char *moe_s2s_ckpt_meta(const moe_s2s_ckpt *c, const char *key);
/* One sentence -> *out, its translation (malloc'ed, NUL-terminated, the caller frees). beam 1:
 * greedy. *unknown (unknown may be NULL) gets the number of source words outside the vocabulary
 * (translated as <unk>). MOE_ERR_INVALID_ARG for a sentence without words; more than 4096
 * words: MOE_ERR_SHAPE. */
MOE_API moe_status moe_s2s_ckpt_translate(moe_s2s_ckpt *c, const char *text, int beam, float alpha, char **out,
                                          int *unknown);
/* Corpus BLEU (x 100, unsmoothed) on a split (1 valid, 2 test) of the data the checkpoint was
 * trained on, greedy (beam 1) or beam search; *sentences gets the count. */
MOE_API moe_status moe_s2s_ckpt_bleu(moe_s2s_ckpt *c, int split, int beam, float alpha, double *bleu, int *sentences);
/* The same decoding, scored the ways that rank systems on any test set: corpus BLEU unsmoothed
 * and smoothed with Chen and Cherry's method 3 (nltk's corpus_bleu with method3, the geometric
 * smoothing of NIST's mteval and sacreBLEU's 'exp': a test set without any 4-gram match still
 * gets a score that orders systems), the exact-match rate, and each sentence's statistics (for
 * moe_bleu_bootstrap_pair: two checkpoints trained on the same data give them in the same order). */
typedef struct {
    double bleu;        /* corpus BLEU x 100, unsmoothed */
    double bleu_smooth; /* corpus BLEU x 100, method 3 */
    double exact;       /* the fraction of hypotheses identical to their reference */
    int sentences;
    moe_bleu_stats total;                /* the summed statistics */
    const moe_bleu_stats *per_sentence;  /* [sentences], in the split's fixed order; owned by the
                                            handle, valid until its next eval or moe_s2s_ckpt_free */
} moe_s2s_eval;
MOE_API moe_status moe_s2s_ckpt_eval(moe_s2s_ckpt *c, int split, int beam, float alpha, moe_s2s_eval *out);

/* ------------------------------------------------------------------------------------------ */
/* IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed (by magic bytes).     */
typedef struct {
    int ndim;
    int64_t shape[4];
    size_t numel;
    uint8_t *data; /* unsigned-byte items, row-major; owned: release with moe_idx_free */
} moe_idx;
/* Only the unsigned-byte type (0x08) is supported; anything else is MOE_ERR_DTYPE. The header's
 * sizes are checked against the real data length (MOE_ERR_TRUNCATED / MOE_ERR_FORMAT). */
MOE_API moe_status moe_idx_load(const char *path, moe_idx *out);
MOE_API void moe_idx_free(moe_idx *m); /* frees data; NULL or an empty struct is fine */

/* ------------------------------------------------------------------------------------------ */
/* Counter-based random numbers: the same (seed, counter) always gives the same value.          */
MOE_API uint64_t moe_rng_u64(uint64_t seed, uint64_t counter);
MOE_API float moe_rng_uniform(uint64_t seed, uint64_t counter); /* in [0, 1) */
MOE_API float moe_rng_normal(uint64_t seed, uint64_t counter);  /* standard normal */
/* out[i] = moe_rng_normal(seed, counter + i) for i < count, about twice as fast. */
MOE_API void moe_rng_normal_fill(float *out, size_t count, uint64_t seed, uint64_t counter);

/* ------------------------------------------------------------------------------------------ */
/* A classifier with an MoE hidden layer (the Fashion-MNIST demo's model, `moe classify`):
 *   x [B,in] -> Linear(in,d) + ReLU = h1 -> h2 = h1 + MoE(h1) -> Linear(d,C) = logits [B,C]
 * trained on softmax cross-entropy plus the MoE layer's balancing losses.                    */
typedef struct {
    int in;               /* input features, 1 .. 2^24 */
    int classes;          /* C, 2 .. 2^20 */
    moe_layer_config moe; /* the hidden MoE layer; its d is the hidden width */
} moe_clf_config;

/* in 784, classes 10, the layer's defaults with d 256, h 256, n 8, k 2 */
MOE_API moe_clf_config moe_clf_config_default(void);
typedef struct moe_clf moe_clf;

typedef struct {
    double loss;         /* mean cross-entropy of the batch (NaN without labels) */
    double aux;          /* L_importance + L_load of the MoE layer */
    int correct;         /* examples whose largest logit is their label (0 without labels) */
    moe_layer_stats moe; /* the MoE layer's statistics */
} moe_clf_stats;

/* Weights uniform in +-1/sqrt(fan_in) from `seed`, biases zero; the MoE layer as
 * moe_layer_create(cfg->moe, seed). MOE_ERR_CONFIG for impossible settings (*out NULL). */
MOE_API moe_status moe_clf_create(moe_clf **out, const moe_clf_config *cfg, uint64_t seed);
MOE_API void moe_clf_free(moe_clf *m);
MOE_API moe_clf_config moe_clf_get_config(const moe_clf *m);
/* Forward of x [B,in] with labels y [B] (each in [0, C); may be NULL in MOE_EVAL: logits only).
 * MOE_TRAIN: gate noise on, and what moe_clf_backward needs is kept (x and y are copied).
 * stats may be NULL. NaN or Inf in x: MOE_ERR_NONFINITE. */
MOE_API moe_status moe_clf_forward(moe_clf *m, const float *x, const int *y, int B, moe_mode mode,
                                   moe_clf_stats *stats);
/* Gradients of the last training forward's loss + aux += into every tensor's gradient;
 * MOE_ERR_STATE without one (each training forward allows one backward). */
MOE_API moe_status moe_clf_backward(moe_clf *m);
/* The last forward's logits into logits [B, C] floats (B that forward's); MOE_ERR_STATE before one. */
MOE_API moe_status moe_clf_logits(const moe_clf *m, float *logits);
MOE_API void moe_clf_zero_grad(moe_clf *m);
/* The MoE layer, owned by the model (not to be freed). */
MOE_API moe_layer *moe_clf_moe(moe_clf *m);
/* Every tensor of the model (groups "clf": clf.w1 [in,d], clf.b1 [d], clf.w2 [d,C], clf.b2 [C];
 * "moe": moe.gate.w_gate, ...), as moe_lm_tensor. Owned by the model. */
MOE_API int moe_clf_num_tensors(const moe_clf *m);
MOE_API moe_status moe_clf_tensor(moe_clf *m, int i, moe_param *p);

/* ------------------------------------------------------------------------------------------ */
/* The optimiser over every tensor of a model, as moe_lm_train and moe_s2s_train step theirs:
 * one Adam per group of the model's tensor list (moe_lm_tensor ...; each weight matrix declared
 * for the factored variant), and a step that clips the global gradient norm first.           */
typedef struct moe_optim moe_optim;
/* The model (or layer) is borrowed: it must outlive the optimiser. cfg as moe_adam_create's.
 * A translation model's groups, its baseline regressors' included, share one learning rate. */
MOE_API moe_status moe_optim_create_layer(moe_optim **out, moe_layer *l, const moe_adam_config *cfg);
MOE_API moe_status moe_optim_create_lm(moe_optim **out, moe_lm *m, const moe_adam_config *cfg);
MOE_API moe_status moe_optim_create_s2s(moe_optim **out, moe_s2s *m, const moe_adam_config *cfg);
MOE_API moe_status moe_optim_create_clf(moe_optim **out, moe_clf *m, const moe_adam_config *cfg);
MOE_API void moe_optim_free(moe_optim *o);
/* One step: the norm of all the model's gradients (for experts split over ranks, over all ranks:
 * collective; the replicated gradients must already be the same on every rank), into
 * *grad_norm (may be NULL); when clip > 0 and the norm exceeds it, the gradients are scaled
 * by clip / norm (in place); then Adam at learning rate lr. A NaN or Inf norm is
 * MOE_ERR_NONFINITE, with parameters, gradients and optimiser state untouched. */
MOE_API moe_status moe_optim_step(moe_optim *o, float lr, float clip, double *grad_norm);
/* Floats of optimiser state (both moments, or the factored means). */
MOE_API int64_t moe_optim_state_floats(const moe_optim *o);

#ifdef __cplusplus
}
#endif
#endif /* MOE_H */
