/* ckpt_table.c - reading a parameter table (base/ptable.h) and its optimiser state back from a
 * checkpoint: one layout for every model. A tensor `<group>.<name>` is stored under its name,
 * with the full shape (an expert tensor with all n experts); its optimiser state under
 * `optim.<group>.m.<name>` (the tensor's shape) and `optim.<group>.v.<name>` (the tensor's shape,
 * or [count, rows + cols] for a factored stack of matrices), and each group's step count in the
 * metadata `optim.<group>.step`. Every shape is compared dimension by dimension before anything
 * is copied; a process takes its own experts' slice of an expert tensor. A tensor kept in
 * bfloat16 (ptensor.bf16: experts' weights under --bf16) is stored as BF16 and read back only
 * as BF16. */
#include "train/ckpt_table.h"
#include "base/bf16.h"
#include "base/internal.h"
#include "parallel/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

moe_status ckpt_check_format(const moe_st *f, const char *kind, const char *legacy_format, const char *what,
                             int *version) {
    const char *fmt = moe_st_meta(f, "format"), *k = moe_st_meta(f, "kind");
    if (fmt && legacy_format && strcmp(fmt, legacy_format) == 0) {
        *version = 1;
        return MOE_OK;
    }
    if (!fmt || strcmp(fmt, CKPT_FORMAT) != 0)
        return moe_fail(MOE_ERR_FORMAT, "not a moe %s checkpoint (format '%s', expected '%s')", what, fmt ? fmt : "(none)",
                        CKPT_FORMAT);
    if (!k || strcmp(k, kind) != 0)
        return moe_fail(MOE_ERR_FORMAT, "not a moe %s checkpoint: it holds a model of kind '%s'", what, k ? k : "(none)");
    int v = 0;
    moe_status st = get_int(f, "format_version", &v);
    if (st) return st;
    if (v < 2 || v > CKPT_VERSION)
        return moe_fail(MOE_ERR_FORMAT, "checkpoint format version %d: this build reads versions 1 to %d (upgrade moe)", v,
                        CKPT_VERSION);
    *version = v;
    return MOE_OK;
}

/* ---- writing ---- */

void *ckw_keep(ckw *o, void *p) {
    if (!p) {
        if (!o->m.st) o->m.st = moe_fail(MOE_ERR_NOMEM, "out of memory while writing a checkpoint");
        return NULL;
    }
    if (o->nkeep == o->capkeep) {
        int cap = o->capkeep ? 2 * o->capkeep : 64;
        void **k = realloc(o->keep, sizeof *k * (size_t)cap);
        if (!k) {
            free(p);
            if (!o->m.st) o->m.st = moe_fail(MOE_ERR_NOMEM, "out of memory while writing a checkpoint");
            return NULL;
        }
        o->keep = k;
        o->capkeep = cap;
    }
    return o->keep[o->nkeep++] = p;
}

moe_status ckw_begin(ckw *o, moe_comm *comm, const char *kind) {
    memset(o, 0, sizeof *o);
    o->comm = comm && moe_comm_size(comm) > 1 ? comm : NULL;
    o->rank = o->comm ? moe_comm_rank(comm) : 0;
    o->ranks = o->comm ? moe_comm_size(comm) : 1;
    moe_status st = o->rank == 0 ? moe_st_writer_create(&o->m.w) : MOE_OK;
    if ((st = comm_ready(o->comm, st))) { /* rank 0's failure: every rank returns it */
        moe_st_writer_free(o->m.w);
        o->m.w = NULL;
        return st;
    }
    meta_str(&o->m, "format", CKPT_FORMAT);
    meta_i64(&o->m, "format_version", CKPT_VERSION);
    meta_str(&o->m, "kind", kind);
    return MOE_OK;
}

static char *keep_name(ckw *o, const char *name) {
    size_t n = strlen(name) + 1;
    char *s = ckw_keep(o, malloc(n));
    if (s) memcpy(s, name, n);
    return s;
}

/* rank 0: the n experts of an expert tensor (elements of dt: F32 or BF16) gathered from their
 * ranks (NULL elsewhere) */
static const void *gather_experts(ckw *o, const char *name, const void *data, moe_dtype dt, size_t per, int ne, int n) {
    const int P = o->ranks;
    const size_t es = moe_dtype_size(dt);
    int *rc = malloc(sizeof(int) * (size_t)P), *rd = malloc(sizeof(int) * (size_t)P);
    void *full = NULL;
    moe_status st = MOE_OK;
    if (per * (size_t)n > (size_t)INT32_MAX)
        st = moe_fail(MOE_ERR_UNSUPPORTED, "%s has %zu values, more than one MPI gather can take", name, per * (size_t)n);
    else if (o->rank == 0 && !(full = moe_alloc_floats((per * (size_t)n * es + 3) / 4)))
        st = moe_fail(MOE_ERR_NOMEM, "out of memory for %s of the checkpoint", name);
    else if (!rc || !rd)
        st = moe_fail(MOE_ERR_NOMEM, "out of memory while writing a checkpoint");
    if ((st = comm_ready(o->comm, st))) {
        o->stopped = 1;
        if (!o->m.st) o->m.st = st;
    } else {
        for (int r = 0; r < P; r++) {
            rd[r] = (int)(comm_first(n, P, r) * per);
            rc[r] = (int)((comm_first(n, P, r + 1) - comm_first(n, P, r)) * per);
        }
        st = dt == MOE_BF16 ? comm_gatherv_u16(o->comm, data, (int)(per * (size_t)ne), full, rc, rd, 0)
                            : comm_gatherv_f32(o->comm, data, (int)(per * (size_t)ne), full, rc, rd, 0);
        if (st && !o->m.st) o->m.st = st;
    }
    free(rc);
    free(rd);
    return full ? ckw_keep(o, full) : NULL;
}

/* A tensor of dtype dt (F32 or BF16); an expert tensor's slices gathered on rank 0 */
static void put(ckw *o, const char *name, int ndim, const int64_t *shape, const void *data, moe_dtype dt, int e0,
                int ne, int n) {
    if (o->stopped) return;
    int64_t fs[3] = {ndim > 0 ? shape[0] : 1, ndim > 1 ? shape[1] : 0, ndim > 2 ? shape[2] : 0};
    if (ne > 0 && ne < n && o->ranks > 1) { /* collective */
        size_t per = 1;
        for (int i = 1; i < ndim; i++) per *= (size_t)shape[i];
        data = gather_experts(o, name, data, dt, per, ne, n);
        fs[0] = n;
    }
    if (!o->m.w || o->m.st) return;
    const char *nm = keep_name(o, name);
    if (nm && data) o->m.st = moe_st_writer_add(o->m.w, nm, dt, ndim, fs, data);
}

void ckw_tensor(ckw *o, const char *name, int ndim, const int64_t *shape, const float *data, int e0, int ne, int n) {
    put(o, name, ndim, shape, data, MOE_F32, e0, ne, n);
}

/* "optim.<group>.<which>.<name without its prefix>" */
static void state_name(char *buf, size_t cap, const ptable *pt, const ptensor *t, const char *which) {
    const pgroup *g = &pt->g[t->group];
    snprintf(buf, cap, "optim.%s.%s.%s", g->name, which, t->name + strlen(g->prefix) + 1);
}

void ckw_table(ckw *o, const ptable *pt, const optset *os) {
    char name[PT_NAME + 32];
    for (int g = 0; os && g < pt->ngroups; g++) {
        moe_adam_state_view sv;
        if (!os->a[g] || moe_adam_state(os->a[g], &sv)) continue;
        snprintf(name, sizeof name, "optim.%s.step", pt->g[g].name);
        meta_i64(&o->m, name, *sv.step);
    }
    for (int i = 0; i < pt->count; i++) {
        const ptensor *t = &pt->t[i];
        const int ne = t->expert ? t->ne : 0;
        if (t->bf16) put(o, t->name, t->ndim, t->shape, t->bf16, MOE_BF16, t->e0, ne, t->n);
        else ckw_tensor(o, t->name, t->ndim, t->shape, t->data, t->e0, ne, t->n);
        moe_adam *a = os ? os->a[t->group] : NULL;
        if (!a) continue;
        float *m = NULL, *v = NULL;
        size_t vl = 0;
        moe_status st = moe_adam_range_state(a, t->offset, t->numel, &m, &v, &vl);
        if (st) { /* the same on every rank: the layouts agree */
            if (!o->m.st) o->m.st = st;
            continue;
        }
        if (m) {
            state_name(name, sizeof name, pt, t, "m");
            ckw_tensor(o, name, t->ndim, t->shape, m, t->e0, ne, t->n);
        }
        state_name(name, sizeof name, pt, t, "v");
        if (vl == t->numel) {
            ckw_tensor(o, name, t->ndim, t->shape, v, t->e0, ne, t->n);
        } else { /* factored: [count, rows + cols] */
            const int64_t lead = t->ndim == 3 ? t->shape[0] : 1, vs[2] = {lead, (int64_t)vl / lead};
            ckw_tensor(o, name, 2, vs, v, t->e0, ne, t->n);
        }
    }
}

moe_status ckw_end(ckw *o, const char *path) {
    moe_status st = o->m.st;
    if (o->rank == 0 && !st) st = moe_st_writer_write(o->m.w, path);
    moe_st_writer_free(o->m.w);
    for (int i = 0; i < o->nkeep; i++) free(o->keep[i]);
    free(o->keep);
    if (o->ranks > 1) { /* rank 0's verdict for everyone */
        int code = (int)st;
        moe_status bs = comm_bcast(o->comm, &code, sizeof code, 0);
        if (bs) st = bs;
        else if (o->rank != 0 && code) st = moe_fail((moe_status)code, "rank 0 could not write the checkpoint");
    }
    memset(o, 0, sizeof *o);
    return st;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && o < cap; i++) o += (size_t)snprintf(buf + o, cap - o, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Stored tensor `name` (dtype dt: F32 or BF16) of full shape want[ndim], checked: *src its
 * values, or experts [e0, e0 + ne) of dim 0 (ne > 0), *numel their count */
static moe_status find_slice(const moe_st *f, const char *name, moe_dtype dt, int ndim, const int64_t *want, int e0,
                             int ne, const void **src, size_t *numel) {
    moe_tensor t;
    moe_status st = moe_st_get(f, name, &t);
    if (!st && t.dtype != dt)
        st = moe_fail(MOE_ERR_DTYPE, "it is %s, the model keeps it in %s%s", moe_dtype_str(t.dtype), moe_dtype_str(dt),
                      t.dtype == MOE_BF16 || dt == MOE_BF16 ? " (bfloat16 expert weights are --bf16's: train, resume "
                                                              "and load with the same setting)" : "");
    if (st) return moe_fail(st, "checkpoint tensor '%s': %s", name, moe_last_error());
    int same = t.ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t.shape[i] == want[i];
    if (!same) {
        char a[96], b[96];
        shape_str(a, sizeof a, t.ndim, t.shape);
        shape_str(b, sizeof b, ndim, want);
        return moe_fail(MOE_ERR_SHAPE, "checkpoint tensor '%s' has shape %s, the model needs %s", name, a, b);
    }
    *numel = t.numel;
    *src = t.data;
    if (ne > 0) { /* dim 0 counts experts */
        const size_t per = t.numel / (size_t)want[0];
        *src = (const char *)t.data + (size_t)e0 * per * moe_dtype_size(dt);
        *numel = per * (size_t)ne;
    }
    return MOE_OK;
}

/* Copies stored tensor `name` (dtype dt: F32 or BF16) of full shape want[ndim] into dst: all of
 * it, or experts [e0, e0 + ne) of dim 0 (ne > 0). */
static moe_status get_slice_as(const moe_st *f, const char *name, moe_dtype dt, int ndim, const int64_t *want,
                               void *dst, int e0, int ne) {
    const void *src;
    size_t numel;
    moe_status st = find_slice(f, name, dt, ndim, want, e0, ne, &src, &numel);
    if (st) return st;
    if (!(dt == MOE_BF16 ? bf16_all_finite(src, numel) : moe_all_finite(src, numel)))
        return moe_fail(MOE_ERR_NONFINITE, "checkpoint tensor '%s' contains NaN or Inf", name);
    memcpy(dst, src, moe_dtype_size(dt) * numel);
    return MOE_OK;
}

static moe_status get_slice(const moe_st *f, const char *name, int ndim, const int64_t *want, float *dst, int e0, int ne) {
    return get_slice_as(f, name, MOE_F32, ndim, want, dst, e0, ne);
}

moe_status ckpt_get_tensor(const moe_st *f, const char *name, int ndim, const int64_t *shape, float *dst) {
    return get_slice(f, name, ndim, shape, dst, 0, 0);
}

moe_status ckpt_check_tensor(const moe_st *f, const char *name, moe_dtype dt, int ndim, const int64_t *shape) {
    const void *src;
    size_t numel;
    return find_slice(f, name, dt, ndim, shape, 0, 0, &src, &numel);
}

moe_status ckpt_get_params(const moe_st *f, const ptable *pt) {
    for (int i = 0; i < pt->count; i++) {
        const ptensor *t = &pt->t[i];
        int64_t full[3];
        ptensor_full_shape(t, full);
        const int ne = t->expert ? t->ne : 0;
        moe_status st = t->bf16 ? get_slice_as(f, t->name, MOE_BF16, t->ndim, full, t->bf16, t->e0, ne)
                                : get_slice(f, t->name, t->ndim, full, t->data, t->e0, ne);
        if (st) return st;
    }
    return MOE_OK;
}

moe_status ckpt_get_optim(const moe_st *f, const ptable *pt, optset *os) {
    char name[PT_NAME + 32], key[64];
    moe_status st = MOE_OK;
    for (int g = 0; g < pt->ngroups && !st; g++) {
        moe_adam_state_view sv;
        if (!os->a[g] || (st = moe_adam_state(os->a[g], &sv))) continue;
        snprintf(key, sizeof key, "optim.%s.step", pt->g[g].name);
        if ((st = get_i64_in(f, key, 0, CKPT_MAX_STEP, sv.step))) break;
    }
    for (int i = 0; i < pt->count && !st; i++) {
        const ptensor *t = &pt->t[i];
        moe_adam *a = os->a[t->group];
        if (!a) continue;
        float *m = NULL, *v = NULL;
        size_t vl = 0;
        if ((st = moe_adam_range_state(a, t->offset, t->numel, &m, &v, &vl))) break;
        int64_t full[3];
        ptensor_full_shape(t, full);
        const int ne = t->expert ? t->ne : 0;
        if (m) {
            state_name(name, sizeof name, pt, t, "m");
            if ((st = get_slice(f, name, t->ndim, full, m, t->e0, ne))) break;
        }
        state_name(name, sizeof name, pt, t, "v");
        if (vl == t->numel) {
            st = get_slice(f, name, t->ndim, full, v, t->e0, ne);
        } else { /* factored: [lead, rows + cols], lead the stack's count (all n experts in the file) */
            const int64_t lead = t->ndim == 3 ? t->shape[0] : 1;
            const int64_t vs[2] = {t->expert ? t->n : lead, (int64_t)vl / lead};
            st = get_slice(f, name, 2, vs, v, t->e0, ne);
        }
    }
    return st;
}

moe_status ckpt_get_optim_arena(const moe_st *f, moe_adam *a, const char *key) {
    moe_adam_state_view sv;
    moe_status st = moe_adam_state(a, &sv);
    char name[64];
    if (!st && sv.m_count) {
        snprintf(name, sizeof name, "%s.m", key);
        const int64_t sh[1] = {(int64_t)sv.m_count};
        st = ckpt_get_tensor(f, name, 1, sh, sv.m);
    }
    if (!st) {
        snprintf(name, sizeof name, "%s.v", key);
        const int64_t sh[1] = {(int64_t)sv.v_count};
        st = ckpt_get_tensor(f, name, 1, sh, sv.v);
    }
    if (!st) {
        snprintf(name, sizeof name, "%s.step", key);
        st = get_i64_in(f, name, 0, CKPT_MAX_STEP, sv.step);
    }
    return st;
}

moe_status ckpt_check_holds(const moe_st *f, double floats, const char *what) {
    double have = 0.0;
    for (int i = 0; i < moe_st_count(f); i++) {
        moe_tensor t;
        if (moe_st_at(f, i, &t) == MOE_OK) have += (double)t.numel;
    }
    if (floats > have)
        return moe_fail(MOE_ERR_FORMAT, "the checkpoint's settings (%s) describe %.0f parameters, but its tensors hold only %.0f "
                        "values: a damaged or foreign file", what, floats, have);
    return MOE_OK;
}
