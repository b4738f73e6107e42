/* The cells: point updates (_cells_t.h, once per element type) and the cell
 * table the skeleton (_recurrent.h) reads.
 *
 * Adding a cell that fits the skeleton's structure (gates summed with the
 * recurrent product, one state h, optionally a cell state c) is one pair of
 * point functions in _cells_t.h and one row of RK_CELLS below, plus its row in
 * rnnkernels/_core/cells.py and its readable twin in rnnkernels/reference.py.
 * Structural differences are flags the skeleton knows: RK_SEPARATE (the
 * recurrent product kept apart from the input projection: GRU after the
 * reset), RK_TWO_PHASE (a second product inside the step: GRU before the
 * reset), RK_CELL_STATE (a second state c), RK_CARRY (backward leaves a
 * direct carry to h_{t-1} in dh, which the next step's product adds to).
 * The LayerNorm cells normalise whole rows and run on the row-split driver
 * (RK_ROWS); their row functions are called by name there.
 */
#ifndef RK_CELLS_H
#define RK_CELLS_H
#include <math.h>
#include <stddef.h>
#include "_fastmath.h"

#define RK_LAYER_NORM_EPSILON 1e-5

#define RK_T float
#define RK_S(name) name##_f
#define RK_SIGMOID rk_sigmoidf
#define RK_TANH rk_tanhf
#define RK_SQRT sqrtf
#include "_cells_t.h"
#undef RK_T
#undef RK_S
#undef RK_SIGMOID
#undef RK_TANH
#undef RK_SQRT

#define RK_T double
#define RK_S(name) name##_d
#define RK_SIGMOID rk_sigmoid
#define RK_TANH rk_tanh
#define RK_SQRT sqrt
#include "_cells_t.h"
#undef RK_T
#undef RK_S
#undef RK_SIGMOID
#undef RK_TANH
#undef RK_SQRT

enum {
    RK_SEPARATE = 1,
    RK_TWO_PHASE = 2,
    RK_CELL_STATE = 4,
    RK_CARRY = 8,
    RK_ROWS = 16,
};

typedef struct {
    const char* name;
    int gates;
    int flags;
    /* forward and backward point updates; *2: the second phase (RK_TWO_PHASE) */
    void (*fwd_f)(ptrdiff_t, const rk_fwd_f*);
    void (*fwd2_f)(ptrdiff_t, const rk_fwd_f*);
    void (*bwd_f)(ptrdiff_t, const rk_bwd_f*);
    void (*bwd2_f)(ptrdiff_t, const rk_bwd_f*);
    void (*fwd_d)(ptrdiff_t, const rk_fwd_d*);
    void (*fwd2_d)(ptrdiff_t, const rk_fwd_d*);
    void (*bwd_d)(ptrdiff_t, const rk_bwd_d*);
    void (*bwd2_d)(ptrdiff_t, const rk_bwd_d*);
} rk_cell;

#define RK_CELL_ROW(name, gates, flags, f1, f2, b1, b2) \
    {name, gates, flags, f1##_f, f2##_f, b1##_f, b2##_f, f1##_d, f2##_d, b1##_d, b2##_d}
#define rk_none_f NULL
#define rk_none_d NULL

/* The kernel cells, by index (rnnkernels/_core/cells.py's KERNEL_CELLS). */
static const rk_cell RK_CELLS[] = {
    RK_CELL_ROW("lstm", 4, RK_CELL_STATE, rk_lstm_fwd, rk_none, rk_lstm_bwd, rk_none),
    RK_CELL_ROW("lstm_peephole", 4, RK_CELL_STATE, rk_lstm_peephole_fwd, rk_none,
                rk_lstm_peephole_bwd, rk_none),
    RK_CELL_ROW("gru", 3, RK_SEPARATE | RK_CARRY, rk_gru_fwd, rk_none, rk_gru_bwd, rk_none),
    RK_CELL_ROW("gru_reset_before", 3, RK_TWO_PHASE | RK_CARRY, rk_gru_rb_fwd1, rk_gru_rb_fwd2,
                rk_gru_rb_bwd1, rk_gru_rb_bwd2),
    RK_CELL_ROW("rnn_tanh", 1, 0, rk_rnn_tanh_fwd, rk_none, rk_rnn_tanh_bwd, rk_none),
    RK_CELL_ROW("rnn_relu", 1, 0, rk_rnn_relu_fwd, rk_none, rk_rnn_relu_bwd, rk_none),
    {"lstm_layer_norm", 4, RK_CELL_STATE | RK_ROWS, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    {"gru_layer_norm", 3, RK_CARRY | RK_ROWS, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
};
#define RK_NCELLS ((int)(sizeof(RK_CELLS) / sizeof(RK_CELLS[0])))

/* Software prefetch of a tile's rows for the next step.  The time loop walks
 * the (N, G*H) gate buffers one step at a time, a few rows of a few hundred
 * bytes each, far apart; the rows a step reads were written long before (the
 * input projection, or forward's gates when going backward) and sit in L3 or
 * DRAM by then, and the hardware prefetchers do not follow this pattern.
 * Fetching them one step ahead overlaps the misses with the current step's
 * GEMM. */
static inline void rk_prefetch_rows(const void* p, ptrdiff_t rows, ptrdiff_t stride,
                                    ptrdiff_t bytes, int for_write)
{
    const char* base = (const char*)p;
    if (p == NULL)
        return;
    for (ptrdiff_t r = 0; r < rows; r++)
        for (ptrdiff_t b = 0; b < bytes; b += 64) {
            if (for_write)
                __builtin_prefetch(base + r * stride + b, 1, 3);
            else
                __builtin_prefetch(base + r * stride + b, 0, 3);
        }
}

#endif
