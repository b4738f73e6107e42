"""Aligned, recycled buffers for the kernels.

Two costs of plain ``np.empty`` matter in a training loop:

* Alignment.  NumPy aligns to 16 bytes; the time loop's GEMM and gate updates
  load whole 32- or 64-byte vectors, and one that straddles two cache lines
  costs two loads (docs/design.md, "Buffers").
* Fresh pages.  Every step allocates the same large buffers (states, gates,
  gradients).  glibc returns large blocks to the kernel on free, so each step
  page-faults them in again, zero-filled, and how much that costs depends on
  the allocator's history rather than on the call.

So buffers of 64 KiB and more (smaller ones are just aligned) come from a small free list: an array handed out
here keeps a ``_Block`` as its base; when the last view of it dies, the block's
memory goes back to the list and the next call of a similar size reuses it,
already paged in.  Sizes are rounded up to eight classes per power of two
(at most 12.5% unused), so variable-length batches reuse blocks too.  Free
blocks are capped (``RNNKERNELS_BUFFER_POOL_MB``, default 512; 0 turns
recycling off).

Gradients that never leave backward (gate gradients) live in :func:`scratch`
buffers, one per Python thread, kept between calls.  :func:`release`
(``rnnkernels.release_memory()``) drops the free blocks, this thread's scratch
buffers and those of the worker thread that runs Bidirectional layers' forward
directions.
"""
import math
import os
import threading

import numpy as np

ALIGN = 64
_MIN_POOLED = 64 * 1024      # smaller blocks are cheap for malloc itself
_PER_CLASS = 4               # free blocks kept per size class

_lock = threading.Lock()     # _Block.__del__ only tries it (see there)
_free = {}                   # size class (bytes) -> [(raw uint8 array, its address)]
_free_bytes = 0
_scratch = threading.local()


def _limit():
    value = os.environ.get("RNNKERNELS_BUFFER_POOL_MB")
    if value is None:
        return 512 * 2 ** 20
    try:
        return int(float(value) * 2 ** 20)
    except ValueError:
        return 512 * 2 ** 20


def _size_class(nbytes):
    """nbytes (at least _MIN_POOLED) rounded up to one of eight steps per power of two."""
    step = 1 << (nbytes.bit_length() - 4)
    return -(-nbytes // step) * step


class _Block:
    """Owns one raw buffer; exposes ``nbytes`` of it, aligned, to NumPy, and
    gives it back to the free list when the last array using it is gone."""
    __slots__ = ("raw", "address", "size_class", "__array_interface__", "__weakref__")

    def __init__(self, raw, address, size_class, shape, dtype):
        # ``address`` is raw's, passed in: free blocks keep theirs.
        self.raw, self.address, self.size_class = raw, address, size_class
        self.__array_interface__ = {
            "data": (address + (-address % ALIGN), False), "shape": shape,
            "typestr": dtype.str, "version": 3}

    def __del__(self):
        global _free_bytes
        raw, size_class = self.raw, self.size_class
        if _lock is None:  # interpreter exit
            return
        limit = _limit()
        # Garbage collection can run this on a thread that already holds the
        # lock, in the middle of empty() or of another __del__ (anything that
        # allocates may collect): waiting for the lock deadlocked there, and
        # re-entering it let the inner release interleave with the outer's
        # bookkeeping.  A block that finds the lock taken is not pooled: its
        # memory goes back to malloc like any array's.
        if not _lock.acquire(blocking=False):
            return
        try:
            blocks = _free.setdefault(size_class, [])
            if len(blocks) < _PER_CLASS and _free_bytes + raw.nbytes <= limit:
                blocks.append((raw, self.address))
                _free_bytes += raw.nbytes
        finally:
            _lock.release()


def _address_of(a):
    """Address of an array's first byte.  NumPy's ``a.ctypes.data`` builds a
    ctypes object, which costs more than the rest of a pooled allocation; the
    compiled helper reads the buffer's pointer.  Imported on first use, like
    the kernels, so that importing rnnkernels needs no compiled module."""
    global _address_of
    from . import openmp
    buffer_address = openmp.load("_layout").buffer_address
    _address_of = buffer_address
    return buffer_address(a)


def empty(shape, dtype):
    """An uninitialised, C-contiguous, 64-byte-aligned array (recycled memory
    for large ones)."""
    global _free_bytes
    dtype = np.dtype(dtype)
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(map(int, shape))
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < _MIN_POOLED:  # malloc serves these from its heap, no page faults
        raw = np.empty(nbytes + ALIGN, np.uint8)
        start = -_address_of(raw) % ALIGN
        return raw[start:start + nbytes].view(dtype).reshape(shape)
    # Always a whole size class: whether a block goes back to the pool is
    # decided when it is freed (_Block.__del__ reads the limit), so reading
    # the environment here too would cost time and decide nothing.
    size_class, raw = _size_class(nbytes), None
    with _lock:
        blocks = _free.get(size_class)
        if blocks:
            raw, address = blocks.pop()
            _free_bytes -= raw.nbytes
    if raw is None:
        raw = np.empty(size_class + ALIGN, np.uint8)
        address = _address_of(raw)
    return np.asarray(_Block(raw, address, size_class, shape, dtype))


def zeros(shape, dtype):
    out = empty(shape, dtype)
    out.fill(0)
    return out


def copy(a):
    """An aligned copy of ``a`` (C order)."""
    out = empty(a.shape, a.dtype)
    out[...] = a
    return out


def scratch(shape, dtype, slot=0):
    """A buffer for gradients that never leave backward, reused from call to
    call by this Python thread (so concurrent calls from different threads
    never share one); ``slot`` tells apart buffers needed at the same time."""
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    key = f"{dtype.char}_{slot}"  # not dtype.name: a Python-level property, slow
    buf = getattr(_scratch, key, None)
    if buf is None or buf.size < size:
        buf = empty(size, dtype)
        setattr(_scratch, key, buf)
    return buf[:size].reshape(shape)


_worker_scratch = []  # callables that clear a worker thread's scratch buffers


def release():
    """Give the memory the kernels keep between calls back to the system:
    every free block, and the scratch buffers of the calling thread and of
    rnnkernels' own worker thread (Bidirectional's).  Arrays still in use are
    not affected."""
    global _free_bytes
    release_scratch()
    for clear in list(_worker_scratch):
        clear()
    with _lock:
        _free.clear()
        _free_bytes = 0


def release_scratch():
    """Drop the calling thread's scratch buffers."""
    _scratch.__dict__.clear()


def pooled_bytes():
    """Bytes held in free blocks now."""
    return _free_bytes
