/* Point functions of the CTC kernel (src/_ctc.pyx): log-sum-exp of the
 * three ways into a state, written branch-free so the state loops vectorise.
 *
 * float: rk_expf of src/_fastmath.h and a Cephes-style logf (the argument of
 * the log here is a sum of exponentials in [1, 3], where its error is about
 * 1 ulp).  double: libm, exact to the last ulp.
 *
 * -inf (a state no path reaches) is handled without branches: m is the largest
 * term; when it is -inf the result is -inf, otherwise m + log(sum exp(x - m)).
 */
#ifndef RK_CTC_H
#define RK_CTC_H
#include <math.h>
#include <stdint.h>
#include "_fastmath.h"

static inline float rk_logf(float x)
{
    /* x > 0 and finite.  x = 2^e * m, m in [sqrt(1/2), sqrt(2)); log(m) by Cephes' polynomial. */
    union { float f; int32_t i; } u;
    float m, z, y, e;
    u.f = x;
    e = (float)(((u.i >> 23) & 0xff) - 126);
    u.i = (u.i & 0x007fffff) | 0x3f000000;   /* mantissa in [0.5, 1) */
    m = u.f;
    e = m < 0.707106781186547524f ? e - 1.0f : e;
    m = m < 0.707106781186547524f ? m + m - 1.0f : m - 1.0f;
    z = m * m;
    y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return m + y + 0.693359375f * e;
}

static inline float rk_ctc_lse3f(float a, float b, float c)
{
    float m = a > b ? a : b;
    float ms, s;
    m = c > m ? c : m;
    ms = m == -INFINITY ? 0.0f : m;
    s = rk_expf(a - ms) + rk_expf(b - ms) + rk_expf(c - ms);
    return m == -INFINITY ? -INFINITY : ms + rk_logf(s);
}

static inline double rk_ctc_lse3(double a, double b, double c)
{
    double m = a > b ? a : b;
    m = c > m ? c : m;
    if (m == -INFINITY)
        return -INFINITY;
    return m + log(exp(a - m) + exp(b - m) + exp(c - m));
}

#endif
