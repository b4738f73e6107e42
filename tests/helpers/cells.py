"""Uniform calls to every cell variant of a kernel module (ops or reference),
shared by the kernel tests: the test table (one row a cell or variant), a
random case for a row, one forward (and backward) through a module, and the
comparison of two results."""
import numpy as np

from rnnkernels._core import cells as kernel_cells

# name -> (gates, kernel family, keyword arguments, variants)
# variants: "projection" (w_hr), "peephole", "layer_norm", "recurrent_mask",
# "zoneout" (masks, training) or "zoneout_rate" (the expectation, inference)
CELLS = {
    "lstm": (4, "lstm", {}, ()),
    "gru": (3, "gru", {"reset_after": True}, ()),
    "gru_reset_before": (3, "gru", {"reset_after": False}, ()),
    "rnn_tanh": (1, "rnn", {"nonlinearity": "tanh"}, ()),
    "rnn_relu": (1, "rnn", {"nonlinearity": "relu"}, ()),
    "lstm_proj": (4, "lstm", {}, ("projection",)),
    "lstm_peephole": (4, "lstm", {}, ("peephole",)),
    "lstm_proj_peephole": (4, "lstm", {}, ("projection", "peephole")),
    "lstm_layer_norm": (4, "lstm", {}, ("layer_norm",)),
    "gru_layer_norm": (3, "gru", {"reset_after": True}, ("layer_norm",)),
    "lstm_dropout": (4, "lstm", {}, ("recurrent_mask",)),
    "lstm_proj_dropout": (4, "lstm", {}, ("projection", "recurrent_mask")),
    "gru_dropout": (3, "gru", {"reset_after": True}, ("recurrent_mask",)),
    "gru_reset_before_dropout": (3, "gru", {"reset_after": False}, ("recurrent_mask",)),
    "rnn_dropout": (1, "rnn", {"nonlinearity": "tanh"}, ("recurrent_mask",)),
    "lstm_zoneout": (4, "lstm", {}, ("zoneout",)),
    "lstm_zoneout_rate": (4, "lstm", {}, ("zoneout_rate",)),
    "gru_zoneout": (3, "gru", {"reset_after": True}, ("zoneout",)),
    "gru_zoneout_rate": (3, "gru", {"reset_after": True}, ("zoneout_rate",)),
    "gru_dropout_zoneout": (3, "gru", {"reset_after": True}, ("recurrent_mask", "zoneout")),
}
PLAIN = ["lstm", "gru", "gru_reset_before", "rnn_tanh", "rnn_relu"]
VARIANTS = [name for name in CELLS if name not in PLAIN]


def kernel_cell(cell):
    """The compiled kernel cell (src/_cells.h) a test row exercises."""
    _, kind, kw, variants = CELLS[cell]
    return kernel_cells.kernel_cell(kind, peephole="peephole" in variants, layer_norm="layer_norm" in variants,
                                    **kw)


assert {kernel_cell(c) for c in CELLS} == set(kernel_cells.KERNEL_CELLS)  # every kernel cell is tested
assert {kind for _, kind, _, _ in CELLS.values()} == set(kernel_cells.CELLS)  # and every kind

# the gradient of each variant's parameters, by variant
VARIANT_PARAMS = {"projection": ("w_hr",), "peephole": ("w_ci", "w_cf", "w_co"),
                  "layer_norm": {"lstm": ("gamma_ih", "gamma_hh", "gamma_c", "beta_c"),
                                 "gru": ("gamma_ih", "gamma_hh")}}


def projection_size(H):
    """P of the projection variants: different from H, so shapes catch mix-ups."""
    return H // 2 + 1


def output_size(cell, H):
    return projection_size(H) if "projection" in CELLS[cell][3] else H


def variant_param_names(cell):
    _, kind, _, variants = CELLS[cell]
    names = []
    for v in variants:
        params = VARIANT_PARAMS.get(v, ())
        names += list(params[kind] if isinstance(params, dict) else params)
    return names


def make_case(cell, T, B, I, H, dtype=np.float64, seed=0, bias=True, states=True,
              lengths=None, grads=True):
    """Random inputs, weights and output gradients for one call."""
    gates, kind, _, variants = CELLS[cell]
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(H)
    P = output_size(cell, H)
    case = {
        "x": rng.standard_normal((T, B, I)).astype(dtype),
        "w_ih": rng.uniform(-scale, scale, (gates * H, I)).astype(dtype),
        "w_hh": rng.uniform(-scale, scale, (gates * H, P)).astype(dtype),
        "b_ih": rng.uniform(-scale, scale, gates * H).astype(dtype) if bias else None,
        "b_hh": rng.uniform(-scale, scale, gates * H).astype(dtype) if bias else None,
        "h0": rng.standard_normal((B, P)).astype(dtype) if states else None,
        "c0": rng.standard_normal((B, H)).astype(dtype) if states and kind == "lstm" else None,
        "lengths": lengths,
        "dy": rng.standard_normal((T, B, P)).astype(dtype) if grads else None,
        "dh_n": rng.standard_normal((B, P)).astype(dtype) if grads else None,
        "dc_n": rng.standard_normal((B, H)).astype(dtype) if grads and kind == "lstm" else None,
        "variants": {},
    }
    v = case["variants"]
    if "projection" in variants:
        v["w_hr"] = rng.uniform(-scale, scale, (P, H)).astype(dtype)
    if "peephole" in variants:
        v["peephole"] = tuple(rng.uniform(-0.5, 0.5, H).astype(dtype) for _ in range(3))
    if "layer_norm" in variants:
        G = gates * H
        norm = [rng.uniform(0.5, 1.5, G), rng.uniform(0.5, 1.5, G)]
        if kind == "lstm":
            norm += [rng.uniform(0.5, 1.5, H), rng.uniform(-0.5, 0.5, H)]
        v["layer_norm"] = tuple(a.astype(dtype) for a in norm)
    if "recurrent_mask" in variants:  # dropout at 0.25, scaled by 1/(1-p)
        v["recurrent_mask"] = ((rng.random((B, P)) >= 0.25) / 0.75).astype(dtype)
    if "zoneout" in variants:
        zh = (rng.random((T, B, P)) < 0.3).astype(dtype)
        v["zoneout"] = (zh, (rng.random((T, B, H)) < 0.2).astype(dtype)) if kind == "lstm" else zh
    if "zoneout_rate" in variants:
        v["zoneout"] = (0.3, 0.2) if kind == "lstm" else 0.3
    return case


def call_kwargs(cell, case):
    """The keyword arguments of a forward call for ``case`` (variants included)."""
    _, kind, kw, _ = CELLS[cell]
    out = dict(kw, lengths=case["lengths"], h0=case["h0"], **case.get("variants", {}))
    if kind == "lstm":
        out["c0"] = case["c0"]
    return out


def run(mod, cell, case, reverse=False, training=True, backward=True):
    """Forward (and backward) through ``mod``; returns a flat dict of arrays."""
    _, name, _, _ = CELLS[cell]
    fwd = getattr(mod, f"{name}_forward")
    args = (case["x"], case["w_ih"], case["w_hh"], case["b_ih"], case["b_hh"])
    out = {}
    kw = call_kwargs(cell, case)
    if name == "lstm":
        y, h_n, c_n, cache = fwd(*args, reverse=reverse, training=training, **kw)
        out["c_n"] = c_n
    else:
        y, h_n, cache = fwd(*args, reverse=reverse, training=training, **kw)
    out["y"], out["h_n"], out["cache"] = y, h_n, cache
    if backward and training:
        bwd = getattr(mod, f"{name}_backward")
        if name == "lstm":
            g = bwd(cache, case["dy"], case["dh_n"], case["dc_n"])
        else:
            g = bwd(cache, case["dy"], case["dh_n"])
        for k, v in g.items():
            out["d_" + k] = v
    return out


def assert_close(got, want, dtype, context=""):
    """Compare two result dicts: float64 to ~1e-10, float32 at its own tolerance."""
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-4, 2e-5)
    assert set(got) == set(want), (context, set(got) ^ set(want))
    for k in want:
        if k == "cache":
            continue
        g, w = got[k], want[k]
        if w is None:
            assert g is None, f"{context} {k}: expected None"
            continue
        assert g.shape == w.shape, f"{context} {k}: shape {g.shape} vs {w.shape}"
        assert g.dtype == w.dtype, f"{context} {k}: dtype {g.dtype} vs {w.dtype}"
        scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol * scale, err_msg=f"{context} {k}")


def kind_of(cell):
    return CELLS[cell][1]


def gradient_targets(cell, case):
    """(gradient key, the array it is the gradient of) for every differentiable
    input of a case: x, states, weights, biases and the variants' parameters."""
    targets = [(name, case[name]) for name in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")
               if case.get(name) is not None]
    v = case.get("variants", {})
    if "w_hr" in v:
        targets.append(("w_hr", v["w_hr"]))
    if "peephole" in v:
        targets += list(zip(("w_ci", "w_cf", "w_co"), v["peephole"]))
    if "layer_norm" in v:
        targets += list(zip(VARIANT_PARAMS["layer_norm"][kind_of(cell)], v["layer_norm"]))
    return targets


def one_sequence(case, b, n):
    """The case of sequence b alone, its n valid steps (B = 1, no lengths)."""
    one = dict(case)
    for k in ("h0", "c0", "dh_n", "dc_n"):
        if case.get(k) is not None:
            one[k] = case[k][b:b + 1]
    one["x"], one["dy"] = case["x"][:n, b:b + 1], case["dy"][:n, b:b + 1]
    one["lengths"] = None
    v = dict(case.get("variants", {}))
    if "recurrent_mask" in v:
        v["recurrent_mask"] = v["recurrent_mask"][b:b + 1]
    if "zoneout" in v and not np.isscalar(v["zoneout"]) and not isinstance(v["zoneout"][0], float):
        z = v["zoneout"]
        v["zoneout"] = tuple(m[:n, b:b + 1] for m in z) if isinstance(z, tuple) else z[:n, b:b + 1]
    one["variants"] = v
    return one


def flip_time(case):
    """The case with time reversed (x, dy and per-step masks)."""
    flipped = dict(case, x=case["x"][::-1], dy=case["dy"][::-1])
    v = dict(case.get("variants", {}))
    z = v.get("zoneout")
    if z is not None and not np.isscalar(z) and not isinstance(z, tuple) or \
            isinstance(z, tuple) and not isinstance(z[0], float):
        v["zoneout"] = tuple(m[::-1] for m in z) if isinstance(z, tuple) else z[::-1]
    flipped["variants"] = v
    return flipped
