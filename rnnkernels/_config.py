"""Thread count shared by every compiled kernel.

The kernels open their own OpenMP regions with this many threads and keep BLAS
single-threaded inside them, so the two never oversubscribe the cores. The work
partition never depends on this number (only on the shapes and the machine's
CPU count), so on a machine results are bitwise identical for any thread count.
"""
import contextlib
import os
import threading

_lock = threading.Lock()
_num_threads = None
_local = threading.local()  # .threads: this Python thread's share (see thread_share)


def _default_num_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env:
        try:
            n = int(env)
            if n >= 1:
                return n
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def get_num_threads():
    """Number of threads the kernels use (default: ``OMP_NUM_THREADS`` or the usable cores)."""
    global _num_threads
    share = getattr(_local, "threads", None)
    if share is not None:
        return share
    if _num_threads is None:
        _num_threads = _default_num_threads()
    return _num_threads


def set_num_threads(n):
    """Set the number of threads the kernels use; returns the previous value."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"num_threads: expected a positive integer, got {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"num_threads: expected a positive integer, got {n}")
    with _lock:
        if _num_threads is None:
            _num_threads = _default_num_threads()
        previous, _num_threads = _num_threads, n  # the process-wide value, not a thread_share
    return previous


@contextlib.contextmanager
def num_threads(n):
    """Context manager: ``with rnnkernels.num_threads(1): ...`` runs the kernels on ``n`` threads."""
    previous = set_num_threads(n)
    try:
        yield n
    finally:
        set_num_threads(previous)


@contextlib.contextmanager
def thread_share(n):
    """Internal: kernels called from this Python thread use ``n`` threads, whatever
    the process-wide setting (two kernel calls running at once, e.g. the two
    directions of a Bidirectional layer, each take their share of the cores)."""
    previous = getattr(_local, "threads", None)
    _local.threads = n
    try:
        yield n
    finally:
        _local.threads = previous
