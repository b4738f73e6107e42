/* The time-loop skeleton (_recurrent_t.h, once per element type) and the two
 * call descriptions it runs from, filled by _kernels.pyx from the buffers
 * ops.py allocated.  The pointers are untyped here so that one description
 * serves float and double (`dtype` says which); the skeleton casts them.
 *
 * Layering: ops.py validates and allocates; rnnkernels/_core plans the packed
 * layout and packs the weights; _kernels.pyx checks every buffer against the
 * sizes and fills these descriptions; the skeleton computes, with the cells'
 * point updates (_cells.h) and the GEMM kernel (_smallgemm.h).
 */
#ifndef RK_RECURRENT_H
#define RK_RECURRENT_H
#include <stdlib.h>
#include <string.h>
#include "_cells.h"
#include "_smallgemm.h"

#ifdef _OPENMP
#include <omp.h>
static inline int rk_thread_num(void) { return omp_get_thread_num(); }
static inline int rk_team_size(void) { return omp_get_num_threads(); }
#else
static inline int rk_thread_num(void) { return 0; }
static inline int rk_team_size(void) { return 1; }
#endif

enum {
    /* Rows per piece of a row-split GEMM (input projection, dX): large enough
     * for the GEMM kernel's blocking, small enough to spread over 16 cores at
     * T*B = 6400.  A piece whose output rows are scattered computes
     * RK_SCATTER_ROWS rows at a time into a buffer, then stores each row. */
    RK_ROW_PIECE = 256,
    RK_SCATTER_ROWS = 48,
    /* Below these sizes a fork/join costs more than a second thread saves. */
    RK_PARALLEL_ZERO_BYTES = 1 << 16,
    RK_PARALLEL_PACK_BYTES = 1 << 20,
};

/* One forward call (NULL / 0: not used by this call). */
typedef struct {
    int dtype;                         /* 4: float, 8: double */
    int cell;                          /* row of RK_CELLS */
    int nthreads, step_threads;        /* the merged GEMMs', the time loop's */
    ptrdiff_t solo_from;               /* steps from this one on run on the calling thread alone */
    int rows;                          /* split the batch rows over the threads (one tile of all units) */
    ptrdiff_t S, N, B, I, H, P;        /* steps, packed rows, batch, inputs, hidden, outputs (P = H unless projecting) */
    const ptrdiff_t* counts;           /* (S,) active rows per step */
    const ptrdiff_t* offsets;          /* (S+1,) packed row where step s starts */
    const ptrdiff_t* tiles;            /* (ntiles+1,) hidden-unit tile bounds */
    ptrdiff_t ntiles;
    const ptrdiff_t* ptiles;           /* (nptiles+1,) projection output tile bounds */
    ptrdiff_t nptiles;
    const void* x;                     /* (R, I) inputs: packed, or the caller's rows (x_rows) */
    const ptrdiff_t* x_rows;           /* (N,) row of x for each packed row, or NULL */
    void* xp;                          /* (N, I) x's rows packed (with x_rows), for backward */
    const void* w_ih_t;                /* (I, G*H) permuted W_ih^T */
    const void* w_ih_fwd;              /* or blocks of it, one a tile (w_ih_fwd_starts): the input */
    const ptrdiff_t* w_ih_fwd_starts;  /* side computed inside each step, no input projection pass */
    const void* w_fwd;                 /* forward weight blocks of W_hh (w_fwd_starts) */
    const ptrdiff_t* w_fwd_starts;
    const void* w_hr_fwd;              /* projection: blocks of W_hr^T over ptiles */
    const ptrdiff_t* w_hr_fwd_starts;
    const void* bias;                  /* (G*H,) permuted: b_ih + b_hh (GRU: see ops) */
    const void* b_hn;                  /* GRU reset after: (H,) */
    const void* b_hh;                  /* LayerNorm GRU: (3H,) */
    const void* peep;                  /* peephole: (3H,) per tile [w_ci w_cf w_co] */
    const void* mask;                  /* recurrent dropout: (B, P), sorted rows */
    const void* zh;                    /* zoneout weights of h: (N, P) packed, or NULL for the rate */
    const void* zc;                    /* of c: (N, H) */
    double zh_rate, zc_rate;           /* the rates when the arrays are NULL; negative: no zoneout */
    void* h;                           /* (N+B, P) states */
    void* c;                           /* (N+B, H) cell states (LSTM) */
    void* hm;                          /* (N+B, P) masked states (recurrent dropout) */
    void* gates;                       /* (N, G*H), or (B, G*H) with step_gates */
    int step_gates;                    /* gates and aux hold one step's rows (its row j at row j):
                                          nothing after the step reads them (inference, or the RNN),
                                          and the input side runs inside the steps */
    void* aux;                         /* (N, H), or (B, H) with step_gates; GRU: W_hn h + b_hn, or r * h */
    void* gh;                          /* (B, G*H) scratch: GRU's separate recurrent product */
    void* m;                           /* (N, H) projection: o * tanh(c) */
    void* ctilde;                      /* (N, H) zoneout of c: c~ */
    const void* gamma_ih;              /* LayerNorm: (G*H,) */
    const void* gamma_hh;              /* (G*H,) */
    const void* gamma_c;               /* LSTM: (H,) */
    const void* beta_c;                /* LSTM: (H,) */
    void* x_hat;                       /* (N, G*H) normalised input projection */
    void* rec_hat;                     /* (N, G*H) normalised recurrent product */
    void* c_hat;                       /* LSTM: (N, H) normalised c~ */
    void* rstd;                        /* (N, 3) 1/std of those three */
    void* rec;                         /* (B, G*H) scratch: the raw recurrent product */
    void* y;                           /* (R, P) outputs in the caller's rows, or NULL (a view of h) */
    const ptrdiff_t* y_rows;           /* (N,) */
    const ptrdiff_t* padding;          /* rows of y that no packed row fills, zeroed */
    ptrdiff_t npadding;
    int team;                          /* out: threads the time loop ran on (-1: out of memory) */
} rk_forward;

/* One backward call: forward's saved buffers, the upstream gradients in,
 * every gradient out. */
typedef struct {
    int dtype, cell, nthreads, step_threads, wgrad_pieces;
    ptrdiff_t solo_from;               /* as forward's: steps from this one on run on one thread */
    int rows;                          /* the batch-row split (plain LSTM and RNN)                */
    ptrdiff_t S, N, B, I, H, P;
    const ptrdiff_t* counts;
    const ptrdiff_t* offsets;
    const ptrdiff_t* tiles;
    ptrdiff_t ntiles;
    const ptrdiff_t* ptiles;
    ptrdiff_t nptiles;
    const void* x;                     /* (N, I) packed inputs */
    const void* w_ih;                  /* (G*H, I) permuted */
    const void* w_bwd;                 /* backward blocks of W_hh: over tiles, or ptiles when projecting */
    const void* w_bwd_n;               /* GRU reset before: the same with only the n rows */
    const ptrdiff_t* w_bwd_starts;
    const void* w_hr_bwd;              /* projection: blocks of W_hr over tiles */
    const ptrdiff_t* w_hr_bwd_starts;
    const void* peep;
    const void* mask;
    const void* zh;
    const void* zc;
    double zh_rate, zc_rate;
    const void* h;
    const void* c;
    const void* hm;
    const void* gates;
    const void* aux;
    const void* m;
    const void* ctilde;
    const void* gamma_ih;
    const void* gamma_hh;
    const void* gamma_c;
    const void* beta_c;
    const void* x_hat;
    const void* rec_hat;
    const void* c_hat;
    const void* rstd;
    const void* dy;                    /* (R, P) dL/dy in the caller's rows, or NULL */
    const ptrdiff_t* dy_rows;          /* (N,) or NULL (dy packed) */
    void* dh;                          /* (B, P) dL/dh_n in, dL/dh0 out */
    void* dc;                          /* (B, H) dL/dc_n in, dL/dc0 out */
    void* dgates;                      /* (N, G*H); the LayerNorm cells keep one row per thread instead */
    void* dgh;                         /* GRU reset after: (2B, G*H) two-step ring */
    void* drh;                         /* GRU reset before: (B, H) scratch */
    void* dhp;                         /* projection: (N, P) dL/dh~ of each row */
    void* drec;                        /* LayerNorm: (N, G*H) the raw recurrent product's gradient */
    void* drec_x;                      /* LayerNorm: (N, G*H) the raw input projection's gradient */
    void* dx;                          /* (R, I) */
    const ptrdiff_t* dx_rows;
    const ptrdiff_t* padding;
    ptrdiff_t npadding;
    void* dw_ih;                       /* (G*H, I) permuted */
    void* dw_hh;                       /* (G*H, P) permuted */
    void* dw_hn;                       /* GRU reset before: (G*H, H) */
    void* dw_hr;                       /* (P, H) */
    void* db;                          /* (G*H,) permuted, zeros in */
    void* db_hh;                       /* GRU: (G*H,) zeros in */
    void* dpeep;                       /* (3H,) zeros in */
    void* dgamma_ih;
    void* dgamma_hh;
    void* dgamma_c;
    void* dbeta_c;
    int team;
} rk_backward;

/* rows t, t + L, ... below n: how many */
static inline ptrdiff_t rk_lane_rows(ptrdiff_t n, ptrdiff_t t, ptrdiff_t L)
{
    return n > t ? (n - t + L - 1) / L : 0;
}

#define RK_T float
#define RK_S(name) name##_f
#define RK_G(name) rk_small_sgemm_##name
#define RK_CELL_FWD(cell) ((cell)->fwd_f)
#define RK_CELL_FWD2(cell) ((cell)->fwd2_f)
#define RK_CELL_BWD(cell) ((cell)->bwd_f)
#define RK_CELL_BWD2(cell) ((cell)->bwd2_f)
#include "_recurrent_t.h"
#undef RK_T
#undef RK_S
#undef RK_G
#undef RK_F
#undef RK_CELL_FWD
#undef RK_CELL_FWD2
#undef RK_CELL_BWD
#undef RK_CELL_BWD2
#undef RK_PREFETCH
#undef RK_DST

#define RK_T double
#define RK_S(name) name##_d
#define RK_G(name) rk_small_dgemm_##name
#define RK_CELL_FWD(cell) ((cell)->fwd_d)
#define RK_CELL_FWD2(cell) ((cell)->fwd2_d)
#define RK_CELL_BWD(cell) ((cell)->bwd_d)
#define RK_CELL_BWD2(cell) ((cell)->bwd2_d)
#include "_recurrent_t.h"
#undef RK_T
#undef RK_S
#undef RK_G
#undef RK_F
#undef RK_CELL_FWD
#undef RK_CELL_FWD2
#undef RK_CELL_BWD
#undef RK_CELL_BWD2
#undef RK_PREFETCH
#undef RK_DST

static inline void rk_run_forward(rk_forward* p)
{
    if (p->dtype == 4)
        rk_forward_f(p);
    else
        rk_forward_d(p);
}

static inline void rk_run_backward(rk_backward* p)
{
    if (p->dtype == 4)
        rk_backward_f(p);
    else
        rk_backward_d(p);
}

static inline int rk_cell_count(void) { return RK_NCELLS; }
static inline const char* rk_cell_name(int k) { return RK_CELLS[k].name; }
static inline int rk_cell_gates(int k) { return RK_CELLS[k].gates; }
static inline int rk_cell_flags(int k) { return RK_CELLS[k].flags; }

#endif
