"""What the compiled kernels were built with (OpenMP or serial)."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int rk_openmp_enabled(void) { return 1; }
    static int rk_omp_max_threads(void) { return omp_get_max_threads(); }
    static int rk_omp_thread_limit(void) { return omp_get_thread_limit(); }
    #else
    static int rk_openmp_enabled(void) { return 0; }
    static int rk_omp_max_threads(void) { return 1; }
    static int rk_omp_thread_limit(void) { return 1; }
    #endif
    """
    int rk_openmp_enabled()
    int rk_omp_max_threads()
    int rk_omp_thread_limit()


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(rk_openmp_enabled())


def omp_max_threads():
    """OpenMP's default team size (1 in a serial build)."""
    return rk_omp_max_threads()


def omp_thread_limit():
    """OpenMP's limit on the threads of the whole program (``OMP_THREAD_LIMIT``; a very
    large number when unset; 1 in a serial build).  Reading it starts no thread."""
    return rk_omp_thread_limit()
