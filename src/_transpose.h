/* The transposing copy that packs a forward weight block into the GEMM's
 * panels (_pack_block in _kernels.pxi): panel row p, column q is row q of the
 * block's source rows at column p.  Written one value at a time, that copy
 * (every call packs W_hh and, with the input side inside the steps, W_ih)
 * took longer than a one-step LSTM call's whole GEMM at H = 128.  Here it runs
 * 8 x 8 float blocks through registers, in GCC's generic vector extensions,
 * which each build lowers to its own instructions (AVX-512 and AVX2 shuffles,
 * or pairs of SSE registers on the baseline); a copy, so the bits are the
 * input's whatever the path.  float64 keeps the scalar loop. */
#ifndef RK_TRANSPOSE_H
#define RK_TRANSPOSE_H

#include <stddef.h>
#include <string.h>

typedef float rk_v8sf __attribute__((vector_size(32)));
typedef int rk_v8si __attribute__((vector_size(32)));

/* panel[p * nr + q] = srcs[q][p] for p < k, q < wd (wd <= nr). */
static inline void rk_transpose_panel_f(const float* const* srcs, ptrdiff_t wd, ptrdiff_t k,
                                        ptrdiff_t nr, float* panel)
{
    const rk_v8si lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};
    const rk_v8si lo2 = {0, 1, 8, 9, 4, 5, 12, 13}, hi2 = {2, 3, 10, 11, 6, 7, 14, 15};
    const rk_v8si lo4 = {0, 1, 2, 3, 8, 9, 10, 11}, hi4 = {4, 5, 6, 7, 12, 13, 14, 15};
    const ptrdiff_t k8 = k / 8 * 8, w8 = wd / 8 * 8;
    ptrdiff_t p, q, i;
    for (q = 0; q < w8; q += 8)
        for (p = 0; p < k8; p += 8) {
            rk_v8sf r[8], t[8], u[8], o[8];
            for (i = 0; i < 8; i++)
                memcpy(&r[i], srcs[q + i] + p, sizeof(rk_v8sf));
            for (i = 0; i < 8; i += 2) {
                t[i] = __builtin_shuffle(r[i], r[i + 1], lo);
                t[i + 1] = __builtin_shuffle(r[i], r[i + 1], hi);
            }
            for (i = 0; i < 8; i += 4) {
                u[i] = __builtin_shuffle(t[i], t[i + 2], lo2);
                u[i + 1] = __builtin_shuffle(t[i], t[i + 2], hi2);
                u[i + 2] = __builtin_shuffle(t[i + 1], t[i + 3], lo2);
                u[i + 3] = __builtin_shuffle(t[i + 1], t[i + 3], hi2);
            }
            for (i = 0; i < 4; i++) {
                o[i] = __builtin_shuffle(u[i], u[i + 4], lo4);
                o[i + 4] = __builtin_shuffle(u[i], u[i + 4], hi4);
            }
            for (i = 0; i < 8; i++)
                memcpy(panel + (p + i) * nr + q, &o[i], sizeof(rk_v8sf));
        }
    /* the rows past the last block of 8, then the columns past it */
    for (p = k8; p < k; p++)
        for (q = 0; q < w8; q++)
            panel[p * nr + q] = srcs[q][p];
    for (p = 0; p < k; p++)
        for (q = w8; q < wd; q++)
            panel[p * nr + q] = srcs[q][p];
}

#endif
