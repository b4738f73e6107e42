"""The keyed uniforms' compiled loop (src/_keyed.pyx) gives the NumPy reference's bits."""
import numpy as np
import pytest

import rnnkernels
from rnnkernels._util import keyed_random


@pytest.mark.parametrize("n, m", [(1, 1), (3, 7), (32, 12800), (5, 0), (0, 4)])
def test_compiled_uniforms_equal_the_numpy_reference_at_any_thread_count(n, m):
    ids = np.random.default_rng(n * 31 + m).integers(0, 2 ** 63, n, dtype=np.uint64) | np.uint64(1 << 63)
    want = keyed_random._uniforms_numpy(ids, m)
    for threads in (1, 2):
        with rnnkernels.num_threads(threads):
            got = keyed_random._uniforms(ids, m)
        assert got.shape == (n, m) and np.array_equal(got, want)
    if want.size:
        assert 0.0 <= want.min() and want.max() < 1.0


def test_a_keyed_draw_is_the_same_per_sample_whatever_the_batch():
    """Sample 7's zoneout mask (T, B, H) rows are the same in a batch of 3 and of 1."""
    big = keyed_random.KeyedRandom((1, 2, 3), [5, 7, 9]).random((4, 3, 6), batch_axis=1)
    one = keyed_random.KeyedRandom((1, 2, 3), [7]).random((4, 1, 6), batch_axis=1)
    assert np.array_equal(big[:, 1:2], one)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((100, 32, 128), 1), ((7, 3, 5), 1), ((3, 1), 0), ((1, 13), None),
                                         ((2, 5, 3, 4), 2), ((0, 4, 2), 1), ((5, 3, 1), 1)])
def test_compiled_masks_equal_thresholding_the_uniforms(shape, axis, dtype):
    """masks() is where(random() < rate, below, above) in the dtype, at any thread count."""
    n = 1 if axis is None else shape[axis]
    ids = list(range(100, 100 + n))
    for rate, below, above in ((0.1, 1.0, 0.0), (0.25, 0.0, 1 / 0.75), (0.0, 1.0, 0.0)):
        want = keyed_random.KeyedRandom((4, 5), ids).random(shape, axis)
        want = np.where(want < rate, dtype(below), dtype(above)).astype(dtype)
        for threads in (1, 2):
            with rnnkernels.num_threads(threads):
                got = keyed_random.KeyedRandom((4, 5), ids).masks(shape, rate, below, above, dtype, axis)
            assert got.dtype == dtype and got.shape == shape and got.flags.c_contiguous
            assert np.array_equal(got, want)
        ref = keyed_random._masks_numpy(keyed_random.KeyedRandom((4, 5), ids)._next_ids(shape, axis),
                                        (1,) + shape if axis is None else shape, 0 if axis is None else axis,
                                        rate, below, above, np.dtype(dtype))
        assert np.array_equal(ref.reshape(shape), want)


def test_a_masks_draw_advances_the_stream_like_a_random_draw():
    a = keyed_random.KeyedRandom((1,), [3, 4])
    b = keyed_random.KeyedRandom((1,), [3, 4])
    a.masks((2, 5), 0.5, 1.0, 0.0, np.float32)
    b.random((2, 5))
    assert np.array_equal(a.random((2, 7)), b.random((2, 7)))
