/* optim.c - Adam over one flat parameter arena (bias-corrected; decoupled weight decay), and the
 * paper's memory-saving variant (SPEC 1.7): beta1 = 0 drops the first moment, and the second
 * moment of each declared matrix [rows, cols] is kept as its row means R [rows] and column means
 * C [cols], estimated as V_ij = R_i C_j / mean(R). The state of a [d, h] expert then costs d + h
 * floats instead of 2 d h.
 *
 * The arena is cut into segments at the first step: the declared matrices, and runs of elements
 * that no matrix covers (biases, or everything when the variant is off), which keep a full second
 * moment. All sums run in a fixed order, so a step gives the same bits for any thread count. */
#include "base/internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t offset;             /* first element in the arena */
    int64_t count, rows, cols; /* count matrices [rows, cols]; a vector run has rows = 0 */
    size_t len;                /* elements covered */
    size_t voff;               /* where its second moment starts in v */
} segment;

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
    free(a->decl);
    free(a->seg);
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
    d[a->ndecl++] = (segment){offset, count, rows, cols, len, 0};
    return moe_ok();
}

static int cmp_seg(const void *x, const void *y) {
    const segment *p = x, *q = y;
    return (p->offset > q->offset) - (p->offset < q->offset);
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
    segment *s = malloc(sizeof(segment) * (size_t)(2 * nd + 1));
    if (!s) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    int ns = 0;
    size_t pos = 0, voff = 0;
    for (int i = 0; i <= nd; i++) {
        size_t next = i < nd ? a->decl[i].offset : a->count;
        if (next > pos) {
            s[ns++] = (segment){pos, 1, 0, 0, next - pos, voff};
            voff += next - pos;
        }
        if (i < nd) {
            segment g = a->decl[i];
            g.voff = voff;
            voff += (size_t)g.count * (size_t)(g.rows + g.cols);
            s[ns++] = g;
            pos = g.offset + g.len;
        }
    }
    a->v = moe_alloc_floats(voff);
    if (!a->v) {
        free(s);
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate the second moment (%zu floats)", voff);
    }
    memset(a->v, 0, sizeof(float) * voff);
    a->seg = s;
    a->nseg = ns;
    a->vcount = voff;
    return MOE_OK;
}

/* One parameter's update from its first-moment estimate mm and bias-corrected vhat. */
static inline void apply(float *p, float mm, float vhat, float step_size, float eps, float lrwd) {
    *p -= step_size * mm / (sqrtf(vhat) + eps) + lrwd * *p;
}

static void step_vector(moe_adam *a, const segment *sg, float *params, const float *grads, float step_size,
                        float inv_c2, float lrwd) {
    const float b1 = a->cfg.beta1, b2 = a->cfg.beta2, eps = a->cfg.eps;
    float *m = a->m, *v = a->v + sg->voff;
    const size_t o = sg->offset, n = sg->len;
#pragma omp parallel for schedule(static) if (n >= 8192)
    for (size_t i = 0; i < n; i++) {
        float g = grads[o + i], mm = g;
        if (m) mm = m[o + i] = b1 * m[o + i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        apply(&params[o + i], mm, v[i] * inv_c2, step_size, eps, lrwd);
    }
}

static void step_matrix(moe_adam *a, const float *g, float *p, float *m, float *R, float *C, int64_t rows,
                        int64_t cols, float step_size, float inv_c2, float lrwd) {
    const float b1 = a->cfg.beta1, b2 = a->cfg.beta2, eps = a->cfg.eps;
    const int big = rows * cols >= 16384;
    /* row means; column means with each column block summed in row order by one thread */
#pragma omp parallel for schedule(static) if (big)
    for (int64_t i = 0; i < rows; i++) {
        double s = 0.0;
        for (int64_t j = 0; j < cols; j++) s += (double)g[i * cols + j] * g[i * cols + j];
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
    for (int64_t i = 0; i < rows; i++) {
        const float ri = R[i] * inv_mean * inv_c2;
        for (int64_t j = 0; j < cols; j++) {
            const int64_t e = i * cols + j;
            float mm = g[e];
            if (m) mm = m[e] = b1 * m[e] + (1.0f - b1) * g[e];
            apply(&p[e], mm, ri * C[j], step_size, eps, lrwd);
        }
    }
}

moe_status moe_adam_step(moe_adam *a, float *params, const float *grads, float lr) {
    if (!a || !params || !grads) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument to moe_adam_step");
    if (!moe_all_finite(grads, a->count))
        return moe_fail(MOE_ERR_NONFINITE, "gradient contains NaN or Inf; parameters left unchanged");
    moe_status st = layout(a);
    if (st) return st;
    a->step++;
    const float b1 = a->cfg.beta1, b2 = a->cfg.beta2;
    const float c1 = 1.0f - powf(b1, (float)a->step), c2 = 1.0f - powf(b2, (float)a->step);
    const float step_size = lr / (c1 > 0.0f ? c1 : 1.0f), inv_c2 = 1.0f / c2, lrwd = lr * a->cfg.weight_decay;
    for (int s = 0; s < a->nseg; s++) {
        const segment *sg = &a->seg[s];
        if (sg->rows == 0) {
            step_vector(a, sg, params, grads, step_size, inv_c2, lrwd);
            continue;
        }
        const size_t mat = (size_t)(sg->rows * sg->cols);
        for (int64_t q = 0; q < sg->count; q++) {
            const size_t o = sg->offset + (size_t)q * mat;
            float *R = a->v + sg->voff + (size_t)q * (size_t)(sg->rows + sg->cols), *C = R + sg->rows;
            step_matrix(a, grads + o, params + o, a->m ? a->m + o : NULL, R, C, sg->rows, sg->cols, step_size,
                        inv_c2, lrwd);
        }
    }
    return moe_ok();
}

moe_status moe_adam_state(moe_adam *a, moe_adam_state_view *sv) {
    if (!a || !sv) return moe_fail(MOE_ERR_INVALID_ARG, "optimiser or state view is NULL");
    moe_status st = layout(a);
    if (st) return st;
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
