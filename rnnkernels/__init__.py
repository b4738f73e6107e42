"""rnnkernels: fast, exact CPU training of vanilla RNN, LSTM and GRU networks.

Submodules:
    ops        compiled forward/backward kernels (Cython + OpenMP + BLAS)
    reference  readable NumPy implementation with identical signatures (the oracle)
    layers, models, losses, optimizers, callbacks, interop   Keras-style training API
    audio, datasets   audio features and data loading
"""
__version__ = "0.1.0"

from ._config import get_num_threads, num_threads, set_num_threads
from ._memory import release as release_memory

__all__ = ["__version__", "get_num_threads", "set_num_threads", "num_threads", "release_memory"]
