"""Keras-style :class:`Sequential` model: compile, fit, evaluate, predict, save.

Data is batch-major: ``x (N, T, F)`` for sequence models (or a list of
``(T_i, F)`` arrays of different lengths, padded here with their lengths kept),
``y`` one-hot ``(N, C)`` for categorical cross-entropy, ids ``(N,)`` for the
sparse variant.  ``lengths=`` (``(N,)`` ints) gives each sequence's valid
steps explicitly; the recurrent layers then skip the padding.

Instead of arrays, ``fit``/``evaluate``/``predict`` take a Keras-style dataset
(like ``keras.utils.PyDataset``): an object with ``len(data)`` batches whose
``data[i]`` is ``(x, y)`` or ``(x, y, sample_weight)`` for batch ``i``, and
optionally ``on_epoch_begin()`` / ``on_epoch_end()``, called around each pass.
A batch's ``x`` may be a list of ``(T_i, F)`` arrays: it is padded and its
lengths are kept, as for ``x`` itself.

Weighting, as Keras 3: ``sample_weight`` ``(N,)`` scales each sample's loss and
``class_weight`` ``{class index: weight}`` gives each sample the weight of its
target class; a batch's loss is ``sum(weight * loss) / batch size`` (padded
steps of sequence outputs are left out of both), and the epoch's loss the mean
of the batch losses weighted by batch size.  Metrics given as ``metrics=`` are
not weighted; those given as ``weighted_metrics=`` are, ``sum(weight * score) /
sum(weight)`` (as in Keras 3, which also names them ``weighted_<name>`` when an
unweighted metric has the same name).

Reproducibility: ``Sequential(seed=...)`` fixes the initial weights, and each
epoch's shuffling and dropout masks come from a generator seeded by
``(seed, epoch)``; every computation has a fixed order, so a seed gives
bitwise-identical training for any thread count, and resuming from a
checkpoint at epoch ``k`` continues exactly as the uninterrupted run.

Ctrl-C during :meth:`Sequential.fit` (called in the main thread, with Python's
default SIGINT handler in place) is deferred to the end of the current training
batch: that batch's update and its ``on_train_batch_end`` callbacks complete,
then ``KeyboardInterrupt`` is raised.  The model holds the weights after a
whole batch (``optimizer.iterations`` counts the batches applied), never a
half-applied update.  The interrupted epoch gets no validation and no
``on_epoch_end`` (a Ctrl-C during validation or the epoch-end callbacks acts
once they are done; that epoch then counts as completed), and ``on_train_end``
is not called: CSVLogger's file is not closed by it, but its rows are fsynced
at each epoch end, and files written by ModelCheckpoint are complete (written
atomically).  ``model.history`` and ``model.epochs_trained`` hold the completed
epochs, so training resumes with ``fit(initial_epoch=model.epochs_trained)`` or
from a checkpoint.  The previous SIGINT handler is back when fit returns or
raises.  A second Ctrl-C raises ``KeyboardInterrupt`` at once, wherever it
lands (possibly inside a batch's update).
"""
import collections.abc
import contextlib
import copy
import math
import os
import secrets
import signal
import sys
import threading
import time

import numpy as np

from . import _serialization, losses, metrics as metrics_module, optimizers
from .callbacks import Callback, History
from .layers import Layer
from .layers.core import InputLayer, time_mask

__all__ = ["Sequential", "load_model", "pad_sequences"]


def _is_dataset(x):
    """Whether ``x`` is a Keras-style dataset (``len`` batches, ``x[i]`` a batch), not array data."""
    return (not isinstance(x, (np.ndarray, list, tuple, str, bytes, dict)) and not hasattr(x, "__array__")
            and hasattr(x, "__len__") and hasattr(x, "__getitem__"))


def _dataset_length(data, argument):
    n = len(data)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{argument}: expected a dataset with at least one batch (len >= 1), got len {n!r}")
    return int(n)


def _dataset_hook(data, name):
    hook = getattr(data, name, None)
    if callable(hook):
        hook()


def _describe(value):
    """Short description of an argument's value for error messages."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def pad_sequences(sequences, dtype="float32", value=0.0):
    """List of ``(T_i, F)`` arrays -> ``(x (N, max T_i, F), lengths (N,))``, padding at the end."""
    arrays = [np.asarray(s) for s in sequences]
    if not arrays:
        raise ValueError("x: expected at least one sequence, got an empty list")
    if any(a.ndim != 2 for a in arrays) or len({a.shape[1] for a in arrays}) != 1:
        raise ValueError("x: expected a list of (timesteps, features) arrays with the same features, "
                         f"got shapes {[a.shape for a in arrays][:5]}")
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    x = np.full((len(arrays), int(lengths.max()), arrays[0].shape[1]), value, dtype)
    for i, a in enumerate(arrays):
        x[i, :a.shape[0]] = a
    return x, lengths


def _metric_list(metrics):
    """compile's metrics argument as a list (None: none; one name or Metric: a list of it)."""
    if metrics is None:
        return []
    if isinstance(metrics, (str, metrics_module.Metric)):
        return [metrics]
    return list(metrics)


def _check_finite(argument, a, lengths=None):
    """ValueError naming the first NaN or infinity in ``a`` (samples first),
    looking only at each sample's first ``lengths[i]`` steps when given."""
    if a.dtype.kind != "f":
        return
    bad = ~np.isfinite(a)
    if lengths is not None:
        bad &= (np.arange(a.shape[1]) < lengths[:, None]).reshape(
            a.shape[:2] + (1,) * (a.ndim - 2))
    if bad.any():
        where = np.unravel_index(np.flatnonzero(bad)[0], a.shape)
        at = f"sample {where[0]}" + (f", index {tuple(int(w) for w in where[1:])}" if a.ndim > 1 else "")
        raise ValueError(f"{argument}: expected finite values, got {a[where]!r} at {at} "
                         f"({int(bad.sum())} non-finite value(s))")


class _BlasSingleThread:
    """Keep BLAS (NumPy's matmuls) on one thread during training: results then cannot depend on
    the thread count, and the kernels, which run their own threads, skip re-limiting per call."""
    _controller = None

    def __enter__(self):
        if _BlasSingleThread._controller is None:
            from threadpoolctl import ThreadpoolController
            _BlasSingleThread._controller = ThreadpoolController().select(user_api="blas")
        self._limit = _BlasSingleThread._controller.limit(limits=1)
        return self

    def __exit__(self, *exc):
        self._limit.restore_original_limits()


class Sequential:
    """A linear stack of layers.

    Args:
        layers: optional list of layers (same as calling :meth:`add` on each).
        name: model name.
        seed: integer fixing initial weights, shuffling and dropout (random when None;
            the drawn seed is kept in ``model.seed`` and saved with the model).
        dtype: 'float32' (default, as Keras) or 'float64'.
    """

    def __init__(self, layers=None, name=None, seed=None, dtype="float32"):
        self.name = name or "sequential"
        if seed is None:
            seed = secrets.randbits(63)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        self._init_rng = np.random.default_rng([self.seed, 0])
        self.layers = []
        self.optimizer = None
        self.loss = None
        self.metrics = []
        self._metric_specs = []
        self._weighted_specs = []
        self._n_unweighted = 0
        self.stop_training = False
        self.history = None
        self.epochs_trained = 0
        self._interrupted = False
        for layer in layers or []:
            self.add(layer)

    # building -------------------------------------------------------------
    def add(self, layer):
        """Append ``layer``; built at once when its input shape is known."""
        if not isinstance(layer, Layer):
            raise TypeError(f"layer: expected an rnnkernels.layers layer, got {type(layer).__name__}")
        if getattr(layer, "return_state", False):
            raise ValueError(f"{layer.name}: return_state=True gives several outputs; a Sequential "
                             "model needs one")
        if any(l.name == layer.name for l in self.layers):
            raise ValueError(f"layer: a layer named {layer.name!r} is already in the model; names must be unique")
        if isinstance(layer, InputLayer) and self.layers:
            raise ValueError("layer: an Input layer must come first")
        self.layers.append(layer)
        if len(self.layers) == 1:
            if layer.declared_input_shape is not None:
                self._build_layer(layer, layer.declared_input_shape)
        elif self.layers[-2].built and not layer.built:
            self._build_layer(layer, self.layers[-2].output_shape)

    def _build_layer(self, layer, input_shape):
        if layer.dtype is None:
            layer.dtype = self.dtype
        if layer.dtype != self.dtype:
            raise TypeError(f"{layer.name}: dtype {layer.dtype} differs from the model's {self.dtype}")
        layer.build(input_shape, self._init_rng, self.dtype)

    def build(self, input_shape=None):
        """Build every layer for inputs of shape ``(batch,) + input_shape`` (batch axis optional
        in Keras style: a leading None is dropped)."""
        if input_shape is not None:
            input_shape = tuple(input_shape)
        shape = None
        for i, layer in enumerate(self.layers):
            if not layer.built:
                if shape is None:
                    if input_shape is None:
                        raise ValueError("input_shape: the model's input shape is unknown; give "
                                         "input_shape= to the first layer or call build/fit with data")
                    shape = input_shape
                self._build_layer(layer, shape)
            shape = layer.output_shape

    @property
    def built(self):
        return bool(self.layers) and all(l.built for l in self.layers)

    @property
    def input_shape(self):
        return None if not self.built else (None,) + tuple(self.layers[0].input_shape)

    @property
    def output_shape(self):
        return None if not self.built else (None,) + tuple(self.layers[-1].output_shape)

    def _ensure_built(self, sample_shape):
        if not self.layers:
            raise ValueError("model: add layers before fitting or predicting")
        if not self.built:
            first = self.layers[0]
            self.build(first.input_shape if first.built else tuple(sample_shape))

    # parameters -----------------------------------------------------------
    def trainable_params(self):
        """Trainable arrays (internal layout), in a fixed order; the optimizer's slots follow it."""
        return [p for layer in self.layers for p in layer.trainable_params()]

    def _trainable_grads(self):
        return [g for layer in self.layers for g in layer.trainable_grads()]

    def get_weights(self):
        """All layers' weights, Keras layout, flattened in layer order (as Keras)."""
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights):
        """Inverse of :meth:`get_weights`; every shape is checked before anything changes."""
        weights = list(weights)
        expected = [s for layer in self.layers for s in layer.weight_shapes()]
        if len(weights) != len(expected):
            raise ValueError(f"weights: expected {len(expected)} arrays, got {len(weights)}")
        for i, (w, s) in enumerate(zip(weights, expected)):
            if np.shape(w) != tuple(s):
                raise ValueError(f"weights[{i}]: expected shape {tuple(s)}, got {np.shape(w)}")
        for layer in self.layers:
            n = len(layer.weight_shapes())
            layer.set_weights(weights[:n])
            weights = weights[n:]

    def count_params(self):
        return sum(layer.count_params() for layer in self.layers)

    def reset_states(self):
        """Forget the states carried by stateful recurrent layers."""
        for layer in self.layers:
            if hasattr(layer, "reset_states"):
                layer.reset_states()

    # compiling ------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, weighted_metrics=None):
        """Set the optimizer (name or instance), loss (name or instance) and metrics (names or
        Metric instances).  ``metrics`` count every valid position once; ``weighted_metrics``
        weigh each by its sample or class weight (Keras 3's two lists and log names)."""
        if loss is None:
            raise ValueError("loss: expected a loss name such as 'categorical_crossentropy' or a Loss")
        self.optimizer = optimizers.get(optimizer)
        self.loss = losses.get(loss)
        self._metric_specs = _metric_list(metrics)
        self._weighted_specs = _metric_list(weighted_metrics)
        self._resolve_metrics()

    def _resolve_metrics(self):
        """``self.metrics``: the unweighted metrics, then the weighted ones (a copy of an
        instance given in both lists; ``weighted_`` before a name the unweighted list uses
        too)."""
        units = self.layers[-1].output_shape[-1] if self.built else None
        plain = [metrics_module.get(m, self.loss.name, units) for m in self._metric_specs]
        weighted = []
        for spec in self._weighted_specs:
            m = metrics_module.get(spec, self.loss.name, units, "weighted_metrics")
            if any(m is p for p in plain):  # one instance in both lists: two running means
                m = copy.copy(m)
                m.reset()
            if m.name in {p.name for p in plain}:
                m.name = "weighted_" + m.name
            weighted.append(m)
        self.metrics, self._n_unweighted = plain + weighted, len(plain)

    def _update_metrics(self, y, out, position_weights, sample_weight):
        """Add a batch to every metric: position weights (padded steps 0) for all, times
        the sample weights for the weighted ones."""
        weighted = position_weights
        if sample_weight is not None and len(self.metrics) > self._n_unweighted:
            sw = np.asarray(sample_weight, np.float64)
            positions = out.shape[:-1]
            sw = sw.reshape(sw.shape + (1,) * (len(positions) - sw.ndim))
            weighted = sw if position_weights is None else sw * position_weights
        for i, m in enumerate(self.metrics):
            m.update(y, out, position_weights if i < self._n_unweighted else weighted)

    @property
    def metrics_names(self):
        return ["loss"] + [m.name for m in self.metrics]

    def _require_compiled(self):
        if self.optimizer is None:
            raise ValueError("model: call compile(optimizer, loss, metrics) before fit/evaluate")

    def _fused(self):
        """Whether the last layer's activation is folded into the loss (stable p - y gradients)."""
        last = self.layers[-1]
        return (not self.loss.from_logits and self.loss.fuses_with is not None
                and getattr(last, "activation", None) == self.loss.fuses_with
                and hasattr(last, "backward_from_logits"))

    # data -----------------------------------------------------------------
    def _prepare_x(self, x, lengths, argument="x", finite=False):
        """Inputs as an array of the model's dtype, and their lengths.  ``finite``
        (training and evaluation data) rejects NaN and infinity in the valid
        steps: one would turn every weight into NaN at the first optimizer step,
        and the loss into NaN, with no word of which sample did it."""
        if isinstance(x, (list, tuple)) and x and np.ndim(x[0]) == 2 and lengths is None:
            shapes = {np.shape(a)[0] for a in x}
            if len(shapes) > 1:
                x, lengths = pad_sequences(x, dtype=self.dtype)
        if x is None:
            raise ValueError(f"{argument}: expected an array of inputs, got None")
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise TypeError(f"{argument}: expected a numeric array, got dtype {x.dtype}")
        if x.ndim < 2:
            raise ValueError(f"{argument}: expected at least 2 dimensions (samples first), got shape {x.shape}")
        x = x.astype(self.dtype, copy=False)
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.dtype.kind not in "iu" or lengths.shape != (x.shape[0],):
                raise ValueError(f"lengths: expected an integer array of shape ({x.shape[0]},), got "
                                 f"dtype {lengths.dtype} shape {lengths.shape}")
            if x.ndim != 3:
                raise ValueError(f"lengths: only for sequence input (N, T, F), got x of shape {x.shape}")
            if lengths.size and (lengths.min() < 0 or lengths.max() > x.shape[1]):
                raise ValueError(f"lengths: expected values in [0, {x.shape[1]}], got min "
                                 f"{lengths.min()} max {lengths.max()}")
            lengths = lengths.astype(np.int64)
        if finite:
            _check_finite(argument, x, lengths)
        return x, lengths

    def _prepare_y(self, y, n, argument="y"):
        if y is None:
            raise ValueError(f"{argument}: expected target values, got None")
        y = np.asarray(y)
        if y.shape[:1] != (n,):
            raise ValueError(f"{argument}: expected {n} targets (one per input sample), got shape {y.shape}")
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{argument}: expected numeric targets, got dtype {y.dtype}")
        _check_finite(argument, y)
        return y

    def _position_shape(self, y):
        """Shape of the per-position losses for targets ``y``: ``(N,)``, or ``(N, T)`` for
        sequence outputs (the targets without their class axis)."""
        if isinstance(self.loss, losses.SparseCategoricalCrossentropy):
            return y.shape[:len(self.layers[-1].output_shape)]
        return y.shape[:-1]

    def _prepare_sample_weight(self, sample_weight, y, argument="sample_weight"):
        """Checked float weights, ``(N,)`` or one per position (``(N, T)`` for sequence outputs);
        ``(N, 1)`` is taken as ``(N,)``, as Keras does.  None stays None."""
        if sample_weight is None:
            return None
        n, positions = y.shape[0], self._position_shape(y)
        w = np.asarray(sample_weight)
        if w.dtype.kind not in "fiub":
            raise TypeError(f"{argument}: expected numeric weights, got dtype {w.dtype}")
        if w.shape == (n, 1) and positions != (n, 1):
            w = w[:, 0]
        if w.shape != (n,) and w.shape != positions:
            per_position = f" or one per output position {positions}" if len(positions) > 1 else ""
            raise ValueError(f"{argument}: expected one weight per sample, shape ({n},){per_position}, "
                             f"got shape {w.shape}")
        w64 = w.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(w64) | (w64 < 0))
        if bad.size:
            i = np.unravel_index(bad[0], w.shape)
            raise ValueError(f"{argument}: expected finite weights >= 0, got {w64[i]!r} at index "
                             f"{i[0] if len(i) == 1 else i} ({bad.size} such value(s))")
        with np.errstate(over="ignore"):
            w = w64.astype(self.dtype)
        if not np.all(np.isfinite(w)):
            i = np.unravel_index(np.flatnonzero(~np.isfinite(w))[0], w.shape)
            raise ValueError(f"{argument}: weight {w64[i]!r} at index {i[0] if len(i) == 1 else i} "
                             f"overflows {self.dtype}")
        return w

    def _class_weight_table(self, class_weight):
        """``class_weight`` checked, as an array of one weight per class (1 for those missing)."""
        if not isinstance(class_weight, collections.abc.Mapping):
            raise TypeError(f"class_weight: expected a dict {{class index: weight}}, got "
                            f"{type(class_weight).__name__}")
        if not isinstance(self.loss, (losses.CategoricalCrossentropy, losses.BinaryCrossentropy)):
            raise ValueError(f"class_weight: only for classification losses (categorical, sparse "
                             f"categorical or binary cross-entropy), the model's loss is "
                             f"'{self.loss.name}'")
        units = self.layers[-1].output_shape[-1]
        n_classes = 2 if units == 1 else units
        table = np.ones(n_classes)
        for k, v in class_weight.items():
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < n_classes:
                raise ValueError(f"class_weight: expected class indices 0..{n_classes - 1} as keys "
                                 f"(the model has {units} output unit{'s' if units > 1 else ''}), "
                                 f"got key {k!r}")
            if (isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))
                    or not math.isfinite(v) or v < 0):
                raise ValueError(f"class_weight[{k}]: expected a finite number >= 0, got {v!r}")
            table[int(k)] = float(v)
        return table

    def _class_weight_to_sample_weight(self, class_weight, y):
        """Per-sample weights (per-position for sequence outputs) of the targets' classes, as
        Keras: one-hot targets -> argmax, one binary unit -> round(y), sparse -> the ids; a
        class missing from ``class_weight`` weighs 1."""
        table = self._class_weight_table(class_weight)
        n_classes = table.size
        if isinstance(self.loss, losses.SparseCategoricalCrossentropy):
            ids = y.reshape(self._position_shape(y))
        elif y.shape[-1] == 1:
            ids = y[..., 0]
        else:
            ids = np.argmax(y, axis=-1)
        ids = np.round(ids).astype(np.int64)
        inside = (ids >= 0) & (ids < n_classes)
        w = np.ones(ids.shape)
        w[inside] = table[ids[inside]]
        return w.astype(self.dtype)

    def _weights(self, y, sample_weight, class_weight):
        """The training weights of ``fit``/``train_on_batch`` (None when neither is given)."""
        sample_weight = self._prepare_sample_weight(sample_weight, y)
        if class_weight is None:
            return sample_weight
        if sample_weight is not None:
            raise ValueError("class_weight: cannot be combined with sample_weight (as in Keras); "
                             "multiply the class weights into sample_weight instead")
        return self._class_weight_to_sample_weight(class_weight, y)

    @staticmethod
    def _dataset_item(data, i, argument, need_y=True):
        """``data[i]`` as ``(x, y, sample_weight)`` (y and sample_weight may be None), as Keras reads
        a PyDataset batch: a tuple or list ``(x,)``, ``(x, y)``, ``(x, y, sample_weight)``, or x alone."""
        item = data[i]
        if isinstance(item, list):
            item = tuple(item)
        if not isinstance(item, tuple):
            item = (item,)
        if not 1 <= len(item) <= 3 or (need_y and (len(item) < 2 or item[1] is None)):
            want = "(x, y) or (x, y, sample_weight)" if need_y else "x, (x,), (x, y) or (x, y, sample_weight)"
            got = f"a tuple of length {len(item)}" if len(item) != 1 else type(item[0]).__name__
            raise ValueError(f"{argument}[{i}]: expected a batch {want}, got {got}")
        return item + (None,) * (3 - len(item))

    def _dataset_batch(self, data, i, class_weight, argument):
        """Batch ``i`` of a dataset, checked: ``(x, y, lengths, sample_weight)``."""
        xb, yb, wb = self._dataset_item(data, i, argument)
        xb, lb = self._prepare_x(xb, None, f"{argument}[{i}][0]", finite=True)
        yb = self._prepare_y(yb, xb.shape[0], f"{argument}[{i}][1]")
        self._check_output_shape(yb, f"{argument}[{i}][1]")
        wb = self._prepare_sample_weight(wb, yb, f"{argument}[{i}][2]")
        if class_weight is not None:
            if wb is not None:
                raise ValueError(f"class_weight: cannot be combined with sample weights (as in Keras); "
                                 f"{argument}[{i}] gives (x, y, sample_weight)")
            wb = self._class_weight_to_sample_weight(class_weight, yb)
        return xb, yb, lb, wb

    def _build_from_dataset(self, data, argument):
        """Build an unbuilt model from the shape of the dataset's first batch (Keras peeks too)."""
        if self.layers and not self.built:
            first = self.layers[0]
            if not first.built:
                x0 = self._dataset_item(data, 0, argument, need_y=False)[0]
                self._ensure_built(self._prepare_x(x0, None, f"{argument}[0][0]")[0].shape[1:])
        self._ensure_built(None)

    @staticmethod
    def _no_array_arguments(argument, **given):
        """With a dataset, arguments that the batches give (or that need arrays) must be left out."""
        reasons = {"y": "the batches give the targets", "sample_weight": "the batches give sample weights "
                   "as a third element", "lengths": "give each batch's x as a list of (T_i, F) arrays "
                   "(padded here, lengths kept) or use a Masking layer",
                   "batch_size": "the dataset makes the batches", "validation_split": "give "
                   "validation_data instead (it may be a dataset too)"}
        for name, value in given.items():
            if value is not None and not (name == "validation_split" and not value):
                expected = "0 (no split)" if name == "validation_split" else "None"
                raise ValueError(f"{name}: expected {expected} when {argument} is a dataset "
                                 f"({reasons[name]}), got {_describe(value)}")

    def _check_output_shape(self, y, argument="y"):
        out = self.layers[-1].output_shape
        want = out if not isinstance(self.loss, losses.SparseCategoricalCrossentropy) else out[:-1]
        got = y.shape[1:]
        if isinstance(self.loss, losses.SparseCategoricalCrossentropy) and got == tuple(want) + (1,):
            return
        if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
            raise ValueError(f"{argument}: expected targets of shape (N,) + {tuple(want)} for loss "
                             f"'{self.loss.name}' and output shape {out}, got {y.shape}")

    # running --------------------------------------------------------------
    def _forward(self, x, training, lengths, rng=None):
        for layer in self.layers:
            layer.rng = rng
            out = layer.forward(x, training=training, lengths=lengths)
            lengths = layer.output_lengths(lengths)
            x = out
        return x, lengths

    @staticmethod
    def _position_weights(out, lengths):
        if lengths is None or out.ndim != 3:
            return None
        return time_mask(lengths, out.shape[1], out.dtype)

    def _loss(self, y, out, lengths, with_grad, sample_weight=None):
        weights = self._position_weights(out, lengths)
        if self._fused():
            value, grad = self.loss.from_logits_value_and_grad(y, self.layers[-1]._z, weights,
                                                               sample_weight=sample_weight)
        else:
            value, grad = self.loss.value_and_grad(y, out, weights, sample_weight)
        return value, grad, weights

    def _train_step(self, x, y, lengths, rng, sample_weight=None):
        out, out_lengths = self._forward(x, True, lengths, rng)
        value, grad, weights = self._loss(y, out, out_lengths, True, sample_weight)
        layers = self.layers
        if self._fused():
            grad = layers[-1].backward_from_logits(grad)
            layers = layers[:-1]
        for layer in reversed(layers):
            grad = layer.backward(grad)
        self.optimizer.apply_gradients(self.trainable_params(), self._trainable_grads())
        self._update_metrics(y, out, weights, sample_weight)
        return value

    def _epoch_rng(self, epoch):
        return np.random.default_rng([self.seed, 1, epoch])

    @contextlib.contextmanager
    def _defer_interrupt(self):
        """First Ctrl-C sets a flag checked at batch boundaries; a second one acts at once."""
        self._interrupted = False
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGINT) if main else None
        if not main or previous is not signal.default_int_handler:
            yield
            return

        def handler(signum, frame):
            self._interrupted = True
            signal.signal(signal.SIGINT, previous)

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _logs(self, loss_tracker, prefix=""):
        logs = {prefix + "loss": loss_tracker.result()}
        for m in self.metrics:
            logs[prefix + m.name] = m.result()
        return logs

    @staticmethod
    def _format_logs(logs):
        return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose=1, callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0, lengths=None,
            sample_weight=None, class_weight=None):
        """Train for ``epochs - initial_epoch`` epochs; returns a :class:`History`.

        ``validation_data``: ``(x_val, y_val)`` or ``(x_val, y_val, sample_weight_val)``, or a
        dataset; ``validation_split``: fraction of the *last* samples held out (before
        shuffling, as Keras; their ``sample_weight`` goes with them).  ``verbose``: 0 silent,
        1 a progress bar per epoch (loss, metrics, samples/s, ETA), 2 one line per epoch.
        ``lengths``: valid steps of each sequence of ``x``.

        ``sample_weight``: ``(N,)`` non-negative weights, each sample's loss is multiplied by its
        weight (or ``(N, T)``, one per step, for sequence outputs).  ``class_weight``: dict
        ``{class index: weight}``; each sample weighs what its target class does (classes
        not in the dict weigh 1); training data only, not validation data.  The two cannot be
        combined.  A batch's loss is ``sum(weight * loss) / batch size`` (Keras 3's
        "sum_over_batch_size").  The weights also weigh the ``weighted_metrics`` given to
        :meth:`compile`; the ``metrics`` count every sample once (as Keras's).

        ``x`` may be a dataset (see the module docstring): ``len(x)`` batches, ``x[i]`` gives
        ``(x, y)`` or ``(x, y, sample_weight)``.  ``y``, ``batch_size``, ``sample_weight``,
        ``lengths`` and ``validation_split`` must then be left out (a ValueError otherwise);
        ``class_weight`` weights ``(x, y)`` batches.  ``shuffle=True`` visits the batches in a
        new order each epoch (as Keras; a dataset that wants new batch contents reshuffles in
        ``on_epoch_end``).  ``x.on_epoch_begin()`` and ``x.on_epoch_end()``, when defined, are
        called before and after each epoch's batches (before validation); on_epoch_end not
        when training stops inside the epoch."""
        self._require_compiled()
        for name, v in (("epochs", epochs), ("initial_epoch", initial_epoch)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name}: expected a non-negative integer, got {v!r}")
        if not 0.0 <= float(validation_split) < 1.0:
            raise ValueError(f"validation_split: expected a fraction in [0, 1), got {validation_split}")
        dataset = _is_dataset(x)
        if dataset:
            self._no_array_arguments("x", y=y, batch_size=batch_size, sample_weight=sample_weight,
                                     lengths=lengths, validation_split=validation_split)
            n_batches = _dataset_length(x, "x")
            self._build_from_dataset(x, "x")
            self._resolve_metrics()
            if class_weight is not None:
                self._class_weight_table(class_weight)  # bad keys or values fail before training
            val_batch_size = self._batch_size(None)
        else:
            x, lengths = self._prepare_x(x, lengths, finite=True)
            y = self._prepare_y(y, x.shape[0])
            batch_size = val_batch_size = self._batch_size(batch_size)
            self._ensure_built(x.shape[1:])
            self._resolve_metrics()
            self._check_output_shape(y)
            sample_weight = self._weights(y, sample_weight, class_weight)
        val = None
        if validation_data is not None:
            if _is_dataset(validation_data):
                _dataset_length(validation_data, "validation_data")
                val = validation_data
            else:
                val = self._validation_arrays(validation_data)
        elif validation_split:
            split = x.shape[0] - int(math.floor(x.shape[0] * validation_split))
            # class weights are for training only: the held-out part keeps sample weights alone
            val_weight = None if class_weight is not None or sample_weight is None else sample_weight[split:]
            val = (x[split:], y[split:], None if lengths is None else lengths[split:], val_weight)
            x, y = x[:split], y[:split]
            lengths = None if lengths is None else lengths[:split]
            sample_weight = None if sample_weight is None else sample_weight[:split]
        if not dataset:
            n = x.shape[0]
            if n == 0:
                raise ValueError("x: expected at least one training sample, got 0")
            n_batches = -(-n // batch_size)
        history = History()
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks: expected Callback instances, got {type(cb).__name__}")
        callbacks.append(history)
        for cb in callbacks:
            cb.set_model(self)
        self.history = history
        self.stop_training = False
        from tqdm.auto import tqdm

        dataset_samples = None  # samples per epoch of a dataset, known after its first epoch
        with _BlasSingleThread(), self._defer_interrupt():
            for cb in callbacks:
                cb.on_train_begin({})
            for epoch in range(initial_epoch, epochs):
                for cb in callbacks:
                    cb.on_epoch_begin(epoch, {})
                rng = self._epoch_rng(epoch)
                if dataset:
                    _dataset_hook(x, "on_epoch_begin")
                    order = rng.permutation(n_batches) if shuffle else np.arange(n_batches)
                else:
                    order = rng.permutation(n) if shuffle else None
                tracker = metrics_module.Mean()
                for m in self.metrics:
                    m.reset()
                bar = tqdm(total=dataset_samples if dataset else n, desc=f"Epoch {epoch + 1}/{epochs}",
                           unit="sample", leave=True, disable=verbose != 1, file=sys.stderr,
                           mininterval=0.5, dynamic_ncols=True)
                started = time.perf_counter()
                seen = 0
                try:
                    for batch in range(n_batches):
                        for cb in callbacks:
                            cb.on_train_batch_begin(batch, {})
                        if dataset:
                            xb, yb, lb, wb = self._dataset_batch(x, int(order[batch]), class_weight, "x")
                            if bar.total is None:  # until the first epoch ends: an estimate
                                bar.total = n_batches * xb.shape[0]
                        else:
                            sl = slice(batch * batch_size, (batch + 1) * batch_size)
                            if order is not None:
                                sl = order[sl]
                            xb, yb = x[sl], y[sl]
                            lb = None if lengths is None else lengths[sl]
                            wb = None if sample_weight is None else sample_weight[sl]
                        value = self._train_step(xb, yb, lb, rng, wb)
                        tracker.update(value, xb.shape[0])
                        seen += xb.shape[0]
                        logs = self._logs(tracker)
                        for cb in callbacks:
                            cb.on_train_batch_end(batch, logs)
                        bar.update(xb.shape[0])
                        bar.set_postfix_str(self._format_logs(logs), refresh=False)
                        if self._interrupted:
                            raise KeyboardInterrupt
                        if self.stop_training:
                            break
                    else:
                        if dataset:
                            dataset_samples = bar.total = seen
                            _dataset_hook(x, "on_epoch_end")
                    logs = self._logs(tracker)
                    if val is not None:
                        logs.update(self._evaluate_data(val, val_batch_size, "val_"))
                    bar.set_postfix_str(self._format_logs(logs))
                finally:
                    bar.close()
                if verbose == 2:
                    print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - started:.1f}s - "
                          f"{self._format_logs(logs)}", flush=True)
                self.epochs_trained = epoch + 1
                for cb in callbacks:
                    cb.on_epoch_end(epoch, logs)
                if self._interrupted:
                    raise KeyboardInterrupt
                if self.stop_training:
                    break
            for cb in callbacks:
                cb.on_train_end({})
        return history

    def _batch_size(self, batch_size):
        if batch_size is None:
            batch_size = 32
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        return int(batch_size)

    def _validation_arrays(self, validation_data):
        """``(x, y, lengths, sample_weight)`` of fit's ``validation_data``."""
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            got = (f"a {type(validation_data).__name__} of length {len(validation_data)}"
                   if isinstance(validation_data, (tuple, list)) else type(validation_data).__name__)
            raise ValueError("validation_data: expected a tuple (x_val, y_val) or (x_val, y_val, "
                             f"sample_weight_val) or a dataset, got {got}")
        xv, lv = self._prepare_x(validation_data[0], None, "validation_data[0]", finite=True)
        yv = self._prepare_y(validation_data[1], xv.shape[0], "validation_data[1]")
        self._check_output_shape(yv, "validation_data[1]")
        wv = None
        if len(validation_data) == 3:
            wv = self._prepare_sample_weight(validation_data[2], yv, "validation_data[2]")
        return xv, yv, lv, wv

    def _evaluate_batch(self, tracker, x, y, lengths, sample_weight):
        out, out_lengths = self._forward(x, False, lengths)
        tracker.update(self._loss(y, out, out_lengths, False, sample_weight)[0], out.shape[0])
        self._update_metrics(y, out, self._position_weights(out, out_lengths), sample_weight)
        return out.shape[0]

    def _evaluate_data(self, data, batch_size, prefix="", verbose=0, argument="validation_data"):
        """Logs (loss and metrics, keys prefixed) over arrays ``(x, y, lengths, sample_weight)``
        in batches of ``batch_size``, or over a dataset's batches in order."""
        from tqdm.auto import tqdm
        tracker = metrics_module.Mean()
        for m in self.metrics:
            m.reset()
        dataset = _is_dataset(data)
        if dataset:
            n_batches = _dataset_length(data, argument)
            _dataset_hook(data, "on_epoch_begin")
        else:
            x, y, lengths, sample_weight = data
            n_batches = -(-x.shape[0] // batch_size)
        with tqdm(total=n_batches if dataset else x.shape[0], unit="batch" if dataset else "sample",
                  disable=verbose != 1, file=sys.stderr, leave=True, desc="Evaluate") as bar:
            for i in range(n_batches):
                if dataset:
                    self._evaluate_batch(tracker, *self._dataset_batch(data, i, None, argument))
                    bar.update(1)
                else:
                    sl = slice(i * batch_size, (i + 1) * batch_size)
                    bar.update(self._evaluate_batch(tracker, x[sl], y[sl],
                                                    None if lengths is None else lengths[sl],
                                                    None if sample_weight is None else sample_weight[sl]))
        if dataset:
            _dataset_hook(data, "on_epoch_end")
        return self._logs(tracker, prefix)

    def evaluate(self, x=None, y=None, batch_size=None, verbose=1, lengths=None, return_dict=False,
                 sample_weight=None):
        """``[loss, metric...]`` over the data (the loss alone when there are no metrics);
        ``return_dict=True`` gives ``{'loss': ..., 'accuracy': ...}``.  ``sample_weight``
        weights the loss and the ``weighted_metrics`` as in :meth:`fit` (``metrics`` stay
        unweighted, as Keras's).
        ``x`` may be a dataset, as in :meth:`fit` (its batches in order; ``y``,
        ``batch_size``, ``lengths`` and ``sample_weight`` left out)."""
        self._require_compiled()
        if _is_dataset(x):
            self._no_array_arguments("x", y=y, batch_size=batch_size, sample_weight=sample_weight,
                                     lengths=lengths)
            _dataset_length(x, "x")
            self._build_from_dataset(x, "x")
            self._resolve_metrics()
            data = x
        else:
            x, lengths = self._prepare_x(x, lengths, finite=True)
            y = self._prepare_y(y, x.shape[0])
            self._ensure_built(x.shape[1:])
            self._resolve_metrics()
            self._check_output_shape(y)
            data = (x, y, lengths, self._prepare_sample_weight(sample_weight, y))
        with _BlasSingleThread():
            logs = self._evaluate_data(data, self._batch_size(batch_size), verbose=verbose, argument="x")
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose=0, lengths=None):
        """Model outputs for ``x``, batch by batch (inference mode: no dropout).  ``x`` may be a
        dataset (its batches in order; a batch may be ``x``, ``(x,)``, ``(x, y)`` or
        ``(x, y, sample_weight)``, only ``x`` is used)."""
        if _is_dataset(x):
            self._no_array_arguments("x", batch_size=batch_size, lengths=lengths)
            n_batches = _dataset_length(x, "x")
            self._build_from_dataset(x, "x")
            outs = []
            _dataset_hook(x, "on_epoch_begin")
            with _BlasSingleThread():
                for i in range(n_batches):
                    xb = self._dataset_item(x, i, "x", need_y=False)[0]
                    xb, lb = self._prepare_x(xb, None, f"x[{i}][0]")
                    outs.append(np.array(self._forward(xb, False, lb)[0]))
            _dataset_hook(x, "on_epoch_end")
            shapes = {o.shape[1:] for o in outs}
            if len(shapes) > 1:
                raise ValueError(f"x: the dataset's batches gave outputs of different shapes "
                                 f"{sorted(shapes)[:4]} (sequences padded to different lengths?), "
                                 "which cannot be stacked; predict batch by batch instead")
            return np.concatenate(outs)
        x, lengths = self._prepare_x(x, lengths)
        self._ensure_built(x.shape[1:])
        batch_size = self._batch_size(batch_size)
        outs = []
        with _BlasSingleThread():
            for start in range(0, x.shape[0], batch_size):
                sl = slice(start, start + batch_size)
                outs.append(np.array(self._forward(x[sl], False,
                                                   None if lengths is None else lengths[sl])[0]))
        return np.concatenate(outs) if outs else np.zeros((0,) + self.layers[-1].output_shape, self.dtype)

    def __call__(self, x, training=False, lengths=None):
        x, lengths = self._prepare_x(x, lengths)
        self._ensure_built(x.shape[1:])
        return self._forward(x, training, lengths, np.random.default_rng([self.seed, 3]))[0]

    def train_on_batch(self, x, y, lengths=None, sample_weight=None, class_weight=None):
        """One optimizer step on this batch; returns the loss (and metrics, as a list), computed
        before the step.  ``sample_weight`` / ``class_weight`` as in :meth:`fit`."""
        self._require_compiled()
        x, lengths = self._prepare_x(x, lengths, finite=True)
        y = self._prepare_y(y, x.shape[0])
        self._ensure_built(x.shape[1:])
        self._resolve_metrics()
        self._check_output_shape(y)
        sample_weight = self._weights(y, sample_weight, class_weight)
        for m in self.metrics:
            m.reset()
        with _BlasSingleThread():
            value = self._train_step(x, y, lengths,
                                     np.random.default_rng([self.seed, 2, self.optimizer.iterations]),
                                     sample_weight)
        return value if not self.metrics else [value] + [m.result() for m in self.metrics]

    def test_on_batch(self, x, y, lengths=None, sample_weight=None):
        """:meth:`evaluate` on one batch; ``sample_weight`` weights the loss and the
        ``weighted_metrics``."""
        return self.evaluate(x, y, batch_size=max(1, len(x)), verbose=0, lengths=lengths,
                             sample_weight=sample_weight)

    def predict_on_batch(self, x, lengths=None):
        return self.predict(x, batch_size=max(1, len(x)), lengths=lengths)

    # description ----------------------------------------------------------
    def summary(self, print_fn=print):
        """Print a table of layers, output shapes and parameter counts."""
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for layer in self.layers:
            shape = "?" if layer.output_shape is None else str((None,) + tuple(layer.output_shape))
            rows.append((f"{layer.name} ({type(layer).__name__})", shape, str(layer.count_params())))
        widths = [max(len(r[i]) for r in rows) + 2 for i in range(3)]
        line = "-" * sum(widths)
        print_fn(f'Model: "{self.name}"')
        print_fn(line)
        for i, r in enumerate(rows):
            print_fn("".join(c.ljust(w) for c, w in zip(r, widths)))
            print_fn("=" * sum(widths) if i == 0 else line)
        trainable = sum(p.size for p in self.trainable_params())
        total = self.count_params()
        print_fn(f"Total params: {total}")
        print_fn(f"Trainable params: {trainable}")
        print_fn(f"Non-trainable params: {total - trainable}")

    def get_config(self):
        return {"name": self.name, "seed": self.seed, "dtype": self.dtype.name}

    # saving ---------------------------------------------------------------
    def save(self, filepath, include_optimizer=True):
        """Save architecture, weights, compile settings and optimizer state to one file,
        atomically (format: docs/training.md)."""
        _serialization.save_model(self, _filepath(filepath), include_optimizer)

    def save_weights(self, filepath):
        """Save only the weights (Keras layouts), atomically."""
        _serialization.save_weights(self, _filepath(filepath))

    def load_weights(self, filepath):
        """Load weights saved by :meth:`save_weights` (or :meth:`save`); all shapes are checked
        before any weight changes."""
        _serialization.load_weights(self, _filepath(filepath))

    def __repr__(self):
        return f"<Sequential name={self.name!r} layers={[l.name for l in self.layers]}>"


def _filepath(filepath):
    """``filepath`` as a str path; anything but a str or os.PathLike is a TypeError naming it."""
    path = os.fspath(filepath) if isinstance(filepath, (str, os.PathLike)) else None
    if not isinstance(path, str):
        raise TypeError(f"filepath: expected a str or os.PathLike path, got {type(filepath).__name__}"
                        + ("" if path is None else f" giving {type(path).__name__}"))
    return path


def load_model(filepath):
    """Rebuild a model saved by :meth:`Sequential.save` (weights, compile settings, optimizer
    state, epoch count).  A truncated or corrupt file raises ValueError, a missing one
    FileNotFoundError, a ``filepath`` that is not a str or os.PathLike TypeError."""
    return _serialization.load_model(_filepath(filepath))
