/* Fused per-row gate updates of each cell, forward and backward.
 *
 * Each function handles one batch row of one hidden-unit tile (ub units) at
 * one time step; the Cython kernels call them inside their step/tile loops
 * after the recurrent GEMM.  They live in C rather than Cython for one reason:
 * `restrict` pointers, without which gcc cannot prove the gate, state and
 * gradient rows do not overlap and leaves the loop scalar.  The math is the
 * same in float and double; only the activations differ (_fastmath.h).
 *
 * Gate layout inside a tile row: G blocks of ub values each, in PyTorch's
 * gate order (LSTM i f g o, GRU r z n, RNN one block).
 */
#ifndef RK_CELLS_H
#define RK_CELLS_H
#include <stddef.h>
#include "_fastmath.h"

#define RK_DEFINE_CELLS(SUFFIX, T, SIGMOID, TANH)                                          \
/* LSTM forward: g holds pre-activations (without bias) and gets the activated     */    \
/* gates i, f, g, o for backward; writes the new cell and hidden state.            */    \
static inline void rk_lstm_fwd_##SUFFIX(ptrdiff_t ub, T* restrict g, const T* restrict b,  \
        const T* restrict c_prev, T* restrict c_new, T* restrict h_new)                     \
{                                                                                          \
    for (ptrdiff_t u = 0; u < ub; u++) {                                                   \
        T gi = SIGMOID(g[u] + b[u]);                                                       \
        T gf = SIGMOID(g[ub + u] + b[ub + u]);                                             \
        T gg = TANH(g[2 * ub + u] + b[2 * ub + u]);                                        \
        T go = SIGMOID(g[3 * ub + u] + b[3 * ub + u]);                                     \
        T c = gf * c_prev[u] + gi * gg;                                                    \
        c_new[u] = c;                                                                      \
        h_new[u] = go * TANH(c);                                                           \
        g[u] = gi; g[ub + u] = gf; g[2 * ub + u] = gg; g[3 * ub + u] = go;                 \
    }                                                                                      \
}                                                                                          \
/* LSTM backward: dh is dL/dh_t (recurrent + output), dc is dL/dc_t in and        */     \
/* dL/dc_{t-1} out; writes gate pre-activation gradients.                          */    \
static inline void rk_lstm_bwd_##SUFFIX(ptrdiff_t ub, const T* restrict g,                 \
        T* restrict dg, const T* restrict c_prev, const T* restrict c_new,                 \
        const T* restrict dh, T* restrict dc)                                              \
{                                                                                          \
    for (ptrdiff_t u = 0; u < ub; u++) {                                                   \
        T gi = g[u], gf = g[ub + u], gg = g[2 * ub + u], go = g[3 * ub + u];               \
        T tc = TANH(c_new[u]);                                                             \
        T dct = dc[u] + dh[u] * go * (1 - tc * tc);                                        \
        dg[u] = dct * gg * gi * (1 - gi);                                                  \
        dg[ub + u] = dct * c_prev[u] * gf * (1 - gf);                                      \
        dg[2 * ub + u] = dct * gi * (1 - gg * gg);                                         \
        dg[3 * ub + u] = dh[u] * tc * go * (1 - go);                                       \
        dc[u] = dct * gf;                                                                  \
    }                                                                                      \
}                                                                                          \
/* Vanilla RNN forward: h' = act(g + b).  relu keeps NaN (x < 0 ? 0 : x).          */    \
static inline void rk_rnn_fwd_##SUFFIX(ptrdiff_t ub, const T* restrict g,                  \
        const T* restrict b, T* restrict h_new, int relu)                                  \
{                                                                                          \
    if (relu)                                                                              \
        for (ptrdiff_t u = 0; u < ub; u++) {                                               \
            T a = g[u] + b[u];                                                             \
            h_new[u] = a < 0 ? 0 : a;                                                      \
        }                                                                                  \
    else                                                                                   \
        for (ptrdiff_t u = 0; u < ub; u++)                                                 \
            h_new[u] = TANH(g[u] + b[u]);                                                  \
}                                                                                          \
/* Vanilla RNN backward: dg = dh * act'(h'), derivative read off the output.       */    \
static inline void rk_rnn_bwd_##SUFFIX(ptrdiff_t ub, const T* restrict h_new,              \
        const T* restrict dh, T* restrict dg, int relu)                                    \
{                                                                                          \
    if (relu)                                                                              \
        for (ptrdiff_t u = 0; u < ub; u++)                                                 \
            dg[u] = h_new[u] > 0 ? dh[u] : 0;                                              \
    else                                                                                   \
        for (ptrdiff_t u = 0; u < ub; u++)                                                 \
            dg[u] = dh[u] * (1 - h_new[u] * h_new[u]);                                     \
}                                                                                          \
/* GRU (reset after, PyTorch) forward.  gx: input projection r z n (no bias),      */    \
/* gh: W_hh h for r z n; b: b_ir+b_hr, b_iz+b_hz, b_in; b_hn separately.           */    \
/* Keeps r, z, n in gx and W_hn h + b_hn in hn for backward.                        */   \
static inline void rk_gru_fwd_##SUFFIX(ptrdiff_t ub, T* restrict gx, const T* restrict gh, \
        const T* restrict b, const T* restrict b_hn, const T* restrict h_prev,             \
        T* restrict hn, T* restrict h_new)                                                 \
{                                                                                          \
    for (ptrdiff_t u = 0; u < ub; u++) {                                                   \
        T r = SIGMOID(gx[u] + gh[u] + b[u]);                                               \
        T z = SIGMOID(gx[ub + u] + gh[ub + u] + b[ub + u]);                                \
        T hnb = gh[2 * ub + u] + b_hn[u];                                                  \
        T n = TANH(gx[2 * ub + u] + b[2 * ub + u] + r * hnb);                              \
        h_new[u] = (1 - z) * n + z * h_prev[u];                                            \
        gx[u] = r; gx[ub + u] = z; gx[2 * ub + u] = n; hn[u] = hnb;                        \
    }                                                                                      \
}                                                                                          \
/* GRU (reset after) backward.  dh: dL/dh_t in, dL/dh_{t-1} through z out.          */   \
/* dgx: gradients of the input-side pre-activations r z n; dgh: of the             */    \
/* recurrent-side ones (r, z equal, n scaled by r).                                 */   \
static inline void rk_gru_bwd_##SUFFIX(ptrdiff_t ub, const T* restrict g,                  \
        const T* restrict hn, const T* restrict h_prev, T* restrict dh,                    \
        T* restrict dgx, T* restrict dgh)                                                  \
{                                                                                          \
    for (ptrdiff_t u = 0; u < ub; u++) {                                                   \
        T r = g[u], z = g[ub + u], n = g[2 * ub + u], d = dh[u];                           \
        T dn = d * (1 - z) * (1 - n * n);                                                  \
        T dz = d * (h_prev[u] - n) * z * (1 - z);                                          \
        T dr = dn * hn[u] * r * (1 - r);                                                   \
        dgx[u] = dr; dgx[ub + u] = dz; dgx[2 * ub + u] = dn;                               \
        dgh[u] = dr; dgh[ub + u] = dz; dgh[2 * ub + u] = dn * r;                           \
        dh[u] = d * z;                                                                     \
    }                                                                                      \
}                                                                                          \
/* GRU (reset before, Keras reset_after=False), forward in two phases because      */    \
/* W_hn multiplies r*h, which needs r of every unit first.                          */   \
/* Phase 1: r, z from g (input + recurrent r z, no bias); rh = r * h.               */   \
static inline void rk_gru_rb_fwd1_##SUFFIX(ptrdiff_t ub, T* restrict g,                    \
        const T* restrict b, const T* restrict h_prev, T* restrict rh)                     \
{                                                                                          \
    for (ptrdiff_t u = 0; u < ub; u++) {                                                   \
        T r = SIGMOID(g[u] + b[u]);                                                        \
        T z = SIGMOID(g[ub + u] + b[ub + u]);                                              \
        g[u] = r; g[ub + u] = z; rh[u] = r * h_prev[u];                                    \
    }                                                                                      \
}                                                                                          \
/* Phase 2: n from g's n block (input + W_hn (r*h), no bias).                       */   \
static inline void rk_gru_rb_fwd2_##SUFFIX(ptrdiff_t ub, T* restrict g,                    \
        const T* restrict b, const T* restrict h_prev, T* restrict h_new)                  \
{                                                                                          \
    for (ptrdiff_t u = 0; u < ub; u++) {                                                   \
        T z = g[ub + u];                                                                   \
        T n = TANH(g[2 * ub + u] + b[2 * ub + u]);                                         \
        h_new[u] = (1 - z) * n + z * h_prev[u];                                            \
        g[2 * ub + u] = n;                                                                 \
    }                                                                                      \
}                                                                                          \
/* Backward phase 1: z and n gradients; dh becomes the direct carry d*z.           */    \
static inline void rk_gru_rb_bwd1_##SUFFIX(ptrdiff_t ub, const T* restrict g,              \
        const T* restrict h_prev, T* restrict dh, T* restrict dg)                          \
{                                                                                          \
    for (ptrdiff_t u = 0; u < ub; u++) {                                                   \
        T z = g[ub + u], n = g[2 * ub + u], d = dh[u];                                     \
        dg[ub + u] = d * (h_prev[u] - n) * z * (1 - z);                                    \
        dg[2 * ub + u] = d * (1 - z) * (1 - n * n);                                        \
        dh[u] = d * z;                                                                     \
    }                                                                                      \
}                                                                                          \
/* Backward phase 2: drh = dL/d(r*h) (from W_hn^T dn); r gradient and the carry.   */    \
static inline void rk_gru_rb_bwd2_##SUFFIX(ptrdiff_t ub, const T* restrict g,              \
        const T* restrict h_prev, const T* restrict drh, T* restrict dh,                   \
        T* restrict dg)                                                                    \
{                                                                                          \
    for (ptrdiff_t u = 0; u < ub; u++) {                                                   \
        T r = g[u];                                                                        \
        dg[u] = drh[u] * h_prev[u] * r * (1 - r);                                          \
        dh[u] += drh[u] * r;                                                               \
    }                                                                                      \
}

RK_DEFINE_CELLS(f, float, rk_sigmoidf, rk_tanhf)
RK_DEFINE_CELLS(d, double, rk_sigmoid, rk_tanh)

/* Software prefetch of a tile's rows for the next step.  The time loop walks
 * the (N, G*H) gate buffers one step at a time, a few rows of a few hundred
 * bytes each, far apart; the rows a step reads were written long before (the
 * input projection, or forward's gates when going backward) and sit in L3 or
 * DRAM by then, and the hardware prefetchers do not follow this pattern: the
 * backward gate update stalled on those loads for most of its time.  Fetching
 * them one step ahead overlaps the misses with the current step's GEMM. */
static inline void rk_prefetch_rows(const void* p, ptrdiff_t rows, ptrdiff_t stride,
                                    ptrdiff_t bytes, int for_write)
{
    const char* base = (const char*)p;
    for (ptrdiff_t r = 0; r < rows; r++)
        for (ptrdiff_t b = 0; b < bytes; b += 64) {
            if (for_write)
                __builtin_prefetch(base + r * stride + b, 1, 3);
            else
                __builtin_prefetch(base + r * stride + b, 0, 3);
        }
}

#ifdef _OPENMP
#define rk_barrier() _Pragma("omp barrier")
#else
#define rk_barrier()
#endif

#endif
