/* test_vmath.c - the vectorisable float functions of src/base/vmath.h against double-precision libm:
 * the worst error in ulp over a dense sweep of every range the library feeds them, the limits
 * at +-inf, and NaN propagation. */
#include "testutil.h"
#include "base/vmath.h"

#include <float.h>

/* distance from f to the exact value e in units of the float spacing at e (normal range; the
 * subnormal spacing below it) */
static double ulps(float f, double e) {
    if (isnan(e)) return isnan(f) ? 0.0 : INFINITY;
    if (isinf(e)) return (isinf(f) && (f > 0) == (e > 0)) ? 0.0 : INFINITY;
    double ae = fabs(e);
    int ex;
    frexp(ae < FLT_MIN ? FLT_MIN : ae, &ex);
    double spacing = ldexp(1.0, ex - 24);
    return fabs((double)f - e) / spacing;
}

typedef float (*ffun)(float);
typedef double (*dfun)(double);

static double d_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static double d_softplus_part(double t) { return log1p(t); }
static float f_exp(float x) { return exp_f(x); }
static float f_log1p(float x) { return log1p_01(x); }
static float f_erfc(float x) { return erfc_f(x); }
static float f_sigmoid(float x) { return sigmoid_f(x); }
static float f_tanh(float x) { return tanh_f(x); }

/* worst ulp error over n points evenly spread on [lo, hi], plus each float near 0 scaled */
static double sweep(ffun f, dfun d, double lo, double hi, int n, double min_result) {
    double worst = 0;
    for (int i = 0; i <= n; i++) {
        float x = (float)(lo + (hi - lo) * i / n);
        double e = d((double)x);
        if (fabs(e) < min_result) continue;
        double u = ulps(f(x), e);
        if (u > worst) worst = u;
    }
    return worst;
}

int main(void) {
    double u;
    u = sweep(f_exp, exp, -87.0, 88.0, 2000000, FLT_MIN);
    CHECK(u <= 1.5, "exp_f: worst %.2f ulp", u);
    u = sweep(f_log1p, d_softplus_part, 0.0, 1.0, 1000000, 0);
    CHECK(u <= 1.5, "log1p_01: worst %.2f ulp", u);
    u = sweep(f_erfc, erfc, -10.0, 9.1, 2000000, FLT_MIN);
    CHECK(u <= 3.0, "erfc_f: worst %.2f ulp", u);
    u = sweep(f_sigmoid, d_sigmoid, -87.0, 40.0, 2000000, FLT_MIN);
    CHECK(u <= 2.5, "sigmoid_f: worst %.2f ulp", u);
    u = sweep(f_tanh, tanh, -12.0, 12.0, 2000000, 0);
    CHECK(u <= 2.5, "tanh_f: worst %.2f ulp", u);
    /* small arguments, where tanh's series takes over and a naive formula cancels */
    double wt = 0;
    for (float x = 1e-30f; x < 1.0f; x *= 1.01f) wt = fmax(wt, ulps(tanh_f(x), tanh((double)x)));
    CHECK(wt <= 2.5, "tanh_f on [1e-30, 1): worst %.2f ulp", wt);

    /* limits and NaN */
    CHECK(exp_f(-INFINITY) == 0.0f && isinf(exp_f(INFINITY)) && exp_f(INFINITY) > 0.0f, "exp_f at +-inf");
    CHECK(sigmoid_f(INFINITY) == 1.0f && sigmoid_f(-INFINITY) == 0.0f, "sigmoid_f at +-inf");
    CHECK(tanh_f(INFINITY) == 1.0f && tanh_f(-INFINITY) == -1.0f && tanh_f(0.0f) == 0.0f, "tanh_f at +-inf and 0");
    CHECK(erfc_f(INFINITY) == 0.0f && erfc_f(-INFINITY) == 2.0f, "erfc_f at +-inf");
    CHECK(isnan(exp_f(NAN)) && isnan(sigmoid_f(NAN)) && isnan(tanh_f(NAN)) && isnan(erfc_f(NAN)) &&
              isnan(log1p_01(NAN)),
          "NaN in, NaN out");
    return test_finish("test_vmath");
}
