"""Two kernel calls at once, each on its share of the threads.

A Bidirectional layer's two directions are independent: with two or more
threads the forward direction runs on a worker thread while the calling thread
runs the backward one, each with ``thread_share`` of the configured count (the
kernels release the GIL).  Each kernel gives the same bits on any number of
threads, so the results are those of one direction after the other.
"""
import concurrent.futures
import os
import threading

from . import threads as _threads
from .worker import Worker

_direction = Worker("rnnkernels-direction")
_pool_free = threading.Lock()  # held by the caller whose forward direction the worker runs


def _worker():
    """The worker that runs a Bidirectional layer's forward direction while the calling
    thread runs the backward one.  One serves the process; a caller that finds it busy
    with another thread's pair runs its two tasks itself (see run_pair)."""
    return _direction


def _forget_lock_in_child():
    global _pool_free
    _pool_free = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):  # no fork() where it is missing (Windows)
    os.register_at_fork(after_in_child=_forget_lock_in_child)


def run_pair(first, second, concurrent_ok=True):
    """``[first(), second()]``, the two run at the same time when there are two
    threads or more to share and ``concurrent_ok`` (a caller whose tasks draw
    random numbers from one generator must keep their order: False)."""
    n = _threads.get_num_threads()
    # The worker busy with another thread's pair: queueing behind it would be
    # slower than running both here, one after the other.
    if n < 2 or not concurrent_ok or not _pool_free.acquire(blocking=False):
        return [first(), second()]
    held = _pool_free
    try:
        def run(share, task):
            with _threads.thread_share(share):
                return task()

        try:  # in the caller's context: np.errstate and other contextvars apply there too
            other = _worker().submit(run, (n + 1) // 2, first)
        except RuntimeError:  # interpreter shutting down: no new threads
            return [first(), second()]
        try:
            result = run(n // 2, second)
        except BaseException:
            concurrent.futures.wait([other])  # never leave it running on our arrays
            raise
        return [other.result(), result]
    finally:
        held.release()
