/* Vectorisable activations for the fused gate loops.
 *
 * float: a branch-free exp (Cody-Waite range reduction + Cephes' degree-6
 * polynomial, max relative error about 2 ulp over the clamped range), with
 * sigmoid and tanh built on it.  Plain C with no calls, so gcc inlines it and
 * vectorises the loops that use it (no -ffast-math needed).  Inputs are
 * clamped so huge pre-activations saturate instead of overflowing; the clamps
 * are written so that NaN passes through them and propagates.
 *
 * double: libm (exact to the last ulp), because float64 is the dtype users pick
 * for checking against references to 1e-10 rather than for speed.
 */
#ifndef RK_FASTMATH_H
#define RK_FASTMATH_H
#include <math.h>
#include <stdint.h>

static inline float rk_expf(float x)
{
    union { int32_t i; float f; } two_n;
    float fn, r, p;
    /* exp(88) ~ 1.65e38 < FLT_MAX; exp(-87) ~ 1.6e-38 is still normal. */
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    /* n = round(x / ln2) with the 1.5*2^23 trick (no libm call, vectorises). */
    fn = x * 1.44269504088896341f + 12582912.0f;
    fn -= 12582912.0f;
    r = x - fn * 0.693359375f;          /* ln2 split in two for an exact reduction */
    r = r - fn * -2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    two_n.i = ((int32_t)fn + 127) << 23;
    return p * two_n.f;
}

static inline float rk_sigmoidf(float x)
{
    return 1.0f / (1.0f + rk_expf(-x));
}

static inline float rk_tanhf(float x)
{
    /* Small |x|: odd Taylor series (relative error < 1e-7 below 0.4), which
     * avoids the cancellation in 1 - 2/(e^2x + 1).  Both branches are computed
     * and blended so the loop stays branch-free. */
    float ax = fabsf(x);
    float x2 = x * x;
    float small = x * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * (-0.0539682540f
                  + x2 * (0.0218694885f + x2 * -0.00886323552f)))));
    float big = 1.0f - 2.0f / (rk_expf(2.0f * ax) + 1.0f);
    big = copysignf(big, x);
    return ax < 0.4f ? small : big;
}

static inline double rk_exp(double x) { return exp(x); }
static inline double rk_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double rk_tanh(double x) { return tanh(x); }

#endif
