"""LSTM forward and backward-through-time kernels.

Layering: rnnkernels/ops.py validates, sorts sequences by length, packs them,
permutes the weights and allocates every buffer; these functions only compute.

Packed layout (as PyTorch's PackedSequence): rows are sorted by length, step s
has counts[s] active rows (a prefix), stored at packed rows offsets[s] .. +
counts[s].  The state buffers h, c are (N + B, H): the state *entering* step s
for row j sits at offsets[s] + j, and a row's final state at N + j.  The state
leaving step s for row j therefore goes to offsets[s+1] + j while the row goes
on, or to N + j at its last step.  With equal lengths this is the familiar
(T+1, B, H) buffer with slot 0 = h0, and y is a view of it.

Parallel structure: hidden units are split into fixed tiles (tiles[k] ..
tiles[k+1]); weights are permuted so that a tile's four gates are contiguous
(columns 4*u0 .. 4*u1 hold i, f, g, o for units u0..u1).  Per step, each tile
does its slice of the recurrent GEMM and the fused gate update for its units,
then one barrier (Cython's prange inside a parallel block has none).  The
time loop runs on ``step_threads`` (capped by the per-step work, see ops.py),
the merged GEMMs before and after it on ``nthreads``.  Tiles
depend only on H, and the per-step GEMM sums in a fixed order, so results are
bitwise identical for any thread count.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid

from _blas cimport packed_gemm
from _cells cimport lstm_bwd, lstm_fwd, prefetch_rows, rk_barrier
from _common cimport (rk_team_size, add_dy_rows, checked_packed, checked_padding, checked_pieces, checked_rows,
                     gemm_rows, merged_backward, prefetch_dy_rows, store_y_row, sum_rows,
                     tile_start, zero_rows)


cdef void _forward_tile(floating* gates, floating* h, floating* c,
                        floating* y, const Py_ssize_t* y_rows,
                        const floating* w_hh_tile, const floating* bias,
                        Py_ssize_t n, Py_ssize_t n_next, Py_ssize_t off,
                        Py_ssize_t off_next, Py_ssize_t N, Py_ssize_t H,
                        Py_ssize_t u0, Py_ssize_t u1) noexcept nogil:
    cdef Py_ssize_t ub = u1 - u0, G4 = 4 * H, j, dst
    # The tile's gate rows of the next step, which the next GEMM accumulates into.
    prefetch_rows(gates + off_next * G4 + 4 * u0, n_next, G4, 4 * ub, True)
    # gates[off:off+n, 4u0:4u1] += h_prev[off:off+n, :] @ W_hh_tile (H x 4ub)
    packed_gemm(n, 4 * ub, H, h + off * H, H, w_hh_tile, gates + off * G4 + 4 * u0, G4, True)
    for j in range(n):
        dst = off_next + j if j < n_next else N + j
        lstm_fwd(ub, gates + (off + j) * G4 + 4 * u0, bias + 4 * u0,
                 c + (off + j) * H + u0, c + dst * H + u0, h + dst * H + u0)
        store_y_row(u0, ub, h + dst * H + u0, y, y_rows, off + j, H)


def forward(const floating[:, ::1] x,            # IN  (R, I) inputs: packed (R = N), or the caller's T*B rows
            const Py_ssize_t[::1] x_rows,        # IN  (N,) row of x for each packed row, or (0,): x is packed
            floating[:, ::1] xp,                 # OUT (N, I) x's rows packed (for backward), or (0, I) without x_rows
            const floating[:, ::1] w_ih_t,       # IN  (I, 4H) permuted W_ih^T
            const floating[::1] w_hh_tiles,      # IN  tile k: (H, 4*ub_k) packed, at tile_start
            const floating[::1] bias,            # IN  (4H,) permuted b_ih + b_hh
            const Py_ssize_t[::1] counts,        # IN  (S,) active rows per step
            const Py_ssize_t[::1] offsets,       # IN  (S+1,) packed row offsets
            const Py_ssize_t[::1] tiles,         # IN  (ntiles+1,) hidden-unit tile bounds
            floating[:, ::1] h,                  # IN/OUT (N+B, H) initial states placed, all states out
            floating[:, ::1] c,                  # IN/OUT (N+B, H)
            floating[:, ::1] gates,              # OUT (N, 4H) activated gates
            floating[:, ::1] y,                  # OUT (T*B, H) outputs; (0, H): y is a view of h (equal lengths)
            const Py_ssize_t[::1] y_rows,        # IN  (N,) row of y for each packed row, or (0,)
            const Py_ssize_t[::1] padding,       # IN  (T*B - N,) rows of y past each length, set to zero
            int nthreads, int step_threads):
    cdef Py_ssize_t S = counts.shape[0], N = gates.shape[0], H = h.shape[1]
    cdef Py_ssize_t I = x.shape[1], ntiles = tiles.shape[0] - 1
    cdef Py_ssize_t s, k
    if N == 0:
        return 0
    cdef floating* gp = &gates[0, 0]
    cdef floating* hp = &h[0, 0]
    cdef floating* cp = &c[0, 0]
    cdef const floating* wp = &w_hh_tiles[0]
    cdef const floating* bp = &bias[0]
    cdef floating* yp = &y[0, 0] if y.shape[0] else NULL
    cdef const Py_ssize_t* yrp = checked_rows(y_rows, N, y.shape[0], "y") if y.shape[0] else NULL
    cdef const Py_ssize_t* pad = checked_padding(padding, N, y.shape[0], "y") if y.shape[0] else NULL
    cdef const Py_ssize_t* xrp = checked_rows(x_rows, N, x.shape[0], "x")
    cdef floating* xpp = checked_packed(xp, N, I, xrp != NULL)
    cdef int team[1]
    team[0] = 0
    with nogil:
        zero_rows(nthreads, yp, H, H, pad, padding.shape[0])
        gemm_rows(nthreads, <int>N, <int>(4 * H), <int>I, &x[0, 0], <int>I, xrp, xpp,
                  &w_ih_t[0, 0], <int>(4 * H), gp, <int>(4 * H), NULL)
        with parallel(num_threads=step_threads):
            if threadid() == 0:
                team[0] = rk_team_size()
            for s in range(S):
                for k in prange(ntiles, schedule='static'):
                    _forward_tile(gp, hp, cp, yp, yrp, wp + tile_start(<floating*>NULL, &tiles[0], k, H, 4), bp, counts[s],
                                  counts[s + 1] if s + 1 < S else 0, offsets[s],
                                  offsets[s + 1], N, H, tiles[k], tiles[k + 1])
                rk_barrier()
    return team[0]


cdef void _backward_tile(floating* dgates, floating* dh, floating* dc, floating* db,
                         const floating* gates, const floating* c,
                         const floating* dy, const Py_ssize_t* dy_rows, const floating* w_hh_tile,
                         Py_ssize_t n, Py_ssize_t n_next, Py_ssize_t n_prev, Py_ssize_t off,
                         Py_ssize_t off_next, Py_ssize_t off_prev, Py_ssize_t N, Py_ssize_t H,
                         Py_ssize_t u0, Py_ssize_t u1) noexcept nogil:
    cdef Py_ssize_t ub = u1 - u0, G4 = 4 * H, j, dst
    # What the tile reads and writes at the previous step (the next one here).
    prefetch_rows(gates + off_prev * G4 + 4 * u0, n_prev, G4, 4 * ub, False)
    prefetch_rows(dgates + off_prev * G4 + 4 * u0, n_prev, G4, 4 * ub, True)
    prefetch_rows(c + off_prev * H + u0, n_prev, H, ub, False)
    if dy != NULL:
        prefetch_dy_rows(dy + u0, dy_rows, off_prev, n_prev, H, ub)
    # Gradient arriving through the recurrence from step s+1, for the rows
    # that go on: dh[0:n_next, u0:u1] = dgates[s+1] @ W_hh[:, u0:u1].  Rows
    # that end at step s keep dh_n, placed in dh before the loop.
    packed_gemm(n_next, ub, G4, dgates + off_next * G4, G4, w_hh_tile, dh + u0, H, False)
    if dy != NULL:
        add_dy_rows(n, ub, dy + u0, dy_rows, off, H, dh + u0, H)
    for j in range(n):
        dst = off_next + j if j < n_next else N + j
        lstm_bwd(ub, gates + (off + j) * G4 + 4 * u0, dgates + (off + j) * G4 + 4 * u0,
                 c + (off + j) * H + u0, c + dst * H + u0, dh + j * H + u0, dc + j * H + u0)
    sum_rows(n, 4 * ub, dgates + off * G4 + 4 * u0, G4, db + 4 * u0)


def backward(const floating[:, ::1] x,           # IN  (N, I) packed inputs (forward's xp, or its x if packed)
             const floating[:, ::1] w_ih,        # IN  (4H, I) permuted W_ih
             const floating[::1] w_hh_tiles,     # IN  tile k: (4H, ub_k) = W_hh[:, u0:u1] packed, at tile_start
             const floating[:, ::1] h,           # IN  (N+B, H) states from forward
             const floating[:, ::1] c,           # IN  (N+B, H)
             const floating[:, ::1] gates,       # IN  (N, 4H) activated gates
             const floating[:, ::1] dy,          # IN  (R, H) dL/dy, or (0, H) for none
             const Py_ssize_t[::1] dy_rows,      # IN  (N,) row of dy for each packed row, or (0,): packed
             const Py_ssize_t[::1] counts,       # IN  (S,)
             const Py_ssize_t[::1] offsets,      # IN  (S+1,)
             const Py_ssize_t[::1] tiles,        # IN  (ntiles+1,)
             floating[:, ::1] dh,                # IN/OUT (B, H) dL/dh_n in, dL/dh0 out
             floating[:, ::1] dc,                # IN/OUT (B, H) dL/dc_n in, dL/dc0 out
             floating[:, ::1] dgates,            # OUT (N, 4H) gate pre-activation gradients
             floating[:, ::1] dx,                # OUT (R, I): packed (R = N), or the caller's T*B rows
             const Py_ssize_t[::1] dx_rows,      # IN  (N,) row of dx for each packed row, or (0,)
             const Py_ssize_t[::1] padding,      # IN  (R - N,) rows of dx past each length, set to zero
             floating[:, ::1] dw_ih,             # OUT (4H, I) permuted
             floating[:, ::1] dw_hh,             # OUT (4H, H) permuted
             floating[::1] db,                   # OUT (4H,) permuted, zeros in
             int nthreads, int step_threads,
             int wgrad_pieces):
    cdef Py_ssize_t S = counts.shape[0], N = gates.shape[0], H = h.shape[1]
    cdef Py_ssize_t I = x.shape[1], ntiles = tiles.shape[0] - 1, G4 = 4 * H
    cdef Py_ssize_t s, k
    checked_pieces(wgrad_pieces)
    if N == 0:
        return 0
    cdef floating* dgp = &dgates[0, 0]
    cdef floating* dhp = &dh[0, 0]
    cdef floating* dcp = &dc[0, 0]
    cdef const floating* wp = &w_hh_tiles[0]
    cdef const floating* dyp = &dy[0, 0] if dy.shape[0] else NULL
    cdef const Py_ssize_t* dyrp = checked_rows(dy_rows, N, dy.shape[0], "dy") if dy.shape[0] else NULL
    cdef const Py_ssize_t* dxrp = checked_rows(dx_rows, N, dx.shape[0], "dx")
    cdef const Py_ssize_t* pad = checked_padding(padding, N, dx.shape[0], "dx")
    cdef int team[1]
    team[0] = 0
    with nogil:
        zero_rows(nthreads, &dx[0, 0], I, I, pad, padding.shape[0])
        with parallel(num_threads=step_threads):
            if threadid() == 0:
                team[0] = rk_team_size()
            for s in range(S - 1, -1, -1):
                for k in prange(ntiles, schedule='static'):
                    _backward_tile(dgp, dhp, dcp, &db[0], &gates[0, 0], &c[0, 0], dyp, dyrp,
                                   wp + tile_start(<floating*>NULL, &tiles[0], k, G4, 1), counts[s],
                                   counts[s + 1] if s + 1 < S else 0,
                                   counts[s - 1] if s > 0 else 0, offsets[s],
                                   offsets[s + 1], offsets[s - 1] if s > 0 else 0,
                                   N, H, tiles[k], tiles[k + 1])
                rk_barrier()
            # dL/dh0 for the rows active at step 0 (the others keep dh_n).
            for k in prange(ntiles, schedule='static'):
                packed_gemm(counts[0], tiles[k + 1] - tiles[k], G4, dgp, G4,
                            wp + tile_start(<floating*>NULL, &tiles[0], k, G4, 1),
                            dhp + tiles[k], H, False)
        merged_backward(nthreads, wgrad_pieces, <int>N, <int>I, <int>H, <int>G4, dgp, &x[0, 0],
                        &w_ih[0, 0], &h[0, 0], &dx[0, 0], dxrp, &dw_ih[0, 0], &dw_hh[0, 0])
    return team[0]
