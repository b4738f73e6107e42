"""The float32 activations of the fused gate loops (src/_fastmath.h), read
through the kernels themselves, on whichever build runs (RNNKERNELS_ISA):

- tanh through a one-unit RNN whose pre-activation is the input itself
  (w_ih = 1, w_hh = 0, no bias), so h = tanh(x);
- the sigmoid through a one-unit GRU with h0 = 1 and only the update gate
  fed (n = tanh(0) = 0), so h = (1 - z) n + z h0 = sigmoid(x).

Each against float64 libm, in units in the last place of the float32 result,
over a million float32 values drawn by their bits (every binade from 1e-30 to
the saturation range, both signs) and the edge values."""
import numpy as np
import pytest

from rnnkernels import ops


def _floats_by_bits(n, lo, hi, seed):
    """n float32 values uniform in their bit patterns over [lo, hi] (lo > 0), both signs."""
    rng = np.random.default_rng(seed)
    a, b = np.array([lo, hi], np.float32).view(np.int32)
    bits = rng.integers(a, b, size=n, dtype=np.int32, endpoint=True)
    x = bits.view(np.float32)
    return np.concatenate([x, -x])


def _ulps(got, want):
    want32 = want.astype(np.float32)
    ulp = np.spacing(np.abs(want32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / ulp


def _tanh(x):
    one = np.ones((1, 1), np.float32)
    y, _, _ = ops.rnn_forward(x.reshape(1, -1, 1), one, 0 * one, None, None, training=False)
    return y.reshape(-1)


def _sigmoid(x):
    w_ih = np.array([[0], [1], [0]], np.float32)   # r z n: only z sees x
    w_hh = np.zeros((3, 1), np.float32)
    h0 = np.ones((x.size, 1), np.float32)
    y, _, _ = ops.gru_forward(x.reshape(1, -1, 1), w_ih, w_hh, None, None, h0=h0, training=False)
    return y.reshape(-1)


EDGES = np.array([0.0, 1e-38, 1e-30, 1e-7, 0.39999998, 0.4, 0.5, 1.0, 7.9, 8.19, 8.5, 8.999999, 9.0,
                  9.000001, 10.0, 20.0, 87.0, 88.0, 89.0, 1e30, 3.4e38], np.float32)


def test_tanh_within_six_and_a_half_ulps_and_never_past_one():
    x = np.concatenate([_floats_by_bits(500_000, 1e-30, 12.0, 0), EDGES, -EDGES])
    got = _tanh(x)
    want = np.tanh(x.astype(np.float64))
    assert _ulps(got, want).max() <= 6.5  # 5.1 with FMA, 6.1 without: every float checked in C
    assert np.abs(got).max() <= 1.0
    np.testing.assert_array_equal(np.sign(got), np.sign(x))  # odd, exact at the saturation and at 0
    saturated = np.abs(x) >= 8.125
    np.testing.assert_array_equal(got[saturated], np.sign(x[saturated]))


def test_sigmoid_within_four_ulps():
    x = np.concatenate([_floats_by_bits(500_000, 1e-30, 80.0, 1), EDGES[EDGES <= 80], -EDGES[EDGES <= 80]])
    got = _sigmoid(x)
    want = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    assert _ulps(got, want).max() <= 4.0
    assert got.min() >= 0.0 and got.max() <= 1.0


def test_saturation_and_infinities():
    x = np.array([np.inf, -np.inf, 1e30, -1e30, 3.4e38, -3.4e38], np.float32)
    np.testing.assert_array_equal(_tanh(x), np.sign(x))
    s = _sigmoid(x[2:])  # finite only: the GRU's zero weights times inf would be NaN
    np.testing.assert_array_equal(s[::2], 1.0)
    assert np.all(s[1::2] <= 2e-38)  # exp's argument is clamped at 87: sigmoid(-87), not a denormal


@pytest.mark.parametrize("function", [_tanh, _sigmoid])
def test_nan_propagates(function):
    x = np.array([np.nan, 0.5, -np.nan], np.float32)
    with np.errstate(invalid="ignore"):
        got = function(x)
    assert np.isnan(got[0]) and np.isnan(got[2]) and np.isfinite(got[1])
