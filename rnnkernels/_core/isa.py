"""Which compiled kernel module runs: the one built for the widest
instruction set this CPU has (see setup.py)."""
import functools


@functools.lru_cache(maxsize=1)
def kernels():
    """The compiled kernels module (``_kernels``)."""
    from . import _kernels
    return _kernels
