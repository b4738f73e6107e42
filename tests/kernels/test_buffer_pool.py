"""The kernels' buffer pool (rnnkernels._memory): aligned, recycled, never aliased."""
import gc

import numpy as np
import pytest

import rnnkernels
from rnnkernels import ops
from rnnkernels._core import memory as _memory


@pytest.fixture(autouse=True)
def empty_pool():
    gc.collect()  # arrays of earlier tests caught in cycles would refill the pool mid-test
    _memory.release()
    yield
    _memory.release()


@pytest.mark.parametrize("shape", [(1,), (3, 5), (1000, 257), (64, 1024)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_is_aligned_contiguous_and_writable(shape, dtype):
    a = _memory.empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype
    assert a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % _memory.ALIGN == 0
    a[...] = 1.5
    assert np.all(a == 1.5)


def test_freed_block_is_reused():
    a = _memory.empty((512, 512), np.float32)
    address = a.ctypes.data
    del a  # reference counting frees it here
    assert _memory.pooled_bytes() > 0
    b = _memory.empty((512, 511), np.float32)  # same size class
    assert b.ctypes.data == address
    assert _memory.pooled_bytes() == 0


def test_live_arrays_and_views_are_never_handed_out_again():
    keep = _memory.empty((256, 256), np.float32)
    keep[...] = 7
    view = _memory.empty((256, 256), np.float32)[10:20]  # the base array is gone, the view lives
    view[...] = 3
    others = [_memory.empty((256, 256), np.float32) for _ in range(6)]
    for o in others:
        assert not np.shares_memory(o, keep) and not np.shares_memory(o, view)
        o[...] = -1
    assert np.all(keep == 7) and np.all(view == 3)


def test_zeros_after_reuse():
    a = _memory.empty((300, 300), np.float64)
    a[...] = np.nan
    del a
    z = _memory.zeros((300, 300), np.float64)
    assert not np.any(z)


def test_pool_off_and_capped(monkeypatch):
    monkeypatch.setenv("RNNKERNELS_BUFFER_POOL_MB", "0")
    a = _memory.empty((512, 512), np.float32)
    del a
    assert _memory.pooled_bytes() == 0
    monkeypatch.setenv("RNNKERNELS_BUFFER_POOL_MB", "1.5")
    blocks = [_memory.empty((256, 1024), np.float32) for _ in range(3)]  # 1 MiB each
    del blocks
    assert 0 < _memory.pooled_bytes() <= 1.5 * 2 ** 20


def test_kernel_outputs_survive_later_calls():
    """Arrays a call returns keep their values while later calls recycle memory."""
    rng = np.random.default_rng(0)
    T, B, I, H = 20, 16, 8, 64
    x = rng.standard_normal((T, B, I))
    w_ih, w_hh = rng.standard_normal((4 * H, I)) * 0.1, rng.standard_normal((4 * H, H)) * 0.1
    b = rng.standard_normal(4 * H) * 0.1
    y, h_n, c_n, cache = ops.lstm_forward(x, w_ih, w_hh, b, b)
    kept = [y.copy(), h_n.copy(), c_n.copy()]
    grads = ops.lstm_backward(cache, np.ones_like(y))
    kept_grads = {k: v.copy() for k, v in grads.items()}
    del cache
    for _ in range(3):
        out = ops.lstm_forward(x * 2, w_ih, w_hh, b, b)
        ops.lstm_backward(out[-1], -np.ones_like(y))
        del out
    np.testing.assert_array_equal(y, kept[0])
    np.testing.assert_array_equal(h_n, kept[1])
    np.testing.assert_array_equal(c_n, kept[2])
    for k, v in grads.items():
        np.testing.assert_array_equal(v, kept_grads[k])


def test_release_reaches_the_bidirectional_worker_threads_scratch():
    from rnnkernels.layers import GRU, Bidirectional
    from rnnkernels._core import pair
    layer = Bidirectional(GRU(8, return_sequences=True), input_shape=(6, 3))
    layer.build((6, 3), np.random.default_rng(0))
    x = np.ones((4, 6, 3), np.float32)
    with rnnkernels.num_threads(2):
        layer.backward(np.ones_like(layer.forward(x, training=True)))

    def worker_scratch():
        return pair._worker().submit(lambda: dict(_memory._scratch.__dict__)).result()

    assert worker_scratch()  # the forward direction's gate gradients live there
    rnnkernels.release_memory()
    assert worker_scratch() == {} and _memory._scratch.__dict__ == {}


def test_garbage_collection_inside_a_release_does_not_deadlock():
    """A pooled block's release allocates (reading the pool's limit), which may
    run garbage collection, which may release another pooled block held in a
    reference cycle, on the same thread: the pool's lock must allow that (a
    plain lock hung a training run in CI)."""
    import gc
    import subprocess
    import sys
    code = (
        "import gc\n"
        "from rnnkernels._core import memory\n"
        "gc.set_threshold(1, 1, 1)\n"
        "for i in range(300):\n"
        "    a = [memory.empty((128 * 1024,), 'f4')]\n"
        "    a.append(a)  # a cycle: only the collector frees it\n"
        "    b = memory.empty((96 * 1024,), 'f4'); del a, b\n"
        "print('ok')\n")
    gc.collect()
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
