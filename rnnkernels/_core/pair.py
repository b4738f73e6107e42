"""Two kernel calls at once, each on its share of the threads.

A Bidirectional layer's two directions are independent: with two or more
threads the forward direction runs on a worker thread while the calling thread
runs the backward one, each with ``thread_share`` of the configured count (the
kernels release the GIL).  Each kernel gives the same bits on any number of
threads, so the results are those of one direction after the other.
"""
import concurrent.futures
import contextvars
import os
import threading

from . import memory as _memory, threads as _threads

_pool = None
_pool_lock = threading.Lock()
_pool_free = threading.Lock()  # held by the caller whose forward direction the worker runs


def _worker():
    """The worker thread that runs a Bidirectional layer's forward direction while the
    calling thread runs the backward one.  One serves the process; a caller that finds it
    busy with another thread's pair runs its two tasks itself (see run_pair)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rnnkernels-direction")
            # its scratch buffers are its own: release_memory() must reach them there
            _memory._worker_scratch[:] = [lambda: _release_worker_scratch(pool)]
            _pool = pool
        return _pool


def _release_worker_scratch(pool):
    try:
        pool.submit(_memory.release_scratch).result()
    except RuntimeError:  # interpreter shutting down: the worker and its buffers are gone
        pass


def _forget_pool_in_child():
    """After fork() the child has the pool object but not its thread: a task submitted
    there would wait forever.  Start afresh (the locks too: another thread may have held
    them at the fork)."""
    global _pool, _pool_lock, _pool_free
    _pool = None
    _pool_lock, _pool_free = threading.Lock(), threading.Lock()
    _memory._worker_scratch.clear()



if hasattr(os, "register_at_fork"):  # no fork() where it is missing (Windows)
    os.register_at_fork(after_in_child=_forget_pool_in_child)


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
            other = _worker().submit(contextvars.copy_context().run, run, (n + 1) // 2, first)
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
