# The compiled CTC loss: log-softmax, alpha and beta in log space, and the
# gradient with respect to the logits, one sample per OpenMP iteration.
#
# Layering: rnnkernels/ops.py validates the caller's arguments (targets,
# lengths, blank), flattens padded targets into one label array with a start
# offset per sample, and allocates every buffer; this module checks the
# buffers' sizes against each other (a wrong buffer is a ValueError here, never
# a write out of bounds) and then computes without the GIL.  No Python object
# is touched inside the loops.
#
# Per sample b (T_b = input_lengths[b] frames, S_b labels, L = 2 S_b + 1 states
# of the extended sequence l' = blank, l1, blank, ..., lS, blank):
#
# - lp[t] = log_softmax(logits[t, b]) for t < T_b, written into grad (# OUT);
# - alpha[t, s] over the reachable window only: s in [max(0, L - 2 (T_b - t)),
#   min(L, 2 (t + 1))) (a state outside it cannot be on a complete path);
# - loss = -logsumexp(alpha[T_b-1, L-1], alpha[T_b-1, L-2]);
# - beta walks time backwards with two rows; at each t the gradient row
#   replaces lp[t]: softmax(lp[t]) minus each state's posterior
#   exp(alpha + beta - lp - log P) added to its label's column.
#
# Each sample's work is independent and done in one fixed order, so the
# results never depend on the thread count.  Arithmetic is in the logits'
# dtype (float32 or float64, the fused type).
#
# Compiled once per instruction set like the recurrent kernels (setup.py makes a
# module _ctc_<isa> that includes this file; the tuning plan's build is the one
# ops.ctc_loss calls), because its exp/log loops follow the vector width.

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY, exp, log

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int rk_ctc_threads(void) { return omp_get_num_threads(); }
    #else
    static int rk_ctc_threads(void) { return 1; }
    #endif
    """
    int rk_ctc_threads() nogil

ctypedef long long int64


cdef extern from "_ctc.h" nogil:
    float rk_expf(float x)
    float rk_logf(float x)
    float rk_ctc_lse3f(float a, float b, float c)
    double rk_ctc_lse3(double a, double b, double c)


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return rk_expf(x)
    else:
        return exp(x)


cdef inline floating _log(floating x) noexcept nogil:
    if floating is float:
        return rk_logf(x)
    else:
        return log(x)


cdef inline floating _lse3(floating a, floating b, floating c) noexcept nogil:
    if floating is float:
        return rk_ctc_lse3f(a, b, c)
    else:
        return rk_ctc_lse3(a, b, c)


cdef inline void _window(int64 t, int64 T_b, int64 L, Py_ssize_t* start, Py_ssize_t* end) noexcept nogil:
    """States a complete path can be on at frame t: it has emitted at most 2 (t + 1)
    states and must still reach the last two with T_b - t frames left."""
    start[0] = L - 2 * (T_b - t)
    if start[0] < 0:
        start[0] = 0
    end[0] = 2 * (t + 1)
    if end[0] > L:
        end[0] = L


cdef floating _sample(const floating* z, Py_ssize_t zstride, floating* g, Py_ssize_t C,
                      const int64* labels, int64 S, int64 T_b, int blank,
                      floating* alpha, floating* beta, floating* pen, int64* st, Py_ssize_t W,
                      bint training) noexcept nogil:
    """One sample: returns its loss (inf when impossible); with ``training`` leaves its
    gradient in g[t * zstride + c] for t < T_b (zero for an impossible sample).
    z, g: the sample's first logit / gradient row, rows zstride apart.  Rows of alpha
    (T_b of W) keep two -inf cells in front of state 0, rows of beta (2 of W) two
    after state L-1, so the state loops need no bounds tests; pen[s] is 0 where a path
    may skip from state s-2 to s, -inf elsewhere; st[s] = l'[s]."""
    cdef Py_ssize_t t, s, c, start, end
    cdef int64 L = 2 * S + 1
    cdef floating m, total, lognorm, log_p, loss
    cdef floating* row
    cdef floating* prev
    cdef floating* cur
    cdef floating* bnext
    cdef floating* bcur
    cdef floating* swap
    cdef floating neg_inf = -INFINITY
    if T_b == 0:
        return 0.0 if S == 0 else INFINITY
    # the extended labels and where a path may skip a blank
    for s in range(L + 2):
        st[s] = blank if (s & 1) == 0 or s >= L else labels[s >> 1]
        pen[s] = neg_inf
    for s in range(3, L, 2):
        if labels[s >> 1] != labels[(s >> 1) - 1]:
            pen[s] = 0
    # IN z, OUT g: log_softmax of every real frame
    for t in range(T_b):
        row = g + t * zstride
        m = z[t * zstride]
        for c in range(1, C):
            m = z[t * zstride + c] if z[t * zstride + c] > m else m
        total = 0
        for c in range(C):
            total = total + _exp(z[t * zstride + c] - m)
        lognorm = m + _log(total)
        for c in range(C):
            row[c] = z[t * zstride + c] - lognorm
    # OUT alpha (T_b rows of W): -inf outside each frame's window
    for t in range(T_b):
        row = g + t * zstride
        cur = alpha + t * W + 2
        for s in range(-2, L):
            cur[s] = neg_inf
        _window(t, T_b, L, &start, &end)
        if t == 0:
            for s in range(start, end):
                cur[s] = row[st[s]]
        else:
            prev = cur - W
            for s in range(start, end):
                cur[s] = _lse3(prev[s], prev[s - 1], prev[s - 2] + pen[s]) + row[st[s]]
    cur = alpha + (T_b - 1) * W + 2
    log_p = _lse3(cur[L - 1], cur[L - 2], neg_inf)
    if log_p == neg_inf:
        if training:
            for t in range(T_b):
                for c in range(C):
                    g[t * zstride + c] = 0
        return INFINITY
    loss = -log_p
    if not training:
        return loss
    # beta, two rows: bnext holds beta[t + 1], bcur beta[t]; OUT g row t = softmax - occupancy
    bnext = beta
    bcur = beta + W
    for t in range(T_b - 1, -1, -1):
        row = g + t * zstride
        for s in range(L + 2):
            bcur[s] = neg_inf
        _window(t, T_b, L, &start, &end)
        if t == T_b - 1:
            for s in range(start, end):
                bcur[s] = row[st[s]] if s >= L - 2 else neg_inf
        else:
            for s in range(start, end):
                bcur[s] = _lse3(bnext[s], bnext[s + 1], bnext[s + 2] + pen[s + 2]) + row[st[s]]
        # alpha's row t becomes each state's posterior (it needs lp[t], which the row
        # still holds), then the row becomes the gradient
        cur = alpha + t * W + 2
        for s in range(start, end):
            cur[s] = _exp(cur[s] + bcur[s] - row[st[s]] - log_p)
        for c in range(C):
            row[c] = _exp(row[c])
        for s in range(start, end):
            row[st[s]] = row[st[s]] - cur[s]
        swap = bnext
        bnext = bcur
        bcur = swap
    return loss


def ctc_loss(const floating[:, :, ::1] logits, const int64[::1] labels, const int64[::1] offsets,
             const int64[::1] target_lengths, const int64[::1] input_lengths, int blank,
             floating[::1] losses, floating[:, :, ::1] grad, floating[:, :, ::1] alpha,
             floating[:, :, ::1] beta, floating[:, ::1] pen, int64[:, ::1] states,
             bint training, bint zero_infinity, int nthreads):
    """Fill losses (B,) and grad (T, B, C) (log-probabilities, then the gradient).  Scratch,
    W = 2 S_max + 3: alpha (B, T, W), beta (B, 2, W), pen (B, W), states (B, W).
    Returns the threads the batch loop ran on."""
    cdef Py_ssize_t T = logits.shape[0], B = logits.shape[1], C = logits.shape[2]
    cdef Py_ssize_t W = alpha.shape[2], n_labels = labels.shape[0]
    cdef Py_ssize_t b, t, c
    cdef int team = 1
    cdef int* team_p = &team
    cdef floating loss
    cdef const int64* lab
    if grad.shape[0] != T or grad.shape[1] != B or grad.shape[2] != C:
        raise ValueError("ctc_loss: grad must have the logits' shape")
    if (offsets.shape[0] != B or target_lengths.shape[0] != B or input_lengths.shape[0] != B
            or losses.shape[0] != B):
        raise ValueError("ctc_loss: offsets, lengths and losses must have B entries")
    if alpha.shape[0] != B or alpha.shape[1] < T or beta.shape[0] != B or beta.shape[1] != 2 \
            or beta.shape[2] != W or pen.shape[0] != B or pen.shape[1] != W \
            or states.shape[0] != B or states.shape[1] != W:
        raise ValueError("ctc_loss: alpha must be (B, T, W), beta (B, 2, W), pen and states (B, W)")
    if n_labels < 1:
        raise ValueError("ctc_loss: labels must hold at least one entry (a dummy when all are empty)")
    if not 0 <= blank < C:
        raise ValueError("ctc_loss: blank out of range")
    for b in range(B):
        if not 0 <= input_lengths[b] <= T or target_lengths[b] < 0 \
                or 2 * target_lengths[b] + 3 > W or offsets[b] < 0 \
                or offsets[b] + target_lengths[b] > n_labels:
            raise ValueError(f"ctc_loss: sample {b}: lengths or offsets out of range")
        for t in range(target_lengths[b]):
            if not 0 <= labels[offsets[b] + t] < C or labels[offsets[b] + t] == blank:
                raise ValueError(f"ctc_loss: sample {b}: label out of range or blank")
    if nthreads < 1:
        nthreads = 1
    lab = &labels[0]
    with nogil:
        for b in prange(B, num_threads=nthreads, schedule="dynamic"):
            if b == 0:
                team_p[0] = rk_ctc_threads()
            loss = _sample(&logits[0, b, 0], B * C, &grad[0, b, 0], C,
                           lab + offsets[b],
                           target_lengths[b], input_lengths[b], blank,
                           &alpha[b, 0, 0], &beta[b, 0, 0], &pen[b, 0], &states[b, 0], W, training)
            if loss == INFINITY and zero_infinity:
                loss = 0
            losses[b] = loss
            # frames past the sample's length have no gradient
            for t in range(input_lengths[b], T):
                for c in range(C):
                    grad[t, b, c] = 0
    return team
