/* The point updates of the cells for one element type RK_T (included twice
 * by _cells.h, for float and double; RK_S(name) gives name_f / name_d).
 *
 * A point update handles one batch row of one hidden-unit tile (ub units) at
 * one time step, after the skeleton (_recurrent_t.h) has added the tile's
 * recurrent product to the gate pre-activations.  It reads and writes only the
 * pointers of its row (rk_fwd / rk_bwd below): every loop, barrier, GEMM,
 * prefetch, mask, zoneout mix and output row belongs to the skeleton.  Each
 * function copies the pointers it uses into restrict-qualified locals, without
 * which gcc cannot prove that the rows do not overlap and leaves the loop
 * scalar.
 *
 * Gate layout inside a tile row: G blocks of ub values, in PyTorch's gate
 * order (LSTM i f g o, GRU r z n, RNN one block).
 */

/* What a forward point update may read and write for one row (NULL: unused). */
typedef struct {
    RK_T* g;              /* the tile's G*ub gate values: pre-activations in, saved values out */
    const RK_T* gh;       /* GRU (reset after): the recurrent product W_hh h, kept apart, G*ub */
    const RK_T* b;        /* the bias, G*ub */
    const RK_T* b_hn;     /* GRU (reset after): b_hn, ub */
    const RK_T* h_prev;   /* h_{t-1}, ub */
    const RK_T* hm_prev;  /* h_{t-1} as the recurrent product saw it (masked), ub */
    RK_T* h_new;          /* h_t (with a projection, m = o tanh(c)), ub */
    const RK_T* c_prev;   /* LSTM: c_{t-1}, ub */
    RK_T* c_new;          /* LSTM: c~_t, ub */
    RK_T* aux;            /* GRU: W_hn h + b_hn (reset after) or r * h (before), ub */
    const RK_T* peep;     /* LSTM peephole weights w_ci, w_cf, w_co: 3 blocks of ub */
} RK_S(rk_fwd);

/* What a backward point update may read and write for one row. */
typedef struct {
    const RK_T* g;        /* the saved gate values, G*ub */
    RK_T* dg;             /* out: gradients of the (input-side) pre-activations, G*ub */
    RK_T* dgh;            /* GRU (reset after), out: of the recurrent-side ones, G*ub */
    const RK_T* aux;      /* as forward's */
    const RK_T* h_prev;
    const RK_T* hm_prev;
    const RK_T* h_new;    /* RNN: h_t, whose derivative is read off it */
    const RK_T* c_prev;
    const RK_T* c_new;    /* LSTM: c~_t */
    RK_T* dh;             /* in: dL/dh_t (dL/dm with a projection); GRU out: its carry to h_{t-1} */
    RK_T* dc;             /* LSTM: dL/dc_t in, dL/dc_{t-1} out */
    const RK_T* drh;      /* GRU (reset before): dL/d(r * h) */
    const RK_T* mask;     /* GRU (reset before): the recurrent mask, or NULL */
    const RK_T* peep;     /* LSTM peephole weights */
    RK_T* dpeep;          /* LSTM peephole: their gradients, summed over the rows in order */
} RK_S(rk_bwd);

/* Each point update is a body with restrict parameters, one for each gate
 * block (gcc honours restrict on parameters, also once inlined, not on
 * pointers copied into locals; and indexed as g[k * ub + u] from one pointer
 * it cannot prove that one block's store does not feed another's load), and
 * a wrapper that unpacks the row. */
#define RK_R RK_T* restrict
#define RK_C const RK_T* restrict

/* ---------------------------------------------------------------- LSTM */
static inline void RK_S(rk_lstm_fwd_k)(ptrdiff_t ub, RK_R g0, RK_R g1, RK_R g2, RK_R g3,
                                       RK_C b0, RK_C b1, RK_C b2, RK_C b3, RK_C w0, RK_C w1, RK_C w2,
                                       RK_C cp, RK_R cn, RK_R hn, int peephole)
{
    if (peephole)   /* i and f see c_{t-1}, o sees c~_t */
        for (ptrdiff_t u = 0; u < ub; u++) {
            RK_T gi = RK_SIGMOID(g0[u] + b0[u] + w0[u] * cp[u]);
            RK_T gf = RK_SIGMOID(g1[u] + b1[u] + w1[u] * cp[u]);
            RK_T gg = RK_TANH(g2[u] + b2[u]);
            RK_T c = gf * cp[u] + gi * gg;
            RK_T go = RK_SIGMOID(g3[u] + b3[u] + w2[u] * c);
            cn[u] = c;
            hn[u] = go * RK_TANH(c);
            g0[u] = gi; g1[u] = gf; g2[u] = gg; g3[u] = go;
        }
    else
        for (ptrdiff_t u = 0; u < ub; u++) {
            RK_T gi = RK_SIGMOID(g0[u] + b0[u]);
            RK_T gf = RK_SIGMOID(g1[u] + b1[u]);
            RK_T gg = RK_TANH(g2[u] + b2[u]);
            RK_T go = RK_SIGMOID(g3[u] + b3[u]);
            RK_T c = gf * cp[u] + gi * gg;
            cn[u] = c;
            hn[u] = go * RK_TANH(c);
            g0[u] = gi; g1[u] = gf; g2[u] = gg; g3[u] = go;
        }
}

/* dh: dL/dh_t (or dL/dm), dc: dL/dc_t in and dL/dc_{t-1} out; the
 * peepholes' gradients summed into dw (rows in order). */
static inline void RK_S(rk_lstm_bwd_k)(ptrdiff_t ub, RK_C g0, RK_C g1, RK_C g2, RK_C g3,
                                       RK_R d0, RK_R d1, RK_R d2, RK_R d3, RK_C w0, RK_C w1, RK_C w2,
                                       RK_R dw0, RK_R dw1, RK_R dw2, RK_C cp, RK_C cn, RK_C dh, RK_R dc,
                                       int peephole)
{
    if (peephole)
        for (ptrdiff_t u = 0; u < ub; u++) {
            RK_T gi = g0[u], gf = g1[u], gg = g2[u], go = g3[u];
            RK_T tc = RK_TANH(cn[u]);
            RK_T dao = dh[u] * tc * go * (1 - go);
            RK_T dct = dc[u] + dh[u] * go * (1 - tc * tc) + dao * w2[u];
            RK_T dai = dct * gg * gi * (1 - gi);
            RK_T daf = dct * cp[u] * gf * (1 - gf);
            d0[u] = dai;
            d1[u] = daf;
            d2[u] = dct * gi * (1 - gg * gg);
            d3[u] = dao;
            dc[u] = dct * gf + dai * w0[u] + daf * w1[u];
            dw0[u] += dai * cp[u];
            dw1[u] += daf * cp[u];
            dw2[u] += dao * cn[u];
        }
    else
        for (ptrdiff_t u = 0; u < ub; u++) {
            RK_T gi = g0[u], gf = g1[u], gg = g2[u], go = g3[u];
            RK_T tc = RK_TANH(cn[u]);
            RK_T dct = dc[u] + dh[u] * go * (1 - tc * tc);
            d0[u] = dct * gg * gi * (1 - gi);
            d1[u] = dct * cp[u] * gf * (1 - gf);
            d2[u] = dct * gi * (1 - gg * gg);
            d3[u] = dh[u] * tc * go * (1 - go);
            dc[u] = dct * gf;
        }
}

#define RK_ROW4(p, ub) (p), (p) + (ub), (p) + 2 * (ub), (p) + 3 * (ub)
#define RK_ROW3(p, ub) (p), (p) + (ub), (p) + 2 * (ub)

static void RK_S(rk_lstm_fwd)(ptrdiff_t ub, const RK_S(rk_fwd)* r)
{
    RK_S(rk_lstm_fwd_k)(ub, RK_ROW4(r->g, ub), RK_ROW4(r->b, ub), NULL, NULL, NULL,
                        r->c_prev, r->c_new, r->h_new, 0);
}

static void RK_S(rk_lstm_bwd)(ptrdiff_t ub, const RK_S(rk_bwd)* r)
{
    RK_S(rk_lstm_bwd_k)(ub, RK_ROW4(r->g, ub), RK_ROW4(r->dg, ub), NULL, NULL, NULL, NULL, NULL, NULL,
                        r->c_prev, r->c_new, r->dh, r->dc, 0);
}

static void RK_S(rk_lstm_peephole_fwd)(ptrdiff_t ub, const RK_S(rk_fwd)* r)
{
    RK_S(rk_lstm_fwd_k)(ub, RK_ROW4(r->g, ub), RK_ROW4(r->b, ub), RK_ROW3(r->peep, ub),
                        r->c_prev, r->c_new, r->h_new, 1);
}

static void RK_S(rk_lstm_peephole_bwd)(ptrdiff_t ub, const RK_S(rk_bwd)* r)
{
    RK_S(rk_lstm_bwd_k)(ub, RK_ROW4(r->g, ub), RK_ROW4(r->dg, ub), RK_ROW3(r->peep, ub), RK_ROW3(r->dpeep, ub),
                        r->c_prev, r->c_new, r->dh, r->dc, 1);
}

/* ------------------------------------------------------ GRU (reset after) */
/* g: input projection r z n (no bias); gh: W_hh h for r z n; b: b_ir+b_hr,
 * b_iz+b_hz, b_in; b_hn apart.  Keeps r, z, n in g and W_hn h + b_hn in aux.
 * The interpolation uses the unmasked h_{t-1}, as Keras does. */
static inline void RK_S(rk_gru_fwd_k)(ptrdiff_t ub, RK_R x0, RK_R x1, RK_R x2, RK_C h0, RK_C h1, RK_C h2,
                                      RK_C b0, RK_C b1, RK_C b2, RK_C bhn, RK_C hp, RK_R hn, RK_R hnew)
{
    for (ptrdiff_t u = 0; u < ub; u++) {
        RK_T rr = RK_SIGMOID(x0[u] + h0[u] + b0[u]);
        RK_T z = RK_SIGMOID(x1[u] + h1[u] + b1[u]);
        RK_T hnb = h2[u] + bhn[u];
        RK_T n = RK_TANH(x2[u] + b2[u] + rr * hnb);
        hnew[u] = (1 - z) * n + z * hp[u];
        x0[u] = rr; x1[u] = z; x2[u] = n; hn[u] = hnb;
    }
}

/* dh: dL/dh_t in, the carry d * z to h_{t-1} out; dx: input-side gradients
 * r z n, dr: recurrent-side ones (r z equal, n scaled by r). */
static inline void RK_S(rk_gru_bwd_k)(ptrdiff_t ub, RK_C g0, RK_C g1, RK_C g2, RK_R dx0, RK_R dx1, RK_R dx2,
                                      RK_R dr0, RK_R dr1, RK_R dr2, RK_C hn, RK_C hp, RK_R dh)
{
    for (ptrdiff_t u = 0; u < ub; u++) {
        RK_T rr = g0[u], z = g1[u], n = g2[u], d = dh[u];
        RK_T dn = d * (1 - z) * (1 - n * n);
        RK_T dz = d * (hp[u] - n) * z * (1 - z);
        RK_T dr = dn * hn[u] * rr * (1 - rr);
        dx0[u] = dr; dx1[u] = dz; dx2[u] = dn;
        dr0[u] = dr; dr1[u] = dz; dr2[u] = dn * rr;
        dh[u] = d * z;
    }
}

static void RK_S(rk_gru_fwd)(ptrdiff_t ub, const RK_S(rk_fwd)* r)
{
    RK_S(rk_gru_fwd_k)(ub, RK_ROW3(r->g, ub), RK_ROW3(r->gh, ub), RK_ROW3(r->b, ub), r->b_hn, r->h_prev,
                       r->aux, r->h_new);
}

static void RK_S(rk_gru_bwd)(ptrdiff_t ub, const RK_S(rk_bwd)* r)
{
    RK_S(rk_gru_bwd_k)(ub, RK_ROW3(r->g, ub), RK_ROW3(r->dg, ub), RK_ROW3(r->dgh, ub), r->aux, r->h_prev, r->dh);
}

/* --------------------------------------------------- GRU (reset before)
 * Two phases per step, because W_hn multiplies r * h and needs r of every
 * unit first.  Phase 1: r, z; aux = r * h (the masked h the product sees). */
static inline void RK_S(rk_gru_rb_fwd1_k)(ptrdiff_t ub, RK_R g0, RK_R g1, RK_C b0, RK_C b1, RK_C hm, RK_R rh)
{
    for (ptrdiff_t u = 0; u < ub; u++) {
        RK_T rr = RK_SIGMOID(g0[u] + b0[u]);
        RK_T z = RK_SIGMOID(g1[u] + b1[u]);
        g0[u] = rr; g1[u] = z; rh[u] = rr * hm[u];
    }
}

/* Phase 2: n from g's n block (input + W_hn (r h)), and h_t. */
static inline void RK_S(rk_gru_rb_fwd2_k)(ptrdiff_t ub, RK_C g1, RK_R g2, RK_C b2, RK_C hp, RK_R hnew)
{
    for (ptrdiff_t u = 0; u < ub; u++) {
        RK_T z = g1[u];
        RK_T n = RK_TANH(g2[u] + b2[u]);
        hnew[u] = (1 - z) * n + z * hp[u];
        g2[u] = n;
    }
}

/* Backward phase 1: z and n gradients; dh becomes the carry d * z. */
static inline void RK_S(rk_gru_rb_bwd1_k)(ptrdiff_t ub, RK_C g1, RK_C g2, RK_R d1, RK_R d2, RK_C hp, RK_R dh)
{
    for (ptrdiff_t u = 0; u < ub; u++) {
        RK_T z = g1[u], n = g2[u], d = dh[u];
        d1[u] = d * (hp[u] - n) * z * (1 - z);
        d2[u] = d * (1 - z) * (1 - n * n);
        dh[u] = d * z;
    }
}

/* Backward phase 2: from drh = dL/d(r h) (W_hn^T dn): the r gradient, and
 * drh * r back to h (through the mask, NULL: none). */
static inline void RK_S(rk_gru_rb_bwd2_k)(ptrdiff_t ub, RK_C g0, RK_R d0, RK_C hm, RK_C drh, RK_C mask, RK_R dh)
{
    if (mask != NULL)
        for (ptrdiff_t u = 0; u < ub; u++) {
            RK_T rr = g0[u];
            d0[u] = drh[u] * hm[u] * rr * (1 - rr);
            dh[u] += mask[u] * drh[u] * rr;
        }
    else
        for (ptrdiff_t u = 0; u < ub; u++) {
            RK_T rr = g0[u];
            d0[u] = drh[u] * hm[u] * rr * (1 - rr);
            dh[u] += drh[u] * rr;
        }
}

static void RK_S(rk_gru_rb_fwd1)(ptrdiff_t ub, const RK_S(rk_fwd)* r)
{
    RK_S(rk_gru_rb_fwd1_k)(ub, r->g, r->g + ub, r->b, r->b + ub, r->hm_prev, r->aux);
}

static void RK_S(rk_gru_rb_fwd2)(ptrdiff_t ub, const RK_S(rk_fwd)* r)
{
    RK_S(rk_gru_rb_fwd2_k)(ub, r->g + ub, r->g + 2 * ub, r->b + 2 * ub, r->h_prev, r->h_new);
}

static void RK_S(rk_gru_rb_bwd1)(ptrdiff_t ub, const RK_S(rk_bwd)* r)
{
    RK_S(rk_gru_rb_bwd1_k)(ub, r->g + ub, r->g + 2 * ub, r->dg + ub, r->dg + 2 * ub, r->h_prev, r->dh);
}

static void RK_S(rk_gru_rb_bwd2)(ptrdiff_t ub, const RK_S(rk_bwd)* r)
{
    RK_S(rk_gru_rb_bwd2_k)(ub, r->g, r->dg, r->hm_prev, r->drh, r->mask, r->dh);
}

/* ----------------------------------------------------------------- RNN */
static inline void RK_S(rk_rnn_fwd_k)(ptrdiff_t ub, RK_C g, RK_C b, RK_R hn, int relu)
{
    if (relu)   /* keeps NaN (a < 0 ? 0 : a) */
        for (ptrdiff_t u = 0; u < ub; u++) {
            RK_T a = g[u] + b[u];
            hn[u] = a < 0 ? 0 : a;
        }
    else
        for (ptrdiff_t u = 0; u < ub; u++)
            hn[u] = RK_TANH(g[u] + b[u]);
}

/* the derivative read off h_t; relu's at 0 is 0, as PyTorch's */
static inline void RK_S(rk_rnn_bwd_k)(ptrdiff_t ub, RK_C hn, RK_C dh, RK_R dg, int relu)
{
    if (relu)
        for (ptrdiff_t u = 0; u < ub; u++)
            dg[u] = hn[u] > 0 ? dh[u] : 0;
    else
        for (ptrdiff_t u = 0; u < ub; u++)
            dg[u] = dh[u] * (1 - hn[u] * hn[u]);
}

static void RK_S(rk_rnn_tanh_fwd)(ptrdiff_t ub, const RK_S(rk_fwd)* r) { RK_S(rk_rnn_fwd_k)(ub, r->g, r->b, r->h_new, 0); }
static void RK_S(rk_rnn_relu_fwd)(ptrdiff_t ub, const RK_S(rk_fwd)* r) { RK_S(rk_rnn_fwd_k)(ub, r->g, r->b, r->h_new, 1); }
static void RK_S(rk_rnn_tanh_bwd)(ptrdiff_t ub, const RK_S(rk_bwd)* r) { RK_S(rk_rnn_bwd_k)(ub, r->h_new, r->dh, r->dg, 0); }
static void RK_S(rk_rnn_relu_bwd)(ptrdiff_t ub, const RK_S(rk_bwd)* r) { RK_S(rk_rnn_bwd_k)(ub, r->h_new, r->dh, r->dg, 1); }

#undef RK_R
#undef RK_C
#undef RK_ROW4
#undef RK_ROW3

/* --------------------------------------------------------- LayerNorm rows
 * The LayerNorm cells normalise whole gate rows, so they run on the
 * skeleton's row split (each thread owns batch rows and all their units).
 * rk_layer_norm: out = gamma * (v - mean) / sqrt(var + eps) (+ beta), keeping
 * the normalised values and 1/std for backward; sums in index order. */
/* Sums in a fixed order that gcc vectorises: 16 running partial sums, added
 * in order at the end (a plain running sum of floats is a dependency chain
 * gcc may not reorder without -ffast-math). */
#define RK_LANES 16
static inline RK_T RK_S(rk_sum2)(ptrdiff_t n, const RK_T* restrict a, const RK_T* restrict b, RK_T shift)
{   /* sum of a[u] (b NULL), of (a[u] - shift)^2 (b == a), or of a[u] * b[u] */
    RK_T acc[RK_LANES] = {0}, s = 0;
    ptrdiff_t u = 0, k;
    if (b == NULL)
        for (; u + RK_LANES <= n; u += RK_LANES)
            for (k = 0; k < RK_LANES; k++)
                acc[k] += a[u + k];
    else if (b == a)
        for (; u + RK_LANES <= n; u += RK_LANES)
            for (k = 0; k < RK_LANES; k++)
                acc[k] += (a[u + k] - shift) * (a[u + k] - shift);
    else
        for (; u + RK_LANES <= n; u += RK_LANES)
            for (k = 0; k < RK_LANES; k++)
                acc[k] += a[u + k] * b[u + k];
    for (k = 0; k < RK_LANES; k++)
        s += acc[k];
    for (; u < n; u++)
        s += b == NULL ? a[u] : b == a ? (a[u] - shift) * (a[u] - shift) : a[u] * b[u];
    return s;
}

static void RK_S(rk_layer_norm)(ptrdiff_t n, const RK_T* v, const RK_T* restrict gamma,
                                const RK_T* restrict beta, RK_T* out,  /* may be v: in place */
                                RK_T* restrict v_hat, RK_T* rstd_out)
{
    RK_T mean = RK_S(rk_sum2)(n, v, NULL, 0) / (RK_T)n;
    RK_T var = RK_S(rk_sum2)(n, v, v, mean) / (RK_T)n;
    RK_T rstd = (RK_T)1 / RK_SQRT(var + (RK_T)RK_LAYER_NORM_EPSILON);
    for (ptrdiff_t u = 0; u < n; u++)
        v_hat[u] = (v[u] - mean) * rstd;
    if (beta != NULL)
        for (ptrdiff_t u = 0; u < n; u++)
            out[u] = gamma[u] * v_hat[u] + beta[u];
    else
        for (ptrdiff_t u = 0; u < n; u++)
            out[u] = gamma[u] * v_hat[u];
    *rstd_out = rstd;
}

/* dv = rstd * (dxh - mean(dxh) - xh * mean(dxh * xh)), dxh = dout * gamma
 * (dv may be dout: in place). */
static void RK_S(rk_layer_norm_bwd)(ptrdiff_t n, const RK_T* dout, const RK_T* restrict gamma,
                                    const RK_T* restrict v_hat, RK_T rstd, RK_T* dv, RK_T* restrict work)
{
    for (ptrdiff_t u = 0; u < n; u++)
        work[u] = dout[u] * gamma[u];
    RK_T m1 = RK_S(rk_sum2)(n, work, NULL, 0) / (RK_T)n;
    RK_T m2 = RK_S(rk_sum2)(n, work, v_hat, 0) / (RK_T)n;
    for (ptrdiff_t u = 0; u < n; u++)
        dv[u] = rstd * (work[u] - m1 - v_hat[u] * m2);
}

/* A LayerNorm cell's gate row through both LayerNorms at once: dg_hh (the
 * recurrent side's gradient) through gamma_hh over rec_hat into drec, dg_ih
 * (the input side's) through gamma_ih over x_hat into drec_x (the LSTM's two
 * are one row) -- rk_layer_norm_bwd twice, with the same sums in the same
 * order, so the same bits -- adding the row's share of the bias and gain
 * gradients in the same pass: acc_bi += dg_ih, acc_gi += dg_ih * x_hat,
 * acc_gh += dg_hh * rec_hat and, unless NULL (the LSTM's biases share one
 * sum), acc_bh += dg_hh.  Two passes over the row instead of nine. */
static void RK_S(rk_ln_gates_bwd)(ptrdiff_t n, const RK_T* restrict dg_hh, const RK_T* restrict dg_ih,
                                  const RK_T* restrict gamma_hh, const RK_T* restrict rec_hat, RK_T rstd_hh,
                                  const RK_T* restrict gamma_ih, const RK_T* restrict x_hat, RK_T rstd_ih,
                                  RK_T* restrict drec, RK_T* restrict drec_x, RK_T* restrict acc_bi,
                                  RK_T* restrict acc_gi, RK_T* restrict acc_bh, RK_T* restrict acc_gh)
{
    RK_T s_h[RK_LANES] = {0}, s_hv[RK_LANES] = {0}, s_i[RK_LANES] = {0}, s_iv[RK_LANES] = {0};
    RK_T m1h = 0, m2h = 0, m1i = 0, m2i = 0;
    ptrdiff_t u = 0, k;
    for (; u + RK_LANES <= n; u += RK_LANES)
        for (k = 0; k < RK_LANES; k++) {
            RK_T dh = dg_hh[u + k], di = dg_ih[u + k];
            RK_T wh = dh * gamma_hh[u + k], wi = di * gamma_ih[u + k];
            s_h[k] += wh;
            s_hv[k] += wh * rec_hat[u + k];
            s_i[k] += wi;
            s_iv[k] += wi * x_hat[u + k];
            acc_bi[u + k] += di;
            acc_gi[u + k] += di * x_hat[u + k];
            acc_gh[u + k] += dh * rec_hat[u + k];
        }
    for (k = 0; k < RK_LANES; k++) {
        m1h += s_h[k];
        m2h += s_hv[k];
        m1i += s_i[k];
        m2i += s_iv[k];
    }
    for (; u < n; u++) {
        RK_T dh = dg_hh[u], di = dg_ih[u], wh = dh * gamma_hh[u], wi = di * gamma_ih[u];
        m1h += wh;
        m2h += wh * rec_hat[u];
        m1i += wi;
        m2i += wi * x_hat[u];
        acc_bi[u] += di;
        acc_gi[u] += di * x_hat[u];
        acc_gh[u] += dh * rec_hat[u];
    }
    if (acc_bh != NULL)
        for (u = 0; u < n; u++)
            acc_bh[u] += dg_hh[u];
    m1h /= (RK_T)n;
    m2h /= (RK_T)n;
    m1i /= (RK_T)n;
    m2i /= (RK_T)n;
    for (u = 0; u < n; u++) {
        drec[u] = rstd_hh * (dg_hh[u] * gamma_hh[u] - m1h - rec_hat[u] * m2h);
        drec_x[u] = rstd_ih * (dg_ih[u] * gamma_ih[u] - m1i - x_hat[u] * m2i);
    }
}

/* LayerNorm LSTM, one whole row of H units (haste's LayerNormLSTM, PyTorch's
 * gate order): g holds LN(W_ih x; gamma_ih) in and the activated gates out;
 * rec the raw W_hh h, whose normalised values go to rec_hat; the cell's
 * normalised values to c_hat.  rstd: 1/std of rec (0) and of c~ (1). */
static void RK_S(rk_lstm_ln_fwd)(ptrdiff_t H, RK_T* restrict g, const RK_T* restrict rec,
                                 const RK_T* restrict b, const RK_T* restrict gamma_hh,
                                 const RK_T* restrict gamma_c, const RK_T* restrict beta_c,
                                 const RK_T* restrict c_prev, RK_T* restrict c_new,
                                 RK_T* restrict h_new, RK_T* restrict rec_hat,
                                 RK_T* restrict c_hat, RK_T* restrict rstd, RK_T* restrict work)
{
    ptrdiff_t u, G = 4 * H;
    RK_S(rk_layer_norm)(G, rec, gamma_hh, NULL, work, rec_hat, &rstd[0]);
    for (u = 0; u < G; u++)
        g[u] += work[u] + b[u];
    for (u = 0; u < H; u++) {
        RK_T gi = RK_SIGMOID(g[u]), gf = RK_SIGMOID(g[H + u]);
        RK_T gg = RK_TANH(g[2 * H + u]), go = RK_SIGMOID(g[3 * H + u]);
        c_new[u] = gf * c_prev[u] + gi * gg;
        g[u] = gi; g[H + u] = gf; g[2 * H + u] = gg; g[3 * H + u] = go;
    }
    RK_S(rk_layer_norm)(H, c_new, gamma_c, beta_c, work, c_hat, &rstd[1]);
    for (u = 0; u < H; u++)
        h_new[u] = g[3 * H + u] * RK_TANH(work[u]);
}

/* Backward of a LayerNorm LSTM row: dh (dL/dh_t), dc (dL/dc_t in, dL/dc_{t-1}
 * out) -> dg, the gradient of the gate pre-activations (of both normalised
 * products and the bias), and dc_out, the gradient of LN(c~)'s output (for
 * gamma_c, beta_c). */
static void RK_S(rk_lstm_ln_bwd)(ptrdiff_t H, const RK_T* restrict g, const RK_T* restrict gamma_c,
                                 const RK_T* restrict beta_c, const RK_T* restrict c_prev,
                                 const RK_T* restrict c_hat, RK_T rstd_c,
                                 const RK_T* restrict dh, RK_T* restrict dc, RK_T* restrict dg,
                                 RK_T* restrict dc_out, RK_T* restrict work)
{
    ptrdiff_t u;
    for (u = 0; u < H; u++) {
        RK_T go = g[3 * H + u];
        RK_T t = RK_TANH(gamma_c[u] * c_hat[u] + beta_c[u]);
        dg[3 * H + u] = dh[u] * t * go * (1 - go);
        dc_out[u] = dh[u] * go * (1 - t * t);
    }
    RK_S(rk_layer_norm_bwd)(H, dc_out, gamma_c, c_hat, rstd_c, work, work + H);
    for (u = 0; u < H; u++) {
        RK_T gi = g[u], gf = g[H + u], gg = g[2 * H + u];
        RK_T dct = dc[u] + work[u];
        dg[u] = dct * gg * gi * (1 - gi);
        dg[H + u] = dct * c_prev[u] * gf * (1 - gf);
        dg[2 * H + u] = dct * gi * (1 - gg * gg);
        dc[u] = dct * gf;
    }
}

/* LayerNorm GRU (reset after), one whole row: g holds LN(W_ih x; gamma_ih) in
 * and r z n out; rec the raw W_hh h; aux gets the normalised recurrent n
 * block plus b_hn (what r multiplies). */
static void RK_S(rk_gru_ln_fwd)(ptrdiff_t H, RK_T* restrict g, const RK_T* restrict rec,
                                const RK_T* restrict b_ih, const RK_T* restrict b_hh,
                                const RK_T* restrict gamma_hh, const RK_T* restrict h_prev,
                                RK_T* restrict h_new, RK_T* restrict aux, RK_T* restrict rec_hat,
                                RK_T* restrict rstd, RK_T* restrict work)
{
    ptrdiff_t u, G = 3 * H;
    RK_S(rk_layer_norm)(G, rec, gamma_hh, NULL, work, rec_hat, &rstd[0]);
    for (u = 0; u < H; u++) {
        RK_T rr = RK_SIGMOID(g[u] + b_ih[u] + work[u] + b_hh[u]);
        RK_T z = RK_SIGMOID(g[H + u] + b_ih[H + u] + work[H + u] + b_hh[H + u]);
        RK_T hn = work[2 * H + u] + b_hh[2 * H + u];
        RK_T n = RK_TANH(g[2 * H + u] + b_ih[2 * H + u] + rr * hn);
        h_new[u] = (1 - z) * n + z * h_prev[u];
        g[u] = rr; g[H + u] = z; g[2 * H + u] = n; aux[u] = hn;
    }
}

/* dh: dL/dh_t in, the carry d * z out; dgx, dgh: the gradients of the input
 * side and of the recurrent side (both after their LayerNorm). */
static void RK_S(rk_gru_ln_bwd)(ptrdiff_t H, const RK_T* restrict g, const RK_T* restrict aux,
                                const RK_T* restrict h_prev, RK_T* restrict dh,
                                RK_T* restrict dgx, RK_T* restrict dgh)
{
    for (ptrdiff_t u = 0; u < H; u++) {
        RK_T rr = g[u], z = g[H + u], n = g[2 * H + u], d = dh[u];
        RK_T dn = d * (1 - z) * (1 - n * n);
        RK_T dz = d * (h_prev[u] - n) * z * (1 - z);
        RK_T dr = dn * aux[u] * rr * (1 - rr);
        dgx[u] = dr; dgx[H + u] = dz; dgx[2 * H + u] = dn;
        dgh[u] = dr; dgh[H + u] = dz; dgh[2 * H + u] = dn * rr;
        dh[u] = d * z;
    }
}
