/* Vectorisable activations for the fused gate loops.
 *
 * float: a branch-free exp (Cody-Waite range reduction + Cephes' degree-6
 * polynomial, max relative error about 2 ulp over the clamped range) with the
 * sigmoid built on it, and a rational tanh (rk_tanhf).  Plain C with no calls,
 * so gcc inlines them and vectorises the loops that use them (no -ffast-math
 * needed).  Inputs are
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
    union { float f; int32_t i; } fm, two_n;
    float fn, r, p;
    /* exp(88) ~ 1.65e38 < FLT_MAX; exp(-87) ~ 1.6e-38 is still normal. */
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    /* n = round(x / ln2) with the 1.5*2^23 trick (no libm call, vectorises):
     * fm's bits are those of 1.5*2^23 plus n, and 1.5*2^23's bits shifted
     * left by 23 are zero, so (bits + 127) << 23 is 2^n's without a
     * float-to-int conversion. */
    fm.f = x * 1.44269504088896341f + 12582912.0f;
    fn = fm.f - 12582912.0f;
    r = x - fn * 0.693359375f;          /* ln2 split in two for an exact reduction */
    r = r - fn * -2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    two_n.i = (int32_t)((uint32_t)(fm.i + 127) << 23);
    return p * two_n.f;
}

static inline float rk_sigmoidf(float x)
{
    return 1.0f / (1.0f + rk_expf(-x));
}

static inline float rk_tanhf(float x)
{
    /* A rational function, x P(x^2) / Q(x^2) with P and Q of degree 4, fitted
     * to tanh(x) / x for the least relative error on [0, 9] (iteratively
     * reweighted least squares on the linearised problem; the fit's own error
     * is 2e-8, under float32's rounding).  About half the work of an exp, a
     * division and a blended Taylor branch.  From |x| = 8.125 on it returns
     * +-1 exactly (tanh(8.125) is 1 - 1.8e-7, 3 ulp below 1), which also keeps
     * |tanh| <= 1 where the rounding of P / Q would land an ulp above it.
     * Evaluated in float32, over every float in [-10, 10]: at most 5.1 ulp
     * from tanh with FMA (the avx512 and avx2 builds), 6.1 ulp without (the
     * baseline), 3.6e-7 relative (tests/kernels/test_fastmath.py samples it). */
    float xc, s, p, q, t;
    xc = x > 8.125f ? 8.125f : x;       /* NaN passes through the clamps */
    xc = xc < -8.125f ? -8.125f : xc;
    s = xc * xc;
    p = 1.3354194194903357e-08f;
    p = p * s + 2.0608764316421002e-05f;
    p = p * s + 3.495569806545973e-03f;
    p = p * s + 1.338101029396057e-01f;
    p = p * s + 1.0f;
    q = 7.776372399348475e-07f;
    q = q * s + 3.2856041798368096e-04f;
    q = q * s + 2.5876913219690323e-02f;
    q = q * s + 4.671432673931122e-01f;
    q = q * s + 1.0f;
    t = xc * p / q;
    t = x >= 8.125f ? 1.0f : t;
    return x <= -8.125f ? -1.0f : t;
}

static inline double rk_exp(double x) { return exp(x); }
static inline double rk_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double rk_tanh(double x) { return tanh(x); }

#endif
