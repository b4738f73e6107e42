"""rnnkernels: fast, exact CPU training of vanilla RNN, LSTM and GRU networks.

Products (one folder or module each; docs/design.md has the layering):

- kernels: :mod:`rnnkernels.ops` (compiled Cython + OpenMP) and
  :mod:`rnnkernels.reference` (readable NumPy, the oracle), same signatures;
- a Keras-style API: :mod:`~rnnkernels.models`, :mod:`~rnnkernels.layers`,
  :mod:`~rnnkernels.losses`, :mod:`~rnnkernels.optimizers`,
  :mod:`~rnnkernels.callbacks`, :mod:`~rnnkernels.metrics`,
  :mod:`~rnnkernels.initializers`, :mod:`~rnnkernels.activations` (Keras's
  module names), with :mod:`rnnkernels.engine` under them;
- the audio application: :mod:`rnnkernels.audio` (features, datasets,
  recipes) and the ``rnnkernels`` command line (:mod:`rnnkernels.cli`);
- the benchmark harness: :mod:`rnnkernels.bench` (``rnnkernels bench``).

Threads: :func:`set_num_threads`, :func:`get_num_threads`,
``with num_threads(n):``, :func:`max_threads` (the most a call may use).  :func:`show_config` prints how the package was
built and what it runs on.
"""
from ._core.config import show_config
from ._version import __version__
from ._core.memory import release as release_memory
from ._core.threads import get_num_threads, max_threads, num_threads, set_num_threads

__all__ = ["__version__", "get_num_threads", "set_num_threads", "num_threads", "max_threads", "release_memory",
           "show_config"]
