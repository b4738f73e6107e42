"""Input conversion for the Keras-style training loop: arrays or Keras-style
datasets in, checked arrays of the model's dtype out (inputs and lengths,
targets, sample and class weights, validation data).

A Keras-style dataset (like ``keras.utils.PyDataset``) is an object with
``len(data)`` batches whose ``data[i]`` is ``(x, y)`` or ``(x, y,
sample_weight)`` for batch ``i``, and optionally ``on_epoch_begin()`` /
``on_epoch_end()``, called around each pass.  A batch's ``x`` may be a list
of ``(T_i, F)`` arrays: it is padded and its lengths are kept.
"""
import collections.abc
import math

import numpy as np

from .. import losses
from .._util.padding import pad_sequences
from .._util.validation import check_finite, check_lengths


def is_dataset(x):
    """Whether ``x`` is a Keras-style dataset (``len`` batches, ``x[i]`` a batch), not array data."""
    return (not isinstance(x, (np.ndarray, list, tuple, str, bytes, dict)) and not hasattr(x, "__array__")
            and hasattr(x, "__len__") and hasattr(x, "__getitem__"))


def dataset_length(data, argument):
    n = len(data)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{argument}: expected a dataset with at least one batch (len >= 1), got len {n!r}")
    return int(n)


def dataset_hook(data, name):
    hook = getattr(data, name, None)
    if callable(hook):
        hook()


def describe(value):
    """Short description of an argument's value for error messages."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


class DataAdapter:
    """Mixin of the model classes: converts and checks what ``fit``,
    ``evaluate`` and ``predict`` receive.  Reads the model's ``dtype``,
    ``loss`` and ``layers``."""

    def _prepare_x(self, x, lengths, argument="x", finite=False):
        """Inputs as an array of the model's dtype, and their lengths.  ``finite``
        (training and evaluation data) rejects NaN and infinity in the valid
        steps: one would turn every weight into NaN at the first optimizer step,
        and the loss into NaN, with no word of which sample did it."""
        if isinstance(x, (list, tuple)) and x and np.ndim(x[0]) == 2 and lengths is None:
            shapes = {np.shape(a)[0] for a in x}
            if len(shapes) > 1:
                x, lengths = pad_sequences(x, dtype=self.dtype, argument=argument)
        if x is None:
            raise ValueError(f"{argument}: expected an array of inputs, got None")
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise TypeError(f"{argument}: expected a numeric array, got dtype {x.dtype}")
        if x.ndim < 2:
            raise ValueError(f"{argument}: expected at least 2 dimensions (samples first), got shape {x.shape}")
        x = x.astype(self.dtype, copy=False)
        if lengths is not None:
            if x.ndim != 3:
                raise ValueError(f"lengths: only for sequence input (N, T, F), got x of shape {x.shape}")
            lengths = check_lengths(lengths, x.shape[0], x.shape[1])
        if finite:
            check_finite(argument, x, lengths)
        return x, lengths

    def _prepare_y(self, y, n, argument="y"):
        if y is None:
            raise ValueError(f"{argument}: expected target values, got None")
        y = np.asarray(y)
        if y.shape[:1] != (n,):
            raise ValueError(f"{argument}: expected {n} targets (one per input sample), got shape {y.shape}")
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{argument}: expected numeric targets, got dtype {y.dtype}")
        check_finite(argument, y)
        return y

    def _position_shape(self, y):
        """Shape of the per-position losses for targets ``y``: ``(N,)``, or ``(N, T)`` for
        sequence outputs (the targets without their class axis)."""
        if isinstance(self.loss, losses.SparseCategoricalCrossentropy):
            return y.shape[:len(self.layers[-1].output_shape)]
        if isinstance(self.loss, losses.CTC):  # one loss per sample, labels (N, S)
            return y.shape[:1]
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
        if isinstance(self.loss, losses.CTC):
            raise ValueError("class_weight: not defined for loss 'ctc' (a sample has many labels); "
                             "give sample_weight instead")
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
                                 f"({reasons[name]}), got {describe(value)}")

    def _check_output_shape(self, y, argument="y"):
        out = self.layers[-1].output_shape
        if isinstance(self.loss, losses.CTC):
            if len(out) != 2:
                raise ValueError(f"loss 'ctc': expected a model that returns per-frame outputs (T, C), "
                                 f"got output shape {out}")
            if y.ndim != 2:
                raise ValueError(f"{argument}: expected labels of shape (N, S) padded with -1 for loss "
                                 f"'ctc', got {y.shape}")
            return
        want = out if not isinstance(self.loss, losses.SparseCategoricalCrossentropy) else out[:-1]
        got = y.shape[1:]
        sparse = isinstance(self.loss, losses.SparseCategoricalCrossentropy)
        if not (sparse and got == tuple(want) + (1,)) and (
                len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want))):
            raise ValueError(f"{argument}: expected targets of shape (N,) + {tuple(want)} for loss "
                             f"'{self.loss.name}' and output shape {out}, got {y.shape}")
        if sparse:
            self._check_class_ids(y, out[-1], argument)

    @staticmethod
    def _check_class_ids(y, n_classes, argument):
        """Every sparse label of the data (not only the batch at hand) is a class id in
        ``[0, n_classes)``: a bad label in the last batch fails before the first update."""
        if y.dtype.kind == "f":
            bad = np.flatnonzero((y != np.round(y)).reshape(len(y), -1).any(axis=1))
            if bad.size:
                raise ValueError(f"{argument}: expected integer class ids, got {y[bad[0]].ravel()[:4]} "
                                 f"for sample {bad[0]} ({bad.size} samples with non-integral values)")
        bad = np.flatnonzero(((y < 0) | (y >= n_classes)).reshape(len(y), -1).any(axis=1))
        if bad.size:
            values = y[bad[0]].ravel()
            value = values[(values < 0) | (values >= n_classes)][0]
            raise ValueError(f"{argument}: expected class ids in [0, {n_classes - 1}], got {value:g} for "
                             f"sample {bad[0]} ({bad.size} samples out of range)")


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

