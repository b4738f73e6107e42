"""Uniform calls to every cell variant of a kernel module (ops or reference),
shared by the kernel tests."""
import numpy as np

# name -> (gates, forward name, backward name, extra keyword arguments)
CELLS = {
    "lstm": (4, "lstm", {}),
    "gru": (3, "gru", {"reset_after": True}),
    "gru_reset_before": (3, "gru", {"reset_after": False}),
    "rnn_tanh": (1, "rnn", {"nonlinearity": "tanh"}),
    "rnn_relu": (1, "rnn", {"nonlinearity": "relu"}),
}


def make_case(cell, T, B, I, H, dtype=np.float64, seed=0, bias=True, states=True,
              lengths=None, grads=True):
    """Random inputs, weights and output gradients for one call."""
    gates = CELLS[cell][0]
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(H)
    case = {
        "x": rng.standard_normal((T, B, I)).astype(dtype),
        "w_ih": rng.uniform(-scale, scale, (gates * H, I)).astype(dtype),
        "w_hh": rng.uniform(-scale, scale, (gates * H, H)).astype(dtype),
        "b_ih": rng.uniform(-scale, scale, gates * H).astype(dtype) if bias else None,
        "b_hh": rng.uniform(-scale, scale, gates * H).astype(dtype) if bias else None,
        "h0": rng.standard_normal((B, H)).astype(dtype) if states else None,
        "c0": rng.standard_normal((B, H)).astype(dtype) if states and cell == "lstm" else None,
        "lengths": lengths,
        "dy": rng.standard_normal((T, B, H)).astype(dtype) if grads else None,
        "dh_n": rng.standard_normal((B, H)).astype(dtype) if grads else None,
        "dc_n": rng.standard_normal((B, H)).astype(dtype) if grads and cell == "lstm" else None,
    }
    return case


def run(mod, cell, case, reverse=False, training=True, backward=True):
    """Forward (and backward) through ``mod``; returns a flat dict of arrays."""
    _, name, kw = CELLS[cell]
    fwd = getattr(mod, f"{name}_forward")
    args = (case["x"], case["w_ih"], case["w_hh"], case["b_ih"], case["b_hh"])
    out = {}
    if name == "lstm":
        y, h_n, c_n, cache = fwd(*args, h0=case["h0"], c0=case["c0"], lengths=case["lengths"],
                                 reverse=reverse, training=training, **kw)
        out["c_n"] = c_n
    else:
        y, h_n, cache = fwd(*args, h0=case["h0"], lengths=case["lengths"], reverse=reverse,
                            training=training, **kw)
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
