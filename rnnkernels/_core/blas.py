"""BLAS held to one thread where our own threads do the parallel work.

Every BLAS call of the kernels runs inside their OpenMP regions, so a
multi-threaded OpenBLAS would fight them for the cores; and a training loop
that leaves NumPy's BLAS free to use several threads makes its results depend
on the thread count.  :func:`pin_blas` is the one place that sets BLAS thread
counts (through threadpoolctl).
"""
import contextlib
import os

_controllers = {}  # which -> threadpoolctl LibController list, found once


def _libraries(which):
    """threadpoolctl controllers of the BLAS libraries ``which`` names:
    "kernels" (SciPy's OpenBLAS, which scipy.linalg.cython_blas and so every
    kernel calls, when it can be told apart; else every BLAS) or "all"."""
    libs = _controllers.get(which)
    if libs is None:
        import scipy.linalg.cython_blas  # noqa: F401  (make sure SciPy's BLAS is loaded)
        from threadpoolctl import ThreadpoolController
        libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        if which == "kernels":
            scipy_libs = [lib for lib in libs
                          if "scipy" in os.path.basename(os.path.dirname(lib.filepath))
                          or "scipy_openblas-" in os.path.basename(lib.filepath)]
            libs = scipy_libs or libs
        _controllers[which] = libs
    return libs


class _Pinned(contextlib.AbstractContextManager):
    """What :func:`pin_blas` changed; leaving the ``with`` block (or calling
    :meth:`restore`) puts the previous thread counts back."""

    def __init__(self, previous):
        self._previous = previous

    def restore(self):
        for lib, n in self._previous:
            lib.set_num_threads(n)
        self._previous = []

    def __exit__(self, *exc):
        self.restore()


def pin_blas(threads=1, which="all"):
    """Set the BLAS libraries ``which`` names ("all", or "kernels": the one
    the compiled kernels call) to ``threads`` threads.

    Returns a context manager that restores the previous counts on exit.  The
    kernels call it without restoring: switching OpenBLAS's thread count back
    and forth wakes its thread pool, which then spins and steals the cores
    from the next call, so their BLAS stays at one thread.  A library already
    at ``threads`` is not touched (checking costs a ctypes call, about a
    microsecond)."""
    previous = []
    for lib in _libraries(which):
        n = lib.get_num_threads()
        if n != threads:
            lib.set_num_threads(threads)
            previous.append((lib, n))
    return _Pinned(previous)


def describe():
    """One line per BLAS library loaded: its internal API, version, threads and file."""
    return [f"{lib.internal_api} {lib.version or '?'} ({lib.get_num_threads()} threads): {lib.filepath}"
            for lib in _libraries("all")]
