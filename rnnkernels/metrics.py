"""Accuracy metrics with Keras's names; running means over an epoch.

A metric is updated batch by batch with ``update(y_true, y_pred, weights)``
(``weights (B, ...)``: 0 for padded time steps, and for ``weighted_metrics``
the sample or class weights) and reports the weighted mean over every position
seen so far, ``sum(weight * score) / sum(weight)``, with ``result()``.  As in
Keras 3, ``fit``/``evaluate`` weight only the metrics given as
``compile(weighted_metrics=...)``; those given as ``metrics=`` count every
valid position once.  ``'accuracy'`` / ``'acc'`` resolves,
as in Keras, to the accuracy matching the loss: categorical for
categorical cross-entropy, sparse for sparse categorical cross-entropy, binary
for binary cross-entropy or a single output unit.
"""
import numpy as np

__all__ = ["Metric", "Mean", "CategoricalAccuracy", "SparseCategoricalAccuracy",
           "BinaryAccuracy", "get", "serialize"]


class Metric:
    """Weighted running mean of a per-position score."""
    name = None

    def __init__(self, name=None):
        if name is not None:
            self.name = name
        self.reset()

    def reset(self):
        self._total = 0.0
        self._count = 0.0

    def score(self, y_true, y_pred):  # pragma: no cover - abstract
        """Per-position scores of shape y_pred.shape[:-1]."""
        raise NotImplementedError

    def update(self, y_true, y_pred, weights=None):
        s = self.score(np.asarray(y_true), np.asarray(y_pred)).astype(np.float64)
        if weights is None:
            self._total += float(s.sum())
            self._count += s.size
        else:
            w = np.broadcast_to(weights, s.shape).astype(np.float64)
            self._total += float((w * s).sum())
            self._count += float(w.sum())

    def result(self):
        return self._total / self._count if self._count else 0.0

    def get_config(self):
        """Constructor arguments (what a saved model keeps of the metric)."""
        return {"name": self.name}


class Mean(Metric):
    """Mean of values weighted by a count, e.g. batch losses weighted by batch size."""

    def update(self, value, count=1):
        self._total += float(value) * count
        self._count += count


class CategoricalAccuracy(Metric):
    """argmax(y_pred) == argmax(y_true); one-hot targets."""
    name = "categorical_accuracy"

    def score(self, y_true, y_pred):
        if y_true.shape != y_pred.shape:
            raise ValueError(f"y_true: expected one-hot targets of shape {y_pred.shape} for "
                             f"{self.name}, got {y_true.shape}")
        return np.argmax(y_pred, axis=-1) == np.argmax(y_true, axis=-1)


class SparseCategoricalAccuracy(Metric):
    """argmax(y_pred) == y_true; integer targets."""
    name = "sparse_categorical_accuracy"

    def score(self, y_true, y_pred):
        if y_true.shape == y_pred.shape[:-1] + (1,):
            y_true = y_true[..., 0]
        if y_true.shape != y_pred.shape[:-1]:
            raise ValueError(f"y_true: expected class ids of shape {y_pred.shape[:-1]} for "
                             f"{self.name}, got {y_true.shape}")
        return np.argmax(y_pred, axis=-1) == y_true.astype(np.int64)


class BinaryAccuracy(Metric):
    """mean over the last axis of (y_pred > threshold) == y_true."""
    name = "binary_accuracy"

    def __init__(self, name=None, threshold=0.5):
        self.threshold = float(threshold)
        super().__init__(name)

    def score(self, y_true, y_pred):
        if y_true.shape != y_pred.shape:
            raise ValueError(f"y_true: expected shape {y_pred.shape} for {self.name}, got {y_true.shape}")
        return np.mean((y_pred > self.threshold) == (y_true > 0.5), axis=-1)

    def get_config(self):
        return dict(super().get_config(), threshold=self.threshold)


_CLASSES = (CategoricalAccuracy, SparseCategoricalAccuracy, BinaryAccuracy)
_BY_NAME = {cls.name: cls for cls in _CLASSES}
_BY_CLASS = {cls.__name__: cls for cls in _CLASSES}
_ACCURACY_FOR_LOSS = {
    "categorical_crossentropy": CategoricalAccuracy,
    "sparse_categorical_crossentropy": SparseCategoricalAccuracy,
    "binary_crossentropy": BinaryAccuracy,
}


def get(identifier, loss_name=None, output_units=None, argument="metrics"):
    """A metric from a name, given the loss name and the model's output size to resolve 'accuracy'.

    The returned metric reports under the name the user gave (``'accuracy'`` stays
    ``'accuracy'`` in logs and History, as in Keras)."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, dict):  # a saved instance, see serialize
        cls = _BY_CLASS.get(identifier.get("class_name"))
        if cls is None:
            raise ValueError(f"{argument}: expected a saved metric of class {sorted(_BY_CLASS)}, "
                             f"got {identifier!r}")
        return cls(**identifier.get("config", {}))
    if not isinstance(identifier, str):
        raise ValueError(f"{argument}: expected metric names or Metric instances, got {identifier!r}")
    if identifier in ("accuracy", "acc"):
        cls = _ACCURACY_FOR_LOSS.get(loss_name)
        if cls is None:
            cls = BinaryAccuracy if output_units == 1 else CategoricalAccuracy
        return cls(name=identifier)
    if identifier in _BY_NAME:
        return _BY_NAME[identifier]()
    raise ValueError(f"{argument}: expected one of {['accuracy'] + sorted(_BY_NAME)} or a Metric, "
                     f"got {identifier!r}")


def serialize(metric, argument="metrics"):
    """What a saved model keeps of a metric given to ``compile``: a name as it is, a built-in
    metric instance as its class and constructor arguments (a custom name or threshold saved
    as a bare name would come back as another metric, or not at all)."""
    if isinstance(metric, str):
        return metric
    if type(metric) not in _CLASSES:
        raise ValueError(f"{argument}: cannot save the custom metric {type(metric).__name__} "
                         f"({metric.name!r}); save with include_optimizer=False to leave the "
                         "compile settings out, and compile again after loading")
    return {"class_name": type(metric).__name__, "config": metric.get_config()}
