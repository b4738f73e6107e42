"""ops.workspace / ops.cache_from_workspace: a packed training call's cache
kept as arrays and rebuilt gives bitwise the original's gradients."""
import numpy as np
import pytest

from rnnkernels import ops

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


@pytest.mark.parametrize("kind,proj", [("lstm", 0), ("lstm", 3), ("gru", 0), ("rnn", 0)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch_sizes", [[4, 4, 4], [5, 3, 3, 1], [1]], ids=["equal", "ragged", "one"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rebuilt_cache_gives_bitwise_the_same_gradients(kind, proj, reverse, batch_sizes, dtype, threads):
    rng = np.random.default_rng(0)
    H, I, G = 7, 5, GATES[kind]
    P, N, B = proj or H, sum(batch_sizes), batch_sizes[0]
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    x, w_ih, w_hh, b_ih = r(N, I), r(G * H, I), r(G * H, P), r(G * H)
    w_hr = r(P, H) if proj else None
    bs = np.array(batch_sizes)
    if kind == "lstm":
        y, h_n, c_n, cache = ops.lstm_forward_packed(x, bs, w_ih, w_hh, b_ih, None, r(B, P), r(B, H),
                                                     reverse=reverse, w_hr=w_hr)
    else:
        f = ops.gru_forward_packed if kind == "gru" else ops.rnn_forward_packed
        y, h_n, cache = f(x, bs, w_ih, w_hh, b_ih, None, r(B, P), reverse=reverse)
    arrays = ops.workspace(cache)
    shapes = ops.workspace_shapes(kind, N, B, I, H, P, proj > 0)
    assert [None if a is None else a.shape for a in arrays] == list(shapes)
    copies = tuple(None if a is None else a.copy() for a in arrays)
    rebuilt = ops.cache_from_workspace(kind, copies, bs, w_ih, w_hh, w_hr, reverse, True, False)
    backward = getattr(ops, f"{kind}_backward")
    dy, dh = r(*y.shape), r(*h_n.shape)
    g1, g2 = backward(cache, dy, dh), backward(rebuilt, dy, dh)
    assert set(g1) == set(g2) and g2["b_hh"] is None
    for k in g1:
        if g1[k] is not None:
            assert np.array_equal(g1[k], g2[k]), k


def test_workspace_refuses_variants_and_bad_arrays():
    rng = np.random.default_rng(0)
    x, w_ih, w_hh = rng.standard_normal((6, 2)), rng.standard_normal((9, 2)), rng.standard_normal((9, 3))
    *_, cache = ops.gru_forward_packed(x, [3, 3], w_ih, w_hh, None, None, recurrent_mask=np.ones((3, 3)))
    with pytest.raises(ValueError, match="variant-free"):
        ops.workspace(cache)
    with pytest.raises(TypeError, match="cache: expected a cache"):
        ops.workspace("cache")
    *_, cache = ops.gru_forward_packed(x, [3, 3], w_ih, w_hh, None, None)
    arrays = list(ops.workspace(cache))
    with pytest.raises(ValueError, match="w_hr: only the LSTM projects"):
        ops.cache_from_workspace("gru", arrays, [3, 3], w_ih, w_hh, w_hr=np.ones((3, 3)))
    arrays[3] = arrays[3][:-1]
    with pytest.raises(ValueError, match=r"arrays \(gates\): expected shape \(6, 9\)"):
        ops.cache_from_workspace("gru", arrays, [3, 3], w_ih, w_hh)
    with pytest.raises(ValueError, match="kind: expected"):
        ops.cache_from_workspace("lstmx", arrays, [3, 3], w_ih, w_hh)


def test_the_forward_packing_is_reused_with_the_same_bits_and_checked():
    rng = np.random.default_rng(1)
    x, w_ih, w_hh = rng.standard_normal((6, 2)), rng.standard_normal((9, 2)), rng.standard_normal((9, 3))
    y, h_n, cache = ops.gru_forward_packed(x, [3, 2, 1], w_ih, w_hh, None, None, reverse=True)
    arrays = ops.workspace(cache)
    dy = rng.standard_normal(y.shape)
    fresh = ops.gru_backward(ops.cache_from_workspace("gru", arrays, [3, 2, 1], w_ih, w_hh, reverse=True), dy)
    reused = ops.gru_backward(ops.cache_from_workspace("gru", arrays, [3, 2, 1], w_ih, w_hh, reverse=True,
                                                       packed=ops.packed_weights(cache)), dy)
    for k in fresh:
        assert (fresh[k] is None and reused[k] is None) or np.array_equal(fresh[k], reused[k]), k
    with pytest.raises(TypeError, match="packed: expected ops.packed_weights"):
        ops.cache_from_workspace("gru", arrays, [3, 2, 1], w_ih, w_hh, packed="weights")
    with pytest.raises(TypeError, match="cache: expected a cache"):
        ops.packed_weights(None)
