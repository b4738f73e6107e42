/* The keyed uniforms' per-element loops (src/_keyed.pxi drives them).
 *
 * Element j of a sample keyed k draws SplitMix64(k ^ j) (Steele, Lea & Flood
 * 2014) and keeps its top 53 bits: the uniform k53 / 2**53 in [0, 1).  Written
 * as plain loops over one row of consecutive elements so that the compiler
 * vectorises them: with AVX-512's 64-bit multiply a mask costs a tenth of the
 * scalar loop's time (the family is compiled once per instruction set, like
 * the kernels).  Integer arithmetic only, so every build gives the same bits
 * as the NumPy reference (rnnkernels/_util/keyed_random.py). */
#ifndef RK_KEYED_H
#define RK_KEYED_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t rk_splitmix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* out[c] = uniform of element j0 + c, for c < m. */
static inline void rk_uniform_row(double* restrict out, uint64_t key, uint64_t j0, ptrdiff_t m)
{
    for (ptrdiff_t c = 0; c < m; c++)
        out[c] = (double)(rk_splitmix64(key ^ (j0 + (uint64_t)c)) >> 11) * (1.0 / 9007199254740992.0);
}

/* out[c] = below where element j0 + c's uniform is under the rate, else above.
 * For an integer k53, k53 / 2**53 < rate exactly when k53 < threshold =
 * ceil(rate * 2**53): an integer compare, no conversion. */
#define RK_MASK_ROW(name, T)                                                              \
    static inline void name(T* restrict out, uint64_t key, uint64_t j0, ptrdiff_t m,      \
                            uint64_t threshold, T below, T above)                         \
    {                                                                                     \
        for (ptrdiff_t c = 0; c < m; c++)                                                 \
            out[c] = (rk_splitmix64(key ^ (j0 + (uint64_t)c)) >> 11) < threshold ? below : above; \
    }
RK_MASK_ROW(rk_mask_row_f, float)
RK_MASK_ROW(rk_mask_row_d, double)
#undef RK_MASK_ROW

#endif
