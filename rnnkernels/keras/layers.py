"""``LSTM``, ``GRU``, ``SimpleRNN`` and ``Bidirectional``: Keras 3's layers, computed by
the kernels where they can be.

Each is a subclass of the ``keras.layers`` class of the same name, so the constructor
arguments, the weights (``kernel``, ``recurrent_kernel``, ``bias``: names, shapes and
order), ``get_config``, masking, ``stateful``, ``initial_state``, ``return_sequences``,
``return_state`` and ``go_backwards`` are Keras's own.  Only ``inner_loop`` (the time
loop ``keras.layers.RNN.call`` runs, the place where Keras itself dispatches to cuDNN)
is replaced: when the kernels compute what was asked, the loop runs as one compiled
forward (and one backward) call; otherwise Keras's own loop runs, unchanged.  See
docs/keras.md for the list; ``layer.last_path`` says which ran in the last call
(``"rnnkernels"``, or ``"keras: <why>"``).

The kernels compute: activations tanh (SimpleRNN also relu) and recurrent activation
sigmoid; float32 and float64; the TensorFlow backend (CPU: a visible GPU leaves the
layer to Keras's cuDNN path) and the torch backend (CPU tensors); masks that are
right-padded (every row some valid steps, then padding: the kernels' ``lengths``); input
``dropout`` (Keras's one mask per sequence); SimpleRNN's ``recurrent_dropout`` (one mask
on h, the kernels' ``recurrent_mask``).  Keras's loop runs for: any other activation,
``unroll=True``, the JAX backend, other dtypes (float16, bfloat16), a mask that is not
right-padded, ``recurrent_dropout`` of LSTM and GRU in training (Keras 3 draws one mask
per gate) and ``implementation=1`` with dropout in training.
"""
import keras
from keras import activations, ops as kops

from . import _compute

__all__ = ["LSTM", "GRU", "SimpleRNN", "Bidirectional", "convert"]

_BACKENDS = ("tensorflow", "torch")
_FLOATS = ("float32", "float64")
_gpu = None


def _tf_gpu_visible():
    global _gpu
    if _gpu is None:
        import tensorflow as tf
        _gpu = bool(tf.config.list_physical_devices("GPU"))
    return _gpu


def _adapter():
    if keras.backend.backend() == "tensorflow":
        from . import _tf
        return _tf
    from . import _torch
    return _torch


def _dtype_name(x):
    return keras.backend.standardize_dtype(x.dtype)


def _nested(x):
    return isinstance(x, (list, tuple))


class _OnKernels:
    """The shared ``inner_loop``; the class attribute ``_kind`` names the cell."""
    _kind = None
    last_path = None

    # which path ---------------------------------------------------------------
    def _activation_reason(self):
        cell = self.cell
        if self._kind == "rnn":
            if cell.activation is activations.tanh:
                return None
            if cell.activation is activations.relu:
                return None
            return f"activation {activations.serialize(cell.activation)!r} (the kernels: tanh, relu)"
        if cell.activation is not activations.tanh:
            return f"activation {activations.serialize(cell.activation)!r} (the kernels: tanh)"
        if cell.recurrent_activation is not activations.sigmoid:
            return (f"recurrent_activation {activations.serialize(cell.recurrent_activation)!r} "
                    "(the kernels: sigmoid)")
        return None

    def _fallback_reason(self, sequences, training):
        """None when the kernels compute this call, else why Keras's loop runs."""
        backend = keras.backend.backend()
        if backend not in _BACKENDS:
            return f"backend {backend!r}"
        if self.unroll:
            return "unroll=True"
        if getattr(self, "use_cudnn", "auto") is True:
            return "use_cudnn=True"
        reason = self._activation_reason()
        if reason:
            return reason
        dtype = _dtype_name(sequences)
        if dtype not in _FLOATS or keras.backend.standardize_dtype(self.cell.kernel.dtype) != dtype:
            return f"dtype {dtype} (the kernels: float32, float64, the weights' dtype)"
        cell = self.cell
        if training and cell.recurrent_dropout > 0 and self._kind != "rnn":
            return "recurrent_dropout in training (Keras 3 draws one mask per gate)"
        if training and cell.dropout > 0 and getattr(cell, "implementation", 2) == 1:
            return "implementation=1 with dropout in training (one input mask per gate)"
        if backend == "tensorflow":
            if _tf_gpu_visible():
                return "a GPU is visible (Keras's cuDNN path)"
        elif sequences.device.type != "cpu":
            return f"tensors on {sequences.device.type}"
        return None

    def _spec(self):
        cell = self.cell
        return _compute.Spec(
            self._kind, cell.units, cell.use_bias, self.go_backwards, self.return_sequences,
            reset_after=getattr(cell, "reset_after", True),
            nonlinearity="relu" if cell.activation is activations.relu else "tanh",
            zero_output_for_mask=self.zero_output_for_mask)

    # the loop -----------------------------------------------------------------
    def inner_loop(self, sequences, initial_state, mask, training=False):
        if _nested(mask):
            mask = mask[0]
        reason = self._fallback_reason(sequences, training)
        if reason is not None:
            self.last_path = "keras: " + reason
            return super().inner_loop(sequences, initial_state, mask=mask, training=training)
        states = list(initial_state) if _nested(initial_state) else [initial_state]
        cell = self.cell
        x = sequences
        if training and cell.dropout > 0:  # the cell's cached mask: the same one Keras's loop uses
            x = x * kops.expand_dims(cell.get_dropout_mask(sequences[:, 0, :]), 1)
        recurrent_mask = None
        if training and cell.recurrent_dropout > 0:  # SimpleRNN only (see _fallback_reason)
            recurrent_mask = cell.get_recurrent_dropout_mask(states[0])
        weights = [kops.convert_to_tensor(cell.kernel), kops.convert_to_tensor(cell.recurrent_kernel),
                   kops.convert_to_tensor(cell.bias) if cell.use_bias else None]
        spec, adapter = self._spec(), _adapter()

        def on_kernels(lengths):
            args = (spec, x, states, *weights, lengths, recurrent_mask)
            if keras.backend.backend() == "tensorflow":
                return adapter.call(*args, training=bool(training))
            return adapter.call(*args)

        def on_keras():
            return super(_OnKernels, self).inner_loop(sequences, initial_state, mask=mask, training=training)

        if mask is None:
            self.last_path = "rnnkernels"
            return on_kernels(None)
        if keras.backend.backend() == "torch":
            lengths = _compute.lengths_if_right_padded(mask.detach().cpu().numpy())
            if lengths is None:
                self.last_path = "keras: the mask is not right-padded"
                return on_keras()
            self.last_path = "rnnkernels"
            return on_kernels(lengths)
        import tensorflow as tf
        if tf.executing_eagerly():
            lengths = _compute.lengths_if_right_padded(mask.numpy())
            if lengths is None:
                self.last_path = "keras: the mask is not right-padded"
                return on_keras()
            self.last_path = "rnnkernels"
            return on_kernels(tf.constant(lengths))
        # in a graph the mask's values are not known yet: both paths, chosen at run time
        mask_b = tf.cast(mask, tf.bool)
        if mask_b.shape.rank == 3:
            mask_b = mask_b[..., 0]
        lengths = tf.reduce_sum(tf.cast(mask_b, tf.int64), axis=1)
        right_padded = tf.reduce_all(tf.equal(mask_b, tf.sequence_mask(lengths, tf.shape(mask_b)[1])))

        def flat(result):
            last, outputs, new_states = result
            return (last, outputs) + tuple(new_states if _nested(new_states) else [new_states])

        out = tf.cond(right_padded, lambda: flat(on_kernels(lengths)), lambda: flat(on_keras()))
        self.last_path = "rnnkernels (right-padded masks) or keras (other masks)"
        return out[0], out[1], list(out[2:])

    def _set_jit(self):
        # XLA cannot compile the kernels' numpy_function
        if keras.backend.backend() == "tensorflow":
            self.supports_jit = False


@keras.saving.register_keras_serializable(package="rnnkernels", name="LSTM")
class LSTM(_OnKernels, keras.layers.LSTM):
    """``keras.layers.LSTM`` on the kernels (same arguments, weights and outputs)."""
    _kind = "lstm"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_jit()


@keras.saving.register_keras_serializable(package="rnnkernels", name="GRU")
class GRU(_OnKernels, keras.layers.GRU):
    """``keras.layers.GRU`` on the kernels (both ``reset_after`` conventions)."""
    _kind = "gru"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_jit()


@keras.saving.register_keras_serializable(package="rnnkernels", name="SimpleRNN")
class SimpleRNN(_OnKernels, keras.layers.SimpleRNN):
    """``keras.layers.SimpleRNN`` on the kernels (tanh or relu)."""
    _kind = "rnn"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_jit()


_OURS = {keras.layers.LSTM: LSTM, keras.layers.GRU: GRU, keras.layers.SimpleRNN: SimpleRNN}


def _on_kernels(layer):
    """Ours in place of an exact ``keras.layers.LSTM/GRU/SimpleRNN`` (same config, and
    the weights when it is built); any other layer as it is."""
    ours = _OURS.get(type(layer))
    if ours is None:
        return layer
    new = ours.from_config(layer.get_config())
    if hasattr(layer, "use_cudnn"):
        new.use_cudnn = layer.use_cudnn
    return new


@keras.saving.register_keras_serializable(package="rnnkernels", name="Bidirectional")
class Bidirectional(keras.layers.Bidirectional):
    """``keras.layers.Bidirectional``; a wrapped ``keras.layers.LSTM``, ``GRU`` or
    ``SimpleRNN`` (and ``backward_layer``) runs as ours, on the kernels."""

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        if isinstance(layer, keras.layers.Layer):  # Keras re-creates it from its config anyway
            layer = _on_kernels(layer)
        if isinstance(backward_layer, keras.layers.Layer) and not backward_layer.built:
            backward_layer = _on_kernels(backward_layer)  # (a built one is used as it is, as Keras does)
        super().__init__(layer, merge_mode=merge_mode, weights=weights, backward_layer=backward_layer,
                         **kwargs)


def convert(model):
    """A copy of a Sequential or functional Keras ``model`` in which every
    ``keras.layers.LSTM``, ``GRU``, ``SimpleRNN`` and ``Bidirectional`` is ours, with the same
    weights (``keras.models.clone_model``: the copy is not compiled; compile it as the original
    was).  Also how a ``.keras`` file saved with Keras's layers moves onto the kernels:
    ``convert(keras.saving.load_model(path))``."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"model: expected a keras.Model (Sequential or functional), got {type(model).__name__}")

    def clone(layer):
        cls = _OURS.get(type(layer))
        if cls is None and type(layer) is keras.layers.Bidirectional:
            cls = Bidirectional
        cls = cls or type(layer)
        new = cls.from_config(layer.get_config())
        if hasattr(layer, "use_cudnn") and hasattr(new, "use_cudnn"):
            new.use_cudnn = layer.use_cudnn
        return new

    new = keras.models.clone_model(model, clone_function=clone)
    new.set_weights(model.get_weights())
    return new
