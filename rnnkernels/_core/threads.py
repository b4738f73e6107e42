"""Thread count shared by every compiled kernel, and what the calls ran on.

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
    from ..distributed.launch import default_threads, local_size
    ranks = local_size()  # launched by mpiexec: this node's cores are shared by its ranks
    if ranks and ranks > 1:
        return default_threads(ranks)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def get_num_threads():
    """Number of threads the kernels use (default: ``OMP_NUM_THREADS``, else the usable cores,
    divided by the ranks on this node when an MPI launcher started several)."""
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


# What the kernels' calls actually ran on: the threads OpenMP gave each call's
# time loop (read inside the parallel region), per Python thread for the last
# call and process-wide for the most.  Tests and show_config() read it: a
# thread cap or an OpenMP runtime that gives fewer threads than asked would
# otherwise go unseen.
_usage_lock = threading.Lock()
_usage = {"calls": 0, "max_time_loop_threads": 0}


def note_call(kernel, threads, time_loop_threads):
    """Record one kernel call: ``threads`` asked for, ``time_loop_threads`` run."""
    _local.last_call = {"kernel": kernel, "threads": int(threads),
                        "time_loop_threads": int(time_loop_threads)}
    with _usage_lock:
        _usage["calls"] += 1
        _usage["max_time_loop_threads"] = max(_usage["max_time_loop_threads"], int(time_loop_threads))


def usage():
    """``{"calls", "max_time_loop_threads", "last_call"}``: kernel calls since
    :func:`reset_usage`, the most threads any call's time loop ran on, and this
    Python thread's last call (kernel, threads asked for, time-loop threads)."""
    with _usage_lock:
        out = dict(_usage)
    out["last_call"] = getattr(_local, "last_call", None)
    return out


def reset_usage():
    with _usage_lock:
        _usage["calls"] = 0
        _usage["max_time_loop_threads"] = 0
    _local.last_call = None
