"""Random draws keyed by *which sample* they are for, not by how many came before.

Training draws dropout masks (and recurrent-dropout and zoneout masks) per
sample.  A ``numpy.random.Generator`` hands out numbers in call order, so a
sample's mask depends on where in the batch it sits and on how the batch was
cut: split one batch over two processes and every mask changes.  Here each
number is a hash of ``(key..., stream, draw, sample id, element)``: the
training loop keys a batch by ``(seed, 1, epoch)`` and gives every sample its
global id (its index in ``x``; for a dataset, batch and row), every layer takes
its own stream (:meth:`KeyedRandom.child`) and numbers its draws, so a sample
gets the same masks whether it trains in one process or in any rank of many,
in any batch position (docs/distributed.md).

The hash is SplitMix64 (Steele, Lea & Flood 2014, the mixer of Java's
SplittableRandom and numpy's seeding), applied by chaining: fast in vectorised
uint64 arithmetic and good enough for masks (every output bit depends on every
input bit).  Uniforms are the top 53 bits, in ``[0, 1)``.
"""
import functools

import numpy as np

__all__ = ["KeyedRandom", "dataset_sample_ids", "is_keyed"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_MASK64 = (1 << 64) - 1


def _mix(z):
    """SplitMix64 of a uint64 array (wrapping arithmetic), a new array."""
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def _fold(words):
    """One uint64 from a sequence of non-negative ints."""
    h = np.zeros(1, np.uint64)
    for w in words:
        h = _mix(h ^ np.uint64(int(w) & _MASK64))
    return h


def _uniforms_numpy(ids, m):
    """(n, m) uniforms: the top 53 bits of SplitMix64(ids[i] ^ j) (the reference)."""
    h = _mix(ids.reshape(-1, 1) ^ np.arange(m, dtype=np.uint64).reshape(1, m))
    return (h >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)


@functools.cache
def _is_compiled():
    from .._core import isa
    return bool(isa.built())


def _compiled():
    """The plan's build of the keyed loops, or None where nothing is compiled."""
    from .._core import tuning
    return tuning.keyed_kernels() if _is_compiled() else None


def _threads(n, size):
    """Threads for a draw of ``n`` samples, ``size`` elements: one per 64 Ki elements at most."""
    from .._core.threads import get_num_threads
    return max(1, min(get_num_threads(), n, size // 65536 + 1))


def _uniforms(ids, m):
    """The same, compiled (src/_keyed.pxi): one vectorised pass instead of NumPy's ten."""
    _keyed = _compiled()
    if _keyed is None:  # an unbuilt checkout: the reference
        return _uniforms_numpy(ids, m)
    out = np.empty((ids.size, m), np.float64)
    if out.size:
        _keyed.uniforms(ids, out, _threads(ids.size, out.size))
    return out


def _masks_numpy(ids, shape, axis, rate, below, above, dtype):
    """The masks of :meth:`KeyedRandom.masks` from the uniforms (the reference)."""
    n = ids.size
    per = shape[:axis] + shape[axis + 1:]
    u = _uniforms_numpy(ids, int(np.prod(per, dtype=np.int64))).reshape((n,) + per)
    u = np.moveaxis(u, 0, axis)
    return np.where(u < rate, dtype.type(below), dtype.type(above)).astype(dtype)


def _masks(ids, shape, axis, rate, below, above, dtype):
    """The same, compiled (src/_keyed.pxi): thresholded in the caller's dtype and layout."""
    _keyed = _compiled()
    if _keyed is None:  # an unbuilt checkout: the reference
        return _masks_numpy(ids, shape, axis, rate, below, above, dtype)
    from .._core.memory import empty  # recycled, already paged-in memory: a mask is drawn every step
    out = empty(shape, dtype)
    A = int(np.prod(shape[:axis], dtype=np.int64))
    if out.size:
        _keyed.masks(ids, out.reshape(A, ids.size, -1), float(rate), float(below), float(above),
                     _threads(ids.size, out.size))
    return out


def dataset_sample_ids(dataset, batch_index, n_rows, start=0):
    """Global ids of rows ``start .. start + n_rows`` of a dataset's batch ``batch_index``.

    A dataset with an integer ``batch_size`` attribute (batches of that many rows, the
    last one possibly shorter) keys row ``r`` of batch ``k`` as sample ``k * batch_size +
    r``, the index the same data given as arrays has, so both train alike; otherwise
    batch and row are packed in one integer (the row in the low 32 bits)."""
    rows = np.arange(start, start + n_rows, dtype=np.uint64)
    size = getattr(dataset, "batch_size", None)
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and start + n_rows <= size:
        return np.uint64(batch_index) * np.uint64(size) + rows
    return (np.uint64(batch_index) << np.uint64(32)) | rows | np.uint64(1 << 63)


class KeyedRandom:
    """Uniform draws for the samples ``sample_ids`` of one batch, keyed by ``key``.

    ``random(shape, batch_axis=0)`` gives the next draw: a ``shape`` array of
    uniforms in ``[0, 1)`` whose ``batch_axis`` runs over the samples (its size must
    be ``len(sample_ids)``); ``batch_axis=None`` draws one array for the whole batch
    (a mask shared by its samples, keyed by ``batch_key``).  Sample ``i``'s values
    depend only on the key, the stream, the draw's number and ``sample_ids[i]``."""

    def __init__(self, key, sample_ids, batch_key=0):
        self.key = tuple(int(k) for k in key)
        self.sample_ids = np.asarray(sample_ids, dtype=np.uint64).reshape(-1)
        self.batch_key = int(batch_key)
        self._base = _fold(self.key)
        self._draws = 0

    def child(self, *stream):
        """An independent stream for one consumer (a layer, a direction)."""
        return KeyedRandom(self.key + tuple(int(s) for s in stream), self.sample_ids, self.batch_key)

    def subset(self, rows):
        """The same stream for the samples ``sample_ids[rows]`` (a slice or index array)."""
        return KeyedRandom(self.key, self.sample_ids[rows], self.batch_key)

    def _next_ids(self, shape, batch_axis):
        """The next draw's per-sample keys (one key for batch_axis None)."""
        draw = _mix(self._base ^ np.uint64(self._draws))
        self._draws += 1
        if batch_axis is None:
            return np.ascontiguousarray(_mix(draw ^ np.uint64(self.batch_key)).reshape(1), np.uint64)
        if shape[batch_axis] != self.sample_ids.size:
            raise ValueError(f"shape: axis {batch_axis} has {shape[batch_axis]} entries, the "
                             f"batch has {self.sample_ids.size} samples")
        return np.ascontiguousarray(_mix(draw ^ self.sample_ids).reshape(-1), np.uint64)

    def random(self, shape, batch_axis=0):
        shape = tuple(int(s) for s in shape)
        ids = self._next_ids(shape, batch_axis)
        per = shape if batch_axis is None else shape[:batch_axis] + shape[batch_axis + 1:]
        u = _uniforms(ids, int(np.prod(per, dtype=np.int64))).reshape((ids.size,) + per)
        return u.reshape(per) if batch_axis is None else np.moveaxis(u, 0, batch_axis)

    def masks(self, shape, rate, below, above, dtype, batch_axis=0):
        """The next draw as a mask: ``where(random(shape, batch_axis) < rate, below,
        above)`` in ``dtype``, C-contiguous, the same values in one compiled pass."""
        shape = tuple(int(s) for s in shape)
        ids = self._next_ids(shape, batch_axis)
        if batch_axis is None:
            return _masks(ids, (1,) + shape, 0, rate, below, above, np.dtype(dtype)).reshape(shape)
        return _masks(ids, shape, batch_axis, rate, below, above, np.dtype(dtype))


def is_keyed(rng):
    return isinstance(rng, KeyedRandom)
