"""Readable NumPy reference for the recurrent kernels: the oracle.

Same functions, signatures and semantics as :mod:`rnnkernels.ops`
(docs/kernel-abi.md); it shares no code with it, so each checks the other, and
this one is itself checked by central differences (tests/kernels/test_reference.py)
and against PyTorch (tests/kernels/test_torch_parity.py).  Written to be read,
not to be fast: one explicit loop over time steps, vectorised over the batch.

Notation (PyTorch's layout and gate order, time-major)::

    x    (T, B, I)   inputs               y    (T, B, P)   outputs (= h after each step)
    h    (B, P)      hidden state         c    (B, H)      cell state (LSTM)
    w_ih (G*H, I)    w_hh (G*H, P)        b_ih, b_hh (G*H,)
    G = 4 (LSTM: i f g o), 3 (GRU: r z n), 1 (RNN); P = H unless the LSTM projects (w_hr)

Variants, each a keyword argument (None: off):

- ``w_hr`` (P, H), LSTM: a projection, ``h = W_hr (o * tanh(c))`` (PyTorch's ``proj_size``).
- ``peephole`` = (w_ci, w_cf, w_co), each (H,), LSTM: ``i`` and ``f`` see ``c_{t-1}``,
  ``o`` sees ``c_t`` (Gers & Schmidhuber).
- ``layer_norm``, LSTM (gamma_ih (4H,), gamma_hh (4H,), gamma_c (H,), beta_c (H,)) or GRU
  (gamma_ih (3H,), gamma_hh (3H,)): layer normalisation of the input and of the recurrent
  pre-activations separately, and for the LSTM of ``c_t`` before the output tanh (Ba et al.
  2016, as haste's LayerNormLSTM/GRU).
- ``recurrent_mask`` (B, P): multiplies ``h_{t-1}`` before the recurrent product (recurrent
  dropout with one mask per sequence, fixed over time, already scaled by 1/(1-p)).
- ``zoneout``: each unit keeps its previous state; LSTM ``(z_h, z_c)``, GRU ``z_h``; each a
  rate in [0, 1) (inference: ``h = z h_{t-1} + (1-z) h~``, the expectation) or an array
  (T, B, P) for h, (T, B, H) for c, of keep-previous weights (training: 1 keeps the
  previous value, 0 takes the new one; Krueger et al. 2016).

Variable lengths.  Step ``s`` (s = 0 .. T-1) advances only the sequences
still running (``s < lengths[b]``); sequence ``b`` reads time ``t = s``, or
``t = lengths[b] - 1 - s`` when ``reverse`` (it runs back over its own valid
span, like the reverse direction of PyTorch's packed bidirectional RNN).
Sequences that have ended keep their state, which is therefore ``h_n`` at
the end, and their ``y`` stays zero.  Backward walks the same steps in
reverse order, so every step below comes as a forward/backward pair.
"""
import numpy as np
from scipy.special import expit as sigmoid  # 1 / (1 + exp(-a)), no overflow for huge |a|

__all__ = ["lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
           "rnn_forward", "rnn_backward", "ctc_loss", "LAYER_NORM_EPSILON"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_NONLINEARITIES = ("tanh", "relu")
LAYER_NORM_EPSILON = 1e-5


# ------------------------------------------------------------------ validation
def _as_array(name, a, expected):
    """``a`` as a real numeric ndarray; TypeError naming ``name`` otherwise."""
    if not isinstance(a, (np.ndarray, list, tuple)) and not hasattr(a, "__array__"):
        raise TypeError(f"{name}: expected {expected}, got {type(a).__name__}")
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a real numeric array ({expected}), got dtype {a.dtype}")
    return a


def _check_x(x, name="x", ndim=3, layout="(T, B, I)"):
    x = _as_array(name, x, f"an array of shape {layout}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions {layout}, got shape {x.shape}")
    if x.shape[-1] < 1:
        raise ValueError(f"{name}: expected input size I >= 1, got shape {x.shape}")
    return x


def _check_shaped(name, a, shape, dtype):
    """``a`` converted to ``dtype``, which must have exactly ``shape``."""
    a = _as_array(name, a, f"an array of shape {shape}")
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
    return a.astype(dtype, copy=False)


def _check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _check_lengths(lengths, T, B):
    """``lengths`` as int64 (B,) in [0, T]; None means every sequence runs all T steps."""
    if lengths is None:
        return np.full(B, T, dtype=np.int64)
    arr = _as_array("lengths", lengths, f"integers of shape ({B},)")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise TypeError(f"lengths: expected integers, got non-integral values of dtype {arr.dtype}")
    if arr.dtype.kind == "b":
        raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},) (one length per sequence), got {arr.shape}")
    arr = arr.astype(np.int64)
    if B and (arr.min() < 0 or arr.max() > T):
        raise ValueError(f"lengths: expected values in [0, {T}] (T={T}), "
                         f"got min {arr.min()} and max {arr.max()}")
    return arr


def _lengths_of_batch_sizes(batch_sizes):
    """The lengths (B,) of a packed batch whose step s holds batch_sizes[s] sequences."""
    bs = _as_array("batch_sizes", batch_sizes, "integers of shape (S,)")
    if bs.ndim != 1 or bs.dtype.kind not in "iu":
        raise TypeError(f"batch_sizes: expected a 1-D integer array, got dtype {bs.dtype} shape {bs.shape}")
    bs = bs.astype(np.int64)
    if bs.size and (bs[0] < 1 or np.any(bs < 1) or np.any(np.diff(bs) > 0)):
        raise ValueError(f"batch_sizes: expected positive, non-increasing counts, got {bs.tolist()[:8]}")
    B = int(bs[0]) if bs.size else 0
    return np.array([int(np.sum(bs > j)) for j in range(B)], dtype=np.int64), bs


def _check_rate(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a rate in [0, 1) or a mask array, got {type(value).__name__}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name}: expected a rate in [0, 1), got {value!r}")
    return float(value)


class _Problem:
    """The validated arguments of one forward call, all in the dtype of ``x``.

    A missing bias becomes zeros for the arithmetic (``has_b_ih``/``has_b_hh``
    remember that its gradient must be reported as None).
    """

    def __init__(self, cell, G, x, w_ih, w_hh, b_ih, b_hh, lengths, reverse, w_hr=None):
        self.cell, self.G = cell, G
        self.x = x = _check_x(x)
        self.T, self.B, self.I = T, B, I = x.shape
        self.dtype = dtype = x.dtype
        w_hh = _as_array("w_hh", w_hh, f"an array of shape ({G}*H, H)")
        self.w_hr = None
        if w_hr is None:
            if w_hh.ndim != 2 or w_hh.shape[1] < 1 or w_hh.shape[0] != G * w_hh.shape[1]:
                raise ValueError(f"w_hh: expected shape ({G}*H, H) for {cell} ({G} gates), got {w_hh.shape}")
            self.H = self.P = H = w_hh.shape[1]
        else:
            w_hr = _as_array("w_hr", w_hr, "an array of shape (P, H)")
            if w_hr.ndim != 2 or min(w_hr.shape) < 1:
                raise ValueError(f"w_hr: expected shape (P, H) with P, H >= 1, got {w_hr.shape}")
            self.P, self.H = w_hr.shape
            H = self.H
            if w_hh.shape != (G * H, self.P):
                raise ValueError(f"w_hh: expected shape ({G * H}, {self.P}) for {cell} with w_hr "
                                 f"{w_hr.shape} ({G}*H, P), got {w_hh.shape}")
            self.w_hr = w_hr.astype(dtype)              # a copy: see below
        # Copies, so that updating the weights in place before backward cannot change it.
        self.w_hh = w_hh.astype(dtype)
        self.w_ih = _check_shaped("w_ih", w_ih, (G * H, I), dtype).copy()
        self.has_b_ih, self.has_b_hh = b_ih is not None, b_hh is not None
        zeros = np.zeros(G * H, dtype)
        self.b_ih = zeros if b_ih is None else _check_shaped("b_ih", b_ih, (G * H,), dtype).copy()
        self.b_hh = zeros if b_hh is None else _check_shaped("b_hh", b_hh, (G * H,), dtype).copy()
        self.lengths = _check_lengths(lengths, T, B)
        self.reverse = _check_flag("reverse", reverse)
        self.peephole = self.layer_norm = self.recurrent_mask = None
        self.zoneout_h = self.zoneout_c = None        # None, a rate, or a (T, B, .) array

    def state(self, name, s, size=None):
        """Initial state (B, size or P); None means zeros."""
        size = self.P if size is None else size
        if s is None:
            return np.zeros((self.B, size), self.dtype)
        return _check_shaped(name, s, (self.B, size), self.dtype)

    def vectors(self, name, values, names, sizes):
        """A tuple of 1-D weight vectors (copied), each checked against its size."""
        if not isinstance(values, (tuple, list)) or len(values) != len(names):
            raise TypeError(f"{name}: expected a tuple ({', '.join(names)}), got "
                            f"{type(values).__name__}" + (f" of {len(values)}" if isinstance(values, (tuple, list)) else ""))
        return tuple(_check_shaped(f"{name}[{k}] ({n})", v, (s,), self.dtype).copy()
                     for k, (v, n, s) in enumerate(zip(values, names, sizes)))

    def set_recurrent_mask(self, mask):
        if mask is not None:
            self.recurrent_mask = _check_shaped("recurrent_mask", mask, (self.B, self.P), self.dtype).copy()

    def zoneout(self, name, z, size):
        """None, a rate (inference), or a (T, B, size) mask array (training)."""
        if z is None:
            return None
        if np.ndim(z) == 0 and not hasattr(z, "shape"):
            return _check_rate(name, z)
        return _check_shaped(name, z, (self.T, self.B, size), self.dtype).copy()

    def steps(self):
        """For each step s: (rows, times), the running sequences and the time each reads."""
        for s in range(self.T):
            rows = np.flatnonzero(s < self.lengths)
            times = self.lengths[rows] - 1 - s if self.reverse else np.full(rows.size, s)
            yield rows, times


def _exclusive(cell, **given):
    """Variants that cannot be combined with the others given raise one clear error."""
    on = [name for name, value in given.items() if value is not None]
    allowed = {frozenset({"w_hr", "peephole"}), frozenset({"w_hr", "recurrent_mask"}),
               frozenset({"peephole", "recurrent_mask"}), frozenset({"zoneout", "recurrent_mask"})}
    for a in on:
        for b in on:
            if a < b and frozenset({a, b}) not in allowed:
                raise ValueError(f"{a}, {b}: these {cell} variants cannot be combined; give one of them")


def _zoneout_weight(z, rows, times):
    """The keep-previous weight of each running sequence's units at this step (a
    scalar rate or the mask rows), or None without zoneout."""
    if z is None:
        return None
    if np.ndim(z) == 0:
        return z
    return z[times, rows]


# -------------------------------------------------------- the loop over time
def _scan(problem, cell_step, initial, training, **options):
    """Run ``cell_step`` over time.  ``initial`` is a tuple of states (B, .)
    (h first).  Returns y (T, B, P), the final states and the tape (what
    backward needs at each step; None when not training)."""
    p = problem
    states = [s.copy() for s in initial]
    y = np.zeros((p.T, p.B, p.P), p.dtype)
    tape = [] if training else None
    for rows, times in p.steps():
        x_t = p.x[times, rows]                       # (N, I), N running sequences
        new, kept = cell_step(p, x_t, *(s[rows] for s in states), rows=rows, times=times, **options)
        for s, s_new in zip(states, new):
            s[rows] = s_new
        y[times, rows] = new[0]
        if training:
            tape.append((rows, times, kept))
    return y, states, tape


_VARIANT_GRADS = ("w_hr", "w_ci", "w_cf", "w_co", "gamma_ih", "gamma_hh", "gamma_c", "beta_c")


def _scan_backward(cache, cell_step_backward, dy, dfinal, input_grad=True):
    """Backpropagate through the tape of ``_scan``.  ``dfinal`` are the
    gradients of the final states (h first).  Returns the gradient dict
    (its "x" None without ``input_grad``: a first layer's inputs need none)."""
    p = cache["problem"]
    dy = np.zeros((p.T, p.B, p.P), p.dtype) if dy is None else _check_shaped(
        "dy", dy, (p.T, p.B, p.P), p.dtype)
    sizes = cache["state_sizes"]
    dstates = [_check_shaped(name, d, (p.B, size), p.dtype).copy() if d is not None
               else np.zeros((p.B, size), p.dtype) for (name, d), size in zip(dfinal, sizes)]
    grads = {"x": np.zeros_like(p.x),
             "w_ih": np.zeros_like(p.w_ih), "w_hh": np.zeros_like(p.w_hh),
             "b_ih": np.zeros_like(p.b_ih), "b_hh": np.zeros_like(p.b_hh)}
    for name, value in cache["variant_params"].items():
        grads[name] = np.zeros_like(value)
    for rows, times, kept in reversed(cache["tape"]):
        dstates[0][rows] += dy[times, rows]          # y at this step is the new h
        dx_t, dprev = cell_step_backward(p, kept, *(d[rows] for d in dstates), grads=grads,
                                         **cache["options"])
        grads["x"][times, rows] = dx_t
        for d, d_prev in zip(dstates, dprev):
            d[rows] = d_prev
    for name, d in zip(cache["state_names"], dstates):
        grads[name] = d                              # states nobody updated pass straight through
    if not p.has_b_ih:
        grads["b_ih"] = None
    if not p.has_b_hh:
        grads["b_hh"] = None
    if not _flag_value("input_grad", input_grad):
        grads["x"] = None
    return grads


def _flag_value(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _make_cache(kind, problem, tape, state_names, state_sizes, variant_params, **options):
    return {"kind": kind, "problem": problem, "tape": tape, "state_names": state_names,
            "state_sizes": state_sizes, "variant_params": variant_params, "options": options}


def _check_cache(cache, kind):
    if cache is None:
        raise ValueError(f"cache: got None; run {kind}_forward with training=True "
                         "to keep what backward needs")
    if not isinstance(cache, dict) or cache.get("kind") != kind or "tape" not in cache:
        got = f"a cache from {cache['kind']}_forward" if isinstance(cache, dict) and "kind" in cache \
            else type(cache).__name__
        raise TypeError(f"cache: expected the cache returned by reference.{kind}_forward, got {got}")
    return cache


def _accumulate(grads, which, da, inputs, rows=slice(None)):
    """dW_which[rows] += da^T inputs;  db_which[rows] += sum over sequences of da.

    ``da`` (N, len(rows)) is the gradient of the projection
    W_which[rows] inputs + b_which[rows], with ``which`` "ih" or "hh".
    """
    grads["w_" + which][rows] += da.T @ inputs
    grads["b_" + which][rows] += da.sum(axis=0)


# ----------------------------------------------------------- layer normalisation
def _layer_norm(v, gamma, beta=None):
    """gamma * (v - mean) / sqrt(var + eps) (+ beta) over the last axis; keeps
    the normalised values and 1/std for backward."""
    mean = v.mean(axis=1, keepdims=True)
    rstd = 1.0 / np.sqrt(((v - mean) ** 2).mean(axis=1, keepdims=True) + LAYER_NORM_EPSILON)
    v_hat = (v - mean) * rstd
    out = gamma * v_hat if beta is None else gamma * v_hat + beta
    return out, (v_hat, rstd, gamma)


def _layer_norm_backward(d_out, kept, grads, gamma_name, beta_name=None):
    """dL/dv of _layer_norm given dL/d(out); accumulates gamma's (and beta's) gradient."""
    v_hat, rstd, gamma = kept
    grads[gamma_name] += (d_out * v_hat).sum(axis=0)
    if beta_name is not None:
        grads[beta_name] += d_out.sum(axis=0)
    dv_hat = d_out * gamma
    return rstd * (dv_hat - dv_hat.mean(axis=1, keepdims=True)
                   - v_hat * (dv_hat * v_hat).mean(axis=1, keepdims=True))


# ------------------------------------------------------------------------ LSTM
def _lstm_step(p, x, h, c, rows, times):
    """One LSTM step for N running sequences: x (N, I), h (N, P), c (N, H).

    h_in = m ⊙ h                                   (recurrent dropout mask m, else h)
    a = W_ih x + b_ih + W_hh h_in + b_hh           (N, 4H); with layer_norm the two
        products are normalised first: LN(W_ih x; γ_ih) + LN(W_hh h_in; γ_hh) + b
    peephole: a_i += w_ci ⊙ c, a_f += w_cf ⊙ c
    i, f = σ(a_i), σ(a_f);  g = tanh(a_g)
    c~ = f ⊙ c + i ⊙ g
    peephole: a_o += w_co ⊙ c~;   o = σ(a_o)
    m = o ⊙ tanh(c~), or o ⊙ tanh(LN(c~; γ_c, β_c)) with layer_norm
    h~ = W_hr m with a projection, else m
    zoneout: h' = z_h ⊙ h + (1 - z_h) ⊙ h~,  c' = z_c ⊙ c + (1 - z_c) ⊙ c~; else h' = h~, c' = c~
    """
    H = p.H
    h_in = h * p.recurrent_mask[rows] if p.recurrent_mask is not None else h
    a_x, a_h = x @ p.w_ih.T, h_in @ p.w_hh.T
    ln_x = ln_h = ln_c = None
    if p.layer_norm is not None:
        gamma_ih, gamma_hh, gamma_c, beta_c = p.layer_norm
        a_x, ln_x = _layer_norm(a_x, gamma_ih)
        a_h, ln_h = _layer_norm(a_h, gamma_hh)
    a = a_x + a_h + p.b_ih + p.b_hh
    if p.peephole is not None:
        w_ci, w_cf, w_co = p.peephole
        a[:, :H] += w_ci * c
        a[:, H:2 * H] += w_cf * c
    i = sigmoid(a[:, 0 * H:1 * H])
    f = sigmoid(a[:, 1 * H:2 * H])
    g = np.tanh(a[:, 2 * H:3 * H])
    c_tilde = f * c + i * g
    if p.peephole is not None:
        a[:, 3 * H:] += w_co * c_tilde
    o = sigmoid(a[:, 3 * H:4 * H])
    c_out = c_tilde
    if p.layer_norm is not None:
        c_out, ln_c = _layer_norm(c_tilde, gamma_c, beta_c)
    tanh_c = np.tanh(c_out)
    m = o * tanh_c
    h_tilde = m @ p.w_hr.T if p.w_hr is not None else m
    z_h = _zoneout_weight(p.zoneout_h, rows, times)
    z_c = _zoneout_weight(p.zoneout_c, rows, times)
    h_new = h_tilde if z_h is None else z_h * h + (1 - z_h) * h_tilde
    c_new = c_tilde if z_c is None else z_c * c + (1 - z_c) * c_tilde
    return (h_new, c_new), (x, h, h_in, c, i, f, g, o, c_tilde, tanh_c, m, z_h, z_c, ln_x, ln_h, ln_c, rows)


def _lstm_step_backward(p, kept, dh_new, dc_new, grads):
    """Given dL/dh', dL/dc': accumulate weight gradients, return dx, (dh, dc)."""
    x, h, h_in, c, i, f, g, o, c_tilde, tanh_c, m, z_h, z_c, ln_x, ln_h, ln_c, rows = kept
    dh = dh_new * z_h if z_h is not None else np.zeros_like(dh_new)   # zoneout: h' keeps h
    dh_tilde = dh_new * (1 - z_h) if z_h is not None else dh_new
    dc = dc_new * z_c if z_c is not None else np.zeros_like(dc_new)
    dc_tilde = dc_new * (1 - z_c) if z_c is not None else dc_new
    if p.w_hr is not None:
        grads["w_hr"] += dh_tilde.T @ m
        dm = dh_tilde @ p.w_hr
    else:
        dm = dh_tilde
    do = dm * tanh_c
    dc_out = dm * o * (1 - tanh_c ** 2)
    if p.layer_norm is not None:
        dc_out = _layer_norm_backward(dc_out, ln_c, grads, "gamma_c", "beta_c")
    dc_tilde = dc_tilde + dc_out                      # c~ reaches the loss directly and via h'
    da_o = do * o * (1 - o)
    if p.peephole is not None:
        w_ci, w_cf, w_co = p.peephole
        grads["w_co"] += (da_o * c_tilde).sum(axis=0)
        dc_tilde = dc_tilde + da_o * w_co             # o's peephole reads c~
    da_i = dc_tilde * g * i * (1 - i)
    da_f = dc_tilde * c * f * (1 - f)
    da_g = dc_tilde * i * (1 - g ** 2)
    dc = dc + dc_tilde * f
    if p.peephole is not None:
        grads["w_ci"] += (da_i * c).sum(axis=0)
        grads["w_cf"] += (da_f * c).sum(axis=0)
        dc = dc + da_i * w_ci + da_f * w_cf
    da = np.concatenate([da_i, da_f, da_g, da_o], axis=1)   # (N, 4H)
    grads["b_ih"] += da.sum(axis=0)
    grads["b_hh"] += da.sum(axis=0)
    da_x, da_h = da, da                               # a = a_x + a_h + b
    if p.layer_norm is not None:
        da_x = _layer_norm_backward(da, ln_x, grads, "gamma_ih")
        da_h = _layer_norm_backward(da, ln_h, grads, "gamma_hh")
    grads["w_ih"] += da_x.T @ x
    grads["w_hh"] += da_h.T @ h_in
    dx = da_x @ p.w_ih
    dh_in = da_h @ p.w_hh
    dh = dh + (dh_in * p.recurrent_mask[rows] if p.recurrent_mask is not None else dh_in)
    return dx, (dh, dc)


def _lstm_problem(x, w_ih, w_hh, b_ih, b_hh, lengths, reverse, w_hr, peephole, layer_norm,
                  recurrent_mask, zoneout):
    _exclusive("lstm", w_hr=w_hr, peephole=peephole, layer_norm=layer_norm,
               recurrent_mask=recurrent_mask, zoneout=zoneout)
    p = _Problem("lstm", 4, x, w_ih, w_hh, b_ih, b_hh, lengths, reverse, w_hr=w_hr)
    H = p.H
    params = {}
    if w_hr is not None:
        params["w_hr"] = p.w_hr
    if peephole is not None:
        p.peephole = p.vectors("peephole", peephole, ("w_ci", "w_cf", "w_co"), (H, H, H))
        params.update(zip(("w_ci", "w_cf", "w_co"), p.peephole))
    if layer_norm is not None:
        p.layer_norm = p.vectors("layer_norm", layer_norm, ("gamma_ih", "gamma_hh", "gamma_c", "beta_c"),
                                 (4 * H, 4 * H, H, H))
        params.update(zip(("gamma_ih", "gamma_hh", "gamma_c", "beta_c"), p.layer_norm))
    p.set_recurrent_mask(recurrent_mask)
    if zoneout is not None:
        if not isinstance(zoneout, (tuple, list)) or len(zoneout) != 2:
            raise TypeError(f"zoneout: expected a pair (z_h, z_c) for lstm, got {type(zoneout).__name__}")
        p.zoneout_h = p.zoneout("zoneout[0] (z_h)", zoneout[0], p.P)
        p.zoneout_c = p.zoneout("zoneout[1] (z_c)", zoneout[1], H)
    return p, params


def lstm_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, c0=None, lengths=None, reverse=False,
                 training=True, w_hr=None, peephole=None, layer_norm=None, recurrent_mask=None,
                 zoneout=None):
    """LSTM over a time-major batch (docs/kernel-abi.md).

    x (T, B, I); w_ih (4H, I); w_hh (4H, P); b_ih, b_hh (4H,) or None;
    h0 (B, P), c0 (B, H) or None (zeros); lengths (B,) ints in [0, T] or None;
    the variants of the module docstring.
    Returns y (T, B, P), h_n (B, P), c_n (B, H), cache (None unless training).
    """
    training = _check_flag("training", training)
    p, params = _lstm_problem(x, w_ih, w_hh, b_ih, b_hh, lengths, reverse, w_hr, peephole,
                              layer_norm, recurrent_mask, zoneout)
    initial = (p.state("h0", h0), p.state("c0", c0, p.H))
    y, (h_n, c_n), tape = _scan(p, _lstm_step, initial, training)
    cache = _make_cache("lstm", p, tape, ("h0", "c0"), (p.P, p.H), params) if training else None
    return y, h_n, c_n, cache


def lstm_backward(cache, dy, dh_n=None, dc_n=None, input_grad=True):
    """Gradients of lstm_forward given dy (T, B, P), dh_n (B, P), dc_n (B, H) (None = zeros).

    Returns {x, h0, c0, w_ih, w_hh, b_ih, b_hh} (biases None where they were None;
    x None with ``input_grad=False``), plus the variants' parameters (w_hr; w_ci, w_cf, w_co; gamma_ih, gamma_hh, gamma_c, beta_c).
    """
    cache = _check_cache(cache, "lstm")
    return _scan_backward(cache, _lstm_step_backward, dy, (("dh_n", dh_n), ("dc_n", dc_n)), input_grad)


# ------------------------------------------------------------------------- GRU
def _gru_step(p, x, h, rows, times, reset_after):
    """One GRU step for N running sequences: x (N, I), h (N, H).

    h_in = m ⊙ h                                  (recurrent dropout mask m, else h)
    a_x = W_ih x + b_ih,  a_h = W_hh h_in + b_hh                  (N, 3H); with layer_norm
        a_x = LN(W_ih x; γ_ih) + b_ih,  a_h = LN(W_hh h_in; γ_hh) + b_hh
    r = σ(a_x_r + a_h_r);  z = σ(a_x_z + a_h_z)
    reset_after:   n = tanh(a_x_n + r ⊙ a_h_n)
    reset before:  n = tanh(a_x_n + W_hn (r ⊙ h_in) + b_hn)
    h~ = (1 - z) ⊙ n + z ⊙ h                       (the unmasked h, as Keras)
    zoneout: h' = z_h ⊙ h + (1 - z_h) ⊙ h~; else h' = h~
    """
    H = p.H
    h_in = h * p.recurrent_mask[rows] if p.recurrent_mask is not None else h
    ln_x = ln_h = None
    if p.layer_norm is not None:                      # reset_after only
        gamma_ih, gamma_hh = p.layer_norm
        a_x, ln_x = _layer_norm(x @ p.w_ih.T, gamma_ih)
        a_h, ln_h = _layer_norm(h_in @ p.w_hh.T, gamma_hh)
        a_x, a_h = a_x + p.b_ih, a_h + p.b_hh
        r = sigmoid(a_x[:, :H] + a_h[:, :H])
        z = sigmoid(a_x[:, H:2 * H] + a_h[:, H:2 * H])
        hn = a_h[:, 2 * H:]
        n = np.tanh(a_x[:, 2 * H:] + r * hn)
    else:
        a_x = x @ p.w_ih.T + p.b_ih
        a_h = h_in @ p.w_hh[:2 * H].T + p.b_hh[:2 * H]  # r and z rows
        r = sigmoid(a_x[:, :H] + a_h[:, :H])
        z = sigmoid(a_x[:, H:2 * H] + a_h[:, H:])
        w_hn, b_hn = p.w_hh[2 * H:], p.b_hh[2 * H:]
        if reset_after:
            hn = h_in @ w_hn.T + b_hn                 # W_hn h + b_hn
            n = np.tanh(a_x[:, 2 * H:] + r * hn)
        else:
            hn = (r * h_in) @ w_hn.T + b_hn           # W_hn (r ⊙ h) + b_hn
            n = np.tanh(a_x[:, 2 * H:] + hn)
    h_tilde = (1 - z) * n + z * h
    z_h = _zoneout_weight(p.zoneout_h, rows, times)
    h_new = h_tilde if z_h is None else z_h * h + (1 - z_h) * h_tilde
    return (h_new,), (x, h, h_in, r, z, n, hn, z_h, ln_x, ln_h, rows)


def _gru_step_backward(p, kept, dh_new, grads, reset_after):
    """Given dL/dh' (N, H): accumulate weight gradients, return dx, (dh,)."""
    H = p.H
    x, h, h_in, r, z, n, hn, z_h, ln_x, ln_h, rows = kept
    dh = dh_new * z_h if z_h is not None else np.zeros_like(dh_new)   # zoneout: h' keeps h
    dh_tilde = dh_new * (1 - z_h) if z_h is not None else dh_new
    dn = dh_tilde * (1 - z)
    dz = dh_tilde * (h - n)
    dh = dh + dh_tilde * z                            # the direct path h -> h~
    dan = dn * (1 - n ** 2)                           # gradient of n's tanh argument
    w_hn = p.w_hh[2 * H:]
    if reset_after:
        dr = dan * hn
        dhn = dan * r                                 # gradient of a_h_n (W_hn h + b_hn)
        drh = None
    else:
        dhn = dan                                     # gradient of W_hn (r ⊙ h) + b_hn
        drh = dhn @ w_hn                              # gradient of r ⊙ h_in
        dr = drh * h_in
    dar = dr * r * (1 - r)
    daz = dz * z * (1 - z)
    da_x = np.concatenate([dar, daz, dan], axis=1)    # (N, 3H) gradient of a_x
    da_h = np.concatenate([dar, daz, dhn], axis=1)    # (N, 3H) gradient of a_h
    grads["b_ih"] += da_x.sum(axis=0)
    grads["b_hh"] += da_h.sum(axis=0)
    if p.layer_norm is not None:
        da_x = _layer_norm_backward(da_x, ln_x, grads, "gamma_ih")
        da_h = _layer_norm_backward(da_h, ln_h, grads, "gamma_hh")
    grads["w_ih"] += da_x.T @ x
    if reset_after:
        grads["w_hh"] += da_h.T @ h_in
        dh_in = da_h @ p.w_hh
    else:
        grads["w_hh"][:2 * H] += da_h[:, :2 * H].T @ h_in
        grads["w_hh"][2 * H:] += dhn.T @ (r * h_in)
        dh_in = da_h[:, :2 * H] @ p.w_hh[:2 * H] + drh * r
    dx = da_x @ p.w_ih
    dh = dh + (dh_in * p.recurrent_mask[rows] if p.recurrent_mask is not None else dh_in)
    return dx, (dh,)


def gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, lengths=None, reverse=False,
                reset_after=True, training=True, layer_norm=None, recurrent_mask=None,
                zoneout=None):
    """GRU over a time-major batch (docs/kernel-abi.md).

    x (T, B, I); w_ih (3H, I); w_hh (3H, H); b_ih, b_hh (3H,) or None;
    h0 (B, H) or None (zeros); lengths (B,) ints in [0, T] or None; layer_norm
    (gamma_ih, gamma_hh), recurrent_mask (B, H), zoneout (a rate or (T, B, H)).
    Returns y (T, B, H), h_n (B, H), cache (None unless training).
    """
    reset_after = _check_flag("reset_after", reset_after)
    training = _check_flag("training", training)
    _exclusive("gru", layer_norm=layer_norm, recurrent_mask=recurrent_mask, zoneout=zoneout)
    p = _Problem("gru", 3, x, w_ih, w_hh, b_ih, b_hh, lengths, reverse)
    params = {}
    if layer_norm is not None:
        if not reset_after:
            raise ValueError("layer_norm: the LayerNorm GRU has reset_after=True equations; got reset_after=False")
        p.layer_norm = p.vectors("layer_norm", layer_norm, ("gamma_ih", "gamma_hh"), (3 * p.H, 3 * p.H))
        params.update(zip(("gamma_ih", "gamma_hh"), p.layer_norm))
    p.set_recurrent_mask(recurrent_mask)
    p.zoneout_h = p.zoneout("zoneout", zoneout, p.H)
    initial = (p.state("h0", h0),)
    y, (h_n,), tape = _scan(p, _gru_step, initial, training, reset_after=reset_after)
    cache = _make_cache("gru", p, tape, ("h0",), (p.H,), params, reset_after=reset_after) if training else None
    return y, h_n, cache


def gru_backward(cache, dy, dh_n=None, input_grad=True):
    """Gradients of gru_forward given dy (T, B, H), dh_n (B, H) (None = zeros).

    Returns {x, h0, w_ih, w_hh, b_ih, b_hh} (biases None where they were None),
    plus gamma_ih and gamma_hh with layer_norm.
    """
    cache = _check_cache(cache, "gru")
    return _scan_backward(cache, _gru_step_backward, dy, (("dh_n", dh_n),), input_grad)


# ------------------------------------------------------------------------- RNN
def _rnn_step(p, x, h, rows, times, nonlinearity):
    """One Elman step for N running sequences: x (N, I), h (N, H).

    h_in = m ⊙ h                                   (recurrent dropout mask m, else h)
    a = W_ih x + b_ih + W_hh h_in + b_hh;  h' = tanh(a) or relu(a)     (N, H)
    """
    h_in = h * p.recurrent_mask[rows] if p.recurrent_mask is not None else h
    a = x @ p.w_ih.T + p.b_ih + h_in @ p.w_hh.T + p.b_hh
    h_new = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)  # maximum keeps NaN
    return (h_new,), (x, h_in, h_new, rows)


def _rnn_step_backward(p, kept, dh_new, grads, nonlinearity):
    """Given dL/dh' (N, H): accumulate weight gradients, return dx, (dh,)."""
    x, h_in, h_new, rows = kept
    if nonlinearity == "tanh":
        da = dh_new * (1 - h_new ** 2)
    else:
        da = dh_new * (h_new > 0)                     # relu'(0) = 0, as PyTorch
    _accumulate(grads, "ih", da, x)
    _accumulate(grads, "hh", da, h_in)
    dx = da @ p.w_ih
    dh_in = da @ p.w_hh
    dh = dh_in * p.recurrent_mask[rows] if p.recurrent_mask is not None else dh_in
    return dx, (dh,)


def rnn_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, lengths=None, reverse=False,
                nonlinearity="tanh", training=True, recurrent_mask=None):
    """Vanilla (Elman) RNN over a time-major batch (docs/kernel-abi.md).

    x (T, B, I); w_ih (H, I); w_hh (H, H); b_ih, b_hh (H,) or None;
    h0 (B, H) or None (zeros); lengths (B,) ints in [0, T] or None;
    nonlinearity 'tanh' or 'relu'; recurrent_mask (B, H) or None.
    Returns y (T, B, H), h_n (B, H), cache (None unless training).
    """
    if not isinstance(nonlinearity, str) or nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
    training = _check_flag("training", training)
    p = _Problem("rnn", 1, x, w_ih, w_hh, b_ih, b_hh, lengths, reverse)
    p.set_recurrent_mask(recurrent_mask)
    initial = (p.state("h0", h0),)
    y, (h_n,), tape = _scan(p, _rnn_step, initial, training, nonlinearity=nonlinearity)
    cache = _make_cache("rnn", p, tape, ("h0",), (p.H,), {}, nonlinearity=nonlinearity) if training else None
    return y, h_n, cache


def rnn_backward(cache, dy, dh_n=None, input_grad=True):
    """Gradients of rnn_forward given dy (T, B, H), dh_n (B, H) (None = zeros).

    Returns {x, h0, w_ih, w_hh, b_ih, b_hh} (biases None where they were None).
    """
    cache = _check_cache(cache, "rnn")
    return _scan_backward(cache, _rnn_step_backward, dy, (("dh_n", dh_n),), input_grad)


# ------------------------------------------------------------------------ CTC
# Connectionist temporal classification (Graves et al. 2006), in log space.
#
#   z    (T, B, C)   logits of each frame        lp = log_softmax(z) over C
#   l    (S_b,)      sample b's labels           l' = (blank, l1, blank, l2, ..., lS, blank), L = 2 S_b + 1
#   alpha[t, s] = log P(l'[:s+1] emitted by frames 0..t, frame t on l'[s])
#   beta[t, s]  = log P(l'[s:] emitted by frames t..T_b-1, frame t on l'[s])
#   loss_b = -log P(l | z) = -logsumexp(alpha[T_b-1, L-1], alpha[T_b-1, L-2])
#   occupancy[t, c] = sum over s with l'[s] = c of exp(alpha[t, s] + beta[t, s] - lp[t, l'[s]] + loss_b)
#   dloss_b / dz[t, c] = softmax(z)[t, c] - occupancy[t, c]       (for t < T_b; 0 after)

def _ctc_integers(name, a, shape_text):
    a = _as_array(name, a, f"an integer array {shape_text}")
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array {shape_text}, got dtype {a.dtype}")
    return a.astype(np.int64)


def _ctc_labels(targets, target_lengths, B, C, blank):
    """Each sample's label sequence, from padded (B, S) or concatenated 1-D targets."""
    if targets.ndim == 2:
        if targets.shape[0] != B:
            raise ValueError(f"targets: expected {B} rows (B, S), got shape {targets.shape}")
        if target_lengths.size and target_lengths.max() > targets.shape[1]:
            raise ValueError(f"target_lengths: expected values in [0, {targets.shape[1]}] (the padded "
                             f"targets' S), got max {target_lengths.max()}")
        labels = [targets[b, :target_lengths[b]] for b in range(B)]
    elif targets.ndim == 1:
        if targets.size != target_lengths.sum():
            raise ValueError(f"targets: concatenated 1-D targets must hold sum(target_lengths) = "
                             f"{target_lengths.sum()} labels, got {targets.size}")
        labels = np.split(targets, np.cumsum(target_lengths)[:-1]) if B else []
    else:
        raise ValueError(f"targets: expected padded (B, S) or concatenated 1-D labels, got shape {targets.shape}")
    for b, l in enumerate(labels):
        if l.size and (l.min() < 0 or l.max() >= C):
            raise ValueError(f"targets: sample {b}: expected labels in [0, {C - 1}], got min {l.min()} max {l.max()}")
        if np.any(l == blank):
            raise ValueError(f"targets: sample {b}: label {blank} is the blank, which cannot be a target")
    return labels


def _ctc_check(logits, targets, input_lengths, target_lengths, blank, zero_infinity, training):
    if not isinstance(logits, (np.ndarray, list, tuple)) and not hasattr(logits, "__array__"):
        raise TypeError(f"logits: expected an array (T, B, C), got {type(logits).__name__}")
    z = np.asarray(logits)
    if z.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"logits: expected dtype float32 or float64, got {z.dtype}")
    if z.ndim != 3 or z.shape[2] < 1:
        raise ValueError(f"logits: expected shape (T, B, C) with C >= 1, got {z.shape}")
    T, B, C = z.shape
    if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)) or not 0 <= blank < C:
        raise ValueError(f"blank: expected an integer in [0, {C - 1}], got {blank!r}")
    for name, flag in (("zero_infinity", zero_infinity), ("training", training)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name}: expected True or False, got {flag!r}")
    input_lengths = _ctc_integers("input_lengths", input_lengths, f"({B},)")
    target_lengths = _ctc_integers("target_lengths", target_lengths, f"({B},)")
    for name, n in (("input_lengths", input_lengths), ("target_lengths", target_lengths)):
        if n.shape != (B,):
            raise ValueError(f"{name}: expected shape ({B},), got {n.shape}")
        if B and n.min() < 0:
            raise ValueError(f"{name}: expected non-negative values, got min {n.min()}")
    if B and input_lengths.max() > T:
        raise ValueError(f"input_lengths: expected values in [0, {T}] (the logits' T), got max {input_lengths.max()}")
    labels = _ctc_labels(_ctc_integers("targets", targets, "(B, S) or 1-D"), target_lengths, B, C, blank)
    return z, labels, input_lengths


def _logsumexp(*terms):
    """log(sum(exp(terms))), -inf when every term is -inf."""
    m = max(terms)
    if m == -np.inf:
        return -np.inf
    return m + np.log(sum(np.exp(a - m) for a in terms))


def _ctc_one(lp, l, blank):
    """Loss and dloss/dlp-occupancy of one sample: lp (T_b, C) log-probabilities, l its labels."""
    T_b = lp.shape[0]
    ext = np.full(2 * l.size + 1, blank, np.int64)
    ext[1::2] = l
    L = ext.size
    # a path may jump from l'[s-2] to l'[s] when l'[s] is a label different from l'[s-2]
    can_skip = np.zeros(L, bool)
    can_skip[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    if T_b == 0:  # no frames: only the empty label sequence has probability (1)
        return (0.0 if l.size == 0 else np.inf), np.zeros((0, L)), ext
    alpha = np.full((T_b, L), -np.inf)
    alpha[0, 0] = lp[0, ext[0]]
    if L > 1:
        alpha[0, 1] = lp[0, ext[1]]
    for t in range(1, T_b):
        for s in range(L):
            stay = alpha[t - 1, s]
            advance = alpha[t - 1, s - 1] if s >= 1 else -np.inf
            skip = alpha[t - 1, s - 2] if can_skip[s] else -np.inf
            alpha[t, s] = _logsumexp(stay, advance, skip) + lp[t, ext[s]]
    log_p = _logsumexp(alpha[T_b - 1, L - 1], alpha[T_b - 1, L - 2] if L > 1 else -np.inf)
    beta = np.full((T_b, L), -np.inf)
    beta[T_b - 1, L - 1] = lp[T_b - 1, ext[L - 1]]
    if L > 1:
        beta[T_b - 1, L - 2] = lp[T_b - 1, ext[L - 2]]
    for t in range(T_b - 2, -1, -1):
        for s in range(L):
            stay = beta[t + 1, s]
            advance = beta[t + 1, s + 1] if s + 1 < L else -np.inf
            skip = beta[t + 1, s + 2] if s + 2 < L and can_skip[s + 2] else -np.inf
            beta[t, s] = _logsumexp(stay, advance, skip) + lp[t, ext[s]]
    if log_p == -np.inf:
        return np.inf, None, ext
    # posterior of frame t being on state s: alpha and beta both count lp[t, l'[s]]
    posterior = np.exp(alpha + beta - lp[:, ext] - log_p)
    return -log_p, posterior, ext


def ctc_loss(logits, targets, input_lengths, target_lengths, blank=0, zero_infinity=False, training=True):
    """CTC negative log-likelihood of each sample, and its gradient with respect to the logits.

    logits (T, B, C) float32/float64, unnormalised (log_softmax is taken here);
    targets padded (B, S) (entries past a sample's target length are ignored) or the
    samples' labels concatenated (1-D), as torch.nn.functional.ctc_loss takes them;
    input_lengths, target_lengths (B,) ints.  A label equal to ``blank`` is an error.
    Returns ``losses (B,)`` (inf for a sample no alignment fits, 0 then with
    ``zero_infinity``) and ``dlogits (T, B, C)``, the gradient of each sample's own loss
    (zero past its input length, zero for an impossible sample), or None unless ``training``.
    """
    z, labels, input_lengths = _ctc_check(logits, targets, input_lengths, target_lengths, blank,
                                          zero_infinity, training)
    T, B, C = z.shape
    z64 = z.astype(np.float64)
    shifted = z64 - z64.max(axis=2, keepdims=True)
    lp = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))
    losses = np.zeros(B)
    dz = np.zeros((T, B, C))
    for b in range(B):
        T_b = int(input_lengths[b])
        loss, posterior, ext = _ctc_one(lp[:T_b, b], labels[b], blank)
        if loss == np.inf:
            losses[b] = 0.0 if zero_infinity else np.inf
            continue  # an impossible sample has no gradient
        losses[b] = loss
        occupancy = np.zeros((T_b, C))
        for s, c in enumerate(ext):
            occupancy[:, c] += posterior[:, s]
        dz[:T_b, b] = np.exp(lp[:T_b, b]) - occupancy
    losses = losses.astype(z.dtype)
    return losses, (dz.astype(z.dtype) if training else None)
