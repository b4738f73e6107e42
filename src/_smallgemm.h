/* Register-blocked GEMM for the per-step recurrent products and the merged
 * input projection and dX.
 *
 * C (m x n) = A (m x k) @ B (k x n)  [+ C when accumulate], row-major, with B
 * packed (NAME##_pack_b): panel j holds columns j*NR .. j*NR+NR-1 as k rows of
 * NR contiguous values, zero past n.
 *
 * Why not BLAS: the recurrent product at each step is small (m = batch rows,
 * n = one tile's gate columns, k = H) and OpenBLAS runs such shapes at about a
 * third of its large-GEMM speed (its packing costs as much as the arithmetic).
 * Here B is a weight tile, packed once per call (ops.py) and read at every
 * step: the kernel keeps an MR x NR block of C in registers, broadcasts one
 * element of A per row and streams the panel's rows in order.
 *
 * Why packed: a tile's rows are a few hundred bytes to a few KB apart, so the
 * (RK_KC x NR) strip of B that every row block reuses fell into a handful of
 * L1 sets and was read again from L2 for each row block; the large LSTM's 2 MB
 * of tiles per thread and step also came in from L3 in that order.  Packed,
 * the strip is 16 KB read in order (docs/design.md, "GEMM").
 *
 * k is taken in chunks of rk_gemm_kc; later chunks start their accumulators from
 * C, so every element of C is still summed over k in increasing order, one
 * term at a time, whatever the shapes: the result never depends on how the
 * work is split.
 * Written with GCC vector extensions: the vector width follows -march
 * (8 floats with AVX2, 16 with AVX-512), no intrinsics.
 */
#ifndef RK_SMALLGEMM_H
#define RK_SMALLGEMM_H
#include <stddef.h>
#include <string.h>

#if defined(__AVX512F__)
#define RK_VBYTES 64
#elif defined(__AVX__)
#define RK_VBYTES 32
#else
/* SSE only (the x86-64 baseline): a 32-byte generic vector there is split
 * into halves that gcc spills; 16-byte vectors fill the 16 xmm registers. */
#define RK_VBYTES 16
#endif
/* Rows per register block.  RK_MR is the block of the weight gradients'
 * packing (fixed: it is the layout of NAME##_pack_at) and the default of the
 * products; RK_MR_MAX the most the products' block may take at run time
 * (rk_gemm_mr): 12 x 2 vectors of accumulators fit AVX-512's 32 registers,
 * 6 x 2 AVX2's 16 (more spills). */
#if defined(__AVX512F__)
#define RK_MR 8
#define RK_MR_MAX 12
#else
#define RK_MR 6
#define RK_MR_MAX 6
#endif
#define RK_KC 256
#define RK_WG_NC 128  /* weight gradients: gradient columns per packed panel group */

/* The products' k chunk and row block, set from the tuning plan
 * (rnnkernels/_core/tuning.py) through the module's configure().  Neither
 * changes a result: every element of C is summed over k in increasing order,
 * one term at a time, whatever the chunk, and each row's sum is its own
 * whatever the block.  One copy per kernel build (a static of this module). */
static ptrdiff_t rk_gemm_kc = RK_KC;
static ptrdiff_t rk_gemm_mr = RK_MR;

#if RK_MR_MAX > 6
#define RK_WIDE_BLOCKS(NAME, KIND)                                                       \
    case 12: NAME##KIND(12, k, a, ars, aks, b, ldb, c, ldc, accumulate); break;          \
    case 11: NAME##KIND(11, k, a, ars, aks, b, ldb, c, ldc, accumulate); break;          \
    case 10: NAME##KIND(10, k, a, ars, aks, b, ldb, c, ldc, accumulate); break;          \
    case 9: NAME##KIND(9, k, a, ars, aks, b, ldb, c, ldc, accumulate); break;            \
    case 8: NAME##KIND(8, k, a, ars, aks, b, ldb, c, ldc, accumulate); break;            \
    case 7: NAME##KIND(7, k, a, ars, aks, b, ldb, c, ldc, accumulate); break;
#else  /* no row block wider than RK_MR_MAX: its accumulators would not fit */
#define RK_WIDE_BLOCKS(NAME, KIND)
#endif
/* One call of NAME##KIND per row count: inlined with a constant mr, its loops
 * over rows unroll and its accumulators stay in registers; NAME##FN makes it
 * a function of mr. */
#define RK_ROW_SWITCH(NAME, KIND)                                                        \
    switch (mr) {                                                                        \
    RK_WIDE_BLOCKS(NAME, KIND)                                                           \
    case 6: NAME##KIND(6, k, a, ars, aks, b, ldb, c, ldc, accumulate); break;            \
    case 5: NAME##KIND(5, k, a, ars, aks, b, ldb, c, ldc, accumulate); break;            \
    case 4: NAME##KIND(4, k, a, ars, aks, b, ldb, c, ldc, accumulate); break;            \
    case 3: NAME##KIND(3, k, a, ars, aks, b, ldb, c, ldc, accumulate); break;            \
    case 2: NAME##KIND(2, k, a, ars, aks, b, ldb, c, ldc, accumulate); break;            \
    default: NAME##KIND(1, k, a, ars, aks, b, ldb, c, ldc, accumulate); break;           \
    }
#define RK_ROWS_FN(NAME, T, FN, KIND)                                                    \
static inline __attribute__((always_inline)) void NAME##FN(ptrdiff_t mr, ptrdiff_t k, const T* a, \
        ptrdiff_t ars, ptrdiff_t aks, const T* b, ptrdiff_t ldb, T* c, ptrdiff_t ldc,    \
        int accumulate)                                                                  \
{                                                                                        \
    RK_ROW_SWITCH(NAME, KIND)                                                            \
}

#define RK_DEFINE_SMALL_GEMM(NAME, T)                                                   \
typedef T NAME##_vec __attribute__((vector_size(RK_VBYTES), aligned(sizeof(T))));       \
enum { NAME##_VL = RK_VBYTES / sizeof(T), NAME##_NR = 2 * (RK_VBYTES / sizeof(T)) };    \
                                                                                         \
static inline __attribute__((always_inline)) void NAME##_block(ptrdiff_t mr, ptrdiff_t k, const T* a,  \
                                ptrdiff_t ars, ptrdiff_t aks,                            \
                                const T* b, ptrdiff_t ldb, T* c, ptrdiff_t ldc,        \
                                int accumulate)                                          \
{   /* mr (<= RK_MR_MAX) rows x NR columns; A's element (r, p) at a[r * ars + p * aks] */    \
    NAME##_vec acc0[RK_MR_MAX], acc1[RK_MR_MAX];                                         \
    ptrdiff_t r, p;                                                                      \
    for (r = 0; r < mr; r++) {                                                           \
        if (accumulate) {  /* continue C's sum term by term */                           \
            acc0[r] = *(const NAME##_vec*)(c + r * ldc);                                 \
            acc1[r] = *(const NAME##_vec*)(c + r * ldc + NAME##_VL);                     \
        } else {                                                                         \
            acc0[r] = (NAME##_vec){0};                                                   \
            acc1[r] = (NAME##_vec){0};                                                   \
        }                                                                                \
    }                                                                                    \
    /* mr is a constant wherever this is inlined (NAME##_rows_any), so the    \
       loop over rows unrolls and the accumulators live in registers */       \
    for (p = 0; p < k; p++) {                                                            \
        NAME##_vec b0 = *(const NAME##_vec*)(b + p * ldb);                               \
        NAME##_vec b1 = *(const NAME##_vec*)(b + p * ldb + NAME##_VL);                   \
        for (r = 0; r < mr; r++) {                                                       \
            T av = a[r * ars + p * aks];                                                 \
            acc0[r] += av * b0;                                                          \
            acc1[r] += av * b1;                                                          \
        }                                                                                \
    }                                                                                    \
    for (r = 0; r < mr; r++) {                                                           \
        *(NAME##_vec*)(c + r * ldc) = acc0[r];                                           \
        *(NAME##_vec*)(c + r * ldc + NAME##_VL) = acc1[r];                               \
    }                                                                                    \
}                                                                                        \
                                                                                         \
/* The same for a panel with at most one vector's worth of valid columns (the \
   last panel of a narrow product, such as dX with I = 40): half the FMAs. \
   Each element's sum is the same sequence of terms, so the same bits. */ \
static inline __attribute__((always_inline)) void NAME##_half(ptrdiff_t mr, ptrdiff_t k, const T* a,  \
                                ptrdiff_t ars, ptrdiff_t aks,                            \
                                const T* b, ptrdiff_t ldb, T* c, ptrdiff_t ldc,        \
                                int accumulate)                                          \
{                                                                                        \
    NAME##_vec acc0[RK_MR_MAX];                                                          \
    ptrdiff_t r, p;                                                                      \
    for (r = 0; r < mr; r++)                                                             \
        acc0[r] = accumulate ? *(const NAME##_vec*)(c + r * ldc) : (NAME##_vec){0};      \
    for (p = 0; p < k; p++) {                                                            \
        NAME##_vec b0 = *(const NAME##_vec*)(b + p * ldb);                               \
        for (r = 0; r < mr; r++)                                                         \
            acc0[r] += a[r * ars + p * aks] * b0;                                        \
    }                                                                                    \
    for (r = 0; r < mr; r++)                                                             \
        *(NAME##_vec*)(c + r * ldc) = acc0[r];                                           \
}                                                                                        \
                                                                                         \
RK_ROWS_FN(NAME, T, _rows_half, _half)                                                   \
                                                                                         \
/* One copy of the block per row count, so that the loops over rows unroll \
   and the accumulators stay in registers for the last, partial row block too. \
   Two layouts of A, each with its strides known at compile time where it is \
   inlined: row-major (ars = lda, aks = 1) for the per-step products and the \
   merged projections, and blocks of MR values per k (ars = 1, aks = MR, \
   NAME##_pack_at) for A^T @ B. */ \
RK_ROWS_FN(NAME, T, _rows_any, _block)                                                   \

/* Packing and the drivers.  The last, partial panel runs the same vector
 * code on zero-padded columns, through a small buffer. */
#define RK_DEFINE_PACKED_GEMM(NAME, T)                                                   \
static inline ptrdiff_t NAME##_packed_size(ptrdiff_t k, ptrdiff_t n)                     \
{                                                                                        \
    return (n + NAME##_NR - 1) / NAME##_NR * NAME##_NR * k;                              \
}                                                                                        \
                                                                                         \
static void NAME##_pack_b(ptrdiff_t k, ptrdiff_t n, const T* b, ptrdiff_t ldb, T* out)   \
{                                                                                        \
    ptrdiff_t j0, p, q;                                                                  \
    for (j0 = 0; j0 < n; j0 += NAME##_NR)                                                \
        for (p = 0; p < k; p++, out += NAME##_NR)                                        \
            for (q = 0; q < NAME##_NR; q++)                                              \
                out[q] = j0 + q < n ? b[p * ldb + j0 + q] : 0;                           \
}                                                                                        \
                                                                                         \
/* mr rows of one panel of C, of which w (<= NR) columns are valid: the last, \
   partial panel runs the same vector code on zero-padded columns, in tmp. */ \
static inline __attribute__((always_inline)) void NAME##_panel(ptrdiff_t mr, ptrdiff_t w, ptrdiff_t kc, \
                          const T* a, ptrdiff_t ars, ptrdiff_t aks, const T* bp,        \
                          T* c, ptrdiff_t ldc, int accumulate)                           \
{                                                                                        \
    T tmp[RK_MR_MAX * NAME##_NR] __attribute__((aligned(64)));                           \
    ptrdiff_t r, q;                                                                      \
    if (w == NAME##_NR) {                                                                \
        NAME##_rows_any(mr, kc, a, ars, aks, bp, NAME##_NR, c, ldc, accumulate);         \
        return;                                                                          \
    }                                                                                    \
    if (w == NAME##_VL) {                                                                \
        NAME##_rows_half(mr, kc, a, ars, aks, bp, NAME##_NR, c, ldc, accumulate);        \
        return;                                                                          \
    }                                                                                    \
    {   /* a partial panel through tmp: its first vector only where that holds every valid column */ \
        const int half = w < NAME##_VL;                                                  \
        const ptrdiff_t tw = half ? NAME##_VL : NAME##_NR;                               \
        for (r = 0; r < mr; r++)                                                         \
            for (q = 0; q < tw; q++)                                                     \
                tmp[r * tw + q] = accumulate && q < w ? c[r * ldc + q] : 0;              \
        if (half)                                                                        \
            NAME##_rows_half(mr, kc, a, ars, aks, bp, NAME##_NR, tmp, tw, accumulate);   \
        else                                                                             \
            NAME##_rows_any(mr, kc, a, ars, aks, bp, NAME##_NR, tmp, tw, accumulate);    \
        for (r = 0; r < mr; r++)                                                         \
            for (q = 0; q < w; q++)                                                      \
                c[r * ldc + q] = tmp[r * tw + q];                                        \
    }                                                                                    \
}                                                                                        \
                                                                                         \
/* C (m x n) (+)= A (m x k) @ B, B packed by NAME##_pack_b. */                       \
static void NAME##_packed(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T* a, ptrdiff_t lda, \
                          const T* bp, T* c, ptrdiff_t ldc, int accumulate)              \
{                                                                                        \
    ptrdiff_t i0, j0, k0, kc, r, w;                                                      \
    const ptrdiff_t KC = rk_gemm_kc, MR = rk_gemm_mr;  /* read once: a whole call agrees */ \
    if (k <= 0) {                                                                        \
        if (!accumulate)                                                                 \
            for (r = 0; r < m; r++)                                                      \
                memset(c + r * ldc, 0, (size_t)n * sizeof(T));                           \
        return;                                                                          \
    }                                                                                    \
    for (j0 = 0; j0 < n; j0 += NAME##_NR, bp += NAME##_NR * k) {                         \
        w = n - j0 < NAME##_NR ? n - j0 : NAME##_NR;                                     \
        for (k0 = 0; k0 < k; k0 += KC) {                                                 \
            kc = k - k0 < KC ? k - k0 : KC;                                              \
            for (i0 = 0; i0 < m; i0 += MR)                                               \
                NAME##_panel(m - i0 < MR ? m - i0 : MR, w, kc, a + i0 * lda + k0, lda, 1, \
                             bp + k0 * NAME##_NR, c + i0 * ldc + j0, ldc, accumulate || k0 > 0); \
        }                                                                                \
    }                                                                                    \
}                                                                                        \
                                                                                         \
/* Weight gradients: dW1 = A^T B1 (m x n1) and dW2 = A^T B2 (m x n2), where A  \
 * (k x m) holds the gate gradients of one time step and sequence per row and   \
 * B1, B2 (k x n1, k x n2) the inputs and states entering that step; k is the  \
 * number of rows, in the thousands.  Computed transposed, C^T = B^T A, so that \
 * A, the larger operand, is packed into the panels the kernel streams (each    \
 * row's columns copied as they lie) and is packed once for both products,     \
 * while the smaller B1, B2 are packed into blocks of MR values per row         \
 * (NAME##_pack_at) for the broadcasts.  The usual blocking of a large GEMM:    \
 * RK_KC rows at a time, RK_WG_NC of A's columns per packed panel group.        \
 * out: (n1 + n2) x m, dW1^T then dW2^T, overwritten (with ``ones``, one row   \
 * more: A's column sums).  Sums over k in increasing order. */                                                         \
static inline ptrdiff_t NAME##_blocks(ptrdiff_t n) { return (n + RK_MR - 1) / RK_MR; }  \
                                                                                         \
static inline ptrdiff_t NAME##_wgrad_work(ptrdiff_t n1, ptrdiff_t n2, int ones)         \
{   /* values of the work buffer NAME##_wgrad_t needs */                                \
    return (NAME##_blocks(n1) + NAME##_blocks(n2) + (ones != 0)) * RK_MR * RK_KC         \
           + NAME##_packed_size(RK_KC, RK_WG_NC);                                        \
}                                                                                        \
                                                                                         \
static void NAME##_pack_at(ptrdiff_t kc, ptrdiff_t n, const T* b, ptrdiff_t ldb, T* out) \
{   /* block q: for each of kc rows p, b[p][q*MR .. q*MR+MR-1] (zero past n) */           \
    ptrdiff_t p, q, r, w;                                                                \
    for (q = 0; q * RK_MR < n; q++, b += RK_MR, out += kc * RK_MR) {                     \
        w = n - q * RK_MR;                                                               \
        if (w >= RK_MR)                                                                  \
            for (p = 0; p < kc; p++)                                                     \
                memcpy(out + p * RK_MR, b + p * ldb, RK_MR * sizeof(T));                 \
        else                                                                             \
            for (p = 0; p < kc; p++)                                                     \
                for (r = 0; r < RK_MR; r++)                                              \
                    out[p * RK_MR + r] = r < w ? b[p * ldb + r] : 0;                     \
    }                                                                                    \
}                                                                                        \
                                                                                         \
/* One panel of NAME##_wgrad_t's product, B^T's blocks of MR values per k against A's \
   packed panel.  Not inlined: inside wgrad_t's loops gcc ran out of registers  \
   and kept a B vector and the loop counter on the stack (a store and eight     \
   reloads per k); on its own the block's accumulators and both B vectors stay  \
   in registers. */                                                             \
static __attribute__((noinline)) void NAME##_wgrad_panel(ptrdiff_t mr, ptrdiff_t w, ptrdiff_t kc, \
        const T* bt, const T* ap, T* c, ptrdiff_t ldc, int accumulate)                   \
{                                                                                        \
    NAME##_panel(mr, w, kc, bt, 1, RK_MR, ap, c, ldc, accumulate);                       \
}                                                                                        \
                                                                                         \
static void NAME##_wgrad_t(ptrdiff_t m, ptrdiff_t k, const T* a, ptrdiff_t lda,          \
                           ptrdiff_t n1, const T* b1, ptrdiff_t ldb1,                    \
                           ptrdiff_t n2, const T* b2, ptrdiff_t ldb2,                    \
                           int ones, /* also row n1 + n2 of out: A's column sums */     \
                           T* out,   /* (n1 + n2 + ones) x m */                          \
                           T* work)  /* NAME##_wgrad_work(n1, n2, ones) values, 64-byte aligned */ \
{                                                                                        \
    /* The column sums (a bias's gradient) are the product with a column of \
       ones: one more block of B^T, of which only the first row is used, so   \
       the kernel runs it as a one-row block, about 1/16 of a full one. */    \
    ptrdiff_t nb1 = NAME##_blocks(n1), nb2 = nb1 + NAME##_blocks(n2), nb = nb2 + (ones != 0); \
    ptrdiff_t n = n1 + n2 + (ones != 0);                                                 \
    T* bt = work;                                                                        \
    T* ap = work + nb * RK_MR * RK_KC;                                                   \
    ptrdiff_t k0, kc, j0, nc, jj, q, row, mr, p;                                         \
    if (k <= 0) {                                                                        \
        memset(out, 0, (size_t)(n * m) * sizeof(T));                                     \
        return;                                                                          \
    }                                                                                    \
    for (k0 = 0; k0 < k; k0 += RK_KC) {                                                  \
        kc = k - k0 < RK_KC ? k - k0 : RK_KC;                                            \
        NAME##_pack_at(kc, n1, b1 + k0 * ldb1, ldb1, bt);                                \
        NAME##_pack_at(kc, n2, b2 + k0 * ldb2, ldb2, bt + nb1 * kc * RK_MR);             \
        if (ones)                                                                        \
            for (p = 0; p < kc; p++)                                                     \
                bt[(nb2 * kc + p) * RK_MR] = 1;  /* the block's other rows are never read */ \
        for (j0 = 0; j0 < m; j0 += RK_WG_NC) {                                           \
            nc = m - j0 < RK_WG_NC ? m - j0 : RK_WG_NC;                                  \
            NAME##_pack_b(kc, nc, a + k0 * lda + j0, lda, ap);                           \
            for (jj = 0; jj < nc; jj += NAME##_NR)                                       \
                for (q = 0; q < nb; q++) {                                               \
                    row = q < nb1 ? q * RK_MR : q < nb2 ? n1 + (q - nb1) * RK_MR : n1 + n2; \
                    mr = (q < nb1 ? n1 : q < nb2 ? n1 + n2 : n) - row;                   \
                    NAME##_wgrad_panel(mr < RK_MR ? mr : RK_MR,                          \
                                       nc - jj < NAME##_NR ? nc - jj : NAME##_NR, kc,    \
                                       bt + q * kc * RK_MR, ap + jj * kc,                \
                                       out + row * m + j0 + jj, m, k0 > 0);              \
                }                                                                        \
        }                                                                                \
    }                                                                                    \
}

RK_DEFINE_SMALL_GEMM(rk_small_sgemm, float)
RK_DEFINE_SMALL_GEMM(rk_small_dgemm, double)
RK_DEFINE_PACKED_GEMM(rk_small_sgemm, float)
RK_DEFINE_PACKED_GEMM(rk_small_dgemm, double)

#endif
