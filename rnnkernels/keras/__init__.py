"""Keras 3 recurrent layers computed by rnnkernels' kernels: change one import.

    from rnnkernels.keras import LSTM      # instead of: from keras.layers import LSTM

``LSTM``, ``GRU``, ``SimpleRNN`` and ``Bidirectional`` subclass the ``keras.layers``
classes of the same names: Keras's constructor arguments, weights (``set_weights`` /
``get_weights`` and ``.keras`` files carry over both ways), masking and outputs.  Under the
TensorFlow backend (also inside ``model.fit``'s graph) and the torch backend, on CPU,
the time loop and its gradient run on the compiled kernels; whatever they do not compute
(another activation, ``unroll=True``, the JAX backend, a mask that is not right-padded,
...) runs Keras's own loop, with Keras's numbers.  ``convert(model)`` copies a built Keras
model with its recurrent layers replaced by these.  docs/keras.md has the details.

Importing this module registers the classes with Keras's serialization (as
``rnnkernels>LSTM`` etc.), so import it before ``keras.saving.load_model`` of a model
that uses them.
"""
try:
    import keras
except ImportError as exc:  # pragma: no cover - exercised without keras installed
    raise ImportError("rnnkernels.keras needs Keras 3 and a backend: pip install 'rnnkernels[keras]' "
                      f"(Keras and TensorFlow), or keras with torch ({exc})") from exc
if not keras.__version__.split(".")[0].isdigit() or int(keras.__version__.split(".")[0]) < 3:
    raise ImportError(f"rnnkernels.keras needs Keras 3, found keras {keras.__version__}")

from .layers import GRU, LSTM, Bidirectional, SimpleRNN, convert  # noqa: E402

__all__ = ["LSTM", "GRU", "SimpleRNN", "Bidirectional", "convert"]
