/* optim.c - Adam over one flat parameter arena (bias-corrected; decoupled weight decay), and the
 * paper's memory-saving variant (SPEC 1.7): beta1 = 0 drops the first moment, and the second
 * moment of each declared matrix [rows, cols] is kept as its row means R [rows] and column means
 * C [cols], estimated as V_ij = R_i C_j / mean(R). The state of a [d, h] expert then costs d + h
 * floats instead of 2 d h.
 *
 * The arena is cut into segments at the first step: the declared matrices, and runs of elements
 * that no matrix covers (biases, or everything when the variant is off), which keep a full second
 * moment. All sums run in a fixed order, so a step gives the same bits for any thread count.
 *
 * Fused updates (optim_fused.h) cut the runs further at the edges of the span and of its unit
 * tensors, so that each unit tensor is one segment; the storage of v does not move. A unit
 * tensor may be stored in bfloat16 outside the arena: each step widens a unit to float32 a
 * short chunk at a time, steps it and rounds it back stochastically. */
#include "base/bf16.h"
#include "base/internal.h"
#include "base/vmath.h"
#include "train/optim_fused.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    size_t offset;             /* first element in the arena */
    int64_t count, rows, cols; /* count matrices [rows, cols]; a vector run has rows = 0 */
    size_t len;                /* elements covered */
    size_t voff;               /* where its second moment starts in v */
    int fused;                 /* inside the fused span: never stepped by moe_adam_step */
    size_t unit;               /* floats of one unit (a fused tensor's segment), else 0 */
    int32_t *missed;           /* [len / unit] steps of zero gradient not yet applied */
    uint8_t *hit;              /* [len / unit] stepped in the current step */
    uint16_t *half;            /* a bfloat16 unit tensor's storage (its parameters are not in the
                                  arena), or NULL */
    uint64_t key;              /* its stochastic rounding's key */
    int64_t first_unit;        /* the whole tensor's index of its unit 0 (the rank's first expert) */
} segment;

typedef struct {
    size_t offset, len, unit;
    uint16_t *half;
    uint64_t key;
    int64_t first_unit;
} unit_range;

struct moe_adam {
    moe_adam_config cfg;
    size_t count;
    float *m;      /* [count]; NULL when beta1 = 0 */
    float *v;      /* [vcount]: per element, or R then C of each factored matrix */
    size_t vcount;
    segment *decl; /* matrices declared by moe_adam_set_matrices, sorted at layout time */
    int ndecl;
    segment *seg;  /* the layout: declared matrices and the vector runs between them */
    int nseg;
    int64_t step;
    size_t span0, span1;   /* the fused span (empty: none) */
    unit_range *units;     /* its unit tensors, sorted at layout time */
    int nunits;
    int no_lazy;
    float *zeros;          /* [largest unit] the zero gradient of an eager step */
};

moe_adam_config moe_adam_config_default(void) {
    moe_adam_config c = {.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f, .factored = 0};
    return c;
}

moe_adam_config moe_adam_config_factored(void) {
    moe_adam_config c = moe_adam_config_default();
    c.beta1 = 0.0f;
    c.factored = 1;
    return c;
}

moe_status moe_adam_create(moe_adam **out, size_t count, const moe_adam_config *cfg) {
    if (!out || !cfg) return moe_fail(MOE_ERR_INVALID_ARG, "out and cfg must not be NULL");
    *out = NULL;
    if (!(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f) || !(cfg->beta2 > 0.0f && cfg->beta2 < 1.0f) ||
        !(cfg->eps > 0.0f) || !(cfg->weight_decay >= 0.0f))
        return moe_fail(MOE_ERR_CONFIG, "Adam needs 0 <= beta1 < 1, 0 < beta2 < 1, eps > 0, weight_decay >= 0");
    if (count == 0) return moe_fail(MOE_ERR_CONFIG, "the optimiser needs at least one parameter");
    moe_adam *a = calloc(1, sizeof *a);
    if (!a) return moe_fail(MOE_ERR_NOMEM, "cannot allocate the optimiser");
    a->cfg = *cfg;
    a->count = count;
    if (cfg->beta1 > 0.0f) {
        a->m = moe_alloc_floats(count);
        if (!a->m) {
            moe_adam_free(a);
            return moe_fail(MOE_ERR_NOMEM, "cannot allocate optimiser state for %zu parameters", count);
        }
        memset(a->m, 0, sizeof(float) * count);
    }
    *out = a;
    return moe_ok();
}

void moe_adam_free(moe_adam *a) {
    if (!a) return;
    moe_free_aligned(a->m);
    moe_free_aligned(a->v);
    moe_free_aligned(a->zeros);
    free(a->decl);
    for (int i = 0; a->seg && i < a->nseg; i++) {
        free(a->seg[i].missed);
        free(a->seg[i].hit);
    }
    free(a->seg);
    free(a->units);
    free(a);
}

moe_status moe_adam_set_matrices(moe_adam *a, size_t offset, int64_t count, int64_t rows, int64_t cols) {
    if (!a) return moe_fail(MOE_ERR_INVALID_ARG, "optimiser is NULL");
    if (a->seg) return moe_fail(MOE_ERR_INVALID_ARG, "matrices must be declared before the first step or state access");
    if (count < 1 || rows < 1 || cols < 1)
        return moe_fail(MOE_ERR_CONFIG, "a matrix block needs count, rows and cols >= 1 (got %lld, %lld, %lld)",
                        (long long)count, (long long)rows, (long long)cols);
    size_t len = (size_t)count * (size_t)rows * (size_t)cols;
    if (offset > a->count || len > a->count - offset)
        return moe_fail(MOE_ERR_SHAPE, "matrix block [%zu, %zu) lies outside the %zu parameters", offset, offset + len, a->count);
    segment *d = realloc(a->decl, sizeof(segment) * (size_t)(a->ndecl + 1));
    if (!d) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    a->decl = d;
    d[a->ndecl++] = (segment){.offset = offset, .count = count, .rows = rows, .cols = cols, .len = len};
    return moe_ok();
}

static int cmp_seg(const void *x, const void *y) {
    const segment *p = x, *q = y;
    return (p->offset > q->offset) - (p->offset < q->offset);
}

static int cmp_size(const void *x, const void *y) {
    const size_t p = *(const size_t *)x, q = *(const size_t *)y;
    return (p > q) - (p < q);
}

static int cmp_units(const void *x, const void *y) {
    const unit_range *p = x, *q = y;
    return (p->offset > q->offset) - (p->offset < q->offset);
}

/* Appends the vector run [pos, next) to s, cut at the points in cuts [ncut] (sorted). */
static void add_run(segment *s, int *ns, size_t pos, size_t next, size_t *voff, const size_t *cuts, int ncut) {
    while (pos < next) {
        size_t end = next;
        for (int c = 0; c < ncut; c++)
            if (cuts[c] > pos) {
                if (cuts[c] < end) end = cuts[c];
                break;
            }
        s[(*ns)++] = (segment){.offset = pos, .count = 1, .len = end - pos, .voff = *voff};
        *voff += end - pos;
        pos = end;
    }
}

/* Marks the segments of the fused span, gives each unit tensor its bookkeeping. */
static moe_status mark_fused(moe_adam *a) {
    size_t biggest = 0;
    for (int i = 0; i < a->nseg; i++) {
        segment *sg = &a->seg[i];
        sg->fused = a->span1 > a->span0 && sg->offset >= a->span0 && sg->offset + sg->len <= a->span1;
        if (!sg->fused) continue;
        const unit_range *u = NULL;
        for (int j = 0; j < a->nunits && !u; j++)
            if (sg->offset < a->units[j].offset + a->units[j].len && a->units[j].offset < sg->offset + sg->len)
                u = &a->units[j];
        if (!u) {
            if (sg->rows) return moe_fail(MOE_ERR_CONFIG, "matrix block at %zu lies in the fused span but is no unit tensor", sg->offset);
            continue; /* padding: never stepped, as an eager step with zero gradients leaves it */
        }
        if (u->offset != sg->offset || u->len != sg->len || (sg->rows && u->unit != (size_t)(sg->rows * sg->cols)))
            return moe_fail(MOE_ERR_CONFIG, "unit tensor [%zu, %zu) does not match the optimiser's layout", u->offset,
                            u->offset + u->len);
        sg->unit = u->unit;
        sg->half = u->half;
        sg->key = u->key;
        sg->first_unit = u->first_unit;
        const size_t nu = sg->len / sg->unit;
        sg->missed = calloc(nu, sizeof(int32_t));
        sg->hit = calloc(nu, 1);
        if (!sg->missed || !sg->hit) return moe_fail(MOE_ERR_NOMEM, "out of memory");
        if (u->unit > biggest) biggest = u->unit;
    }
    if (biggest && !(a->zeros = moe_alloc_floats(biggest))) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    if (biggest) memset(a->zeros, 0, sizeof(float) * biggest);
    return MOE_OK;
}

/* Cuts the arena into segments and allocates v (once). */
static moe_status layout(moe_adam *a) {
    if (a->seg) return MOE_OK;
    int nd = a->cfg.factored ? a->ndecl : 0;
    if (nd) qsort(a->decl, (size_t)nd, sizeof(segment), cmp_seg);
    for (int i = 1; i < nd; i++)
        if (a->decl[i].offset < a->decl[i - 1].offset + a->decl[i - 1].len)
            return moe_fail(MOE_ERR_CONFIG, "declared matrix blocks at %zu and %zu overlap", a->decl[i - 1].offset,
                            a->decl[i].offset);
    if (a->nunits) qsort(a->units, (size_t)a->nunits, sizeof(unit_range), cmp_units);
    const int ncut = a->span1 > a->span0 ? 2 + 2 * a->nunits : 0;
    size_t *cuts = malloc(sizeof(size_t) * (size_t)(ncut + 1));
    segment *s = calloc((size_t)(2 * nd + 1 + ncut), sizeof(segment));
    if (!s || !cuts) {
        free(s);
        free(cuts);
        return moe_fail(MOE_ERR_NOMEM, "out of memory");
    }
    if (ncut) {
        cuts[0] = a->span0;
        cuts[1] = a->span1;
        for (int j = 0; j < a->nunits; j++) {
            cuts[2 + 2 * j] = a->units[j].offset;
            cuts[3 + 2 * j] = a->units[j].offset + a->units[j].len;
        }
        qsort(cuts, (size_t)ncut, sizeof(size_t), cmp_size);
    }
    int ns = 0;
    size_t pos = 0, voff = 0;
    for (int i = 0; i <= nd; i++) {
        size_t next = i < nd ? a->decl[i].offset : a->count;
        if (next > pos) add_run(s, &ns, pos, next, &voff, cuts, ncut);
        if (i < nd) {
            segment g = a->decl[i];
            g.voff = voff;
            voff += (size_t)g.count * (size_t)(g.rows + g.cols);
            s[ns++] = g;
            pos = g.offset + g.len;
        }
    }
    free(cuts);
    a->seg = s;
    a->nseg = ns;
    moe_status st = mark_fused(a);
    if (!st && !(a->v = moe_alloc_floats(voff)))
        st = moe_fail(MOE_ERR_NOMEM, "cannot allocate the second moment (%zu floats)", voff);
    if (st) { /* leave the optimiser as before its layout */
        for (int i = 0; i < ns; i++) {
            free(s[i].missed);
            free(s[i].hit);
        }
        free(s);
        moe_free_aligned(a->zeros);
        a->seg = NULL;
        a->zeros = NULL;
        a->nseg = 0;
        return st;
    }
    memset(a->v, 0, sizeof(float) * voff);
    a->vcount = voff;
    return MOE_OK;
}

static int in_parallel(void) {
#ifdef _OPENMP
    return omp_in_parallel();
#else
    return 0;
#endif
}

/* One parameter's update from its first-moment estimate mm and bias-corrected vhat. */
static inline void apply(float *p, float mm, float vhat, float step_size, float eps, float lrwd) {
    *p -= step_size * mm / (sqrtf(vhat) + eps) + lrwd * *p;
}

/* Where a bfloat16 unit's parameters go: p [n] (NULL: float32 parameters), rounded stochastically
 * with key, element j of p being element first + j of the whole tensor */
typedef struct {
    uint16_t *p;
    uint64_t key, first;
} half_dst;

/* bfloat16 parameters are stepped in chunks this long: widened into a buffer on the stack,
 * stepped in float32, rounded back (no copy of a whole unit) */
enum { HALF_CHUNK = 256 };

/* n elements: p -= the Adam update from g, m (NULL: beta1 = 0) and v */
static inline void vec_update(const moe_adam *a, float *p, const float *g, float *m, float *v, size_t n,
                              float step_size, float inv_c2, float lrwd) {
    const float b1 = a->cfg.beta1, b2 = a->cfg.beta2, eps = a->cfg.eps;
    for (size_t i = 0; i < n; i++) {
        float mm = g[i];
        if (m) mm = m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        apply(&p[i], mm, v[i] * inv_c2, step_size, eps, lrwd);
    }
}

/* pieces [c0, c1) of n elements (a piece is HALF_CHUNK or 2048 long) */
static void step_vector_pieces(const moe_adam *a, float *p, const float *g, float *m, float *v, size_t n,
                               size_t piece, size_t c0, size_t c1, float step_size, float inv_c2, float lrwd,
                               const half_dst *h) {
    for (size_t c = c0; c < c1; c++) {
        const size_t i0 = c * piece, len = n - i0 < piece ? n - i0 : piece;
        float *mc = m ? m + i0 : NULL;
        if (!h) {
            vec_update(a, p + i0, g + i0, mc, v + i0, len, step_size, inv_c2, lrwd);
            continue;
        }
        float w[HALF_CHUNK];
        bf16_widen(w, h->p + i0, len);
        vec_update(a, w, g + i0, mc, v + i0, len, step_size, inv_c2, lrwd);
        bf16_store_sr(h->p + i0, w, len, h->key, h->first + i0);
    }
}

/* n parameters p (or h->p, bfloat16) with gradients g, first moments m (NULL: beta1 = 0) and
 * second moments v */
static void step_vector(const moe_adam *a, float *p, const float *g, float *m, float *v, size_t n, float step_size,
                        float inv_c2, float lrwd, const half_dst *h) {
    const size_t piece = h ? HALF_CHUNK : 2048, pieces = (n + piece - 1) / piece;
    if (n < 8192 || in_parallel()) { /* no region at all: fused units are stepped inside one */
        step_vector_pieces(a, p, g, m, v, n, piece, 0, pieces, step_size, inv_c2, lrwd, h);
        return;
    }
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < pieces; c++) step_vector_pieces(a, p, g, m, v, n, piece, c, c + 1, step_size, inv_c2, lrwd, h);
}

/* one row of a factored matrix: p [cols] -= the update from g, m (NULL: beta1 = 0), the row's
 * scaled mean ri and the column means C */
static inline void row_update(const moe_adam *a, float *p, const float *g, float *m, const float *C, float ri,
                              int64_t cols, float step_size, float lrwd) {
    const float b1 = a->cfg.beta1, eps = a->cfg.eps;
    if (!m) { /* beta1 = 0: the loop without the first moment vectorises */
        for (int64_t j = 0; j < cols; j++) apply(&p[j], g[j], ri * C[j], step_size, eps, lrwd);
        return;
    }
    for (int64_t j = 0; j < cols; j++) {
        m[j] = b1 * m[j] + (1.0f - b1) * g[j];
        apply(&p[j], m[j], ri * C[j], step_size, eps, lrwd);
    }
}

/* The squared sums of rows [r0, r1) of g [rows, cols]: rs [r1 - r0] per row (in vsumsq_f64's
 * order), and added into cs [cols] per column (each column in row order). One pass over g. */
static void matrix_sumsq(const float *g, int64_t r0, int64_t r1, int64_t cols, double *rs, double *cs) {
    const int64_t c8 = cols & ~(int64_t)7;
    for (int64_t i = r0; i < r1; i++) {
        const float *gi = g + i * cols;
        double l[8] = {0, 0, 0, 0, 0, 0, 0, 0}, t = 0.0;
        for (int64_t j = 0; j < c8; j += 8)
            for (int q = 0; q < 8; q++) {
                const double s = (double)gi[j + q] * gi[j + q];
                l[q] += s;
                cs[j + q] += s;
            }
        for (int64_t j = c8; j < cols; j++) {
            const double s = (double)gi[j] * gi[j];
            t += s;
            cs[j] += s;
        }
        rs[i - r0] = (((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))) + t;
    }
}

/* rows [r0, r1) of a factored matrix: the update from the row means R (scaled by inv_mean and
 * inv_c2) and the column means C */
static void matrix_rows_update(const moe_adam *a, const float *g, float *p, float *m, const float *R, const float *C,
                               int64_t r0, int64_t r1, int64_t cols, float inv_mean, float step_size, float inv_c2,
                               float lrwd, const half_dst *h) {
    for (int64_t i = r0; i < r1; i++) {
        const float ri = R[i] * inv_mean * inv_c2;
        const float *gi = g + i * cols;
        float *mi = m ? m + i * cols : NULL;
        if (!h) {
            row_update(a, p + i * cols, gi, mi, C, ri, cols, step_size, lrwd);
            continue;
        }
        uint16_t *hi = h->p + i * cols;
        for (int64_t j0 = 0; j0 < cols; j0 += HALF_CHUNK) {
            const int64_t len = cols - j0 < HALF_CHUNK ? cols - j0 : HALF_CHUNK;
            float w[HALF_CHUNK];
            bf16_widen(w, hi + j0, (size_t)len);
            row_update(a, w, gi + j0, mi ? mi + j0 : NULL, C + j0, ri, len, step_size, lrwd);
            bf16_store_sr(hi + j0, w, (size_t)len, h->key, h->first + (uint64_t)(i * cols + j0));
        }
    }
}

/* A small matrix (an expert's, stepped on the thread that made its gradient): one pass over g
 * for both means, one for the update; no parallel region. The same bits as the split path. */
enum { SMALL_COLS = 1024 };
static void step_matrix_small(const moe_adam *a, const float *g, float *p, float *m, float *R, float *C,
                              int64_t rows, int64_t cols, float step_size, float inv_c2, float lrwd,
                              const half_dst *h) {
    const float b2 = a->cfg.beta2;
    double cs[SMALL_COLS], rs[64];
    memset(cs, 0, sizeof(double) * (size_t)cols);
    for (int64_t i0 = 0; i0 < rows; i0 += 64) {
        const int64_t i1 = i0 + 64 < rows ? i0 + 64 : rows;
        matrix_sumsq(g, i0, i1, cols, rs, cs);
        for (int64_t i = i0; i < i1; i++) R[i] = b2 * R[i] + (1.0f - b2) * (float)(rs[i - i0] / (double)cols);
    }
    for (int64_t j = 0; j < cols; j++) C[j] = b2 * C[j] + (1.0f - b2) * (float)(cs[j] / (double)rows);
    double sr = 0.0;
    for (int64_t i = 0; i < rows; i++) sr += R[i];
    const float inv_mean = sr > 0.0 ? (float)((double)rows / sr) : 0.0f;
    matrix_rows_update(a, g, p, m, R, C, 0, rows, cols, inv_mean, step_size, inv_c2, lrwd, h);
}

static void step_matrix(const moe_adam *a, const float *g, float *p, float *m, float *R, float *C, int64_t rows,
                        int64_t cols, float step_size, float inv_c2, float lrwd, const half_dst *h) {
    const float b2 = a->cfg.beta2;
    /* split over the threads when large, unless already on one of them (fused updates run inside
     * the experts' parallel loop, where a nested region would only add its overhead) */
    const int big = rows * cols >= 16384 && !in_parallel();
    if (!big && cols <= SMALL_COLS) {
        step_matrix_small(a, g, p, m, R, C, rows, cols, step_size, inv_c2, lrwd, h);
        return;
    }
    /* row means; column means with each column block summed in row order by one thread */
#pragma omp parallel for schedule(static) if (big)
    for (int64_t i = 0; i < rows; i++) {
        const double s = vsumsq_f64(g + i * cols, (size_t)cols);
        R[i] = b2 * R[i] + (1.0f - b2) * (float)(s / (double)cols);
    }
#pragma omp parallel for schedule(static) if (big)
    for (int64_t j0 = 0; j0 < cols; j0 += 64) {
        int64_t j1 = j0 + 64 < cols ? j0 + 64 : cols;
        double s[64] = {0};
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = j0; j < j1; j++) s[j - j0] += (double)g[i * cols + j] * g[i * cols + j];
        for (int64_t j = j0; j < j1; j++) C[j] = b2 * C[j] + (1.0f - b2) * (float)(s[j - j0] / (double)rows);
    }
    double rs = 0.0;
    for (int64_t i = 0; i < rows; i++) rs += R[i];
    const float inv_mean = rs > 0.0 ? (float)((double)rows / rs) : 0.0f;
#pragma omp parallel for schedule(static) if (big)
    for (int64_t i = 0; i < rows; i++)
        matrix_rows_update(a, g, p, m, R, C, i, i + 1, cols, inv_mean, step_size, inv_c2, lrwd, h);
}

/* The step sizes of step number t (bias corrections of both moments) */
static void step_consts(const moe_adam *a, int64_t t, float lr, float *step_size, float *inv_c2, float *lrwd) {
    const float c1 = 1.0f - powf(a->cfg.beta1, (float)t), c2 = 1.0f - powf(a->cfg.beta2, (float)t);
    *step_size = lr / (c1 > 0.0f ? c1 : 1.0f);
    *inv_c2 = 1.0f / c2;
    *lrwd = lr * a->cfg.weight_decay;
}

/* Matrix q of a declared block, or the floats [q * unit, (q + 1) * unit) of a vector run, with
 * its gradient g, its parameters at p (float32) or h (bfloat16) */
static void step_piece_at(const moe_adam *a, const segment *sg, size_t q, size_t unit, float *p, const float *g,
                          float step_size, float inv_c2, float lrwd, const half_dst *h) {
    if (sg->rows) {
        const size_t o = sg->offset + q * (size_t)(sg->rows * sg->cols);
        float *R = a->v + sg->voff + q * (size_t)(sg->rows + sg->cols), *C = R + sg->rows;
        step_matrix(a, g, p, a->m ? a->m + o : NULL, R, C, sg->rows, sg->cols, step_size, inv_c2, lrwd, h);
    } else {
        const size_t o = sg->offset + q * unit;
        step_vector(a, p, g, a->m ? a->m + o : NULL, a->v + sg->voff + q * unit, unit, step_size, inv_c2, lrwd, h);
    }
}

/* Unit q of sg (or piece q of a vector run, `unit` floats), step number t, in the arena params
 * or, for a bfloat16 unit tensor, in its storage: widened, stepped and rounded back
 * stochastically, element j of the whole tensor drawing its bits at counter j of the step's key
 * (the unit's elements are (first_unit + q) * unit + ...), whatever the thread or rank */
static void step_piece(moe_adam *a, const segment *sg, size_t q, size_t unit, float *params, const float *g,
                       int64_t t, float step_size, float inv_c2, float lrwd) {
    if (sg->half) {
        const half_dst h = {sg->half + q * sg->unit, rng_key(sg->key ^ rng_mix64((uint64_t)t)),
                            (uint64_t)(sg->first_unit + (int64_t)q) * sg->unit};
        step_piece_at(a, sg, q, sg->unit, NULL, g, step_size, inv_c2, lrwd, &h);
        return;
    }
    const size_t o = sg->offset + q * (sg->rows ? (size_t)(sg->rows * sg->cols) : unit);
    step_piece_at(a, sg, q, unit, params + o, g, step_size, inv_c2, lrwd, NULL);
}

int adam_is_lazy(const moe_adam *a) { return a->cfg.beta1 == 0.0f && a->cfg.weight_decay == 0.0f && !a->no_lazy; }

/* Unit q's steps of zero gradient not applied yet: v *= beta2 once per step, the bits of the
 * eager step (beta2 v + (1 - beta2) 0; its parameters did not move) */
static void catch_up(moe_adam *a, segment *sg, size_t q) {
    const int32_t k = sg->missed[q];
    if (!k) return;
    const size_t len = sg->rows ? (size_t)(sg->rows + sg->cols) : sg->unit;
    float *v = a->v + sg->voff + q * len;
    const float b2 = a->cfg.beta2;
    for (int32_t i = 0; i < k; i++)
        for (size_t j = 0; j < len; j++) v[j] *= b2;
    sg->missed[q] = 0;
}

static void flush(moe_adam *a) {
    for (int i = 0; i < a->nseg; i++)
        if (a->seg[i].unit)
            for (size_t q = 0; q < a->seg[i].len / a->seg[i].unit; q++) catch_up(a, &a->seg[i], q);
}

/* The end of a step for a unit tensor: units not stepped get their zero-gradient step, now
 * (eager) or later (lazy) */
static moe_status finish_units(moe_adam *a, segment *sg, float *params, float step_size, float inv_c2, float lrwd) {
    const int lazy = adam_is_lazy(a);
    moe_status st = MOE_OK;
    for (size_t q = 0; q < sg->len / sg->unit; q++) {
        if (sg->hit[q]) sg->hit[q] = 0;
        else if (lazy) sg->missed[q]++;
        else step_piece(a, sg, q, sg->unit, params, a->zeros, a->step, step_size, inv_c2, lrwd);
    }
    return st;
}

moe_status moe_adam_step(moe_adam *a, float *params, const float *grads, float lr) {
    if (!a || !params || !grads) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument to moe_adam_step");
    moe_status st = layout(a);
    if (st) return st;
    for (int s = 0; s < a->nseg; s++)
        if (!a->seg[s].fused && !moe_all_finite(grads + a->seg[s].offset, a->seg[s].len))
            return moe_fail(MOE_ERR_NONFINITE, "gradient contains NaN or Inf; parameters left unchanged");
    a->step++;
    float step_size, inv_c2, lrwd;
    step_consts(a, a->step, lr, &step_size, &inv_c2, &lrwd);
    for (int s = 0; s < a->nseg; s++) {
        segment *sg = &a->seg[s];
        if (sg->fused) {
            if (sg->unit && (st = finish_units(a, sg, params, step_size, inv_c2, lrwd))) return st;
        } else if (sg->rows == 0) {
            step_vector(a, params + sg->offset, grads + sg->offset, a->m ? a->m + sg->offset : NULL, a->v + sg->voff,
                        sg->len, step_size, inv_c2, lrwd, NULL);
        } else {
            for (int64_t q = 0; q < sg->count; q++)
                step_piece(a, sg, (size_t)q, 0, params, grads + sg->offset + (size_t)q * (size_t)(sg->rows * sg->cols),
                           a->step, step_size, inv_c2, lrwd);
        }
    }
    return moe_ok();
}

/* ---- fused updates (optim_fused.h) ---- */

moe_status adam_set_fused_span(moe_adam *a, size_t begin, size_t end) {
    if (!a) return moe_fail(MOE_ERR_INVALID_ARG, "optimiser is NULL");
    if (a->seg) return moe_fail(MOE_ERR_STATE, "the fused span must be declared before the first step or state access");
    if (begin > end || end > a->count) return moe_fail(MOE_ERR_SHAPE, "span [%zu, %zu) outside the %zu parameters", begin, end, a->count);
    a->span0 = begin;
    a->span1 = end;
    return moe_ok();
}

static moe_status add_units(moe_adam *a, size_t offset, int64_t count, size_t unit, uint16_t *half, uint64_t key,
                            int64_t first_unit) {
    if (!a) return moe_fail(MOE_ERR_INVALID_ARG, "optimiser is NULL");
    if (a->seg) return moe_fail(MOE_ERR_STATE, "unit tensors must be declared before the first step or state access");
    if (count < 1 || unit < 1 || offset < a->span0 || (size_t)count * unit > a->span1 - offset)
        return moe_fail(MOE_ERR_SHAPE, "unit tensor at %zu (%lld x %zu) is not inside the fused span", offset,
                        (long long)count, unit);
    unit_range *u = realloc(a->units, sizeof(unit_range) * (size_t)(a->nunits + 1));
    if (!u) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    a->units = u;
    u[a->nunits++] = (unit_range){offset, (size_t)count * unit, unit, half, key, first_unit};
    return moe_ok();
}

moe_status adam_add_units(moe_adam *a, size_t offset, int64_t count, size_t unit) {
    return add_units(a, offset, count, unit, NULL, 0, 0);
}

moe_status adam_add_units_bf16(moe_adam *a, size_t offset, int64_t count, size_t unit, uint16_t *data, uint64_t key,
                               int64_t first_unit) {
    if (!data || first_unit < 0) return moe_fail(MOE_ERR_INVALID_ARG, "bfloat16 unit tensor without storage");
    return add_units(a, offset, count, unit, data, key, first_unit);
}

moe_status adam_prepare(moe_adam *a) {
    if (!a) return moe_fail(MOE_ERR_INVALID_ARG, "optimiser is NULL");
    return layout(a);
}

void adam_set_lazy(moe_adam *a, int lazy) {
    if (a) a->no_lazy = !lazy;
}

/* the segment holding arena float `offset` (the segments are in arena order) */
static segment *find_segment(const moe_adam *a, size_t offset) {
    int lo = 0, hi = a->nseg - 1;
    while (lo <= hi) {
        const int mid = (lo + hi) / 2;
        segment *sg = &a->seg[mid];
        if (offset < sg->offset) hi = mid - 1;
        else if (offset >= sg->offset + sg->len) lo = mid + 1;
        else return sg;
    }
    return NULL;
}

static moe_status step_unit(moe_adam *a, size_t offset, float *params, const float *g, float lr, int check);

moe_status adam_step_unit(moe_adam *a, size_t offset, float *params, const float *g, float lr) {
    return step_unit(a, offset, params, g, lr, 1);
}

moe_status adam_step_unit_finite(moe_adam *a, size_t offset, float *params, const float *g, float lr) {
    return step_unit(a, offset, params, g, lr, 0);
}

static moe_status step_unit(moe_adam *a, size_t offset, float *params, const float *g, float lr, int check) {
    if (!a || !params || !g) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument to adam_step_unit");
    if (!a->seg) return moe_fail(MOE_ERR_STATE, "the optimiser's layout is not made yet (read its state first)");
    segment *sg = find_segment(a, offset);
    if (!sg || !sg->unit || (offset - sg->offset) % sg->unit)
        return moe_fail(MOE_ERR_INVALID_ARG, "no unit of a fused tensor starts at %zu", offset);
    const size_t q = (offset - sg->offset) / sg->unit;
    if (sg->hit[q]) return moe_fail(MOE_ERR_STATE, "the unit at %zu was already stepped in this step", offset);
    if (check && !moe_all_finite(g, sg->unit))
        return moe_fail(MOE_ERR_NONFINITE, "an expert's gradient contains NaN or Inf; its parameters left unchanged");
    catch_up(a, sg, q);
    float step_size, inv_c2, lrwd;
    step_consts(a, a->step + 1, lr, &step_size, &inv_c2, &lrwd);
    step_piece(a, sg, q, sg->unit, params, g, a->step + 1, step_size, inv_c2, lrwd);
    sg->hit[q] = 1;
    return moe_ok();
}

moe_status moe_adam_state(moe_adam *a, moe_adam_state_view *sv) {
    if (!a || !sv) return moe_fail(MOE_ERR_INVALID_ARG, "optimiser or state view is NULL");
    moe_status st = layout(a);
    if (st) return st;
    flush(a); /* the state as eager steps would have left it */
    sv->m = a->m;
    sv->m_count = a->m ? a->count : 0;
    sv->v = a->v;
    sv->v_count = a->vcount;
    sv->step = &a->step;
    return moe_ok();
}

moe_status moe_adam_range_state(moe_adam *a, size_t offset, size_t len, float **m, float **v, size_t *v_len) {
    if (!a) return moe_fail(MOE_ERR_INVALID_ARG, "optimiser is NULL");
    moe_status st = layout(a);
    if (st) return st;
    flush(a);
    if (offset > a->count || len > a->count - offset || len == 0)
        return moe_fail(MOE_ERR_SHAPE, "range [%zu, %zu) is not inside the %zu parameters", offset, offset + len, a->count);
    for (int i = 0; i < a->nseg; i++) {
        const segment *sg = &a->seg[i];
        if (offset < sg->offset || offset >= sg->offset + sg->len) continue;
        if (sg->rows == 0) { /* a vector run: any sub-range */
            if (offset + len > sg->offset + sg->len) break;
            if (m) *m = a->m ? a->m + offset : NULL;
            if (v) *v = a->v + sg->voff + (offset - sg->offset);
            if (v_len) *v_len = len;
            return moe_ok();
        }
        if (offset != sg->offset || len != sg->len) break; /* a factored block: whole only */
        if (m) *m = a->m ? a->m + offset : NULL;
        if (v) *v = a->v + sg->voff;
        if (v_len) *v_len = (size_t)sg->count * (size_t)(sg->rows + sg->cols);
        return moe_ok();
    }
    return moe_fail(MOE_ERR_SHAPE, "range [%zu, %zu) is not one declared matrix block nor inside a run of vectors", offset,
                    offset + len);
}
