"""Thread count shared by every compiled kernel, and what the calls ran on.

The kernels open their own OpenMP regions with this many threads and keep BLAS
single-threaded inside them, so the two never oversubscribe the cores. The work
partition never depends on this number (only on the shapes and the machine's
CPU count), so on a machine results are bitwise identical for any thread count.

Limits.  A count is refused above :func:`max_threads` (4 x the usable CPUs or 64,
whichever is larger, and never above OpenMP's own ``OMP_THREAD_LIMIT``): asking
libgomp for 100,000 threads made it fail to start them and crash the process.
``OMP_NUM_THREADS`` above the limit is clamped to it (an environment cannot raise).

Fork.  libgomp is not fork-safe: a child forked after a parallel region ran
(``multiprocessing``'s default start method on Linux) inherits the thread pool's
bookkeeping but not its threads, and its next parallel region waits for them
forever.  A region of one thread never touches the pool, so in such a child
every kernel runs on one thread (same bits: results never depend on the thread
count); :func:`set_num_threads` there warns and keeps one.  A child of a process
whose kernels never ran on several threads keeps the configured count.  For
threads in workers, use the ``"spawn"`` or ``"forkserver"`` start method.
"""
import contextlib
import os
import threading
import warnings

from . import openmp

_lock = threading.Lock()
_num_threads = None
_local = threading.local()  # .threads: this Python thread's share (see thread_share)
_handed_out_several = False  # a compiled call was given > 1 thread: libgomp may have a pool
_forked_after_threads = False  # this process was forked after that: one thread only (see above)

#: the floor of :func:`max_threads` (a small machine may still ask for a few more threads than CPUs)
MIN_THREAD_LIMIT = 64


def _usable_cpus():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def max_threads():
    """The most threads a kernel call may be given: ``max(64, 4 * usable CPUs)``, and no
    more than OpenMP's thread limit (``OMP_THREAD_LIMIT``) where the build has OpenMP."""
    limit = max(MIN_THREAD_LIMIT, 4 * _usable_cpus())
    try:
        omp_limit = openmp.load("_threads").omp_thread_limit()
    except (ImportError, AttributeError):  # an unbuilt checkout, or a build before this function
        omp_limit = None
    if omp_limit is not None and omp_limit >= 1:
        limit = min(limit, int(omp_limit))
    return limit


def _default_num_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env:
        try:
            n = int(env)
            if n >= 1:
                return min(n, max_threads())
        except ValueError:
            pass
    from ..distributed.launch import default_threads, local_size
    ranks = local_size()  # launched by mpiexec: this node's cores are shared by its ranks
    if ranks and ranks > 1:
        return min(default_threads(ranks), max_threads())
    return min(_usable_cpus(), max_threads())


def get_num_threads():
    """Number of threads the kernels use (default: ``OMP_NUM_THREADS``, else the usable cores,
    divided by the ranks on this node when an MPI launcher started several; 1 in a process
    forked after the kernels ran on several threads, see the module notes)."""
    global _num_threads
    if _forked_after_threads:
        return 1
    share = getattr(_local, "threads", None)
    if share is not None:
        return share
    if _num_threads is None:
        _num_threads = _default_num_threads()
    return _num_threads


def kernel_threads():
    """Internal: :func:`get_num_threads` for a count about to be handed to compiled code
    (remembers that libgomp may now hold a thread pool, for the fork handler)."""
    global _handed_out_several
    n = get_num_threads()
    if n > 1:
        _handed_out_several = True
    return n


def _after_fork_in_child():
    global _forked_after_threads, _lock, _usage_lock
    _lock, _usage_lock = threading.Lock(), threading.Lock()  # another thread may have held them
    if _handed_out_several:
        _forked_after_threads = True


if hasattr(os, "register_at_fork"):  # no fork() where it is missing (Windows)
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n):
    """Set the number of threads the kernels use; returns the previous value.

    ``n`` must be an integer in ``[1, max_threads()]`` (a ValueError otherwise)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"num_threads: expected a positive integer, got {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"num_threads: expected a positive integer, got {n}")
    limit = max_threads()
    if n > limit:
        raise ValueError(f"num_threads: expected at most {limit} (max(64, 4 x the {_usable_cpus()} "
                         f"usable CPUs), capped by OMP_THREAD_LIMIT), got {n}")
    if _forked_after_threads and n > 1:
        warnings.warn(f"num_threads: this process was forked after the kernels ran on several "
                      f"threads, and OpenMP is not fork-safe; its kernels run on 1 thread, not {n} "
                      "(start workers with the 'spawn' or 'forkserver' method to use threads)",
                      RuntimeWarning, stacklevel=2)
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
    _local.threads = max(1, int(n))  # a share of get_num_threads(): within the limit
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
