# Fused per-row gate updates (see _cells.h), generic over float/double.
# The kernels call these after each tile's recurrent GEMM.
from cython cimport floating

cdef extern from "_cells.h" nogil:
    ctypedef long ptrdiff_t
    void rk_barrier()  # `omp barrier` (nothing in a serial build)
    void rk_prefetch_rows(const void* p, ptrdiff_t rows, ptrdiff_t stride, ptrdiff_t nbytes, int for_write)
    void rk_lstm_fwd_f(ptrdiff_t ub, float* g, const float* b, const float* c_prev, float* c_new, float* h_new)
    void rk_lstm_fwd_d(ptrdiff_t ub, double* g, const double* b, const double* c_prev, double* c_new, double* h_new)
    void rk_lstm_bwd_f(ptrdiff_t ub, const float* g, float* dg, const float* c_prev, const float* c_new, const float* dh, float* dc)
    void rk_lstm_bwd_d(ptrdiff_t ub, const double* g, double* dg, const double* c_prev, const double* c_new, const double* dh, double* dc)
    void rk_rnn_fwd_f(ptrdiff_t ub, const float* g, const float* b, float* h_new, int relu)
    void rk_rnn_fwd_d(ptrdiff_t ub, const double* g, const double* b, double* h_new, int relu)
    void rk_rnn_bwd_f(ptrdiff_t ub, const float* h_new, const float* dh, float* dg, int relu)
    void rk_rnn_bwd_d(ptrdiff_t ub, const double* h_new, const double* dh, double* dg, int relu)
    void rk_gru_fwd_f(ptrdiff_t ub, float* gx, const float* gh, const float* b, const float* b_hn, const float* h_prev, float* hn, float* h_new)
    void rk_gru_fwd_d(ptrdiff_t ub, double* gx, const double* gh, const double* b, const double* b_hn, const double* h_prev, double* hn, double* h_new)
    void rk_gru_bwd_f(ptrdiff_t ub, const float* g, const float* hn, const float* h_prev, float* dh, float* dgx, float* dgh)
    void rk_gru_bwd_d(ptrdiff_t ub, const double* g, const double* hn, const double* h_prev, double* dh, double* dgx, double* dgh)
    void rk_gru_rb_fwd1_f(ptrdiff_t ub, float* g, const float* b, const float* h_prev, float* rh)
    void rk_gru_rb_fwd1_d(ptrdiff_t ub, double* g, const double* b, const double* h_prev, double* rh)
    void rk_gru_rb_fwd2_f(ptrdiff_t ub, float* g, const float* b, const float* h_prev, float* h_new)
    void rk_gru_rb_fwd2_d(ptrdiff_t ub, double* g, const double* b, const double* h_prev, double* h_new)
    void rk_gru_rb_bwd1_f(ptrdiff_t ub, const float* g, const float* h_prev, float* dh, float* dg)
    void rk_gru_rb_bwd1_d(ptrdiff_t ub, const double* g, const double* h_prev, double* dh, double* dg)
    void rk_gru_rb_bwd2_f(ptrdiff_t ub, const float* g, const float* h_prev, const float* drh, float* dh, float* dg)
    void rk_gru_rb_bwd2_d(ptrdiff_t ub, const double* g, const double* h_prev, const double* drh, double* dh, double* dg)


cdef inline void lstm_fwd(ptrdiff_t ub, floating* g, const floating* b, const floating* c_prev, floating* c_new, floating* h_new) noexcept nogil:
    if floating is float:
        rk_lstm_fwd_f(ub, g, b, c_prev, c_new, h_new)
    else:
        rk_lstm_fwd_d(ub, g, b, c_prev, c_new, h_new)


cdef inline void lstm_bwd(ptrdiff_t ub, const floating* g, floating* dg, const floating* c_prev, const floating* c_new, const floating* dh, floating* dc) noexcept nogil:
    if floating is float:
        rk_lstm_bwd_f(ub, g, dg, c_prev, c_new, dh, dc)
    else:
        rk_lstm_bwd_d(ub, g, dg, c_prev, c_new, dh, dc)


cdef inline void rnn_fwd(ptrdiff_t ub, const floating* g, const floating* b, floating* h_new, int relu) noexcept nogil:
    if floating is float:
        rk_rnn_fwd_f(ub, g, b, h_new, relu)
    else:
        rk_rnn_fwd_d(ub, g, b, h_new, relu)


cdef inline void rnn_bwd(ptrdiff_t ub, const floating* h_new, const floating* dh, floating* dg, int relu) noexcept nogil:
    if floating is float:
        rk_rnn_bwd_f(ub, h_new, dh, dg, relu)
    else:
        rk_rnn_bwd_d(ub, h_new, dh, dg, relu)


cdef inline void gru_fwd(ptrdiff_t ub, floating* gx, const floating* gh, const floating* b, const floating* b_hn, const floating* h_prev, floating* hn, floating* h_new) noexcept nogil:
    if floating is float:
        rk_gru_fwd_f(ub, gx, gh, b, b_hn, h_prev, hn, h_new)
    else:
        rk_gru_fwd_d(ub, gx, gh, b, b_hn, h_prev, hn, h_new)


cdef inline void gru_bwd(ptrdiff_t ub, const floating* g, const floating* hn, const floating* h_prev, floating* dh, floating* dgx, floating* dgh) noexcept nogil:
    if floating is float:
        rk_gru_bwd_f(ub, g, hn, h_prev, dh, dgx, dgh)
    else:
        rk_gru_bwd_d(ub, g, hn, h_prev, dh, dgx, dgh)


cdef inline void gru_rb_fwd1(ptrdiff_t ub, floating* g, const floating* b, const floating* h_prev, floating* rh) noexcept nogil:
    if floating is float:
        rk_gru_rb_fwd1_f(ub, g, b, h_prev, rh)
    else:
        rk_gru_rb_fwd1_d(ub, g, b, h_prev, rh)


cdef inline void gru_rb_fwd2(ptrdiff_t ub, floating* g, const floating* b, const floating* h_prev, floating* h_new) noexcept nogil:
    if floating is float:
        rk_gru_rb_fwd2_f(ub, g, b, h_prev, h_new)
    else:
        rk_gru_rb_fwd2_d(ub, g, b, h_prev, h_new)


cdef inline void gru_rb_bwd1(ptrdiff_t ub, const floating* g, const floating* h_prev, floating* dh, floating* dg) noexcept nogil:
    if floating is float:
        rk_gru_rb_bwd1_f(ub, g, h_prev, dh, dg)
    else:
        rk_gru_rb_bwd1_d(ub, g, h_prev, dh, dg)


cdef inline void gru_rb_bwd2(ptrdiff_t ub, const floating* g, const floating* h_prev, const floating* drh, floating* dh, floating* dg) noexcept nogil:
    if floating is float:
        rk_gru_rb_bwd2_f(ub, g, h_prev, drh, dh, dg)
    else:
        rk_gru_rb_bwd2_d(ub, g, h_prev, drh, dh, dg)


cdef inline void prefetch_rows(const floating* p, Py_ssize_t rows, Py_ssize_t stride,
                               Py_ssize_t count, bint for_write) noexcept nogil:
    """Prefetch ``count`` values of each of ``rows`` rows ``stride`` values apart."""
    if rows > 0:
        rk_prefetch_rows(p, rows, stride * sizeof(floating), count * sizeof(floating), for_write)
