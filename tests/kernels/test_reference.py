"""The NumPy reference (the oracle): every gradient by central differences,
and the semantics of lengths, reverse, initial states and validation."""
import numpy as np
import pytest

from rnnkernels import reference

from helpers.cells import (CELLS, PLAIN, call_kwargs, flip_time, gradient_targets, kind_of, make_case,
                           one_sequence, output_size, run)

CELL_NAMES = list(CELLS)
T, B, I, H = 4, 3, 5, 4
MIXED = np.array([2, 0, 4])      # unsorted, with an empty and a full-length sequence
INPUTS = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")


def _loss(cell, case, reverse):
    """sum(dy * y) + sum(dh_n * h_n) [+ sum(dc_n * c_n)]: its gradient is what backward returns."""
    out = run(reference, cell, case, reverse=reverse, backward=False)
    total = 0.0
    for grad, value in (("dy", "y"), ("dh_n", "h_n"), ("dc_n", "c_n")):
        if case[grad] is not None:
            total += np.sum(case[grad] * out[value])
    return total


def _numerical_gradient(cell, case, param, reverse, eps=1e-6):
    """Central differences of the loss with respect to every element of ``param``
    (one of the case's arrays, perturbed in place)."""
    grad = np.zeros_like(param)
    for idx in np.ndindex(param.shape):
        saved = param[idx]
        param[idx] = saved + eps
        plus = _loss(cell, case, reverse)
        param[idx] = saved - eps
        minus = _loss(cell, case, reverse)
        param[idx] = saved
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def _check_gradients(cell, case, reverse):
    got = run(reference, cell, case, reverse=reverse)
    checked = 0
    for name in ("b_ih", "b_hh"):
        if case[name] is None:
            assert got["d_" + name] is None, name
    for name, param in gradient_targets(cell, case):
        numeric = _numerical_gradient(cell, case, param, reverse)
        analytic = got["d_" + name]
        assert analytic.shape == numeric.shape and analytic.dtype == np.float64, name
        err = np.linalg.norm(analytic - numeric) / max(np.linalg.norm(analytic) + np.linalg.norm(numeric), 1e-30)
        # both may be zero (e.g. dy given nowhere that reaches this input)
        assert err < 1e-7 or np.abs(analytic - numeric).max() < 1e-9, (name, err)
        checked += 1
    # initial-state gradients are returned even when the state was None
    assert got["d_h0"].shape == (case["x"].shape[1], output_size(cell, H))
    if "d_c0" in got:
        assert got["d_c0"].shape == (case["x"].shape[1], H)
    return checked


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [None, MIXED], ids=["full", "mixed"])
@pytest.mark.parametrize("bias,states", [(True, True), (False, False), (True, False), (False, True)],
                         ids=["bias_states", "plain", "bias", "states"])
def test_gradients_by_central_differences(cell, reverse, lengths, bias, states):
    # Fixed seeds: for relu no pre-activation lies within eps of the kink
    # (a crossing would show as a large error, deterministically).
    case = make_case(cell, T, B, I, H, seed=11, bias=bias, states=states, lengths=lengths)
    assert _check_gradients(cell, case, reverse) >= 3


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("upstream", ["y_only", "final_only"])
def test_gradients_with_partial_upstream(cell, upstream):
    """dh_n/dc_n None (zeros), or dy None with only the final states driving the loss."""
    case = make_case(cell, T, B, I, H, seed=12, lengths=MIXED)
    if upstream == "y_only":
        case["dh_n"] = case["dc_n"] = None
    else:
        case["dy"] = None
    _check_gradients(cell, case, reverse=True)


# ------------------------------------------------------------------ semantics
@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_padding_is_zero_and_final_state_is_last_valid_step(cell, reverse):
    case = make_case(cell, T, B, I, H, seed=1, lengths=MIXED)
    out = run(reference, cell, case, reverse=reverse)
    for b, n in enumerate(MIXED):
        assert not np.any(out["y"][n:, b]) and not np.any(out["d_x"][n:, b])
        if n == 0:
            np.testing.assert_array_equal(out["h_n"][b], case["h0"][b])
            np.testing.assert_array_equal(out["d_h0"][b], case["dh_n"][b])
            if kind_of(cell) == "lstm":
                np.testing.assert_array_equal(out["c_n"][b], case["c0"][b])
                np.testing.assert_array_equal(out["d_c0"][b], case["dc_n"][b])
        else:
            last = 0 if reverse else n - 1
            np.testing.assert_array_equal(out["h_n"][b], out["y"][last, b])


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_full_lengths_equal_no_lengths(cell, reverse):
    case = make_case(cell, T, B, I, H, seed=2)
    want = run(reference, cell, case, reverse=reverse)
    case["lengths"] = np.full(B, T)
    got = run(reference, cell, case, reverse=reverse)
    for k, v in want.items():
        if k != "cache" and v is not None:
            np.testing.assert_array_equal(got[k], v, err_msg=k)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_reverse_is_forward_on_flipped_time(cell):
    case = make_case(cell, T, B, I, H, seed=3)
    rev = run(reference, cell, case, reverse=True)
    fwd = run(reference, cell, flip_time(case))
    for k in rev:
        if k == "cache" or rev[k] is None:
            continue
        want = fwd[k][::-1] if k in ("y", "d_x") else fwd[k]
        np.testing.assert_allclose(rev[k], want, rtol=1e-13, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_each_sequence_is_independent_of_the_batch(cell, reverse):
    """Running sequence b alone (B=1, only its valid steps) gives its slice of
    every result, and the weight gradients add up over the batch."""
    case = make_case(cell, T, B, I, H, seed=4, lengths=MIXED)
    batch = run(reference, cell, case, reverse=reverse)
    weight_sums = {"d_" + k: 0.0 for k, _ in gradient_targets(cell, case)
                   if k not in ("x", "h0", "c0")}
    for b, n in enumerate(MIXED):
        alone = run(reference, cell, one_sequence(case, b, n), reverse=reverse)   # T = n, possibly 0
        tol = dict(rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(batch["y"][:n, b], alone["y"][:, 0], **tol)
        np.testing.assert_allclose(batch["d_x"][:n, b], alone["d_x"][:, 0], **tol)
        for k in ("h_n", "c_n", "d_h0", "d_c0"):
            if k in batch:
                np.testing.assert_allclose(batch[k][b], alone[k][0], **tol, err_msg=k)
        for k in weight_sums:
            weight_sums[k] = weight_sums[k] + alone[k]
    for k, v in weight_sums.items():
        np.testing.assert_allclose(batch[k], v, rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_float32_close_to_float64(cell):
    c64 = make_case(cell, T, B, I, H, seed=5, lengths=MIXED)
    c32 = make_case(cell, T, B, I, H, dtype=np.float32, seed=5, lengths=MIXED)
    c32.update({k: v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float64 else v
                for k, v in c64.items() if k != "variants"})
    want = run(reference, cell, c64, reverse=True)
    got = run(reference, cell, c32, reverse=True)
    for k, v in want.items():
        if k == "cache" or v is None:
            continue
        assert got[k].dtype == np.float32, k
        np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-5, err_msg=k)


def test_float64_inputs_with_float32_x_compute_in_float32():
    case = make_case("lstm", T, B, I, H, seed=6)
    case["x"] = case["x"].astype(np.float32)
    out = run(reference, "lstm", case)
    for k, v in out.items():
        if k != "cache" and v is not None:
            assert v.dtype == np.float32, k


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_inference_mode_keeps_nothing(cell):
    case = make_case(cell, T, B, I, H, seed=7, lengths=MIXED)
    train = run(reference, cell, case, backward=False)
    infer = run(reference, cell, case, training=False)
    assert infer["cache"] is None
    for k in ("y", "h_n", "c_n"):
        if k in train:
            np.testing.assert_array_equal(infer[k], train[k])
    backward = getattr(reference, f"{CELLS[cell][1]}_backward")
    with pytest.raises(ValueError, match="cache: got None"):
        backward(None, case["dy"])


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_cache_reusable_and_inputs_untouched(cell):
    case = make_case(cell, T, B, I, H, seed=8, lengths=MIXED)
    before = {k: v.copy() for k, v in case.items() if isinstance(v, np.ndarray)}
    out = run(reference, cell, case)
    name = CELLS[cell][1]
    extra = [case["dc_n"]] if name == "lstm" else []
    again = getattr(reference, f"{name}_backward")(out["cache"], case["dy"], case["dh_n"], *extra)
    for k, v in again.items():
        if v is not None:
            np.testing.assert_array_equal(v, out["d_" + k], err_msg=k)
    for k, v in before.items():
        np.testing.assert_array_equal(case[k], v, err_msg=f"{k} was modified")


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("t,b", [(0, 3), (4, 0)])
def test_empty_time_or_batch(cell, t, b):
    case = make_case(cell, t, b, I, H, seed=9)
    out = run(reference, cell, case)
    assert out["y"].shape == (t, b, output_size(cell, H)) and out["d_x"].shape == (t, b, I)
    np.testing.assert_array_equal(out["h_n"], case["h0"])
    np.testing.assert_array_equal(out["d_h0"], case["dh_n"])
    assert not np.any(out["d_w_ih"]) and not np.any(out["d_w_hh"])


def test_any_memory_layout_and_lists():
    case = make_case("gru", T, B, I, H, seed=10, lengths=MIXED)
    want = run(reference, "gru", case)
    odd = dict(case)
    odd["x"] = np.repeat(case["x"], 2, axis=2)[..., ::2]         # strided view
    odd["w_ih"] = np.asfortranarray(case["w_ih"])
    odd["w_hh"] = case["w_hh"].copy()
    odd["w_hh"].flags.writeable = False
    odd["b_ih"] = case["b_ih"].tolist()
    odd["lengths"] = MIXED.tolist()
    got = run(reference, "gru", odd)
    for k, v in want.items():
        if k != "cache":
            np.testing.assert_array_equal(got[k], v, err_msg=k)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_nan_propagates_and_huge_inputs_saturate(cell):
    case = make_case(cell, T, B, I, H, seed=13)
    case["x"][1, 0, 0] = np.nan
    out = run(reference, cell, case, backward=False)
    assert np.isnan(out["y"][1:, 0]).all()          # NaN carried along its sequence
    assert np.isfinite(out["y"][:, 1:]).all()        # and nowhere else
    huge = make_case(cell, T, B, I, H, seed=13, states=False)
    huge["x"] *= 1e6
    with np.errstate(over="raise", invalid="raise"):
        out = run(reference, cell, huge)
    assert np.isfinite(out["y"]).all()
    if cell != "rnn_relu":                           # relu is unbounded by definition
        assert np.abs(out["y"]).max() <= 1


def test_relu_gradient_at_zero_is_zero():
    x = np.zeros((1, 1, 1))
    y, _, cache = reference.rnn_forward(x, np.ones((1, 1)), np.ones((1, 1)), None, None,
                                        nonlinearity="relu")
    g = reference.rnn_backward(cache, np.ones_like(y))
    assert y[0, 0, 0] == 0 and g["x"][0, 0, 0] == 0


# ----------------------------------------------------------------- validation
def _kwargs(cell):
    case = make_case(cell, 3, 2, 4, 5)
    kw = {k: case[k] for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh")}
    kw.update(call_kwargs(cell, case))
    kw.pop("lengths")
    return kw


@pytest.mark.parametrize("cell", PLAIN)
@pytest.mark.parametrize("mutate,exc,match", [
    (lambda a: {"x": a["x"][0]}, ValueError, r"x: expected 3 dimensions \(T, B, I\), got shape \(2, 4\)"),
    (lambda a: {"x": a["x"].astype(np.int32)}, TypeError, r"x: expected dtype float32 or float64, got int32"),
    (lambda a: {"x": a["x"].astype(np.float16)}, TypeError, r"x: expected dtype float32 or float64"),
    (lambda a: {"x": "text"}, TypeError, r"x: expected"),
    (lambda a: {"w_ih": a["w_ih"][:, :-1]}, ValueError, r"w_ih: expected shape \(\d+, 4\), got \(\d+, 3\)"),
    (lambda a: {"w_hh": a["w_hh"][:-1]}, ValueError, r"w_hh: expected shape \(\d\*H, H\)"),
    (lambda a: {"w_hh": np.zeros((5, 5, 1))}, ValueError, r"w_hh: expected shape"),
    (lambda a: {"w_hh": np.zeros((2 * 5, 5))}, ValueError, r"w_hh: .*gates"),  # no cell has 2 gates
    (lambda a: {"w_ih": np.zeros((2 * 5, 4))}, ValueError, r"w_ih: expected shape"),
    (lambda a: {"w_ih": np.zeros(a["w_ih"].shape, complex)}, TypeError, r"w_ih: expected a real"),
    (lambda a: {"w_ih": None}, TypeError, r"w_ih: expected"),
    (lambda a: {"b_ih": a["b_ih"][:-1]}, ValueError, r"b_ih: expected shape \(\d+,\)"),
    (lambda a: {"b_hh": a["b_hh"][:, None]}, ValueError, r"b_hh: expected shape"),
    (lambda a: {"h0": np.zeros((3, 5))}, ValueError, r"h0: expected shape \(2, 5\), got \(3, 5\)"),
    (lambda a: {"lengths": [1, 2, 3]}, ValueError, r"lengths: expected shape \(2,\)"),
    (lambda a: {"lengths": [[1, 2]]}, ValueError, r"lengths: expected shape \(2,\)"),
    (lambda a: {"lengths": [4, 1]}, ValueError, r"lengths: expected values in \[0, 3\]"),
    (lambda a: {"lengths": [-1, 1]}, ValueError, r"lengths: expected values in \[0, 3\]"),
    (lambda a: {"lengths": [1.5, 1]}, TypeError, r"lengths: expected integers"),
    (lambda a: {"lengths": [True, False]}, TypeError, r"lengths: expected integers"),
    (lambda a: {"lengths": ["a", "b"]}, TypeError, r"lengths"),
    (lambda a: {"reverse": "yes"}, TypeError, r"reverse: expected True or False"),
    (lambda a: {"training": None}, TypeError, r"training: expected True or False"),
], ids=[
    "x_ndim", "x_int", "x_float16", "x_str", "w_ih_shape", "w_hh_shape", "w_hh_ndim", "w_hh_gates",
    "w_ih_gates", "w_ih_complex", "w_ih_none", "b_ih_shape", "b_hh_ndim", "h0_shape",
    "lengths_size", "lengths_ndim", "lengths_high", "lengths_negative", "lengths_fraction",
    "lengths_bool", "lengths_str", "reverse_str", "training_none"])
def test_forward_rejects(cell, mutate, exc, match):
    kw = _kwargs(cell)
    kw.update(mutate(kw))
    with pytest.raises(exc, match=match):
        getattr(reference, f"{CELLS[cell][1]}_forward")(**kw)


def test_cell_specific_rejections():
    kw = _kwargs("lstm")
    with pytest.raises(ValueError, match=r"c0: expected shape \(2, 5\), got \(2, 4\)"):
        reference.lstm_forward(**dict(kw, c0=np.zeros((2, 4))))
    with pytest.raises(ValueError, match=r"w_hh: expected shape \(3\*H, H\) for gru \(3 gates\), got \(20, 5\)"):
        reference.gru_forward(*(kw[k] for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh")))
    kw = _kwargs("rnn_tanh")
    with pytest.raises(ValueError, match="nonlinearity: expected 'tanh' or 'relu', got 'sigmoid'"):
        reference.rnn_forward(**dict(kw, nonlinearity="sigmoid"))
    with pytest.raises(ValueError, match="nonlinearity: expected 'tanh' or 'relu'"):
        reference.rnn_forward(**dict(kw, nonlinearity=None))
    kw = _kwargs("gru")
    with pytest.raises(TypeError, match="reset_after: expected True or False, got 'no'"):
        reference.gru_forward(**dict(kw, reset_after="no"))


@pytest.mark.parametrize("cell", PLAIN)
def test_backward_rejects_bad_gradients_and_caches(cell):
    case = make_case(cell, 3, 2, 4, 5)
    out = run(reference, cell, case, backward=False)
    name = CELLS[cell][1]
    backward = getattr(reference, f"{name}_backward")
    with pytest.raises(ValueError, match=r"dy: expected shape \(3, 2, 5\), got \(3, 2, 4\)"):
        backward(out["cache"], np.zeros((3, 2, 4)))
    with pytest.raises(ValueError, match=r"dh_n: expected shape \(2, 5\), got \(5, 2\)"):
        backward(out["cache"], None, np.zeros((5, 2)))
    if name == "lstm":
        with pytest.raises(ValueError, match=r"dc_n: expected shape \(2, 5\), got \(2,\)"):
            backward(out["cache"], None, None, np.zeros(2))
    with pytest.raises(TypeError, match="dy: expected"):
        backward(out["cache"], "dy")
    with pytest.raises(TypeError, match="cache: expected the cache returned by reference"):
        backward({"not": "a cache"}, None)
    other = "rnn" if name != "rnn" else "lstm"
    with pytest.raises(TypeError, match=f"got a cache from {name}_forward"):
        getattr(reference, f"{other}_backward")(out["cache"], None)
