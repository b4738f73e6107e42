"""A thread of rnnkernels' own that runs kernel calls handed to it, one at a time.

Two users: a Bidirectional layer's forward direction runs on one while the
calling thread runs the backward one (``pair.py``), and the TensorFlow adapter
runs every kernel call on one (``keras/_tf.py``), because TensorFlow calls a
``numpy_function`` from whichever of its inter-op threads is free and libgomp
keeps an OpenMP thread pool per calling thread: with more OpenMP threads than
CPUs it all but stops spinning at barriers, and the time loop's per-step
barriers become sleeps.

The thread starts on first use.  Its scratch buffers are its own, so
:func:`rnnkernels.release_memory` reaches into it; after ``fork()`` the child
starts a fresh one (it inherits the object, not the thread).
"""
import concurrent.futures
import contextvars
import os
import threading

from . import memory as _memory


class Worker:
    """One lazily started thread (``name`` prefixes its name)."""

    def __init__(self, name):
        self._name = name
        self._lock = threading.Lock()
        self._pool = None
        self._thread = None
        _memory._worker_scratch.append(self.release_scratch)
        _workers.append(self)

    def _executor(self):
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=self._name)
                self._pool.submit(self._note_thread).result()
            return self._pool

    def _note_thread(self):
        self._thread = threading.current_thread()

    def on_it(self):
        """Whether the calling thread is this worker."""
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, fn, *args):
        """A future of ``fn(*args)`` run on the worker, in the caller's context
        (np.errstate, rnnkernels.num_threads and other contextvars apply there
        too). RuntimeError once the interpreter is shutting down."""
        return self._executor().submit(contextvars.copy_context().run, fn, *args)

    def call(self, fn, *args):
        """``fn(*args)`` on the worker (directly when already on it), waiting for it."""
        if self.on_it():
            return fn(*args)
        return self.submit(fn, *args).result()

    def release_scratch(self):
        """Drop the worker's scratch buffers (nothing when it never started)."""
        pool = self._pool
        if pool is None:
            return
        try:
            pool.submit(_memory.release_scratch).result()
        except RuntimeError:  # interpreter shutting down: the worker and its buffers are gone
            pass

    def _forget(self):
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._pool = self._thread = None


_workers = []


def _forget_in_child():
    for worker in _workers:
        worker._forget()


if hasattr(os, "register_at_fork"):  # no fork() where it is missing (Windows)
    os.register_at_fork(after_in_child=_forget_in_child)
