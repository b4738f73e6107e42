# Work shared by every cell: the merged GEMMs that do not depend on the
# recurrence (input projection, dX, dW_ih, dW_hh) and row sums for the bias
# gradients.
#
# Each is split into pieces whose shapes depend only on the problem and the
# machine, never on the thread count, and every sum has a fixed order, so
# results are bitwise identical for any thread count (a split that followed
# the thread count would change how the weight gradients' rows are grouped,
# and OpenBLAS, the fallback, changes its last bits with a GEMM's shape).
# Threads take pieces by a static schedule.
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from _blas cimport gemm, pack_b, packed_gemm, packed_size, wgrad_t, wgrad_work
from _cells cimport prefetch_rows

# Rows per piece of a row-split GEMM (input projection, dX): large enough for
# the GEMM kernel's blocking, small enough to spread over 16 cores at T*B=6400.
# A piece whose output rows are scattered (dX of a variable-length batch)
# computes SCATTER_ROWS rows at a time into a buffer, then stores each row
# where it belongs.
cdef enum:
    ROW_PIECE = 256
    SCATTER_ROWS = 48
    # Below this many bytes a fork/join costs more than a second thread saves.
    PARALLEL_ZERO_BYTES = 1 << 16
    PARALLEL_PACK_BYTES = 1 << 20


cdef inline void _gemm_piece(Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t n, Py_ssize_t k,
                             const floating* a, Py_ssize_t lda, const Py_ssize_t* a_rows,
                             floating* a_packed, const floating* bp,
                             floating* c, Py_ssize_t ldc, const Py_ssize_t* c_rows,
                             floating* buf) noexcept nogil:
    """Rows r0 .. r1-1 of gemm_rows: gather them (a_rows), multiply, scatter
    them (c_rows) through buf (SCATTER_ROWS x n)."""
    cdef Py_ssize_t r, i0, m
    cdef const floating* ap = a + r0 * lda
    cdef Py_ssize_t ld = lda
    if a_rows != NULL:
        for r in range(r0, r1):
            memcpy(a_packed + r * k, a + a_rows[r] * lda, k * sizeof(floating))
        ap = a_packed + r0 * k
        ld = k
    if c_rows == NULL:
        packed_gemm(r1 - r0, n, k, ap, ld, bp, c + r0 * ldc, ldc, False)
        return
    i0 = r0
    while i0 < r1:
        m = min(<Py_ssize_t>SCATTER_ROWS, r1 - i0)
        packed_gemm(m, n, k, ap + (i0 - r0) * ld, ld, bp, buf, n, False)
        for r in range(m):
            memcpy(c + c_rows[i0 + r] * ldc, buf + r * n, n * sizeof(floating))
        i0 += m


cdef inline void gemm_rows(int nthreads, int rows, int n, int k,
                           const floating* a, int lda,      # IN  A (rows x k), or the caller's rows (a_rows)
                           const Py_ssize_t* a_rows,        # IN  row of a for each row of A, or NULL: a is A
                           floating* a_packed,              # OUT (rows x k) A gathered (with a_rows only)
                           const floating* b, int ldb,      # IN  (k x n)
                           floating* c, int ldc,            # OUT C (rows x n), or the caller's rows (c_rows)
                           const Py_ssize_t* c_rows) noexcept nogil:   # IN  row of c for each row of C, or NULL
    """C = A @ B, split over row pieces of A and C.  An even number of equal
    pieces (about ROW_PIECE rows each), so two threads get equal shares: with
    13 pieces of 256 rows (T*B = 3200) one thread did 7 and the other waited.

    With a variable-length batch the rows of A (the inputs) and of C (dX) are
    the caller's padded rows: each piece gathers its inputs into a_packed
    (which backward's dW_ih reads) and scatters its outputs, in parallel and
    while they are in cache; as separate single-threaded copies before and
    after the kernels they were a visible share of a small RNN's training step."""
    cdef Py_ssize_t piece, npiece = (rows + ROW_PIECE - 1) // ROW_PIECE, r, bp_values, j
    cdef Py_ssize_t nr = packed_size(<floating*>NULL, 1, 1)   # columns per panel
    cdef int r0, r1, size
    cdef void* raw
    cdef floating* bp
    cdef floating* bufs
    if npiece > 1:
        npiece += npiece % 2
    size = <int>((rows + npiece - 1) // npiece)
    bp_values = packed_size(<floating*>NULL, k, n)
    raw = malloc((bp_values + (nthreads * SCATTER_ROWS * n if c_rows != NULL else 0)) * sizeof(floating) + 64)
    if raw == NULL:  # no memory for the packed B: BLAS, a row at a time, allocates nothing
        for r in range(rows):
            if a_rows != NULL:
                memcpy(a_packed + r * k, a + a_rows[r] * lda, k * sizeof(floating))
                gemm(False, False, 1, n, k, 1, a_packed + r * k, k, b, ldb, 0,
                     c + (c_rows[r] if c_rows != NULL else r) * ldc, ldc)
            else:
                gemm(False, False, 1, n, k, 1, a + r * lda, lda, b, ldb, 0,
                     c + (c_rows[r] if c_rows != NULL else r) * ldc, ldc)
        return
    bp = <floating*>((<size_t>raw + 63) & ~(<size_t>63))  # panels on cache lines
    bufs = bp + bp_values
    if nthreads > 1 and bp_values * sizeof(floating) >= PARALLEL_PACK_BYTES:
        # Panel by panel on every thread: packed on one, a large B took a
        # tenth of the product's time.
        for j in prange((n + nr - 1) // nr, num_threads=nthreads, schedule='static'):
            pack_b(k, min(nr, n - j * nr), b + j * nr, ldb, bp + j * nr * k)
    else:
        pack_b(k, n, b, ldb, bp)
    for piece in prange(npiece, num_threads=nthreads, schedule='static'):
        r0 = piece * size
        r1 = rows if r0 + size > rows else r0 + size
        _gemm_piece(r0, r1, n, k, a, lda, a_rows, a_packed, bp, c, ldc, c_rows,
                    bufs + threadid() * SCATTER_ROWS * n)
    free(raw)


cdef inline void zero_rows(int nthreads, floating* c, Py_ssize_t ldc, Py_ssize_t cols,   # OUT
                           const Py_ssize_t* rows, Py_ssize_t nrows) noexcept nogil:     # IN
    """c[rows[i], :cols] = 0: the padding of a variable-length batch's outputs
    (y, dX), which the kernels write in the caller's padded layout.  Nothing
    when rows is NULL (no padding, or no such output)."""
    cdef Py_ssize_t i
    if rows == NULL:
        return
    cdef int threads = nthreads if nrows * cols * sizeof(floating) >= PARALLEL_ZERO_BYTES else 1
    for i in prange(nrows, num_threads=threads, schedule='static'):
        memset(c + rows[i] * ldc, 0, cols * sizeof(floating))


cdef inline void weight_grads(int nthreads, int npiece, int m, int k,
                              const floating* a, int lda,             # IN  (k x m): per-row gate gradients
                              int n1, const floating* b1, int ldb1,   # IN  (k x n1): per-row inputs or states
                              floating* c1, int ldc1,                 # OUT (m x n1) = A^T B1
                              int n2, const floating* b2, int ldb2,   # IN  (k x n2), or n2 = 0
                              floating* c2, int ldc2) noexcept nogil: # OUT (m x n2) = A^T B2
    """Weight gradients, the reductions over all k = sum(lengths) rows: A^T B1
    and A^T B2 (dW_ih and dW_hh from the same gate gradients), on our kernel
    with A packed once for both.  The k rows are split into npiece equal
    pieces (ops._wgrad_pieces: a function of the shape and the machine, never
    of the thread count); each piece sums its rows into its own buffer,
    transposed, and the pieces are added in order while transposing back, so
    the summation order is fixed.  Our kernel rather than OpenBLAS because an
    OpenBLAS that does not know the CPU runs older, narrower kernels
    (docs/design.md, "Weight gradients")."""
    cdef Py_ssize_t piece, q, i, i0, j, n = n1 + n2, size = (k + npiece - 1) // npiece
    cdef Py_ssize_t work = (wgrad_work(<floating*>NULL, n1, n2) + 15) // 16 * 16
    cdef Py_ssize_t part = (n * m + 15) // 16 * 16, r0, r1
    cdef floating* base
    cdef floating* src
    cdef floating s
    cdef void* raw
    if m <= 0 or n <= 0:
        return
    raw = malloc(npiece * (work + part) * sizeof(floating) + 64)
    if raw == NULL:  # no memory for the pieces: OpenBLAS, one call each, allocates nothing here
        gemm(True, False, m, n1, k, 1, a, lda, b1, ldb1, 0, c1, ldc1)
        if n2 > 0:
            gemm(True, False, m, n2, k, 1, a, lda, b2, ldb2, 0, c2, ldc2)
        return
    base = <floating*>((<size_t>raw + 63) & ~(<size_t>63))
    for piece in prange(npiece, num_threads=nthreads, schedule='static'):
        r0 = piece * size
        r1 = k if r0 + size > k else r0 + size
        wgrad_t(m, r1 - r0 if r1 > r0 else 0, a + r0 * lda, lda, n1, b1 + r0 * ldb1, ldb1,
                n2, b2 + r0 * ldb2 if n2 > 0 else b2, ldb2,
                base + npiece * work + piece * part, base + piece * work)
    # c[i, j] = sum over pieces of out_piece[j, i], sixteen rows of c at a time
    # so that each read of a piece's row takes a whole cache line.
    for i0 in prange(0, m, 16, num_threads=nthreads, schedule='static'):
        for j in range(n):
            for i in range(i0, min(i0 + 16, m)):
                src = base + npiece * work + j * m + i
                s = src[0]
                for q in range(1, npiece):
                    s = s + src[q * part]
                if j < n1:
                    c1[i * ldc1 + j] = s
                else:
                    c2[i * ldc2 + j - n1] = s
    free(raw)


cdef inline int checked_pieces(int npiece) except -1:
    if npiece < 1:
        raise ValueError(f"wgrad_pieces: expected at least 1, got {npiece}")
    return npiece


cdef inline Py_ssize_t tile_start(const floating* like, const Py_ssize_t* tiles, Py_ssize_t k,
                                   Py_ssize_t rows, Py_ssize_t per_unit) noexcept nogil:
    """Where weight tile k starts in a buffer of packed tiles (ops._pack_blocks):
    tile j has ``rows`` rows and per_unit * (its unit count) columns, padded
    to whole panels.  ``like`` only selects the type."""
    cdef Py_ssize_t j, start = 0
    for j in range(k):
        start += packed_size(like, rows, per_unit * (tiles[j + 1] - tiles[j]))
    return start


cdef inline const Py_ssize_t* checked_rows(const Py_ssize_t[::1] rows, Py_ssize_t n_packed,
                                          Py_ssize_t n_rows, str name) except *:
    """``rows`` (one row of an (n_rows, H) caller array per packed row) as a
    pointer after checking every index, or NULL for an empty ``rows`` (the
    array is packed itself and must have n_packed rows)."""
    cdef Py_ssize_t p
    if rows.shape[0] == 0:
        if n_rows != n_packed:
            raise ValueError(f"{name}: expected {n_packed} packed rows, got {n_rows}")
        return NULL
    if rows.shape[0] != n_packed:
        raise ValueError(f"{name}_rows: expected {n_packed} row indices, got {rows.shape[0]}")
    for p in range(n_packed):
        if rows[p] < 0 or rows[p] >= n_rows:
            raise ValueError(f"{name}_rows: index {rows[p]} out of range for {n_rows} rows")
    return &rows[0]


cdef inline const Py_ssize_t* checked_padding(const Py_ssize_t[::1] padding, Py_ssize_t n_packed,
                                              Py_ssize_t n_rows, str name) except *:
    """``padding`` (the rows of an (n_rows, F) caller array that no packed row
    fills: n_rows - n_packed of them, for the kernel to zero) as a pointer
    after checking every index, or NULL when there are none."""
    cdef Py_ssize_t i
    if padding.shape[0] != n_rows - n_packed:
        raise ValueError(f"padding: expected {n_rows - n_packed} rows of {name} "
                         f"({n_rows} rows, {n_packed} packed), got {padding.shape[0]}")
    for i in range(padding.shape[0]):
        if padding[i] < 0 or padding[i] >= n_rows:
            raise ValueError(f"padding: index {padding[i]} out of range for {n_rows} rows of {name}")
    return &padding[0] if padding.shape[0] else NULL


cdef inline floating* checked_packed(floating[:, ::1] xp, Py_ssize_t n_packed, Py_ssize_t cols,
                                     bint wanted) except? NULL:
    """The buffer that the input projection gathers the caller's rows into:
    (n_packed, cols) when wanted, as a pointer; NULL otherwise."""
    if not wanted:
        return NULL
    if xp.shape[0] != n_packed or xp.shape[1] != cols:
        raise ValueError(f"xp: expected shape ({n_packed}, {cols}) for the packed inputs, "
                         f"got ({xp.shape[0]}, {xp.shape[1]})")
    return &xp[0, 0]


cdef inline const floating* dy_row(const floating* dy, const Py_ssize_t* dy_rows,
                                  Py_ssize_t p, Py_ssize_t ldy) noexcept nogil:
    """Row of dL/dy for packed row p: dy is the caller's (T*B, H) array, read
    through dy_rows (its row for each packed row), or already packed (NULL)."""
    return dy + (dy_rows[p] if dy_rows != NULL else p) * ldy


cdef inline void add_dy_rows(Py_ssize_t rows, Py_ssize_t cols,
                             const floating* dy, const Py_ssize_t* dy_rows,  # IN  see dy_row
                             Py_ssize_t first, Py_ssize_t ldy,
                             floating* out, Py_ssize_t ldo) noexcept nogil:  # IN/OUT
    """out[i] += dL/dy of packed row first + i, i < rows (adds dL/dy to the
    recurrent gradient).  Reading the caller's array in place spares the
    backward pass a packed copy of dy: a full pass over (N, H) values."""
    cdef Py_ssize_t i, j
    cdef const floating* a
    for i in range(rows):
        a = dy_row(dy, dy_rows, first + i, ldy)
        for j in range(cols):
            out[i * ldo + j] += a[j]


cdef inline void prefetch_dy_rows(const floating* dy, const Py_ssize_t* dy_rows,
                                  Py_ssize_t first, Py_ssize_t rows, Py_ssize_t ldy,
                                  Py_ssize_t cols) noexcept nogil:
    cdef Py_ssize_t i
    if dy_rows == NULL:
        prefetch_rows(dy + first * ldy, rows, ldy, cols, False)
    else:
        for i in range(rows):
            prefetch_rows(dy + dy_rows[first + i] * ldy, 1, ldy, cols, False)


cdef inline void store_y_row(Py_ssize_t col, Py_ssize_t cols, const floating* h,
                             floating* y, const Py_ssize_t* y_rows, Py_ssize_t p,
                             Py_ssize_t ldy) noexcept nogil:
    """Copy the state just computed for packed row p (columns col .. col+cols)
    to its row of the caller's
    (T*B, H) output, while it is in L1 (variable-length batches only: with
    equal lengths y is a view of the state buffer).  A separate scatter after
    the loop read every state back from memory."""
    if y != NULL:
        memcpy(y + y_rows[p] * ldy + col, h, cols * sizeof(floating))


cdef inline void sum_rows(Py_ssize_t rows, Py_ssize_t cols,
                          const floating* a, Py_ssize_t lda,   # IN  (rows x cols)
                          floating* out) noexcept nogil:       # IN/OUT (cols,)
    """out += the rows of a, in row order.  The time loops add each step's gate
    gradients to the bias gradients this way while the rows are still in
    cache: a separate pass over the (N, G) gradients after the loop read them
    back from memory."""
    cdef Py_ssize_t i, j
    for i in range(rows):
        for j in range(cols):
            out[j] += a[i * lda + j]


cdef inline void merged_backward(int nthreads, int wgrad_pieces, int N, int I, int H, int G,
                                 const floating* dg,      # IN  (N, G): gate pre-activation gradients
                                 const floating* x,       # IN  (N, I) packed inputs
                                 const floating* w_ih,    # IN  (G, I) permuted W_ih
                                 const floating* h_prev,  # IN  (N, H) states entering each step
                                 floating* dx,            # OUT (N, I), or the caller's rows (dx_rows)
                                 const Py_ssize_t* dx_rows,  # IN  row of dx for each packed row, or NULL
                                 floating* dw_ih,         # OUT (G, I)
                                 floating* dw_hh) noexcept nogil:   # OUT (G, H)
    """Every gradient that does not depend on the recurrence, each over all N
    packed rows, after the time loop: dX = dG W_ih, and dW_ih = dG^T X with
    dW_hh = dG^T H_prev in one pass (weight_grads).  G is the number of gate
    columns (gates * H).  The bias gradients are summed inside the time loop."""
    gemm_rows(nthreads, N, I, G, dg, G, NULL, NULL, w_ih, I, dx, I, dx_rows)
    weight_grads(nthreads, wgrad_pieces, G, N, dg, G, I, x, I, dw_ih, I, H, h_prev, H, dw_hh, H)


cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define rk_team_size() omp_get_num_threads()
    #else
    #define rk_team_size() 1
    #endif
    """
    int rk_team_size() noexcept nogil  # threads of the enclosing parallel region
