"""Compiled forward/backward kernels for RNN, LSTM and GRU, and their variants.

Same signatures and semantics as :mod:`rnnkernels.reference` (see
docs/kernel-abi.md), plus entries for PyTorch's PackedSequence layout
(``*_forward_packed``).  This module is the Python half of the layering: it
validates the caller's arguments (its own checks: it shares no code with the
reference, so each checks the other) and allocates every buffer;
:mod:`rnnkernels._core` plans the packed layout (``plan``) and permutes and
packs the weights into the kernels' tiles (``weights``); the compiled
skeleton (src/_recurrent_t.h) only computes, with the point updates of the
kernel cell the call needs (``_core.cells.kernel_cell``).
"""
import numpy as np

from ._core import cells as _cells, threads as _threads, tuning as _tuning
from ._core.tuning import kernels as _kernels
from ._core.memory import empty as _aligned_empty, scratch as _scratch, zeros as _aligned_zeros
from ._core.plan import packed_plan as _packed_plan, plan as _plan
from ._core.weights import Weights as _Weights

_FLOAT_DTYPES = (np.float32, np.float64)
_NONLINEARITIES = ("tanh", "relu")


# ---------------------------------------------------------------- validation
def _input(x, name="x", ndim=3, layout="(T, B, I)"):
    if not hasattr(x, "__array__") and not isinstance(x, (list, tuple)):
        raise TypeError(f"{name}: expected an array of shape {layout}, got {type(x).__name__}")
    x = np.asarray(x)
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions {layout}, got shape {x.shape}")
    if x.shape[-1] < 1:
        raise ValueError(f"{name}: expected input size I >= 1, got shape {x.shape}")
    return x


def _array(name, a, dtype, shape, allow_none=False):
    """Convert ``a`` to a C-contiguous array of ``dtype`` with exactly ``shape``."""
    if a is None:
        if allow_none:
            return None
        raise ValueError(f"{name}: expected an array of shape {tuple(shape)}, got None")
    if not hasattr(a, "__array__") and not isinstance(a, (list, tuple)):
        raise TypeError(f"{name}: expected an array of shape {tuple(shape)}, got {type(a).__name__}")
    a = np.asarray(a)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a real numeric array, got dtype {a.dtype}")
    if a.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {a.shape}")
    return np.ascontiguousarray(a, dtype=dtype)


def _weights(w_ih, w_hh, b_ih, b_hh, w_hr, gates, cell, I, dtype):
    """The weights as arrays of ``dtype``; returns them with H and P."""
    for name, w in (("w_ih", w_ih), ("w_hh", w_hh)):
        if w is None or not hasattr(w, "shape") and not isinstance(w, (list, tuple)):
            raise TypeError(f"{name}: expected a 2-D array, got {type(w).__name__}")
    w_hh = np.asarray(w_hh)
    if w_hr is None:
        if w_hh.ndim != 2 or w_hh.shape[1] < 1 or w_hh.shape[0] != gates * w_hh.shape[1]:
            raise ValueError(f"w_hh: expected shape ({gates}*H, H) for {cell} "
                             f"({gates} gates), got {w_hh.shape}")
        H = P = w_hh.shape[1]
    else:
        if not hasattr(w_hr, "shape") and not isinstance(w_hr, (list, tuple)):
            raise TypeError(f"w_hr: expected an array of shape (P, H), got {type(w_hr).__name__}")
        w_hr = np.asarray(w_hr)
        if w_hr.ndim != 2 or w_hr.shape[0] < 1 or w_hr.shape[1] < 1:
            raise ValueError(f"w_hr: expected shape (P, H) with P, H >= 1, got {w_hr.shape}")
        P, H = w_hr.shape
        w_hr = _array("w_hr", w_hr, dtype, (P, H))
        if w_hh.shape != (gates * H, P):
            raise ValueError(f"w_hh: expected shape ({gates * H}, {P}) for {cell} with w_hr {w_hr.shape} "
                             f"({gates}*H, P), got {w_hh.shape}")
    w_ih = _array("w_ih", w_ih, dtype, (gates * H, I))
    w_hh = _array("w_hh", w_hh, dtype, (gates * H, P))
    b_ih = _array("b_ih", b_ih, dtype, (gates * H,), allow_none=True)
    b_hh = _array("b_hh", b_hh, dtype, (gates * H,), allow_none=True)
    return w_ih, w_hh, b_ih, b_hh, w_hr, H, P


def _state(name, s, dtype, B, size):
    if s is None:
        return np.zeros((B, size), dtype)
    return _array(name, s, dtype, (B, size))


def _lengths(lengths, T, B):
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise TypeError(f"lengths: expected integers, got non-integral values of dtype {arr.dtype}")
    elif arr.dtype.kind == "b":
        raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected an integer array of shape ({B},), got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},) (one length per sequence), got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int64)  # their range: _layout.longest_first


def _batch_sizes(batch_sizes, N):
    """A PackedSequence's batch_sizes: positive, non-increasing, summing to N."""
    if not hasattr(batch_sizes, "__array__") and not isinstance(batch_sizes, (list, tuple)):
        raise TypeError(f"batch_sizes: expected a 1-D integer array, got {type(batch_sizes).__name__}")
    bs = np.asarray(batch_sizes)
    if bs.dtype.kind not in "iu" or bs.ndim != 1:
        raise TypeError(f"batch_sizes: expected a 1-D integer array, got dtype {bs.dtype} shape {bs.shape}")
    if bs.size and (bs.min() < 1 or np.any(np.diff(bs) > 0)):
        raise ValueError(f"batch_sizes: expected positive, non-increasing counts, got {bs.tolist()[:8]}")
    if int(bs.sum()) != N:
        raise ValueError(f"batch_sizes: expected counts summing to data's {N} rows, got {int(bs.sum())}")
    return bs.astype(np.intp)


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _rate(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a rate in [0, 1) or a mask array, got {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value < 1.0:  # also refuses NaN
        raise ValueError(f"{name}: expected a rate in [0, 1), got {value!r}")
    return value


def _vectors(name, values, names, sizes, dtype):
    if not isinstance(values, (tuple, list)) or len(values) != len(names):
        got = f"{type(values).__name__}" + (f" of {len(values)}" if isinstance(values, (tuple, list)) else "")
        raise TypeError(f"{name}: expected a tuple ({', '.join(names)}), got {got}")
    return tuple(_array(f"{name}[{k}] ({n})", v, dtype, (s,)) for k, (v, n, s) in enumerate(zip(values, names, sizes)))


def _cache_for(cache, kind):
    if cache is None:
        raise ValueError(f"cache: got None; run {kind}_forward with training=True "
                         "to keep what backward needs")
    if not isinstance(cache, _Cache) or cache.kind != kind:
        raise TypeError(f"cache: expected the cache returned by ops.{kind}_forward, "
                        f"got {type(cache).__name__}"
                        + (f" from {cache.kind}_forward" if isinstance(cache, _Cache) else ""))
    return cache


class _Cache:
    """What backward needs; opaque to callers."""

    def __init__(self, kind, **fields):
        self.kind = kind
        self.__dict__.update(fields)


class _Variants:
    """One call's variants, validated: None where off."""

    def __init__(self, kind, dtype, row_shape, B, H, P, peephole=None, layer_norm=None,
                 recurrent_mask=None, zoneout=None, w_hr=None, reset_after=True):
        given = {"w_hr": w_hr, "peephole": peephole, "layer_norm": layer_norm,
                 "recurrent_mask": recurrent_mask, "zoneout": zoneout}
        on = [n for n, v in given.items() if v is not None]
        for a in on:
            for b in on:
                if a < b and frozenset({a, b}) not in _cells.COMPATIBLE:
                    raise ValueError(f"{a}, {b}: these {kind} variants cannot be combined; give one of them")
        self.peephole = self.layer_norm = self.mask = None
        self.zh = self.zc = None             # (row_shape + (P,)) / (H,) weight arrays
        self.zh_rate = self.zc_rate = -1.0   # or rates (-1: off)
        if peephole is not None:
            self.peephole = _vectors("peephole", peephole, ("w_ci", "w_cf", "w_co"), (H, H, H), dtype)
        if layer_norm is not None:
            if kind == "gru" and not reset_after:
                raise ValueError("layer_norm: the LayerNorm GRU has reset_after=True equations; "
                                 "got reset_after=False")
            G = _cells.CELLS[kind].gates
            names = ("gamma_ih", "gamma_hh", "gamma_c", "beta_c") if kind == "lstm" else ("gamma_ih", "gamma_hh")
            sizes = (G * H, G * H, H, H)[:len(names)]
            self.layer_norm = dict(zip(names, _vectors("layer_norm", layer_norm, names, sizes, dtype)))
        if recurrent_mask is not None:
            self.mask = _array("recurrent_mask", recurrent_mask, dtype, (B, P))
        if zoneout is not None:
            if kind == "lstm":
                if not isinstance(zoneout, (tuple, list)) or len(zoneout) != 2:
                    raise TypeError(f"zoneout: expected a pair (z_h, z_c) for lstm, got {type(zoneout).__name__}")
                z_h, z_c = zoneout
            else:
                z_h, z_c = zoneout, None
            self.zh, self.zh_rate = self._zoneout("zoneout[0] (z_h)" if kind == "lstm" else "zoneout",
                                                  z_h, dtype, row_shape + (P,))
            self.zc, self.zc_rate = self._zoneout("zoneout[1] (z_c)", z_c, dtype, row_shape + (H,))

    @staticmethod
    def _zoneout(name, z, dtype, shape):
        if z is None:
            return None, -1.0
        if np.ndim(z) == 0 and not hasattr(z, "shape"):
            return None, _rate(name, z)
        return _array(name, z, dtype, shape), -1.0


# ------------------------------------------------------------------ the calls
def _kernel_threads(plan, G, H, P, ntiles, I, rows_split):
    """(merged GEMMs, time loop) thread counts for one call."""
    return _tuning.threads_for(plan, G, H, P, ntiles, I, rows_split)


def _weight_grad(shape, dtype, n_rows):
    """Buffer for a weight gradient: the kernels' merged GEMMs overwrite all of
    it when there is at least one packed row, so it is zeroed only for an
    empty batch (a zeroing pass is a full write of the gradient)."""
    return (_aligned_empty if n_rows else _aligned_zeros)(shape, dtype)


# Whether forward computes the input side inside the steps (tests turn it off to
# compare the two ways: the same bits).
_INPUT_IN_STEP = True

# Inference's packed inputs: a scratch slot of their own (the kernels' other
# scratch buffers use slots 0 and 1), needed at the same time as those.
_XP_SLOT = 2


def _forward(kind, x, plan, weights, states, training, v, reset_after=True, nonlinearity="tanh"):
    """One forward call: x (row_shape + (I,)) checked, the plan made, the
    weights (w_ih, w_hh, b_ih, b_hh, w_hr, H, P) and the variants v checked.
    Returns y, the final states and the cache (None unless training)."""
    w_ih, w_hh, b_ih, b_hh, w_hr, H, P = weights
    spec = _cells.CELLS[kind]
    G, dtype, I, B, N = spec.gates, x.dtype, x.shape[-1], plan.B, plan.N
    GH = G * H
    cell_name = _cells.kernel_cell(kind, peephole=v.peephole is not None, layer_norm=v.layer_norm is not None,
                                   reset_after=reset_after, nonlinearity=nonlinearity)
    rows_split = cell_name in _cells.ROW_SPLIT
    tuned, kernels = _tuning.current(), _kernels()  # one plan and one build for the call and its backward
    ub = H if rows_split else _tuning.unit_tile(H, tuned)
    backward = None if not training else "gate_split" if cell_name == "gru_reset_before" else "tiles"
    # the input side computed inside each step, into the tile's gate rows while they are in L1,
    # rather than by one pass over every row before the loop (which wrote all N x G*H gates and
    # read them back a step at a time): the same sums in the same order, so the same bits; the
    # LayerNorm cells normalise the whole input projection first
    input_in_step = _INPUT_IN_STEP and not rows_split
    w = _Weights(w_ih, w_hh, G, ub, backward, split_gru=kind == "gru" and not rows_split, w_hr=w_hr,
                 pub=_tuning.unit_tile(P, tuned) if w_hr is not None else None, input_in_step=input_in_step)
    a = {"counts": plan.counts, "offsets": plan.offsets, "tiles": w.tiles, "ptiles": w.ptiles,
         "w_ih_t": w.w_ih_t, "w_fwd": w.w_fwd, "w_fwd_starts": w.w_fwd_starts,
         "w_hr_fwd": w.w_hr_fwd, "w_hr_fwd_starts": w.w_hr_fwd_starts,
         "w_ih_fwd": w.w_ih_fwd, "w_ih_fwd_starts": w.w_ih_fwd_starts}
    # The inputs: the kernels read x's rows in place and gather them into xp,
    # the packed inputs backward reads.  A training call always gathers, so
    # that changing x in place after forward changes no gradient.
    x_rows = x.reshape(plan.R, I) if x.flags.c_contiguous else np.ascontiguousarray(x).reshape(plan.R, I)
    a["x"] = x_rows
    if training:
        a["x_rows"] = plan.x_rows if plan.x_rows is not None else _identity_rows(N)
        a["xp"] = xp = _aligned_empty((N, I), dtype)
    elif plan.x_rows is not None:
        a["x_rows"] = plan.x_rows
        a["xp"] = _scratch((N, I), dtype, slot=_XP_SLOT)
        xp = None
    else:
        xp = None
    # biases, in the tiles' order
    zeros = np.zeros(GH, dtype)
    bi = zeros if b_ih is None else b_ih
    bh = zeros if b_hh is None else b_hh
    if kind == "gru" and reset_after:
        # r and z take b_ih + b_hh; after the reset b_hn sits inside r * (W_hn h + b_hn)
        if rows_split:
            a["bias"], a["b_hh"] = np.ascontiguousarray(bi), np.ascontiguousarray(bh)
        else:
            b = bi + bh
            b[2 * H:] = bi[2 * H:]
            a["bias"], a["b_hn"] = w.permute(b), np.ascontiguousarray(bh[2 * H:])
    else:
        a["bias"] = w.permute(bi + bh)
    if v.peephole is not None:
        a["peep"] = w.permute_triple(v.peephole)
    # states
    h0 = states[0]
    a["h"] = h = plan.state_buffer(h0, P)
    c = None
    if kind == "lstm":
        a["c"] = c = plan.state_buffer(states[1], H)
    hm = None
    if v.mask is not None:
        a["mask"] = plan.to_sorted(v.mask)
        a["hm"] = hm = plan.state_buffer(h0 * v.mask, P)
    zh = zc = None
    if v.zh is not None:
        a["zh"] = zh = plan.packed_rows(v.zh, "zoneout")
    if v.zc is not None:
        a["zc"] = zc = plan.packed_rows(v.zc, "zoneout")
    ctilde = None
    if kind == "lstm" and (v.zc is not None or v.zc_rate >= 0):
        a["ctilde"] = ctilde = _aligned_empty((N, H), dtype)
    # what the step writes and backward reads; the RNN's backward reads its
    # derivative off h alone, so its gates (the pre-activations) are scratch,
    # the slot its backward's gate gradients take: one (N, H) buffer less held
    # from forward to backward
    keeps_gates = training and kind != "rnn"
    # gates that nothing after their step reads need room for one step's rows only (with the
    # input side inside the steps, which writes each step's gates there): the (N, G*H) scratch
    # of every step went through the caches, which evicted the weights, for nothing
    a["step_gates"] = step_gates = not keeps_gates and input_in_step
    a["gates"] = gates = (_aligned_empty if keeps_gates else _scratch)((B if step_gates else N, GH), dtype)
    if not keeps_gates:
        gates = None
    aux = None
    if kind == "gru":
        a["aux"] = aux = (_aligned_empty if training else _scratch)((B if step_gates else N, H), dtype,
                                                                    *([] if training else [1]))
        if not rows_split and reset_after:
            a["gh"] = _aligned_empty((B, GH), dtype)
    m = None
    if w_hr is not None:
        a["m"] = m = _aligned_empty((N, H), dtype)
    ln = None
    if rows_split:
        ln = {"x_hat": _aligned_empty((N, GH), dtype), "rec_hat": _aligned_empty((N, GH), dtype),
              "rstd": _aligned_empty((N, 3), dtype)}
        if kind == "lstm":
            ln["c_hat"] = _aligned_empty((N, H), dtype)
        a.update(ln)
        a.update(v.layer_norm)
        a["rec"] = _aligned_empty((B, GH), dtype)
    y = plan.output_buffer(P, dtype)
    if y is not None:
        a.update(y=y, y_rows=plan.y_rows, padding=plan.padding)
    if N:
        a["rows"] = lanes = not rows_split and w_hr is None and _tuning.lane_split(cell_name, plan, GH * P * dtype.itemsize)
        nthreads, step_threads = _kernel_threads(plan, G, H, P, len(w.tiles) - 1, I, rows_split or lanes)
        team = kernels.forward(a, _cells.kernel_index(cell_name), B, I, H, P, nthreads, step_threads,
                               v.zh_rate, v.zc_rate, _tuning.solo_from(plan, G, H, P, step_threads))
        _threads.note_call(f"{kind}_forward", nthreads, team)
    finals = [plan.final(h)] + ([plan.final(c)] if c is not None else [])
    y = plan.outputs(h, y)
    if not training:
        return y, finals, None
    y.flags.writeable = False  # may be a view of the state buffer that backward reads
    cache = _Cache(kind, cell_name=cell_name, plan=plan, tuned=tuned, kernels=kernels, weights=w, H=H, I=I, P=P, G=G, dtype=dtype,
                   has_b_ih=b_ih is not None, has_b_hh=b_hh is not None, reset_after=reset_after,
                   rows_split=rows_split, x=xp, h=h, c=c, hm=hm, mask=a.get("mask"), zh=zh, zc=zc,
                   zh_rate=v.zh_rate, zc_rate=v.zc_rate, gates=gates, aux=aux, m=m, ctilde=ctilde,
                   ln=ln, layer_norm=v.layer_norm, peep=a.get("peep"), projection=w_hr is not None)
    return y, finals, cache


def _identity_rows(n):
    from ._core.plan import _identity_rows as rows
    return rows(n)


def _backward_lanes(cache, weight_elements):
    """Whether backward takes the batch-row split (tuning.lane_split): the
    plain cells only, without the variants' per-row sums and carries."""
    c = cache
    plain = (not c.rows_split and not c.projection and c.peep is None and c.mask is None and c.zh is None
             and c.zc is None and c.zh_rate < 0 and c.zc_rate < 0)
    return plain and _tuning.lane_split(c.cell_name, c.plan, weight_elements * np.dtype(c.dtype).itemsize,
                                        backward=True)


def _backward(kind, cache, dy, dstates, input_grad=True):
    """The gradients of one forward call (its cache), as the public dict;
    without ``input_grad`` no dX GEMM runs and "x" is None."""
    cache = _cache_for(cache, kind)
    input_grad = _flag("input_grad", input_grad)
    plan, w = cache.plan, cache.weights
    H, I, P, G, dtype, N, B = cache.H, cache.I, cache.P, cache.G, cache.dtype, plan.N, plan.B
    GH = G * H
    a = {"counts": plan.counts, "offsets": plan.offsets, "tiles": w.tiles, "ptiles": w.ptiles,
         "x": cache.x, "w_ih": w.w_ih, "w_bwd": w.w_bwd, "w_bwd_n": w.w_bwd_n,
         "w_bwd_starts": w.w_bwd_starts, "w_hr_bwd": w.w_hr_bwd, "w_hr_bwd_starts": w.w_hr_bwd_starts,
         "peep": cache.peep, "mask": cache.mask, "zh": cache.zh, "zc": cache.zc,
         "h": cache.h, "c": cache.c, "hm": cache.hm, "gates": cache.gates, "aux": cache.aux, "m": cache.m,
         "ctilde": cache.ctilde}
    if dy is not None:
        a["dy"] = _array("dy", dy, dtype, plan.row_shape + (P,)).reshape(plan.R, P)
        a["dy_rows"] = plan.y_rows
    a["dh"] = dh = plan.to_sorted(_state("dh_n", dstates[0], dtype, B, P))
    dc = None
    if kind == "lstm":
        a["dc"] = dc = plan.to_sorted(_state("dc_n", dstates[1], dtype, B, H))
    if not cache.rows_split:  # the LayerNorm cells keep their gate gradients one row at a time
        a["dgates"] = dgates = _scratch((N, GH), dtype, slot=0)
        if cache.gates is None:  # the RNN keeps none (it reads h): a valid buffer the kernel never reads
            a["gates"] = dgates
    if cache.cell_name == "gru_reset_before":
        dgates[:] = 0  # r's columns are read (times a zero weight) before they are written
    if kind == "gru" and cache.reset_after and not cache.rows_split:
        a["dgh"] = _scratch((2 * B, GH), dtype, slot=1)  # two-step ring (src/_recurrent_t.h)
    if cache.cell_name == "gru_reset_before":
        a["drh"] = _aligned_empty((B, H), dtype)
        a["dw_hn"] = _weight_grad((GH, P), dtype, N)
    if cache.projection:
        a["dhp"] = _aligned_empty((N, P), dtype)
        a["dw_hr"] = _weight_grad((P, H), dtype, N)
    dx = None
    if input_grad:
        a["dx"] = dx = plan.input_grad_buffer(I, dtype)
        a["dx_rows"] = plan.x_rows
        a["padding"] = plan.padding
    a["dw_ih"] = _weight_grad((GH, I), dtype, N)
    a["dw_hh"] = _weight_grad((GH, P), dtype, N)
    a["db"] = np.zeros(GH, dtype)
    if kind == "gru":
        a["db_hh"] = np.zeros(GH, dtype)
    if cache.peep is not None:
        a["dpeep"] = np.zeros(3 * H, dtype)
    if cache.rows_split:
        a.update(cache.ln)
        a.update(cache.layer_norm)
        a["drec"] = _aligned_empty((N, GH), dtype)
        a["drec_x"] = _aligned_empty((N, GH), dtype)
        for name in cache.layer_norm:
            a["d" + name] = np.zeros(cache.layer_norm[name].shape[0], dtype)
    if N:
        a["rows"] = lanes = _backward_lanes(cache, GH * P)
        nthreads, step_threads = _kernel_threads(plan, G, H, P, len(w.tiles) - 1, I, cache.rows_split or lanes)
        team = cache.kernels.backward(a, _cells.kernel_index(cache.cell_name), B, I, H, P, nthreads,
                                      step_threads, _tuning.wgrad_pieces(N, cache.tuned), cache.zh_rate,
                                      cache.zc_rate, _tuning.solo_from(plan, G, H, P, step_threads))
        _threads.note_call(f"{kind}_backward", nthreads, team)
    unperm = (lambda v: v) if cache.rows_split else w.unpermute
    dw_hh = unperm(a["dw_hh"])
    if cache.cell_name == "gru_reset_before":  # W_hn's rows take their gradient from r * h
        n_rows = np.arange(GH) >= 2 * H
        dw_hh[n_rows] = unperm(a["dw_hn"])[n_rows]
    db = unperm(a["db"])
    db_hh = unperm(a["db_hh"]) if kind == "gru" and cache.reset_after else db
    grads = {"x": None if dx is None else dx.reshape(plan.row_shape + (I,)), "h0": plan.from_sorted(dh)}
    if dc is not None:
        grads["c0"] = plan.from_sorted(dc)
    grads.update({"w_ih": unperm(a["dw_ih"]), "w_hh": dw_hh,
                  "b_ih": db if cache.has_b_ih else None,
                  "b_hh": (db_hh if db_hh is not db else db.copy()) if cache.has_b_hh else None})
    if cache.projection:
        grads["w_hr"] = a["dw_hr"]
    if cache.peep is not None:
        grads["w_ci"], grads["w_cf"], grads["w_co"] = w.unpermute_triple(a["dpeep"])
    if cache.rows_split:
        for name in cache.layer_norm:
            grads[name] = a["d" + name]
    return grads


def _padded_call(kind, cell_args, x, lengths, reverse, states, training, variants, **options):
    x = _input(x)
    T, B, I = x.shape
    weights = _weights(*cell_args, _cells.CELLS[kind].gates, kind, I, x.dtype)
    H, P = weights[5], weights[6]
    plan = _plan(T, B, _lengths(lengths, T, B), _flag("reverse", reverse))
    sizes = (P, H)
    states = [_state(name, s, x.dtype, B, size) for (name, s), size in zip(states, sizes)]
    v = _Variants(kind, x.dtype, (T, B), B, H, P, w_hr=weights[4], **variants,
                  **({"reset_after": options["reset_after"]} if "reset_after" in options else {}))
    return _forward(kind, x, plan, weights, states, _flag("training", training), v, **options)


def _packed_call(kind, cell_args, data, batch_sizes, reverse, states, training, variants, **options):
    data = _input(data, "data", 2, "(N, I)")
    N, I = data.shape
    bs = _batch_sizes(batch_sizes, N)
    weights = _weights(*cell_args, _cells.CELLS[kind].gates, kind, I, data.dtype)
    H, P = weights[5], weights[6]
    plan = _packed_plan(bs, _flag("reverse", reverse))
    sizes = (P, H)
    states = [_state(name, s, data.dtype, plan.B, size) for (name, s), size in zip(states, sizes)]
    v = _Variants(kind, data.dtype, (N,), plan.B, H, P, w_hr=weights[4], **variants,
                  **({"reset_after": options["reset_after"]} if "reset_after" in options else {}))
    return _forward(kind, data, plan, weights, states, _flag("training", training), v, **options)


# ---------------------------------------------------------------------- LSTM
def lstm_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, c0=None, lengths=None, reverse=False,
                 training=True, w_hr=None, peephole=None, layer_norm=None, recurrent_mask=None,
                 zoneout=None):
    """LSTM over a time-major batch; see docs/kernel-abi.md.

    Returns ``y (T, B, P), h_n (B, P), c_n (B, H), cache`` (cache None unless
    training; P = H unless ``w_hr`` projects).
    """
    y, (h_n, c_n), cache = _padded_call(
        "lstm", (w_ih, w_hh, b_ih, b_hh, w_hr), x, lengths, reverse, (("h0", h0), ("c0", c0)), training,
        dict(peephole=peephole, layer_norm=layer_norm, recurrent_mask=recurrent_mask, zoneout=zoneout))
    return y, h_n, c_n, cache


def lstm_forward_packed(data, batch_sizes, w_ih, w_hh, b_ih, b_hh, h0=None, c0=None, reverse=False,
                        training=True, w_hr=None, peephole=None, layer_norm=None, recurrent_mask=None,
                        zoneout=None):
    """LSTM over a PackedSequence's ``data`` (N, I) and ``batch_sizes`` (S,);
    see docs/kernel-abi.md.  Returns ``y (N, P), h_n, c_n (B, .), cache``,
    with B = batch_sizes[0] and the sequences in the packed (sorted) order."""
    y, (h_n, c_n), cache = _packed_call(
        "lstm", (w_ih, w_hh, b_ih, b_hh, w_hr), data, batch_sizes, reverse, (("h0", h0), ("c0", c0)),
        training, dict(peephole=peephole, layer_norm=layer_norm, recurrent_mask=recurrent_mask,
                       zoneout=zoneout))
    return y, h_n, c_n, cache


def lstm_backward(cache, dy, dh_n=None, dc_n=None, input_grad=True):
    """Gradients of an LSTM forward pass (padded or packed); returns a dict with
    keys x, h0, c0, w_ih, w_hh, b_ih, b_hh (biases None where they were None),
    and the variants' parameters (w_hr; w_ci, w_cf, w_co; gamma_ih, gamma_hh,
    gamma_c, beta_c).  ``input_grad=False`` skips dX (x is None): a first
    layer's inputs need no gradient, and dX is a GEMM of its own."""
    return _backward("lstm", cache, dy, (dh_n, dc_n), input_grad)


# ----------------------------------------------------------------------- GRU
def gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, lengths=None, reverse=False,
                reset_after=True, training=True, layer_norm=None, recurrent_mask=None, zoneout=None):
    """GRU over a time-major batch; see docs/kernel-abi.md.

    Returns ``y (T, B, H), h_n (B, H), cache`` (cache None unless training).
    """
    y, (h_n,), cache = _padded_call(
        "gru", (w_ih, w_hh, b_ih, b_hh, None), x, lengths, reverse, (("h0", h0),), training,
        dict(layer_norm=layer_norm, recurrent_mask=recurrent_mask, zoneout=zoneout),
        reset_after=_flag("reset_after", reset_after))
    return y, h_n, cache


def gru_forward_packed(data, batch_sizes, w_ih, w_hh, b_ih, b_hh, h0=None, reverse=False,
                       reset_after=True, training=True, layer_norm=None, recurrent_mask=None, zoneout=None):
    """GRU over a PackedSequence's data and batch_sizes (see lstm_forward_packed)."""
    y, (h_n,), cache = _packed_call(
        "gru", (w_ih, w_hh, b_ih, b_hh, None), data, batch_sizes, reverse, (("h0", h0),), training,
        dict(layer_norm=layer_norm, recurrent_mask=recurrent_mask, zoneout=zoneout),
        reset_after=_flag("reset_after", reset_after))
    return y, h_n, cache


def gru_backward(cache, dy, dh_n=None, input_grad=True):
    """Gradients of a GRU forward pass; returns a dict with keys x, h0, w_ih,
    w_hh, b_ih, b_hh (biases None where they were None), and gamma_ih and
    gamma_hh with layer_norm; x None with ``input_grad=False``."""
    return _backward("gru", cache, dy, (dh_n,), input_grad)


# ----------------------------------------------------------------------- RNN
def _nonlinearity(nonlinearity):
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
    return nonlinearity


def rnn_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, lengths=None, reverse=False,
                nonlinearity="tanh", training=True, recurrent_mask=None):
    """Vanilla (Elman) RNN over a time-major batch; see docs/kernel-abi.md.

    Returns ``y (T, B, H), h_n (B, H), cache`` (cache None unless training).
    """
    y, (h_n,), cache = _padded_call(
        "rnn", (w_ih, w_hh, b_ih, b_hh, None), x, lengths, reverse, (("h0", h0),), training,
        dict(recurrent_mask=recurrent_mask), nonlinearity=_nonlinearity(nonlinearity))
    return y, h_n, cache


def rnn_forward_packed(data, batch_sizes, w_ih, w_hh, b_ih, b_hh, h0=None, reverse=False,
                       nonlinearity="tanh", training=True, recurrent_mask=None):
    """Vanilla RNN over a PackedSequence's data and batch_sizes (see lstm_forward_packed)."""
    y, (h_n,), cache = _packed_call(
        "rnn", (w_ih, w_hh, b_ih, b_hh, None), data, batch_sizes, reverse, (("h0", h0),), training,
        dict(recurrent_mask=recurrent_mask), nonlinearity=_nonlinearity(nonlinearity))
    return y, h_n, cache


def rnn_backward(cache, dy, dh_n=None, input_grad=True):
    """Gradients of an RNN forward pass; returns a dict with keys x, h0, w_ih,
    w_hh, b_ih, b_hh (biases None where they were None); x None with
    ``input_grad=False``."""
    return _backward("rnn", cache, dy, (dh_n,), input_grad)


# ------------------------------------------------- caches as arrays (autograd)
# An autograd framework that wants a functional backward (torch.library's
# custom ops: torch.compile and torch.export describe every saved value as a
# tensor) keeps a training call's cache as its arrays and rebuilds the cache
# from them, the batch layout and the weights at backward time.  Only the
# variant-free cells and the projection (w_hr) are supported.
WORKSPACE = ("x", "h", "c", "gates", "aux", "m")


def workspace_shapes(kind, N, B, I, H, P, projection=False):
    """The shapes of a packed training call's workspace (in WORKSPACE's
    order; None where the cell keeps no such array); ``projection``: an LSTM
    with ``w_hr (P, H)``."""
    G = _cells.CELLS[kind].gates
    return ((N, I), (N + B, P), (N + B, H) if kind == "lstm" else None, None if kind == "rnn" else (N, G * H),
            (N, H) if kind == "gru" else None, (N, H) if projection else None)


def workspace(cache):
    """The arrays of a training call's cache, in WORKSPACE's order (None where
    the cell keeps none); see :func:`cache_from_workspace`.  The state buffer
    ``h`` may share memory with that call's ``y``."""
    if not isinstance(cache, _Cache):
        raise TypeError(f"cache: expected a cache returned by ops, got {type(cache).__name__}")
    if cache.peep is not None or cache.ln is not None or cache.mask is not None \
            or cache.zh is not None or cache.zc is not None or cache.zh_rate >= 0 or cache.zc_rate >= 0:
        raise ValueError("cache: only variant-free calls (or w_hr) can be kept as arrays")
    return tuple(getattr(cache, name) for name in WORKSPACE)


def packed_weights(cache):
    """The weights a training call packed for its backward pass (opaque): pass
    them to :func:`cache_from_workspace` to skip packing them again."""
    if not isinstance(cache, _Cache):
        raise TypeError(f"cache: expected a cache returned by ops, got {type(cache).__name__}")
    return cache.weights


def cache_from_workspace(kind, arrays, batch_sizes, w_ih, w_hh, w_hr=None, reverse=False,
                         has_b_ih=True, has_b_hh=True, nonlinearity="tanh", packed=None):
    """The cache of a ``*_forward_packed(data, batch_sizes, ...)`` training
    call rebuilt from :func:`workspace`'s arrays, the same ``batch_sizes``,
    ``reverse`` and weights (packed again for backward: pass the values the
    forward call read), or with ``packed`` (:func:`packed_weights` of that
    call) the forward call's own packing."""
    if kind not in ("lstm", "gru", "rnn"):
        raise ValueError(f"kind: expected 'lstm', 'gru' or 'rnn', got {kind!r}")
    if w_hr is not None and kind != "lstm":
        raise ValueError(f"w_hr: only the LSTM projects, got one for {kind}")
    if not isinstance(arrays, (tuple, list)) or len(arrays) != len(WORKSPACE):
        raise TypeError(f"arrays: expected a tuple of {len(WORKSPACE)} arrays ({', '.join(WORKSPACE)})")
    x = np.asarray(arrays[0])
    if x.dtype not in _FLOAT_DTYPES or x.ndim != 2:
        raise TypeError(f"arrays[0] (x): expected a float32 or float64 (N, I) array, got {x.dtype} {x.shape}")
    N, I = x.shape
    dtype = x.dtype
    bs = _batch_sizes(batch_sizes, N)
    G = _cells.CELLS[kind].gates
    w_ih, w_hh, _, _, w_hr, H, P = _weights(w_ih, w_hh, None, None, w_hr, G, kind, I, dtype)
    plan = _packed_plan(bs, _flag("reverse", reverse))
    shapes = workspace_shapes(kind, N, plan.B, I, H, P, w_hr is not None)
    ws = {}
    for name, a, shape in zip(WORKSPACE, arrays, shapes):
        if shape is None:
            ws[name] = None
            continue
        ws[name] = _array(f"arrays ({name})", a, dtype, shape)
    cell_name = _cells.kernel_cell(kind, peephole=False, layer_norm=False, reset_after=True,
                                   nonlinearity=_nonlinearity(nonlinearity) if kind == "rnn" else "tanh")
    if packed is not None:
        if not isinstance(packed, _Weights) or packed.w_bwd is None or packed.w_ih.shape != w_ih.shape \
                or packed.tiles[-1] != H or (packed.ptiles is None) != (w_hr is None):
            raise TypeError("packed: expected ops.packed_weights of a training call with these weights")
        w = packed
    tuned, kernels = _tuning.current(), _tuning.kernels()  # the process's plan (as the forward's)
    if packed is None:
        w = _Weights(w_ih, w_hh, G, _tuning.unit_tile(H, tuned), "tiles", split_gru=kind == "gru", w_hr=w_hr,
                     pub=_tuning.unit_tile(P, tuned) if w_hr is not None else None)
    return _Cache(kind, cell_name=cell_name, plan=plan, tuned=tuned, kernels=kernels, weights=w, H=H, I=I, P=P, G=G, dtype=dtype,
                  has_b_ih=_flag("has_b_ih", has_b_ih), has_b_hh=_flag("has_b_hh", has_b_hh),
                  reset_after=True, rows_split=False, hm=None, mask=None, zh=None, zc=None,
                  zh_rate=-1.0, zc_rate=-1.0, ctilde=None, ln=None, layer_norm=None, peep=None,
                  projection=w_hr is not None, **ws)


# ------------------------------------------------------------------------ CTC
def _ctc_ints(name, a, B=None):
    if not hasattr(a, "__array__") and not isinstance(a, (list, tuple)):
        raise TypeError(f"{name}: expected an integer array, got {type(a).__name__}")
    arr = np.asarray(a)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    if B is not None and arr.shape != (B,):
        raise ValueError(f"{name}: expected shape ({B},) (one per sample), got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def ctc_loss(logits, targets, input_lengths, target_lengths, blank=0, zero_infinity=False, training=True):
    """CTC loss of each sample and its gradient with respect to the logits (compiled).

    Same signature and semantics as :func:`rnnkernels.reference.ctc_loss`: ``logits``
    (T, B, C) float32/float64, unnormalised (the log-softmax is fused into the kernel);
    ``targets`` padded (B, S) or concatenated 1-D; ``input_lengths``, ``target_lengths``
    (B,).  Returns ``losses`` (B,) (inf for an impossible alignment, 0 with
    ``zero_infinity``) and ``dlogits`` (T, B, C) (zero past each input length and for
    impossible samples), or None when ``training`` is False.
    """
    z = _input(logits, "logits", 3, "(T, B, C)")
    T, B, C = z.shape
    if isinstance(blank, (bool, np.bool_)) or not isinstance(blank, (int, np.integer)):
        raise TypeError(f"blank: expected an integer class index, got {type(blank).__name__} {blank!r}")
    if not 0 <= blank < C:
        raise ValueError(f"blank: expected a class index in [0, {C - 1}] (C = {C}), got {blank}")
    zero_infinity = _flag("zero_infinity", zero_infinity)
    training = _flag("training", training)
    input_lengths = _ctc_ints("input_lengths", input_lengths, B)
    target_lengths = _ctc_ints("target_lengths", target_lengths, B)
    if B and (input_lengths.min() < 0 or input_lengths.max() > T):
        raise ValueError(f"input_lengths: expected values in [0, {T}] (T of logits), got min "
                         f"{input_lengths.min()} max {input_lengths.max()}")
    if B and target_lengths.min() < 0:
        raise ValueError(f"target_lengths: expected non-negative values, got min {target_lengths.min()}")
    targets = _ctc_ints("targets", targets)
    if targets.ndim == 2:
        if targets.shape[0] != B:
            raise ValueError(f"targets: expected padded targets of shape ({B}, S), got {targets.shape}")
        S = targets.shape[1]
        if B and target_lengths.max() > S:
            raise ValueError(f"target_lengths: expected values in [0, {S}] (S of the padded targets), "
                             f"got max {target_lengths.max()}")
        offsets = np.arange(B, dtype=np.int64) * S
        used = np.arange(S) < target_lengths[:, None]
        flat = targets.reshape(-1)
    elif targets.ndim == 1:
        total = int(target_lengths.sum())
        if targets.size != total:
            raise ValueError(f"targets: concatenated (1-D) targets must hold sum(target_lengths) = {total} "
                             f"labels, got {targets.size}")
        offsets = np.concatenate([[0], np.cumsum(target_lengths)[:-1]]).astype(np.int64)
        used = np.ones(targets.shape, bool)
        flat = targets
    else:
        raise ValueError(f"targets: expected padded (B, S) or concatenated 1-D labels, got shape {targets.shape}")
    labels_used = flat.reshape(used.shape)[used]
    if labels_used.size:
        bad = (labels_used < 0) | (labels_used >= C) | (labels_used == blank)
        if bad.any():
            where = np.flatnonzero(used.reshape(-1))[np.flatnonzero(bad)[0]]
            sample = int(np.searchsorted(offsets, where, side="right") - 1) if targets.ndim == 1 else int(where // S)
            value = int(flat[where])
            why = "is the blank" if value == blank else f"is outside [0, {C - 1}]"
            raise ValueError(f"targets: sample {sample} has label {value}, which {why}; labels must be "
                             f"class indices in [0, {C - 1}] other than blank={blank}")
    flat = np.ascontiguousarray(flat) if flat.size else np.zeros(1, np.int64)
    W = 2 * int(target_lengths.max() if B else 0) + 3  # the states, and two -inf cells
    z = np.ascontiguousarray(z)
    losses = np.empty(B, z.dtype)
    grad = np.empty((T, B, C), z.dtype)  # the log-probabilities, then the gradient
    alpha = np.empty((B, T, W), z.dtype)
    beta = np.empty((B, 2, W), z.dtype)
    pen = np.empty((B, W), z.dtype)
    states = np.empty((B, W), np.int64)
    if B:
        _ctc = _tuning.ctc_kernels()
        nthreads = min(_threads.get_num_threads(), B)
        team = _ctc.ctc_loss(z, flat, offsets, target_lengths, input_lengths, int(blank), losses, grad,
                             alpha, beta, pen, states, training, zero_infinity, nthreads)
        _threads.note_call("ctc_loss", nthreads, team)
        # NaN (or +inf) logits in a sample's frames: its loss and gradient are NaN, never a
        # number (the kernel's branch-free float32 exp does not carry NaN through)
        bad = (np.isnan(z) | (z == np.inf)).any(axis=2) & (np.arange(T)[:, None] < input_lengths[None, :])
        poisoned = bad.any(axis=0)
        if poisoned.any():
            losses[poisoned] = np.nan
            if training:
                grad[:, poisoned] = np.where((np.arange(T)[:, None] < input_lengths[None, poisoned])[..., None],
                                             np.nan, 0.0)
    return losses, (grad if training else None)
