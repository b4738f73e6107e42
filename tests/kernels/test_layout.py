"""The compiled row copies that pack, unpack and permute for the kernels."""
import numpy as np
import pytest

from rnnkernels._core import _layout


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
    """No rows, or rows of no columns: nothing to copy, no error, the output
    untouched (and a bad index is still refused when there is nothing to copy)."""
    out = np.empty((0, 5), np.float32)
    _layout.take_rows(np.empty((0, 5), np.float32), np.empty(0, np.intp), out, 2)
    assert out.shape == (0, 5)
    out = np.empty((3, 0), np.float32)
    _layout.take_rows(np.empty((2, 0), np.float32), np.array([1, -1, 0], np.intp), out, 2)
    assert out.shape == (3, 0)
    with pytest.raises(ValueError, match="index: row 2 is out of range for 2 rows"):
        _layout.take_rows(np.empty((2, 0), np.float32), np.array([2], np.intp), np.empty((1, 0), np.float32), 2)


def test_take_rows_rejects_bad_shapes_and_indices():
    src = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"out: expected shape \(2, 3\)"):
        _layout.take_rows(src, np.array([0, 1], np.intp), np.zeros((2, 4), np.float32), 1)
    with pytest.raises(ValueError, match="index: row 4 is out of range for 4 rows"):
        _layout.take_rows(src, np.array([0, 4], np.intp), np.zeros((2, 3), np.float32), 1)
    with pytest.raises((ValueError, TypeError)):
        _layout.take_rows(src, np.array([0], np.intp), np.zeros((1, 3), np.float64), 1)


def _plan_numpy(lengths, T, reverse):
    """The packed layout the straightforward way (PyTorch's PackedSequence order)."""
    B = lengths.size
    order = np.argsort(-lengths, kind="stable")
    S = int(lengths.max()) if B else 0
    counts = np.array([np.sum(lengths > s) for s in range(S)], dtype=np.intp)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.intp)
    rows = [(lengths[b] - 1 - s if reverse else s) * B + b for s in range(S) for b in order[:counts[s]]]
    padding = [t * B + b for t in range(T) for b in range(B) if t >= lengths[b]]
    return order, counts, offsets, np.array(rows, np.intp), np.array(padding, np.intp)


@pytest.mark.parametrize("T,lengths", [(5, [5, 2, 5, 0, 3]), (1, [1]), (7, [0, 0]), (4, []),
                                       (100, list(np.random.default_rng(3).integers(0, 101, 37)))])
@pytest.mark.parametrize("reverse", [False, True])
def test_plan_rows_matches_numpy(T, lengths, reverse):
    lengths = np.array(lengths, np.int64)
    order, counts, offsets, rows, padding = _plan_numpy(lengths, T, reverse)
    got = [np.full(a.size, -7, np.intp) for a in (counts, offsets, rows, padding)]
    _layout.plan_rows(lengths, order, got[0], got[1], got[2], got[3], T, reverse)
    for a, b in zip(got, (counts, offsets, rows, padding)):
        np.testing.assert_array_equal(a, b)
    # the packed rows are not always wanted (equal lengths: they are the padded ones)
    got[2] = np.empty(0, np.intp)
    _layout.plan_rows(lengths, order, got[0], got[1], got[2], got[3], T, reverse)
    np.testing.assert_array_equal(got[0], counts)


@pytest.mark.parametrize("T,lengths", [(5, [5, 2, 5, 0, 3]), (1, [1]), (7, [0, 0]), (4, []),
                                       (6, [6, 6, 4, 1]), (3, [0, 3]),
                                       (100, list(np.random.default_rng(3).integers(0, 101, 37)))])
def test_longest_first_is_a_stable_descending_sort(T, lengths):
    lengths = np.array(lengths, np.int64)
    order, S, N, in_order = _layout.longest_first(lengths, T)
    want = np.argsort(-lengths, kind="stable")
    np.testing.assert_array_equal(order, want)
    assert order.dtype == np.intp
    assert S == (lengths.max() if lengths.size else 0) and N == lengths.sum()
    assert in_order == bool(np.array_equal(want, np.arange(lengths.size)))


@pytest.mark.parametrize("lengths,message", [([2, 5], "got min 2 max 5"), ([-1, 0], "got min -1 max 0")])
def test_longest_first_rejects_lengths_out_of_range(lengths, message):
    with pytest.raises(ValueError, match=rf"lengths: expected values in \[0, 4\] \(T=4\), {message}"):
        _layout.longest_first(np.array(lengths, np.int64), 4)


def test_plan_rows_rejects_inconsistent_arguments():
    lengths = np.array([3, 1, 2], np.int64)
    order = np.array([0, 2, 1], np.intp)

    def call(lengths=lengths, order=order, S=3, n=6, pad=6, T=4):
        _layout.plan_rows(lengths, order, np.empty(S, np.intp), np.empty(S + 1, np.intp),
                          np.empty(n, np.intp), np.empty(pad, np.intp), T, False)
    call()
    with pytest.raises(ValueError, match="longest first"):
        call(order=np.array([1, 2, 0], np.intp))
    with pytest.raises(ValueError, match="order: 3 is out of range"):
        call(order=np.array([0, 2, 3], np.intp))
    with pytest.raises(ValueError, match="counts: expected 3 steps"):
        call(S=4)
    with pytest.raises(ValueError, match="at most T=2"):
        call(T=2, pad=0)
    with pytest.raises(ValueError, match="padded_of_packed: expected"):
        call(n=5)
    with pytest.raises(ValueError, match="padding"):
        call(pad=5)


def test_buffer_address_is_numpys():
    a = np.empty(1000, np.uint8)
    assert _layout.buffer_address(a) == a.ctypes.data
    assert _layout.buffer_address(a[7:]) == a.ctypes.data + 7
