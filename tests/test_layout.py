"""The compiled row copies that pack, unpack and permute for the kernels."""
import numpy as np
import pytest

from rnnkernels import _layout


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 13), (300, 129), (4096, 64)])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_take_rows_matches_numpy_with_zero_rows(dtype, rows, cols, nthreads):
    rng = np.random.default_rng(rows * cols)
    src = rng.standard_normal((rows, cols)).astype(dtype)
    index = rng.integers(-1, rows, size=2 * rows + 3).astype(np.intp)
    out = np.full((index.size, cols), np.nan, dtype)
    _layout.take_rows(src, index, out, nthreads)
    expected = np.where((index >= 0)[:, None], src[np.maximum(index, 0)], 0)
    np.testing.assert_array_equal(out, expected)


def test_take_rows_reads_read_only_source():
    src = np.arange(12, dtype=np.float64).reshape(4, 3)
    src.flags.writeable = False
    out = np.empty((2, 3))
    _layout.take_rows(src, np.array([3, 0], dtype=np.intp), out, 1)
    np.testing.assert_array_equal(out, src[[3, 0]])


def test_take_rows_empty():
    out = np.empty((0, 5), np.float32)
    _layout.take_rows(np.empty((0, 5), np.float32), np.empty(0, np.intp), out, 2)
    out = np.empty((3, 0), np.float32)
    _layout.take_rows(np.empty((2, 0), np.float32), np.array([1, -1, 0], np.intp), out, 2)


def test_take_rows_rejects_bad_shapes_and_indices():
    src = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"out: expected shape \(2, 3\)"):
        _layout.take_rows(src, np.array([0, 1], np.intp), np.zeros((2, 4), np.float32), 1)
    with pytest.raises(ValueError, match="index: row 4 is out of range for 4 rows"):
        _layout.take_rows(src, np.array([0, 4], np.intp), np.zeros((2, 3), np.float32), 1)
    with pytest.raises((ValueError, TypeError)):
        _layout.take_rows(src, np.array([0], np.intp), np.zeros((1, 3), np.float64), 1)


def _panels_numpy(src, nr):
    k, n = src.shape
    npanel = -(-n // nr)
    padded = np.zeros((k, npanel * nr), src.dtype)
    padded[:, :n] = src
    return padded.reshape(k, npanel, nr).transpose(1, 0, 2).ravel()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("k,n", [(1, 1), (7, 13), (128, 96), (33, 40), (5, 64)])
@pytest.mark.parametrize("transposed", [False, True])
def test_pack_panels_matches_numpy(dtype, k, n, transposed):
    rng = np.random.default_rng(k * n)
    src = rng.standard_normal((n, k)).astype(dtype).T if transposed else rng.standard_normal((k, n)).astype(dtype)
    nr = _layout.panel_values(dtype, 1, 1)
    out = np.full(_layout.panel_values(dtype, k, n), np.nan, dtype)
    _layout.pack_panels(src, out)
    np.testing.assert_array_equal(out, _panels_numpy(src, nr))


def test_pack_panels_rejects_wrong_sizes():
    with pytest.raises(ValueError, match="out: expected"):
        _layout.pack_panels(np.zeros((3, 5), np.float32), np.zeros(7, np.float32))
    with pytest.raises(TypeError, match="dtype"):
        _layout.panel_values("int32", 2, 2)
