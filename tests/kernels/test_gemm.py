"""The kernels' GEMM as a plain product (their matmul): the path the
merged input projections and dX take, and the benchmark's measure of peak."""
import numpy as np
import pytest

from rnnkernels._core.tuning import kernels as _kernels


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (7, 13, 31), (300, 41, 33), (513, 257, 17), (6, 0, 5),
                                     (29, 37, 16), (11, 64, 48), (9, 40, 40), (5, 19, 8), (3, 7, 24)])
@pytest.mark.parametrize("threads", [1, 2])
def test_matmul_matches_numpy(m, k, n, dtype, tol, threads):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    out = np.full((m, n), np.nan, dtype)
    _kernels().matmul(a, b, out, threads)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    scale = max(1.0, np.sqrt(k))
    np.testing.assert_allclose(out, expected, rtol=0, atol=tol * scale)


def test_matmul_same_bits_for_any_thread_count():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1031, 67)).astype(np.float32)
    b = rng.standard_normal((67, 45)).astype(np.float32)
    outs = []
    for threads in (1, 2, 3):
        out = np.empty((1031, 45), np.float32)
        _kernels().matmul(a, b, out, threads)
        outs.append(out)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 4, 8, 9, 16, 17, 24, 40, 47, 48])
def test_a_narrow_last_panel_gives_the_wide_products_bits(dtype, n):
    """The last panel of a product narrower than a register block's columns
    runs a one-vector kernel when its valid columns fit in one vector: each
    column's sum is the same sequence of terms, so its bits are those of the
    same columns of a wider product."""
    rng = np.random.default_rng(n)
    a = rng.standard_normal((37, 300)).astype(dtype)
    b = rng.standard_normal((300, 64)).astype(dtype)
    wide, narrow = np.empty((37, 64), dtype), np.empty((37, n), dtype)
    _kernels().matmul(a, b, wide, 1)
    _kernels().matmul(a, np.ascontiguousarray(b[:, :n]), narrow, 1)
    assert np.array_equal(narrow, wide[:, :n])


def test_matmul_reads_read_only_inputs():
    a = np.ones((3, 4), np.float32)
    b = np.ones((4, 2), np.float32)
    a.flags.writeable = b.flags.writeable = False
    out = np.empty((3, 2), np.float32)
    _kernels().matmul(a, b, out, 1)
    assert np.all(out == 4)


@pytest.mark.parametrize("b_shape, out_shape, threads, match", [
    ((5, 2), (3, 2), 1, r"b: expected 4 rows \(a's columns\), got 5"),
    ((4, 2), (3, 3), 1, r"out: expected shape \(3, 2\), got \(3, 3\)"),
    ((4, 2), (3, 2), 0, "nthreads: expected at least 1, got 0"),
])
def test_matmul_refuses_bad_shapes(b_shape, out_shape, threads, match):
    with pytest.raises(ValueError, match=match):
        _kernels().matmul(np.ones((3, 4), np.float32), np.ones(b_shape, np.float32),
                     np.empty(out_shape, np.float32), threads)
