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
