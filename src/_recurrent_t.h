/* The time-loop skeleton of every cell, for one element type RK_T (included
 * twice by _recurrent.h).  It owns what every cell shares: the merged GEMMs
 * (input projection before the time loop; dX, dW_ih, dW_hh after it), the
 * step/tile loop and its barriers, prefetching, the rows of y and dy in the
 * caller's layout, recurrent dropout (the masked states the product reads),
 * zoneout (the keep-previous mix after a point update, and its split before
 * the backward one), the projection of the LSTM, the dh0 tail, and the
 * row-split loop of the LayerNorm cells.  A cell brings its point updates
 * and flags (_cells.h).
 *
 * Packed layout (as PyTorch's PackedSequence): step s has counts[s] active
 * rows, a prefix of the sequences sorted longest first, stored at packed rows
 * offsets[s] .. offsets[s] + counts[s].  The state buffers are (N + B, .):
 * the state entering step s for row j sits at offsets[s] + j, a row's final
 * state at N + j, so the state leaving step s for row j goes to
 * offsets[s+1] + j while the row goes on, or to N + j at its last step.
 *
 * Parallel structure: hidden units are split into fixed tiles; a tile's G
 * gates are contiguous columns (the weights are permuted by ops.py).  Per
 * step, each tile does its slice of the recurrent GEMM and the point updates
 * of its units, then a barrier (the implicit one of `omp for`).  The split
 * and every sum's order depend on the shapes and the machine only, never on
 * the thread count, so the bits do not either.
 */

#define RK_F(name) RK_S(name)

/* ------------------------------------------------------------ the GEMMs */

/* C (+)= A @ B without allocating, each element summed over k in increasing
 * order (the packed kernel's order): the fallback when memory for packing B
 * cannot be had. */
static void RK_F(rk_plain_gemm)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const RK_T* a, ptrdiff_t lda,
                                const RK_T* b, ptrdiff_t ldb, RK_T* c, ptrdiff_t ldc, int accumulate)
{
    for (ptrdiff_t i = 0; i < m; i++)
        for (ptrdiff_t j = 0; j < n; j++) {
            RK_T s = accumulate ? c[i * ldc + j] : 0;
            for (ptrdiff_t q = 0; q < k; q++)
                s += a[i * lda + q] * b[q * ldb + j];
            c[i * ldc + j] = s;
        }
}

/* Rows r0 .. r1-1 of gemm_rows: gather them (a_rows), multiply, scatter them
 * (c_rows) through buf (RK_SCATTER_ROWS x n). */
static void RK_F(rk_gemm_piece)(ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t n, ptrdiff_t k,
                                const RK_T* a, ptrdiff_t lda, const ptrdiff_t* a_rows, RK_T* a_packed,
                                const RK_T* bp, RK_T* c, ptrdiff_t ldc, const ptrdiff_t* c_rows, RK_T* buf)
{
    const RK_T* ap = a + r0 * lda;
    ptrdiff_t ld = lda;
    if (a_rows != NULL) {
        for (ptrdiff_t r = r0; r < r1; r++)
            memcpy(a_packed + r * k, a + a_rows[r] * lda, (size_t)k * sizeof(RK_T));
        ap = a_packed + r0 * k;
        ld = k;
    }
    if (c_rows == NULL) {
        RK_G(packed)(r1 - r0, n, k, ap, ld, bp, c + r0 * ldc, ldc, 0);
        return;
    }
    for (ptrdiff_t i0 = r0; i0 < r1; i0 += RK_SCATTER_ROWS) {
        ptrdiff_t mr = r1 - i0 < RK_SCATTER_ROWS ? r1 - i0 : RK_SCATTER_ROWS;
        RK_G(packed)(mr, n, k, ap + (i0 - r0) * ld, ld, bp, buf, n, 0);
        for (ptrdiff_t r = 0; r < mr; r++)
            memcpy(c + c_rows[i0 + r] * ldc, buf + r * n, (size_t)n * sizeof(RK_T));
    }
}

/* C = A @ B over row pieces of A and C (an even number of equal pieces of
 * about RK_ROW_PIECE rows, so two threads get equal shares).  With a
 * variable-length batch the rows of A (the inputs) and of C (dX) are the
 * caller's padded rows: each piece gathers its inputs into a_packed (which
 * backward's dW_ih reads) and scatters its outputs, in parallel and while
 * they are in cache.  B is packed into panels first, on every thread when it
 * is large. */
static void RK_F(rk_gemm_rows)(int nthreads, ptrdiff_t rows, ptrdiff_t n, ptrdiff_t k,
                               const RK_T* a, ptrdiff_t lda,     /* IN  A, or the caller's rows (a_rows) */
                               const ptrdiff_t* a_rows,          /* IN  row of a for each row of A, or NULL */
                               RK_T* a_packed,                   /* OUT (rows x k) A gathered (a_rows only) */
                               const RK_T* b, ptrdiff_t ldb,     /* IN  (k x n) */
                               RK_T* c, ptrdiff_t ldc,           /* OUT C, or the caller's rows (c_rows) */
                               const ptrdiff_t* c_rows)          /* IN  row of c for each row of C, or NULL */
{
    ptrdiff_t npiece = (rows + RK_ROW_PIECE - 1) / RK_ROW_PIECE, size, nr = RK_G(packed_size)(1, 1);
    ptrdiff_t bp_values = RK_G(packed_size)(k, n), p;
    void* raw;
    RK_T* bp;
    RK_T* bufs;
    if (rows <= 0 || n <= 0)
        return;
    if (npiece > 1)
        npiece += npiece % 2;
    size = (rows + npiece - 1) / npiece;
    raw = malloc((size_t)(bp_values + (c_rows != NULL ? (ptrdiff_t)nthreads * RK_SCATTER_ROWS * n : 0))
                 * sizeof(RK_T) + 64);
    if (raw == NULL) {  /* no memory for the packed B: a row at a time, allocating nothing */
        for (ptrdiff_t r = 0; r < rows; r++) {
            const RK_T* ar = a + (a_rows != NULL ? a_rows[r] : r) * lda;
            if (a_rows != NULL) {
                memcpy(a_packed + r * k, ar, (size_t)k * sizeof(RK_T));
                ar = a_packed + r * k;
            }
            RK_F(rk_plain_gemm)(1, n, k, ar, k, b, ldb, c + (c_rows != NULL ? c_rows[r] : r) * ldc, ldc, 0);
        }
        return;
    }
    bp = (RK_T*)(((size_t)raw + 63) & ~(size_t)63);  /* panels on cache lines */
    bufs = bp + bp_values;
    if (nthreads > 1 && (size_t)bp_values * sizeof(RK_T) >= RK_PARALLEL_PACK_BYTES) {
        ptrdiff_t panels = (n + nr - 1) / nr;
        #pragma omp parallel for num_threads(nthreads) schedule(static)
        for (p = 0; p < panels; p++)
            RK_G(pack_b)(k, (n - p * nr) < nr ? n - p * nr : nr, b + p * nr, ldb, bp + p * nr * k);
    } else {
        RK_G(pack_b)(k, n, b, ldb, bp);
    }
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (p = 0; p < npiece; p++) {
        ptrdiff_t r0 = p * size, r1 = r0 + size > rows ? rows : r0 + size;
        if (r0 < r1)
            RK_F(rk_gemm_piece)(r0, r1, n, k, a, lda, a_rows, a_packed, bp, c, ldc, c_rows,
                                bufs + (ptrdiff_t)rk_thread_num() * RK_SCATTER_ROWS * n);
    }
    free(raw);
}

/* Weight gradients, the reductions over all k rows: C1 = A^T B1 and C2 =
 * A^T B2 (dW_ih and dW_hh from the same gate gradients), on our kernel with A
 * packed once for both, and (csum not NULL) A's column sums, the bias
 * gradient, as the product with a column of ones.  The k rows are split into
 * npiece equal pieces (a function of the shape and the machine, never of the
 * thread count); each piece sums its rows into its own buffer, transposed,
 * and the pieces are added in order while transposing back, so the summation
 * order is fixed. */
static void RK_F(rk_weight_grads)(int nthreads, int npiece, ptrdiff_t m, ptrdiff_t k,
                                  const RK_T* a, ptrdiff_t lda,                      /* IN  (k x m) */
                                  ptrdiff_t n1, const RK_T* b1, ptrdiff_t ldb1,      /* IN  (k x n1) */
                                  RK_T* c1, ptrdiff_t ldc1,                          /* OUT (m x n1) */
                                  ptrdiff_t n2, const RK_T* b2, ptrdiff_t ldb2,      /* IN  (k x n2) or n2 = 0 */
                                  RK_T* c2, ptrdiff_t ldc2,                          /* OUT (m x n2) */
                                  RK_T* csum)                                        /* OUT (m,) or NULL */
{
    const int ones = csum != NULL;
    ptrdiff_t n = n1 + n2 + ones, size, work, part, piece, i0;
    void* raw;
    RK_T* base;
    if (m <= 0 || n <= 0)
        return;
    if (npiece < 1)
        npiece = 1;
    size = (k + npiece - 1) / npiece;
    work = (RK_G(wgrad_work)(n1, n2, ones) + 15) / 16 * 16;
    part = (n * m + 15) / 16 * 16;
    raw = malloc((size_t)npiece * (size_t)(work + part) * sizeof(RK_T) + 64);
    if (raw == NULL) {  /* no memory for the pieces: plain loops, k in order */
        for (ptrdiff_t i = 0; i < m; i++) {
            for (ptrdiff_t j = 0; j < n; j++) {
                RK_T s = 0;
                for (ptrdiff_t r = 0; r < k; r++)
                    s += a[r * lda + i] * (j < n1 ? b1[r * ldb1 + j] : j < n1 + n2 ? b2[r * ldb2 + j - n1] : 1);
                if (j < n1)
                    c1[i * ldc1 + j] = s;
                else if (j < n1 + n2)
                    c2[i * ldc2 + j - n1] = s;
                else
                    csum[i] = s;
            }
        }
        return;
    }
    base = (RK_T*)(((size_t)raw + 63) & ~(size_t)63);
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (piece = 0; piece < npiece; piece++) {
        ptrdiff_t r0 = piece * size, r1 = r0 + size > k ? k : r0 + size;
        RK_G(wgrad_t)(m, r1 > r0 ? r1 - r0 : 0, a + r0 * lda, lda, n1, b1 + r0 * ldb1, ldb1,
                      n2, n2 > 0 ? b2 + r0 * ldb2 : b2, ldb2, ones,
                      base + npiece * work + piece * part, base + piece * work);
    }
    /* c[i, j] = sum over pieces of out_piece[j, i], sixteen rows of c at a
     * time so that each read of a piece's row takes a whole cache line. */
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (i0 = 0; i0 < m; i0 += 16) {
        for (ptrdiff_t j = 0; j < n; j++)
            for (ptrdiff_t i = i0; i < (i0 + 16 < m ? i0 + 16 : m); i++) {
                const RK_T* src = base + npiece * work + j * m + i;
                RK_T s = src[0];
                for (ptrdiff_t q = 1; q < npiece; q++)
                    s = s + src[q * part];
                if (j < n1)
                    c1[i * ldc1 + j] = s;
                else if (j < n1 + n2)
                    c2[i * ldc2 + j - n1] = s;
                else
                    csum[i] = s;
            }
    }
    free(raw);
}

/* One row's share of a bias and a LayerNorm gain gradient: o0 += a,
 * o1 += a * b (n columns). */
static inline void RK_F(rk_row_sums)(ptrdiff_t n, const RK_T* restrict a, const RK_T* restrict b,
                                     RK_T* restrict o0, RK_T* restrict o1)
{
    for (ptrdiff_t j = 0; j < n; j++) {
        o0[j] += a[j];
        o1[j] += a[j] * b[j];
    }
}

/* out[u] (n of them) += the sum over the k slots of slots[j * stride + u], in
 * slot order. */
static void RK_F(rk_slot_sums)(ptrdiff_t k, ptrdiff_t n, const RK_T* slots, ptrdiff_t stride, RK_T* out)
{
    for (ptrdiff_t j = 0; j < k; j++)
        for (ptrdiff_t u = 0; u < n; u++)
            out[u] += slots[j * stride + u];
}

/* out[i] = x[rows[i]] for the n rows (each cols wide). */
static void RK_F(rk_gather_rows)(int nthreads, ptrdiff_t n, ptrdiff_t cols, const RK_T* x, const ptrdiff_t* rows,
                                 RK_T* out)
{
    ptrdiff_t i;
    int threads = (size_t)n * (size_t)cols * sizeof(RK_T) >= RK_PARALLEL_ZERO_BYTES ? nthreads : 1;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (i = 0; i < n; i++)
        memcpy(out + i * cols, x + rows[i] * cols, (size_t)cols * sizeof(RK_T));
}

static void RK_F(rk_zero_rows)(int nthreads, RK_T* c, ptrdiff_t ldc, ptrdiff_t cols,
                               const ptrdiff_t* rows, ptrdiff_t nrows)
{
    ptrdiff_t i;
    int threads = (size_t)nrows * (size_t)cols * sizeof(RK_T) >= RK_PARALLEL_ZERO_BYTES ? nthreads : 1;
    if (rows == NULL || c == NULL)
        return;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (i = 0; i < nrows; i++)
        memset(c + rows[i] * ldc, 0, (size_t)cols * sizeof(RK_T));
}

/* ------------------------------------------------------ per-row helpers */

/* out = z * prev + (1 - z) * value: zoneout's keep-previous mix, z a row of
 * weights or (z NULL) the rate.  out may be value (h mixes in place; zoneout
 * on c keeps the cell's own c~ for backward and mixes into the state). */
static inline void RK_F(rk_mix)(ptrdiff_t ub, const RK_T* restrict z, RK_T rate,
                                const RK_T* restrict prev, const RK_T* value, RK_T* out)
{
    if (z != NULL)
        for (ptrdiff_t u = 0; u < ub; u++)
            out[u] = z[u] * prev[u] + (1 - z[u]) * value[u];
    else
        for (ptrdiff_t u = 0; u < ub; u++)
            out[u] = rate * prev[u] + (1 - rate) * value[u];
}

/* Zoneout's backward split of d (dL/dx_t): carry = z * d goes to x_{t-1},
 * d becomes (1 - z) * d, what reaches the cell's own update. */
static inline void RK_F(rk_unmix)(ptrdiff_t ub, const RK_T* restrict z, RK_T rate,
                                  RK_T* restrict d, RK_T* restrict carry)
{
    if (z != NULL)
        for (ptrdiff_t u = 0; u < ub; u++) {
            carry[u] = z[u] * d[u];
            d[u] = (1 - z[u]) * d[u];
        }
    else
        for (ptrdiff_t u = 0; u < ub; u++) {
            carry[u] = rate * d[u];
            d[u] = (1 - rate) * d[u];
        }
}

static inline void RK_F(rk_mul)(ptrdiff_t ub, const RK_T* restrict a, const RK_T* restrict b,
                                RK_T* restrict out)
{
    for (ptrdiff_t u = 0; u < ub; u++)
        out[u] = a[u] * b[u];
}

/* out (+)= mask * v, row by row (recurrent dropout's gradient back to h). */
static inline void RK_F(rk_add_masked)(ptrdiff_t rows, ptrdiff_t cols, const RK_T* v, ptrdiff_t ldv,
                                       const RK_T* mask, ptrdiff_t ldm, RK_T* out, ptrdiff_t ldo,
                                       int accumulate)
{
    for (ptrdiff_t i = 0; i < rows; i++) {
        const RK_T* restrict vi = v + i * ldv;
        const RK_T* restrict mi = mask + i * ldm;
        RK_T* restrict oi = out + i * ldo;
        if (accumulate)
            for (ptrdiff_t u = 0; u < cols; u++)
                oi[u] += mi[u] * vi[u];
        else
            for (ptrdiff_t u = 0; u < cols; u++)
                oi[u] = mi[u] * vi[u];
    }
}

static inline void RK_F(rk_sum_rows)(ptrdiff_t rows, ptrdiff_t cols, const RK_T* a, ptrdiff_t lda,
                                     RK_T* out)
{
    for (ptrdiff_t i = 0; i < rows; i++)
        for (ptrdiff_t j = 0; j < cols; j++)
            out[j] += a[i * lda + j];
}

static inline const RK_T* RK_F(rk_dy_row)(const RK_T* dy, const ptrdiff_t* dy_rows, ptrdiff_t p,
                                          ptrdiff_t ld)
{
    return dy + (dy_rows != NULL ? dy_rows[p] : p) * ld;
}

/* out[i, :cols] += dy of packed row first + i: dL/dy read where the caller's
 * array holds it (no packed copy of dy). */
static inline void RK_F(rk_add_dy)(ptrdiff_t rows, ptrdiff_t cols, const RK_T* dy,
                                   const ptrdiff_t* dy_rows, ptrdiff_t first, ptrdiff_t ld,
                                   RK_T* out, ptrdiff_t ldo)
{
    for (ptrdiff_t i = 0; i < rows; i++) {
        const RK_T* restrict a = RK_F(rk_dy_row)(dy, dy_rows, first + i, ld);
        RK_T* restrict o = out + i * ldo;
        for (ptrdiff_t j = 0; j < cols; j++)
            o[j] += a[j];
    }
}

static inline void RK_F(rk_prefetch_dy)(const RK_T* dy, const ptrdiff_t* dy_rows, ptrdiff_t first,
                                        ptrdiff_t rows, ptrdiff_t ld, ptrdiff_t cols)
{
    if (dy == NULL)
        return;
    if (dy_rows == NULL)
        rk_prefetch_rows(dy + first * ld, rows, ld * (ptrdiff_t)sizeof(RK_T), cols * (ptrdiff_t)sizeof(RK_T), 0);
    else
        for (ptrdiff_t i = 0; i < rows; i++)
            rk_prefetch_rows(dy + dy_rows[first + i] * ld, 1, 0, cols * (ptrdiff_t)sizeof(RK_T), 0);
}

#define RK_PREFETCH(ptr, rows, stride, count, write) \
    rk_prefetch_rows((ptr), (rows), (stride) * (ptrdiff_t)sizeof(RK_T), (count) * (ptrdiff_t)sizeof(RK_T), (write))

/* ------------------------------------------------------------- forward */

typedef struct {  /* one step of the forward loop, as every tile sees it */
    ptrdiff_t s, n, n_next, off, off_next;
} RK_F(rk_step);

static inline RK_F(rk_step) RK_F(rk_step_at)(const rk_forward* p, ptrdiff_t s)
{
    RK_F(rk_step) st;
    st.s = s;
    st.n = p->counts[s];
    st.n_next = s + 1 < p->S ? p->counts[s + 1] : 0;
    st.off = p->offsets[s];
    st.off_next = p->offsets[s + 1];
    return st;
}

/* The state row that the state leaving step st for row j goes to. */
#define RK_DST(p, st, j) ((j) < (st).n_next ? (st).off_next + (j) : (p)->N + (j))
/* The gates' (and the GRU's aux) row of the step's row j: its packed row, or
 * j itself where they hold one step (step_gates: nothing after the step reads
 * them). */
#define RK_GATE_ROW(p, st, j) ((p)->step_gates ? (j) : (st).off + (j))

/* What a tile writes after a row's point update: the keep-previous mixes of
 * zoneout, the masked copy of h the next product reads, and y's row. */
static void RK_F(rk_after_row)(const rk_forward* p, const RK_F(rk_step)* st, ptrdiff_t j,
                               ptrdiff_t u0, ptrdiff_t ub, int with_h)
{
    ptrdiff_t row = st->off + j, dst = RK_DST(p, *st, j), P = p->P, H = p->H;
    RK_T* h = (RK_T*)p->h;
    if (p->ctilde != NULL) {  /* zoneout on c: c~ stays in ctilde for backward */
        RK_T* c = (RK_T*)p->c;
        RK_F(rk_mix)(ub, p->zc != NULL ? (const RK_T*)p->zc + row * H + u0 : NULL, (RK_T)p->zc_rate,
                     c + row * H + u0, (const RK_T*)p->ctilde + row * H + u0, c + dst * H + u0);
    }
    if (!with_h)
        return;
    if (p->zh != NULL || p->zh_rate >= 0)
        RK_F(rk_mix)(ub, p->zh != NULL ? (const RK_T*)p->zh + row * P + u0 : NULL, (RK_T)p->zh_rate,
                     h + row * P + u0, h + dst * P + u0, h + dst * P + u0);
    if (p->hm != NULL)
        RK_F(rk_mul)(ub, (const RK_T*)p->mask + j * P + u0, h + dst * P + u0, (RK_T*)p->hm + dst * P + u0);
    if (p->y != NULL)
        memcpy((RK_T*)p->y + p->y_rows[row] * P + u0, h + dst * P + u0, (size_t)ub * sizeof(RK_T));
}

static void RK_F(rk_fill_fwd_row)(const rk_forward* p, const RK_F(rk_step)* st, ptrdiff_t j,
                                  ptrdiff_t u0, int G, RK_F(rk_fwd)* r)
{
    ptrdiff_t row = st->off + j, dst = RK_DST(p, *st, j), P = p->P, H = p->H, GH = G * H;
    const RK_T* h = (const RK_T*)p->h;
    r->g = (RK_T*)p->gates + RK_GATE_ROW(p, *st, j) * GH + G * u0;
    r->gh = p->gh != NULL ? (const RK_T*)p->gh + j * GH + G * u0 : NULL;
    r->b = (const RK_T*)p->bias + G * u0;
    r->b_hn = p->b_hn != NULL ? (const RK_T*)p->b_hn + u0 : NULL;
    r->h_prev = h + row * P + u0;
    r->hm_prev = (p->hm != NULL ? (const RK_T*)p->hm : h) + row * P + u0;
    r->h_new = p->m != NULL ? (RK_T*)p->m + row * H + u0 : (RK_T*)p->h + dst * P + u0;
    r->c_prev = p->c != NULL ? (const RK_T*)p->c + row * H + u0 : NULL;
    r->c_new = p->ctilde != NULL ? (RK_T*)p->ctilde + row * H + u0
             : p->c != NULL ? (RK_T*)p->c + dst * H + u0 : NULL;
    r->aux = p->aux != NULL ? (RK_T*)p->aux + RK_GATE_ROW(p, *st, j) * H + u0 : NULL;
    r->peep = p->peep != NULL ? (const RK_T*)p->peep + 3 * u0 : NULL;
}

/* One tile of one forward step for the rows of one lane (t, t + L, ...: all
 * of them with t = 0, L = 1): their recurrent product, then each row's point
 * update (phase 1 of a two-phase cell). */
static void RK_F(rk_forward_tile_lane)(const rk_forward* p, const rk_cell* cell, const RK_F(rk_step)* st,
                                       ptrdiff_t k, ptrdiff_t t, ptrdiff_t L)
{
    const int G = cell->gates, two_phase = (cell->flags & RK_TWO_PHASE) != 0;
    const ptrdiff_t H = p->H, P = p->P, GH = G * H, u0 = p->tiles[k], ub = p->tiles[k + 1] - u0;
    const ptrdiff_t n = rk_lane_rows(st->n, t, L);
    RK_T* gates = (RK_T*)p->gates + RK_GATE_ROW(p, *st, t) * GH + G * u0;  /* the lane's first row, this tile */
    RK_T* gh = (RK_T*)p->gh + t * GH + G * u0;
    const RK_T* a = (p->hm != NULL ? (const RK_T*)p->hm : (const RK_T*)p->h) + (st->off + t) * P;
    const RK_T* w = (const RK_T*)p->w_fwd + p->w_fwd_starts[two_phase || (cell->flags & RK_SEPARATE) ? 2 * k : k];
    RK_F(rk_fwd) r;
    if (p->w_ih_fwd != NULL) {
        /* the input side, into the tile's gate rows while they are in L1: the
         * same sums over I, in the same order, as the input projection pass */
        const ptrdiff_t I = p->I;
        const RK_T* x = (const RK_T*)(p->x_rows != NULL ? p->xp : p->x) + (st->off + t) * I;
        RK_G(packed)(n, G * ub, I, x, L * I, (const RK_T*)p->w_ih_fwd + p->w_ih_fwd_starts[k], gates, L * GH, 0);
    } else {
        /* the tile's gate rows of the next step, which its next product accumulates into */
        RK_PREFETCH((RK_T*)p->gates + (st->off_next + t) * GH + G * u0, rk_lane_rows(st->n_next, t, L), L * GH,
                    G * ub, 1);
    }
    if (cell->flags & RK_SEPARATE) {  /* r z block, then n block, into the scratch */
        RK_G(packed)(n, 2 * ub, P, a, L * P, w, gh, L * GH, 0);
        RK_G(packed)(n, ub, P, a, L * P, (const RK_T*)p->w_fwd + p->w_fwd_starts[2 * k + 1], gh + 2 * ub,
                     L * GH, 0);
    } else if (two_phase) {           /* r z only: n needs r * h first */
        RK_G(packed)(n, 2 * ub, P, a, L * P, w, gates, L * GH, 1);
    } else {
        RK_G(packed)(n, G * ub, P, a, L * P, w, gates, L * GH, 1);
    }
    for (ptrdiff_t j = t; j < st->n; j += L) {
        RK_F(rk_fill_fwd_row)(p, st, j, u0, G, &r);
        RK_CELL_FWD(cell)(ub, &r);
        RK_F(rk_after_row)(p, st, j, u0, ub, !two_phase && p->m == NULL);
    }
}

static void RK_F(rk_forward_tile)(const rk_forward* p, const rk_cell* cell, const RK_F(rk_step)* st,
                                  ptrdiff_t k)
{
    RK_F(rk_forward_tile_lane)(p, cell, st, k, 0, 1);
}

/* Phase 2 of a two-phase cell (GRU before the reset): n from W_hn (r h). */
static void RK_F(rk_forward_tile2)(const rk_forward* p, const rk_cell* cell, const RK_F(rk_step)* st,
                                   ptrdiff_t k)
{
    const int G = cell->gates;
    const ptrdiff_t H = p->H, GH = G * H, u0 = p->tiles[k], ub = p->tiles[k + 1] - u0;
    RK_T* gates = (RK_T*)p->gates;
    RK_F(rk_fwd) r;
    RK_G(packed)(st->n, ub, H, (const RK_T*)p->aux + RK_GATE_ROW(p, *st, 0) * H, H,
                 (const RK_T*)p->w_fwd + p->w_fwd_starts[2 * k + 1],
                 gates + RK_GATE_ROW(p, *st, 0) * GH + G * u0 + 2 * ub, GH, 1);
    for (ptrdiff_t j = 0; j < st->n; j++) {
        RK_F(rk_fill_fwd_row)(p, st, j, u0, G, &r);
        RK_CELL_FWD2(cell)(ub, &r);
        RK_F(rk_after_row)(p, st, j, u0, ub, 1);
    }
}

/* The LSTM's projection, one tile of its P outputs: h_t = W_hr m for the
 * step's rows (those going on to the next step's rows, those ending to N + j). */
static void RK_F(rk_projection_tile)(const rk_forward* p, const RK_F(rk_step)* st, ptrdiff_t q)
{
    const ptrdiff_t H = p->H, P = p->P, p0 = p->ptiles[q], pb = p->ptiles[q + 1] - p0;
    const RK_T* m = (const RK_T*)p->m + st->off * H;
    const RK_T* w = (const RK_T*)p->w_hr_fwd + p->w_hr_fwd_starts[q];
    RK_T* h = (RK_T*)p->h;
    RK_G(packed)(st->n_next, pb, H, m, H, w, h + st->off_next * P + p0, P, 0);
    RK_G(packed)(st->n - st->n_next, pb, H, m + st->n_next * H, H, w,
                 h + (p->N + st->n_next) * P + p0, P, 0);
    for (ptrdiff_t j = 0; j < st->n; j++) {
        ptrdiff_t row = st->off + j, dst = RK_DST(p, *st, j);
        if (p->hm != NULL)
            RK_F(rk_mul)(pb, (const RK_T*)p->mask + j * P + p0, h + dst * P + p0,
                         (RK_T*)p->hm + dst * P + p0);
        if (p->y != NULL)
            memcpy((RK_T*)p->y + p->y_rows[row] * P + p0, h + dst * P + p0, (size_t)pb * sizeof(RK_T));
    }
}

static void RK_F(rk_forward_rows)(rk_forward* p, const rk_cell* cell);

/* One step of the time loop: its tiles shared by the enclosing team, or all
 * done by the calling thread when it runs outside the parallel region (an
 * orphaned worksharing loop is a team of one).  Every tile's work is the same
 * either way, so the bits do not depend on who computes it. */
static void RK_F(rk_forward_step)(const rk_forward* p, const rk_cell* cell, ptrdiff_t s)
{
    RK_F(rk_step) st = RK_F(rk_step_at)(p, s);
    ptrdiff_t k;
    #pragma omp for schedule(static)
    for (k = 0; k < p->ntiles; k++)
        RK_F(rk_forward_tile)(p, cell, &st, k);
    if (cell->flags & RK_TWO_PHASE) {
        #pragma omp for schedule(static)
        for (k = 0; k < p->ntiles; k++)
            RK_F(rk_forward_tile2)(p, cell, &st, k);
    }
    if (p->m != NULL) {
        #pragma omp for schedule(static)
        for (k = 0; k < p->nptiles; k++)
            RK_F(rk_projection_tile)(p, &st, k);
    }
}

/* The batch-row split of a one-phase cell without projection (ops chooses
 * it where every thread can keep all of W_hh in its L2): thread t of L owns
 * the rows t, t + L, ... through every step and computes every tile of them.
 * A row's next step reads only its own state, so the steps need no barrier.
 * Each tile's product and point updates are the tile split's, row by row,
 * so the bits are the same as the tile split's (and any thread count's). */
static void RK_F(rk_forward_lanes)(rk_forward* p, const rk_cell* cell)
{
    int team = 1;
    #pragma omp parallel num_threads(p->step_threads)
    {
        const ptrdiff_t t = rk_thread_num(), L = rk_team_size();
        if (t == 0)
            team = (int)L;
        for (ptrdiff_t s = 0; s < p->S; s++) {
            RK_F(rk_step) st = RK_F(rk_step_at)(p, s);
            for (ptrdiff_t k = 0; k < p->ntiles; k++)
                RK_F(rk_forward_tile_lane)(p, cell, &st, k, t, L);
        }
    }
    p->team = team;
}

static void RK_F(rk_forward)(rk_forward* p)
{
    const rk_cell* cell = &RK_CELLS[p->cell];
    const int G = cell->gates;
    const ptrdiff_t GH = G * p->H;
    /* Variable lengths: the last steps have few rows, too little work to pay
     * for the per-step barrier, so they run after the parallel region, on
     * this thread alone (ops chooses solo_from from the sizes). */
    const ptrdiff_t solo = p->solo_from < p->S ? p->solo_from : p->S;
    int team = 1;
    RK_F(rk_zero_rows)(p->nthreads, (RK_T*)p->y, p->P, p->P, p->padding, p->npadding);
    if (p->w_ih_fwd == NULL)
        RK_F(rk_gemm_rows)(p->nthreads, p->N, GH, p->I, (const RK_T*)p->x, p->I, p->x_rows, (RK_T*)p->xp,
                           (const RK_T*)p->w_ih_t, GH, (RK_T*)p->gates, GH, NULL);
    else if (p->x_rows != NULL)  /* the steps read the rows gathered */
        RK_F(rk_gather_rows)(p->nthreads, p->N, p->I, (const RK_T*)p->x, p->x_rows, (RK_T*)p->xp);
    if (cell->flags & RK_ROWS) {
        RK_F(rk_forward_rows)(p, cell);
        return;
    }
    if (p->rows) {
        RK_F(rk_forward_lanes)(p, cell);
        return;
    }
    if (solo > 0) {
        #pragma omp parallel num_threads(p->step_threads)
        {
            if (rk_thread_num() == 0)
                team = rk_team_size();
            for (ptrdiff_t s = 0; s < solo; s++)
                RK_F(rk_forward_step)(p, cell, s);
        }
    }
    for (ptrdiff_t s = solo; s < p->S; s++)
        RK_F(rk_forward_step)(p, cell, s);
    p->team = team;
}

/* ------------------------------------------------------------ backward */

typedef struct {
    ptrdiff_t s, n, n_next, n_prev, off, off_next, off_prev;
} RK_F(rk_bstep);

static inline RK_F(rk_bstep) RK_F(rk_bstep_at)(const rk_backward* p, ptrdiff_t s)
{
    RK_F(rk_bstep) st;
    st.s = s;
    st.n = p->counts[s];
    st.n_next = s + 1 < p->S ? p->counts[s + 1] : 0;
    st.n_prev = s > 0 ? p->counts[s - 1] : 0;
    st.off = p->offsets[s];
    st.off_next = p->offsets[s + 1];
    st.off_prev = s > 0 ? p->offsets[s - 1] : 0;
    return st;
}

/* The gradient arriving through the recurrence from step s+1, for the rows
 * that go on: dh[0:n_next, c0:c0+cw] (+)= (mask *) (G_next @ W_tile), where
 * G_next are the next step's gate gradients (recurrent side).  Rows that end
 * at step s keep dh_n (placed before the loop), or their carry. */
static void RK_F(rk_recurrent_grad)(const rk_backward* p, ptrdiff_t n_next, const RK_T* g_next,
                                    ptrdiff_t ldg, ptrdiff_t kdim, const RK_T* w_tile, ptrdiff_t c0,
                                    ptrdiff_t cw, int accumulate, RK_T* scratch)
{
    const ptrdiff_t P = p->P;
    RK_T* dh = (RK_T*)p->dh;
    if (n_next <= 0)
        return;
    if (p->mask == NULL) {
        RK_G(packed)(n_next, cw, kdim, g_next, ldg, w_tile, dh + c0, P, accumulate);
        return;
    }
    RK_G(packed)(n_next, cw, kdim, g_next, ldg, w_tile, scratch, cw, 0);
    RK_F(rk_add_masked)(n_next, cw, scratch, cw, (const RK_T*)p->mask + c0, P, dh + c0, P, accumulate);
}

static void RK_F(rk_fill_bwd_row)(const rk_backward* p, const RK_F(rk_bstep)* st, ptrdiff_t j,
                                  ptrdiff_t u0, int G, RK_F(rk_bwd)* r)
{
    ptrdiff_t row = st->off + j, dst = j < st->n_next ? st->off_next + j : p->N + j;
    ptrdiff_t P = p->P, H = p->H, GH = G * H;
    const RK_T* h = (const RK_T*)p->h;
    r->g = (const RK_T*)p->gates + row * GH + G * u0;
    r->dg = (RK_T*)p->dgates + row * GH + G * u0;
    r->dgh = p->dgh != NULL ? (RK_T*)p->dgh + ((st->s % 2) * p->B + j) * GH + G * u0 : NULL;
    r->aux = p->aux != NULL ? (const RK_T*)p->aux + row * H + u0 : NULL;
    r->h_prev = h + row * P + u0;
    r->hm_prev = (p->hm != NULL ? (const RK_T*)p->hm : h) + row * P + u0;
    r->h_new = h + dst * P + u0;
    r->c_prev = p->c != NULL ? (const RK_T*)p->c + row * H + u0 : NULL;
    r->c_new = p->ctilde != NULL ? (const RK_T*)p->ctilde + row * H + u0
             : p->c != NULL ? (const RK_T*)p->c + dst * H + u0 : NULL;
    r->dh = (RK_T*)p->dh + j * P + u0;
    r->dc = p->dc != NULL ? (RK_T*)p->dc + j * H + u0 : NULL;
    r->drh = p->drh != NULL ? (const RK_T*)p->drh + j * H + u0 : NULL;
    r->mask = p->mask != NULL ? (const RK_T*)p->mask + j * P + u0 : NULL;
    r->peep = p->peep != NULL ? (const RK_T*)p->peep + 3 * u0 : NULL;
    r->dpeep = p->dpeep != NULL ? (RK_T*)p->dpeep + 3 * u0 : NULL;
}

/* One row's backward point update, with zoneout's split around it: the parts
 * z * d that skip the cell go straight to the previous states. */
static void RK_F(rk_backward_row)(const rk_backward* p, const rk_cell* cell, const RK_F(rk_bstep)* st,
                                  ptrdiff_t j, ptrdiff_t u0, ptrdiff_t ub, RK_F(rk_bwd)* r,
                                  RK_T* d_cell, RK_T* carry_h, RK_T* carry_c, int second)
{
    ptrdiff_t row = st->off + j;
    int zh = p->zh != NULL || p->zh_rate >= 0, zc = p->zc != NULL || p->zc_rate >= 0;
    if (zc)
        RK_F(rk_unmix)(ub, p->zc != NULL ? (const RK_T*)p->zc + row * p->H + u0 : NULL,
                       (RK_T)p->zc_rate, r->dc, carry_c);
    if (zh && !second) {
        /* the cell sees (1 - z) d; z d is the carry to h_{t-1}, where a GRU adds its own */
        RK_T* dh = r->dh;
        memcpy(d_cell, dh, (size_t)ub * sizeof(RK_T));
        RK_F(rk_unmix)(ub, p->zh != NULL ? (const RK_T*)p->zh + row * p->P + u0 : NULL,
                       (RK_T)p->zh_rate, d_cell, carry_h);
        r->dh = d_cell;
        second ? RK_CELL_BWD2(cell)(ub, r) : RK_CELL_BWD(cell)(ub, r);
        if (cell->flags & RK_CARRY)
            for (ptrdiff_t u = 0; u < ub; u++)
                dh[u] = carry_h[u] + d_cell[u];
        else
            memcpy(dh, carry_h, (size_t)ub * sizeof(RK_T));
        r->dh = dh;
    } else {
        second ? RK_CELL_BWD2(cell)(ub, r) : RK_CELL_BWD(cell)(ub, r);
    }
    if (zc)
        for (ptrdiff_t u = 0; u < ub; u++)
            r->dc[u] += carry_c[u];
}

/* One tile of one backward step (phase 1 of a two-phase cell). */
static void RK_F(rk_backward_tile)(const rk_backward* p, const rk_cell* cell, const RK_F(rk_bstep)* st,
                                   ptrdiff_t k, RK_T* work)
{
    const int G = cell->gates;
    const ptrdiff_t H = p->H, P = p->P, GH = G * H, u0 = p->tiles[k], ub = p->tiles[k + 1] - u0;
    const int zh = p->zh != NULL || p->zh_rate >= 0;
    RK_T* dgates = (RK_T*)p->dgates;
    const RK_T* gates = (const RK_T*)p->gates;
    RK_T* scratch = work;                       /* B x max(ub, P): masked products, dm */
    RK_T* d_cell = work + p->B * (P > H ? P : H);
    RK_T* carry_h = d_cell + (P > H ? P : H);
    RK_T* carry_c = carry_h + (P > H ? P : H);
    RK_F(rk_bwd) r;
    /* what the tile reads and writes at the previous step (the next one here) */
    RK_PREFETCH(gates + st->off_prev * GH + G * u0, st->n_prev, GH, G * ub, 0);
    RK_PREFETCH(dgates + st->off_prev * GH + G * u0, st->n_prev, GH, G * ub, 1);
    if (p->c != NULL)
        RK_PREFETCH((const RK_T*)p->c + st->off_prev * H + u0, st->n_prev, H, ub, 0);
    if (p->m != NULL) {
        /* the projection: dL/dm = dL/dh~ (all P of it, phase A) @ W_hr[:, tile] */
        RK_G(packed)(st->n, ub, P, (const RK_T*)p->dh, P,
                     (const RK_T*)p->w_hr_bwd + p->w_hr_bwd_starts[k], scratch, ub, 0);
        for (ptrdiff_t j = 0; j < st->n; j++) {
            RK_F(rk_fill_bwd_row)(p, st, j, u0, G, &r);
            r.dh = scratch + j * ub;
            RK_CELL_BWD(cell)(ub, &r);
        }
    } else {
        if (cell->flags & RK_SEPARATE) {
            const RK_T* g_next = (const RK_T*)p->dgh + ((st->s + 1) % 2) * p->B * GH;
            RK_F(rk_recurrent_grad)(p, st->n_next, g_next, GH, GH,
                                    (const RK_T*)p->w_bwd + p->w_bwd_starts[k], u0, ub, 1, scratch);
        } else {
            RK_F(rk_recurrent_grad)(p, st->n_next, dgates + st->off_next * GH, GH, GH,
                                    (const RK_T*)p->w_bwd + p->w_bwd_starts[k], u0, ub,
                                    (cell->flags & RK_CARRY) || zh, scratch);
        }
        if (p->dy != NULL) {
            RK_F(rk_prefetch_dy)((const RK_T*)p->dy + u0, p->dy_rows, st->off_prev, st->n_prev, P, ub);
            RK_F(rk_add_dy)(st->n, ub, (const RK_T*)p->dy + u0, p->dy_rows, st->off, P,
                            (RK_T*)p->dh + u0, P);
        }
        for (ptrdiff_t j = 0; j < st->n; j++) {
            RK_F(rk_fill_bwd_row)(p, st, j, u0, G, &r);
            RK_F(rk_backward_row)(p, cell, st, j, u0, ub, &r, d_cell, carry_h, carry_c, 0);
        }
    }
    /* a one-phase cell's bias gradients are the gate gradients' column sums
     * over all rows, taken with the weight gradients after the loop */
}

/* One tile of one backward step for the rows of one lane (the batch-row
 * split, rk_backward_lanes): the tile split's work row by row. */
static void RK_F(rk_backward_tile_lane)(const rk_backward* p, const rk_cell* cell, const RK_F(rk_bstep)* st,
                                        ptrdiff_t k, ptrdiff_t t, ptrdiff_t L)
{
    const int G = cell->gates;
    const ptrdiff_t H = p->H, P = p->P, GH = G * H, u0 = p->tiles[k], ub = p->tiles[k + 1] - u0;
    const ptrdiff_t n_prev = rk_lane_rows(st->n_prev, t, L), n_next = rk_lane_rows(st->n_next, t, L);
    RK_T* dgates = (RK_T*)p->dgates;
    RK_T* dh = (RK_T*)p->dh;
    const RK_T* gates = (const RK_T*)p->gates;
    RK_F(rk_bwd) r;
    /* what the lane reads and writes at the previous step (the next one here).  Not
     * its dy rows: the hardware streams them well enough, and prefetching them too
     * was neutral on a Zen 4 and 0-3% slower on a Xeon (alternating processes). */
    RK_PREFETCH(gates + (st->off_prev + t) * GH + G * u0, n_prev, L * GH, G * ub, 0);
    RK_PREFETCH(dgates + (st->off_prev + t) * GH + G * u0, n_prev, L * GH, G * ub, 1);
    if (p->c != NULL)
        RK_PREFETCH((const RK_T*)p->c + (st->off_prev + t) * H + u0, n_prev, L * H, ub, 0);
    if (n_next > 0)  /* the gradient through the recurrence from step s + 1 */
        RK_G(packed)(n_next, ub, GH, dgates + (st->off_next + t) * GH, L * GH,
                     (const RK_T*)p->w_bwd + p->w_bwd_starts[k], dh + t * P + u0, L * P,
                     (cell->flags & RK_CARRY) != 0);
    for (ptrdiff_t j = t; j < st->n; j += L) {
        if (p->dy != NULL)
            RK_F(rk_add_dy)(1, ub, (const RK_T*)p->dy + u0, p->dy_rows, st->off + j, P, dh + j * P + u0, P);
        RK_F(rk_fill_bwd_row)(p, st, j, u0, G, &r);
        RK_CELL_BWD(cell)(ub, &r);
    }
}

/* The batch-row split of backward (ops chooses it with forward's, for the
 * plain LSTM and RNN): thread t of L owns the rows t, t + L, ... through
 * every step, so the steps need no barrier; the bias gradient is summed
 * after the loop, with the weight gradients. */
static void RK_F(rk_backward_lanes)(rk_backward* p, const rk_cell* cell)
{
    const int G = cell->gates;
    const ptrdiff_t GH = G * p->H, P = p->P;
    int team = 1;
    #pragma omp parallel num_threads(p->step_threads)
    {
        const ptrdiff_t t = rk_thread_num(), L = rk_team_size();
        if (t == 0)
            team = (int)L;
        for (ptrdiff_t s = p->S - 1; s >= 0; s--) {
            RK_F(rk_bstep) st = RK_F(rk_bstep_at)(p, s);
            for (ptrdiff_t k = 0; k < p->ntiles; k++)
                RK_F(rk_backward_tile_lane)(p, cell, &st, k, t, L);
        }
        /* dL/dh0 for the lane's rows active at step 0 */
        if (p->S > 0 && rk_lane_rows(p->counts[0], t, L) > 0)
            for (ptrdiff_t k = 0; k < p->ntiles; k++) {
                const ptrdiff_t c0 = p->tiles[k], cw = p->tiles[k + 1] - c0;
                RK_G(packed)(rk_lane_rows(p->counts[0], t, L), cw, GH, (const RK_T*)p->dgates + t * GH, L * GH,
                             (const RK_T*)p->w_bwd + p->w_bwd_starts[k], (RK_T*)p->dh + t * P + c0, L * P,
                             (cell->flags & RK_CARRY) != 0);
            }
    }
    p->team = team;
}

/* Phase 2 of a two-phase cell: drh = dn @ W_hn[:, tile]; r's gradient and the
 * carry through r * h; the row's gradients are complete then. */
static void RK_F(rk_backward_tile2)(const rk_backward* p, const rk_cell* cell, const RK_F(rk_bstep)* st,
                                    ptrdiff_t k)
{
    const int G = cell->gates;
    const ptrdiff_t H = p->H, GH = G * H, u0 = p->tiles[k], ub = p->tiles[k + 1] - u0;
    RK_T* dgates = (RK_T*)p->dgates;
    RK_F(rk_bwd) r;
    RK_G(packed)(st->n, ub, GH, dgates + st->off * GH, GH, (const RK_T*)p->w_bwd_n + p->w_bwd_starts[k],
                 (RK_T*)p->drh + u0, H, 0);
    for (ptrdiff_t j = 0; j < st->n; j++) {
        RK_F(rk_fill_bwd_row)(p, st, j, u0, G, &r);
        RK_CELL_BWD2(cell)(ub, &r);
    }
    RK_F(rk_sum_rows)(st->n, G * ub, dgates + st->off * GH + G * u0, GH, (RK_T*)p->db + G * u0);
}

/* Phase A of a projecting LSTM's backward step, one tile of the P outputs:
 * dh~ = the recurrence's gradient (through W_hh) + dy, kept in dhp for dW_hr. */
static void RK_F(rk_projection_grad_tile)(const rk_backward* p, const RK_F(rk_bstep)* st, ptrdiff_t q,
                                          RK_T* scratch)
{
    const ptrdiff_t P = p->P, GH = 4 * p->H, p0 = p->ptiles[q], pb = p->ptiles[q + 1] - p0;
    RK_F(rk_recurrent_grad)(p, st->n_next, (const RK_T*)p->dgates + st->off_next * GH, GH, GH,
                            (const RK_T*)p->w_bwd + p->w_bwd_starts[q], p0, pb, 0, scratch);
    if (p->dy != NULL)
        RK_F(rk_add_dy)(st->n, pb, (const RK_T*)p->dy + p0, p->dy_rows, st->off, P, (RK_T*)p->dh + p0, P);
    for (ptrdiff_t j = 0; j < st->n; j++)
        memcpy((RK_T*)p->dhp + (st->off + j) * P + p0, (RK_T*)p->dh + j * P + p0, (size_t)pb * sizeof(RK_T));
}

static void RK_F(rk_backward_rows)(rk_backward* p, const rk_cell* cell);
static void RK_F(rk_scale_n_by_r)(const rk_backward* p, RK_T* dg);

/* dL/dh0 for the rows active at step 0 (the others keep dh_n, or their carry). */
static void RK_F(rk_backward_tail)(const rk_backward* p, const rk_cell* cell, ptrdiff_t k, RK_T* scratch)
{
    const int G = cell->gates, zh = p->zh != NULL || p->zh_rate >= 0;
    const ptrdiff_t GH = G * p->H;
    const ptrdiff_t* bounds = p->m != NULL ? p->ptiles : p->tiles;
    const ptrdiff_t c0 = bounds[k], cw = bounds[k + 1] - c0;
    const RK_T* g0 = cell->flags & RK_SEPARATE ? (const RK_T*)p->dgh : (const RK_T*)p->dgates;
    RK_F(rk_recurrent_grad)(p, p->counts[0], g0, GH, GH, (const RK_T*)p->w_bwd + p->w_bwd_starts[k],
                            c0, cw, (cell->flags & RK_CARRY) || zh, scratch);
}

/* One backward step (see rk_forward_step: shared by the team, or all on the
 * calling thread; ``work`` is that thread's scratch, used within the step). */
static void RK_F(rk_backward_step)(const rk_backward* p, const rk_cell* cell, ptrdiff_t s, RK_T* work)
{
    RK_F(rk_bstep) st = RK_F(rk_bstep_at)(p, s);
    ptrdiff_t k;
    if (p->m != NULL) {
        #pragma omp for schedule(static)
        for (k = 0; k < p->nptiles; k++)
            RK_F(rk_projection_grad_tile)(p, &st, k, work);
    }
    #pragma omp for schedule(static)
    for (k = 0; k < p->ntiles; k++)
        RK_F(rk_backward_tile)(p, cell, &st, k, work);
    if (cell->flags & RK_TWO_PHASE) {
        #pragma omp for schedule(static)
        for (k = 0; k < p->ntiles; k++)
            RK_F(rk_backward_tile2)(p, cell, &st, k);
    }
}

static void RK_F(rk_backward)(rk_backward* p)
{
    const rk_cell* cell = &RK_CELLS[p->cell];
    const int G = cell->gates;
    const ptrdiff_t GH = G * p->H, N = p->N, I = p->I, P = p->P, H = p->H, wide = P > H ? P : H;
    const ptrdiff_t per_thread = p->B * wide + 3 * wide;
    const ptrdiff_t solo = p->solo_from < p->S ? p->solo_from : p->S;
    int team = 1, failed = 0;
    RK_T* work;
    if (p->dx != NULL)  /* NULL: no input gradient wanted (a first layer), no dX GEMM */
        RK_F(rk_zero_rows)(p->nthreads, (RK_T*)p->dx, I, I, p->padding, p->npadding);
    if (cell->flags & RK_ROWS) {
        RK_F(rk_backward_rows)(p, cell);
        return;
    }
    if (p->rows) {
        RK_F(rk_backward_lanes)(p, cell);
        goto merged;
    }
    work = (RK_T*)malloc((size_t)(p->step_threads > 0 ? p->step_threads : 1) * (size_t)per_thread * sizeof(RK_T) + 64);
    if (work == NULL) {
        p->team = -1;  /* out of memory: ops raises MemoryError */
        return;
    }
    /* the steps forward ran alone come first here, on this thread alone */
    for (ptrdiff_t s = p->S - 1; s >= solo; s--)
        RK_F(rk_backward_step)(p, cell, s, work);
    #pragma omp parallel num_threads(p->step_threads)
    {
        RK_T* mine = work + (ptrdiff_t)rk_thread_num() * per_thread;
        if (rk_thread_num() == 0)
            team = rk_team_size();
        for (ptrdiff_t s = solo - 1; s >= 0; s--)
            RK_F(rk_backward_step)(p, cell, s, mine);
        {
            ptrdiff_t k, ntail = p->m != NULL ? p->nptiles : p->ntiles;
            #pragma omp for schedule(static)
            for (k = 0; k < ntail; k++)
                RK_F(rk_backward_tail)(p, cell, k, mine);
        }
    }
    free(work);
    (void)failed;
    p->team = team;
merged:
    /* every gradient that does not depend on the recurrence, over all N rows */
    {
        RK_T* dg = (RK_T*)p->dgates;
        const RK_T* hsrc = p->hm != NULL ? (const RK_T*)p->hm : (const RK_T*)p->h;
        if (p->dx != NULL)
            RK_F(rk_gemm_rows)(p->nthreads, N, I, GH, dg, GH, NULL, NULL, (const RK_T*)p->w_ih, I,
                               (RK_T*)p->dx, I, p->dx_rows);
        if (cell->flags & RK_SEPARATE) {
            /* input side first (dW_ih), then dgates becomes the recurrent side
             * in place (n columns times r) for dW_hh */
            RK_F(rk_weight_grads)(p->nthreads, p->wgrad_pieces, GH, N, dg, GH, I, (const RK_T*)p->x, I,
                                  (RK_T*)p->dw_ih, I, 0, NULL, 0, NULL, 0, (RK_T*)p->db);
            RK_F(rk_scale_n_by_r)(p, dg);
            RK_F(rk_weight_grads)(p->nthreads, p->wgrad_pieces, GH, N, dg, GH, P, hsrc, P,
                                  (RK_T*)p->dw_hh, P, 0, NULL, 0, NULL, 0, (RK_T*)p->db_hh);
        } else {
            /* a two-phase cell's steps summed its bias gradient (rk_backward_tile2) */
            RK_F(rk_weight_grads)(p->nthreads, p->wgrad_pieces, GH, N, dg, GH, I, (const RK_T*)p->x, I,
                                  (RK_T*)p->dw_ih, I, P, hsrc, P, (RK_T*)p->dw_hh, P,
                                  cell->flags & RK_TWO_PHASE ? NULL : (RK_T*)p->db);
        }
        if (cell->flags & RK_TWO_PHASE)  /* W_hn multiplies r * h: its rows' gradient comes from aux */
            RK_F(rk_weight_grads)(p->nthreads, p->wgrad_pieces, GH, N, dg, GH, H, (const RK_T*)p->aux, H,
                                  (RK_T*)p->dw_hn, H, 0, NULL, 0, NULL, 0, NULL);
        if (p->m != NULL)
            RK_F(rk_weight_grads)(p->nthreads, p->wgrad_pieces, P, N, (const RK_T*)p->dhp, P, H,
                                  (const RK_T*)p->m, H, (RK_T*)p->dw_hr, H, 0, NULL, 0, NULL, 0, NULL);
    }
}

/* GRU (reset after): the input side's n columns times r, in place, giving
 * the recurrent side for dW_hh (the time loop kept only the input side). */
static void RK_F(rk_scale_n_by_r)(const rk_backward* p, RK_T* dg)
{
    const ptrdiff_t GH = 3 * p->H;
    const RK_T* gates = (const RK_T*)p->gates;
    ptrdiff_t i;
    #pragma omp parallel for num_threads(p->nthreads) schedule(static)
    for (i = 0; i < p->N; i++)
        for (ptrdiff_t k = 0; k < p->ntiles; k++) {
            ptrdiff_t u0 = p->tiles[k], ub = p->tiles[k + 1] - u0;
            RK_T* restrict d = dg + i * GH + 3 * u0 + 2 * ub;
            const RK_T* restrict r = gates + i * GH + 3 * u0;
            for (ptrdiff_t u = 0; u < ub; u++)
                d[u] *= r[u];
        }
}

/* -------------------------------------------- the LayerNorm cells' rows
 * LayerNorm normalises whole gate rows, a reduction over every unit inside
 * each step, so these cells split the batch rows over the threads instead of
 * the hidden units: thread t of L owns rows t, t + L, ... through every step,
 * computes all their units, and needs no barrier at all (a row's next step
 * reads only its own state).  A row's values do not depend on which thread
 * computes it (the GEMM sums each element over k in order), and the
 * gradients summed over rows are summed after the loop in row order, so the
 * bits do not depend on the thread count.  The weights are one block each,
 * in PyTorch's gate order. */

static void RK_F(rk_input_layer_norm)(const rk_forward* p, ptrdiff_t GH)
{
    ptrdiff_t i;
    #pragma omp parallel for num_threads(p->nthreads) schedule(static)
    for (i = 0; i < p->N; i++) {
        RK_T* g = (RK_T*)p->gates + i * GH;
        RK_F(rk_layer_norm)(GH, g, (const RK_T*)p->gamma_ih, NULL, g, (RK_T*)p->x_hat + i * GH,
                            (RK_T*)p->rstd + i * 3);
    }
}

/* What a LayerNorm cell's forward writes for one row. */
static inline void RK_F(rk_prefetch_ln_fwd_row)(const rk_forward* p, ptrdiff_t row, ptrdiff_t GH, ptrdiff_t H,
                                                int lstm)
{
    RK_PREFETCH((const RK_T*)p->gates + row * GH, 1, GH, GH, 1);
    RK_PREFETCH((const RK_T*)p->rec_hat + row * GH, 1, GH, GH, 1);
    if (lstm)
        RK_PREFETCH((const RK_T*)p->c_hat + row * H, 1, H, H, 1);
}

static void RK_F(rk_forward_rows)(rk_forward* p, const rk_cell* cell)
{
    const int G = cell->gates, lstm = (cell->flags & RK_CELL_STATE) != 0;
    const ptrdiff_t H = p->H, P = p->P, GH = G * H, N = p->N;
    int team = 1;
    const int slots = p->step_threads > p->nthreads ? p->step_threads : p->nthreads;
    RK_T* work = (RK_T*)malloc((size_t)(slots > 0 ? slots : 1) * (size_t)GH * sizeof(RK_T) + 64);
    if (work == NULL) {
        p->team = -1;
        return;
    }
    RK_F(rk_input_layer_norm)(p, GH);
    #pragma omp parallel num_threads(p->step_threads)
    {
        const ptrdiff_t t = rk_thread_num(), L = rk_team_size();
        RK_T* mine = work + t * GH;
        if (t == 0)
            team = (int)L;
        for (ptrdiff_t s = 0; s < p->S; s++) {
            RK_F(rk_step) st = RK_F(rk_step_at)(p, s);
            ptrdiff_t rows = rk_lane_rows(st.n, t, L);
            RK_T* rec = (RK_T*)p->rec;  /* (B, GH): row j's raw recurrent product */
            /* the rows this thread updates, written long ago (the input side's
             * LayerNorm) or not yet: the first two before the GEMM, the others
             * two rows ahead */
            for (ptrdiff_t j = t; j < st.n && j < t + 2 * L; j += L)
                RK_F(rk_prefetch_ln_fwd_row)(p, st.off + j, GH, H, lstm);
            RK_G(packed)(rows, GH, P, (const RK_T*)p->h + (st.off + t) * P, L * P, (const RK_T*)p->w_fwd,
                         rec + t * GH, L * GH, 0);
            for (ptrdiff_t j = t; j < st.n; j += L) {
                ptrdiff_t row = st.off + j, dst = RK_DST(p, st, j);
                RK_T* g = (RK_T*)p->gates + row * GH;
                RK_T* rstd = (RK_T*)p->rstd + row * 3 + 1;
                RK_T* h_new = (RK_T*)p->h + dst * P;
                if (j + 2 * L < st.n)
                    RK_F(rk_prefetch_ln_fwd_row)(p, row + 2 * L, GH, H, lstm);
                if (lstm)
                    RK_F(rk_lstm_ln_fwd)(H, g, rec + j * GH, (const RK_T*)p->bias, (const RK_T*)p->gamma_hh,
                                         (const RK_T*)p->gamma_c, (const RK_T*)p->beta_c,
                                         (const RK_T*)p->c + row * H, (RK_T*)p->c + dst * H, h_new,
                                         (RK_T*)p->rec_hat + row * GH, (RK_T*)p->c_hat + row * H, rstd, mine);
                else
                    RK_F(rk_gru_ln_fwd)(H, g, rec + j * GH, (const RK_T*)p->bias, (const RK_T*)p->b_hh,
                                        (const RK_T*)p->gamma_hh, (const RK_T*)p->h + row * P, h_new,
                                        (RK_T*)p->aux + row * H, (RK_T*)p->rec_hat + row * GH, rstd, mine);
                if (p->y != NULL)
                    memcpy((RK_T*)p->y + p->y_rows[row] * P, h_new, (size_t)P * sizeof(RK_T));
            }
        }
    }
    free(work);
    (void)N;
    p->team = team;
}

/* What a LayerNorm cell's backward reads and writes for one row. */
static inline void RK_F(rk_prefetch_ln_row)(const rk_backward* p, ptrdiff_t row, ptrdiff_t GH, ptrdiff_t H,
                                            int lstm)
{
    RK_PREFETCH((const RK_T*)p->gates + row * GH, 1, GH, GH, 0);
    RK_PREFETCH((const RK_T*)p->x_hat + row * GH, 1, GH, GH, 0);
    RK_PREFETCH((const RK_T*)p->rec_hat + row * GH, 1, GH, GH, 0);
    if (lstm) {
        RK_PREFETCH((const RK_T*)p->c + row * H, 1, H, H, 0);
        RK_PREFETCH((const RK_T*)p->c_hat + row * H, 1, H, H, 0);
    } else {
        RK_PREFETCH((const RK_T*)p->aux + row * H, 1, H, H, 0);
        RK_PREFETCH((const RK_T*)p->h + row * p->P, 1, p->P, p->P, 0);
    }
    RK_PREFETCH((const RK_T*)p->drec + row * GH, 1, GH, GH, 1);
    RK_PREFETCH((const RK_T*)p->drec_x + row * GH, 1, GH, GH, 1);
}

static void RK_F(rk_backward_rows)(rk_backward* p, const rk_cell* cell)
{
    const int G = cell->gates, lstm = (cell->flags & RK_CELL_STATE) != 0;
    const ptrdiff_t H = p->H, P = p->P, GH = G * H, N = p->N, I = p->I, B = p->B;
    int team = 1;
    RK_T* drec = (RK_T*)p->drec;      /* (N, GH): the raw recurrent product's gradient */
    RK_T* drec_x = (RK_T*)p->drec_x;  /* (N, GH): the input product's (W_ih x) */
    const int slots = p->step_threads > p->nthreads ? p->step_threads : p->nthreads;
    /* per thread: LayerNorm work (GH) and one row's gradients, which only the
     * sums below read besides the LayerNorms: the gates' (GH) and the LSTM's
     * LN(c~) output's (H) or the GRU's recurrent side's (GH) */
    const ptrdiff_t per_thread = lstm ? 2 * GH + H : 3 * GH;
    RK_T* work = (RK_T*)malloc((size_t)(slots > 0 ? slots : 1) * (size_t)per_thread * sizeof(RK_T) + 64);
    /* The bias and gain gradients, summed in the time loop while the rows are
     * in cache: over its steps per batch slot (slot j always belongs to the
     * same thread, whatever the team size), then over the slots in order.
     * Per slot, the LSTM's: db, dgamma_ih, dgamma_hh (GH each), dbeta_c,
     * dgamma_c (H each); the GRU's: db, dgamma_ih, db_hh, dgamma_hh (GH each). */
    const ptrdiff_t SW = lstm ? 3 * GH + 2 * H : 4 * GH;
    RK_T* sums = (RK_T*)calloc((size_t)(B > 0 ? B : 1) * (size_t)SW, sizeof(RK_T));
    if (work == NULL || sums == NULL) {
        free(work);
        free(sums);
        p->team = -1;
        return;
    }
    #pragma omp parallel num_threads(p->step_threads)
    {
        const ptrdiff_t t = rk_thread_num(), L = rk_team_size();
        RK_T* mine = work + t * per_thread;
        RK_T* dg = mine + GH;             /* the row's gate (input side) gradient */
        RK_T* d_side = mine + 2 * GH;     /* LSTM: LN(c~)'s output's; GRU: the recurrent side's */
        if (t == 0)
            team = (int)L;
        for (ptrdiff_t s = p->S - 1; s >= 0; s--) {
            RK_F(rk_bstep) st = RK_F(rk_bstep_at)(p, s);
            RK_T* dh = (RK_T*)p->dh;
            /* this thread's first rows of the step; the row loop fetches ahead */
            for (ptrdiff_t j = t; j < st.n && j < t + 2 * L; j += L)
                RK_F(rk_prefetch_ln_row)(p, st.off + j, GH, H, lstm);
            /* the recurrence's gradient from step s+1 (the GRU adds it to its carry) */
            RK_G(packed)(rk_lane_rows(st.n_next, t, L), P, GH, drec + (st.off_next + t) * GH, L * GH,
                         (const RK_T*)p->w_bwd, dh + t * P, L * P, !lstm);
            for (ptrdiff_t j = t; j < st.n; j += L) {
                ptrdiff_t row = st.off + j;
                const RK_T* rstd = (const RK_T*)p->rstd + row * 3;
                const RK_T* x_hat = (const RK_T*)p->x_hat + row * GH;
                const RK_T* rec_hat = (const RK_T*)p->rec_hat + row * GH;
                RK_T* acc = sums + j * SW;
                if (j + 2 * L < st.n)
                    RK_F(rk_prefetch_ln_row)(p, row + 2 * L, GH, H, lstm);
                if (p->dy != NULL) {
                    const RK_T* dyr = RK_F(rk_dy_row)((const RK_T*)p->dy, p->dy_rows, row, P);
                    for (ptrdiff_t u = 0; u < P; u++)
                        dh[j * P + u] += dyr[u];
                }
                /* the cell, then both sides' LayerNorms while the row is in cache */
                if (lstm) {
                    RK_F(rk_lstm_ln_bwd)(H, (const RK_T*)p->gates + row * GH, (const RK_T*)p->gamma_c,
                                         (const RK_T*)p->beta_c, (const RK_T*)p->c + row * H,
                                         (const RK_T*)p->c_hat + row * H, rstd[2], dh + j * P,
                                         (RK_T*)p->dc + j * H, dg, d_side, mine);
                    RK_F(rk_ln_gates_bwd)(GH, dg, dg, (const RK_T*)p->gamma_hh, rec_hat, rstd[1],
                                          (const RK_T*)p->gamma_ih, x_hat, rstd[0], drec + row * GH,
                                          drec_x + row * GH, acc, acc + GH, NULL, acc + 2 * GH);
                    RK_F(rk_row_sums)(H, d_side, (const RK_T*)p->c_hat + row * H, acc + 3 * GH,
                                      acc + 3 * GH + H);
                } else {
                    RK_F(rk_gru_ln_bwd)(H, (const RK_T*)p->gates + row * GH, (const RK_T*)p->aux + row * H,
                                        (const RK_T*)p->h + row * P, dh + j * P, dg, d_side);
                    RK_F(rk_ln_gates_bwd)(GH, d_side, dg, (const RK_T*)p->gamma_hh, rec_hat, rstd[1],
                                          (const RK_T*)p->gamma_ih, x_hat, rstd[0], drec + row * GH,
                                          drec_x + row * GH, acc, acc + GH, acc + 2 * GH, acc + 3 * GH);
                }
            }
        }
        /* dL/dh0 for the rows active at step 0 */
        RK_G(packed)(rk_lane_rows(p->counts[0], t, L), P, GH, drec + t * GH, L * GH, (const RK_T*)p->w_bwd,
                     (RK_T*)p->dh + t * P, L * P, !lstm);
    }
    p->team = team;
    /* the gradients summed over every row: the slots' sums, in slot order */
    RK_F(rk_slot_sums)(B, GH, sums, SW, (RK_T*)p->db);
    RK_F(rk_slot_sums)(B, GH, sums + GH, SW, (RK_T*)p->dgamma_ih);
    if (lstm) {  /* both biases get dgates: one sum */
        RK_F(rk_slot_sums)(B, GH, sums + 2 * GH, SW, (RK_T*)p->dgamma_hh);
        RK_F(rk_slot_sums)(B, H, sums + 3 * GH, SW, (RK_T*)p->dbeta_c);
        RK_F(rk_slot_sums)(B, H, sums + 3 * GH + H, SW, (RK_T*)p->dgamma_c);
    } else {
        RK_F(rk_slot_sums)(B, GH, sums + 2 * GH, SW, (RK_T*)p->db_hh);
        RK_F(rk_slot_sums)(B, GH, sums + 3 * GH, SW, (RK_T*)p->dgamma_hh);
    }
    free(work);
    free(sums);
    if (p->dx != NULL)
        RK_F(rk_gemm_rows)(p->nthreads, N, I, GH, drec_x, GH, NULL, NULL,
                           (const RK_T*)p->w_ih, I, (RK_T*)p->dx, I, p->dx_rows);
    RK_F(rk_weight_grads)(p->nthreads, p->wgrad_pieces, GH, N, drec_x, GH, I,
                          (const RK_T*)p->x, I, (RK_T*)p->dw_ih, I, 0, NULL, 0, NULL, 0, NULL);
    RK_F(rk_weight_grads)(p->nthreads, p->wgrad_pieces, GH, N, drec, GH, P, (const RK_T*)p->h, P,
                          (RK_T*)p->dw_hh, P, 0, NULL, 0, NULL, 0, NULL);
}
