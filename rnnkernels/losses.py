"""Losses with Keras's names, each giving its value and its gradient.

A loss maps ``y_true`` and ``y_pred`` of shape ``(B, ..., C)`` to one number:
the mean over every position (batch, and time for sequence outputs) of a
per-position loss.  ``weights`` of shape ``(B, ...)``, a padding mask (1 at real
positions, 0 at padding), turn the mean into a mean over the positions with
weight > 0, as Keras 3 does with masks.  ``sample_weight`` of shape ``(B,)`` or
``(B, ...)`` multiplies each position's loss and leaves the divisor alone:
``sum(sample_weight * mask * loss) / count``, with ``count`` the number of
positions (or of real positions with a mask), Keras 3's default
``"sum_over_batch_size"`` reduction; a sample of weight 0 still counts.
``count=`` overrides that divisor: data-parallel training computes each rank's
share of a global batch as ``sum(...) / count`` of the *whole* batch, so that the
shares add up to the one-process loss and gradient (rnnkernels.distributed).

Cross-entropies can be *fused* with the activation in front of them
(softmax / sigmoid): :meth:`from_logits_value_and_grad` takes the logits ``z``
and returns the loss and ``dL/dz = (p - y) / n`` computed stably from
log-softmax / log-sigmoid, which is what :class:`rnnkernels.models.Sequential`
uses when the last layer ends in that activation.
"""
import numpy as np

from .activations import log_softmax as _log_softmax, sigmoid as _sigmoid

__all__ = ["Loss", "CategoricalCrossentropy", "SparseCategoricalCrossentropy",
           "BinaryCrossentropy", "MeanSquaredError", "MeanAbsoluteError", "CTC", "get", "serialize"]

# Keras clips probabilities to [eps, 1 - eps] when a loss receives probabilities.
EPSILON = 1e-7


def _weighted_mean(per_position, weights, sample_weight=None, count=None):
    """``(value, d value / d per_position)`` of per-position losses ``(B, ...)``.

    Without weights: the mean (the derivative is None, meaning a uniform ``1 / size``).
    ``weights`` (padding mask): ``sum(w * l) / count(w > 0)``.  ``sample_weight`` ``(B,)`` or
    ``(B, ...)``: ``sum(s * w * l) / count``, count being every position (no mask) or the
    real ones (Keras 3's "sum_over_batch_size" reduction with its mask rule).  ``count``
    given: the divisor instead of this batch's count (a share of a larger batch)."""
    if weights is None and sample_weight is None:
        if count is not None:  # a share: its sum over the whole batch's size (the same 1 / size)
            return float(np.sum(per_position) / count) if count else 0.0, None
        return float(np.mean(per_position)) if per_position.size else 0.0, None
    if weights is None:
        w = np.ones(per_position.shape, per_position.dtype)
        count = float(per_position.size) if count is None else count
    else:
        w = np.broadcast_to(weights, per_position.shape).astype(per_position.dtype)
        count = float(np.count_nonzero(w)) if count is None else count
    if sample_weight is not None:
        s = np.asarray(sample_weight, dtype=per_position.dtype)
        s = s.reshape(s.shape + (1,) * (per_position.ndim - s.ndim))
        w = w * s
    if count == 0:
        return 0.0, w * 0
    return float(np.sum(w * per_position) / count), w / count


class Loss:
    """Base class.  ``name`` is Keras's string name."""
    name = None
    #: activation this loss can be fused with ('softmax', 'sigmoid') or None
    fuses_with = None

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def get_config(self):
        return {"from_logits": self.from_logits}

    def _check(self, y_true, y_pred):
        y_pred = np.asarray(y_pred)
        y_true = np.asarray(y_true)
        if y_true.shape != y_pred.shape:
            raise ValueError(f"y_true: expected shape {y_pred.shape} (the model's output shape) for "
                             f"loss '{self.name}', got {y_true.shape}")
        return y_true.astype(y_pred.dtype, copy=False), y_pred

    def __call__(self, y_true, y_pred, weights=None, sample_weight=None):
        """The loss value (a float)."""
        return self.value_and_grad(y_true, y_pred, weights, sample_weight)[0]

    def value_and_grad(self, y_true, y_pred, weights=None, sample_weight=None, count=None):
        """``(loss, dloss/dy_pred)``; when ``from_logits`` ``y_pred`` is the logits.
        ``weights``: padding mask ``(B, ...)``; ``sample_weight``: ``(B,)`` or ``(B, ...)``;
        ``count``: the divisor, when this batch is a share of a larger one."""
        y_true, y_pred = self._check(y_true, y_pred)
        if self.from_logits:
            return self.from_logits_value_and_grad(y_true, y_pred, weights, checked=True,
                                                   sample_weight=sample_weight, count=count)
        per, dper = self._per_position(y_true, y_pred)
        value, scale = _weighted_mean(per, weights, sample_weight, count)
        return value, self._scale(dper, scale, per, count)

    def from_logits_value_and_grad(self, y_true, z, weights=None, checked=False, sample_weight=None,
                                   count=None):
        """Loss and gradient with respect to the logits ``z`` of the fused activation."""
        raise ValueError(f"loss '{self.name}' cannot be computed from logits")

    @staticmethod
    def _scale(dper, scale, per, count=None):
        """Chain rule through the mean: per-position gradient times d(mean)/d(per-position)."""
        if scale is None:
            n = per.size if count is None else count
            return dper / n if n else dper
        return dper * scale.reshape(scale.shape + (1,) * (dper.ndim - scale.ndim))

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class CategoricalCrossentropy(Loss):
    """``-sum(y * log p)`` over the last axis; ``y_true`` one-hot (or soft) ``(B, ..., C)``."""
    name = "categorical_crossentropy"
    fuses_with = "softmax"

    def _per_position(self, y, p):
        pc = np.clip(p, EPSILON, 1 - EPSILON)
        per = -np.sum(y * np.log(pc), axis=-1)
        # Keras renormalises p before clipping; with rows that sum to 1 this is the gradient
        dp = np.where((p > EPSILON) & (p < 1 - EPSILON), -y / pc, 0.0).astype(p.dtype)
        return per, dp

    def from_logits_value_and_grad(self, y_true, z, weights=None, checked=False,
                                   sample_weight=None, count=None):
        if not checked:
            y_true, z = self._check(y_true, z)
        logp = _log_softmax(z)
        per = -np.sum(y_true * logp, axis=-1)
        value, scale = _weighted_mean(per, weights, sample_weight, count)
        # d/dz of -sum(y log softmax(z)) = p * sum(y) - y  (= p - y for one-hot rows)
        dz = np.exp(logp) * y_true.sum(axis=-1, keepdims=True) - y_true
        return value, self._scale(dz, scale, per, count)


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Cross-entropy with integer class ids ``y_true (B, ...)`` against ``y_pred (B, ..., C)``."""
    name = "sparse_categorical_crossentropy"

    def _check(self, y_true, y_pred):
        y_pred = np.asarray(y_pred)
        y_true = np.asarray(y_true)
        if y_true.shape == y_pred.shape[:-1] + (1,):
            y_true = y_true[..., 0]
        if y_true.shape != y_pred.shape[:-1]:
            raise ValueError(f"y_true: expected integer class ids of shape {y_pred.shape[:-1]} for "
                             f"loss '{self.name}', got shape {y_true.shape}")
        if y_true.dtype.kind == "f":
            if not np.all(y_true == np.round(y_true)):
                raise ValueError("y_true: expected integer class ids, got non-integral values")
        elif y_true.dtype.kind not in "iub":
            raise TypeError(f"y_true: expected integer class ids, got dtype {y_true.dtype}")
        ids = y_true.astype(np.int64)
        C = y_pred.shape[-1]
        if ids.size and (ids.min() < 0 or ids.max() >= C):
            raise ValueError(f"y_true: expected class ids in [0, {C - 1}], got min {ids.min()} "
                             f"max {ids.max()}")
        onehot = np.zeros(y_pred.shape, y_pred.dtype)
        np.put_along_axis(onehot, ids[..., None], 1.0, axis=-1)
        return onehot, y_pred


class BinaryCrossentropy(Loss):
    """``-(y log p + (1-y) log(1-p))`` averaged over the last axis."""
    name = "binary_crossentropy"
    fuses_with = "sigmoid"

    def _per_position(self, y, p):
        pc = np.clip(p, EPSILON, 1 - EPSILON)
        per = -np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc), axis=-1)
        inside = (p > EPSILON) & (p < 1 - EPSILON)
        dp = np.where(inside, (pc - y) / (pc * (1 - pc)), 0.0).astype(p.dtype) / p.shape[-1]
        return per, dp

    def from_logits_value_and_grad(self, y_true, z, weights=None, checked=False,
                                   sample_weight=None, count=None):
        if not checked:
            y_true, z = self._check(y_true, z)
        # log(1 + exp(-|z|)) + max(z, 0) - z*y: the stable form of the logistic loss
        per = np.mean(np.maximum(z, 0) - z * y_true + np.log1p(np.exp(-np.abs(z))), axis=-1)
        value, scale = _weighted_mean(per, weights, sample_weight, count)
        dz = (_sigmoid(z) - y_true) / z.shape[-1]
        return value, self._scale(dz, scale, per, count)


class MeanSquaredError(Loss):
    """``mean((y - p)^2)`` over the last axis."""
    name = "mean_squared_error"

    def _per_position(self, y, p):
        d = p - y
        return np.mean(d * d, axis=-1), 2.0 * d / p.shape[-1]


class MeanAbsoluteError(Loss):
    """``mean(|y - p|)`` over the last axis."""
    name = "mean_absolute_error"

    def _per_position(self, y, p):
        d = p - y
        return np.mean(np.abs(d), axis=-1), np.sign(d) / p.shape[-1]


class CTC(Loss):
    """Connectionist temporal classification (Graves et al. 2006), as Keras 3's ``keras.losses.CTC``:
    blank is class 0 and ``y_true (B, S)`` holds each sample's labels padded at the end with -1.

    ``y_pred (B, T, C)``: the model's per-frame outputs.  Each sample's loss is over its own
    frame count, the lengths the model propagates (after any subsampling, e.g.
    :class:`~rnnkernels.layers.FrameStack`), not the padded T.  The batch's loss is
    ``sum(sample_weight * loss) / B`` (Keras's "sum_over_batch_size").  With a softmax last
    layer the loss is fused with it (computed from the logits by the compiled
    :func:`rnnkernels.ops.ctc_loss`); ``from_logits=True`` takes ``y_pred`` as logits;
    otherwise ``y_pred`` are probabilities.  (Keras's CTC feeds ``y_pred`` to a log-softmax
    whatever it is, i.e. it always takes logits.)  ``zero_infinity``: a sample whose labels
    cannot fit its frames counts 0 instead of inf (and gives no gradient), as PyTorch's.
    """
    name = "ctc"
    fuses_with = "softmax"
    #: the trainer passes the output's per-sample lengths to this loss
    uses_lengths = True
    blank = 0

    def __init__(self, from_logits=False, zero_infinity=False):
        super().__init__(from_logits)
        self.zero_infinity = bool(zero_infinity)

    def get_config(self):
        return {"from_logits": self.from_logits, "zero_infinity": self.zero_infinity}

    def _check(self, y_true, y_pred):
        y_pred = np.asarray(y_pred)
        if y_pred.ndim != 3:
            raise ValueError(f"y_pred: expected per-frame outputs (B, T, C) for loss 'ctc', got shape "
                             f"{y_pred.shape} (the model must return sequences)")
        labels = _ctc_labels(y_true, y_pred.shape[0], y_pred.shape[2])
        return labels, y_pred

    @staticmethod
    def label_lengths(labels):
        """Each row's label count (the entries before its -1 padding)."""
        return np.count_nonzero(labels != -1, axis=1).astype(np.int64)

    def _frames(self, y_pred, weights, lengths):
        B, T = y_pred.shape[:2]
        if lengths is not None:
            n = np.asarray(lengths, np.int64)
        elif weights is not None:  # a padding mask (B, T)
            n = np.count_nonzero(np.broadcast_to(weights, (B, T)), axis=1).astype(np.int64)
        else:
            n = np.full(B, T, np.int64)
        return n

    def _reduce(self, per_sample, grad_tbc, sample_weight):
        B = per_sample.shape[0]
        s = np.ones(B, per_sample.dtype) if sample_weight is None else np.asarray(sample_weight, per_sample.dtype)
        if s.shape != (B,):
            raise ValueError(f"sample_weight: expected one weight per sample ({B},) for loss 'ctc', got shape {s.shape}")
        value = float(np.sum(s * per_sample) / B) if B else 0.0
        grad = np.ascontiguousarray((grad_tbc * (s / max(B, 1))[None, :, None]).transpose(1, 0, 2))
        return value, grad

    def value_and_grad(self, y_true, y_pred, weights=None, sample_weight=None, lengths=None):
        labels, y_pred = self._check(y_true, y_pred)
        if self.from_logits:
            return self.from_logits_value_and_grad(labels, y_pred, weights, checked=True,
                                                   sample_weight=sample_weight, lengths=lengths)
        from . import ops
        p = np.clip(y_pred, EPSILON, 1.0).astype(y_pred.dtype)
        logp = np.log(p)
        per, dlogp = ops.ctc_loss(np.ascontiguousarray(logp.transpose(1, 0, 2)), labels,
                                  self._frames(y_pred, weights, lengths), self.label_lengths(labels),
                                  blank=self.blank, zero_infinity=self.zero_infinity)
        # the kernel's value is -log P(l | p / sum(p)) (its fused log-softmax renormalises
        # each frame): its derivative with respect to p is sum(occ) / sum(p) - occ / p, with
        # the occupancy occ = p / sum(p) - dlogp on the real frames of possible samples
        frames = self._frames(y_pred, weights, lengths)
        pt = p.transpose(1, 0, 2)
        total = pt.sum(axis=2, keepdims=True)
        live = ((np.arange(p.shape[1])[:, None] < frames[None, :]) & np.isfinite(per)[None, :]
                & (per != 0 if self.zero_infinity else True))[..., None]
        if self.zero_infinity:  # a zeroed impossible sample has all-zero dlogp: no gradient
            live = live & (dlogp != 0).any(axis=(0, 2))[None, :, None]
        occupancy = np.where(live, pt / total - dlogp, 0.0)
        inside = (y_pred > EPSILON).transpose(1, 0, 2)
        dp = np.where(inside, occupancy.sum(axis=2, keepdims=True) / total - occupancy / pt, 0.0)
        dp = dp.astype(y_pred.dtype)
        return self._reduce(per, dp, sample_weight)

    def from_logits_value_and_grad(self, y_true, z, weights=None, checked=False, sample_weight=None,
                                   lengths=None):
        from . import ops
        if not checked:
            y_true, z = self._check(y_true, z)
        per, dz = ops.ctc_loss(np.ascontiguousarray(np.asarray(z).transpose(1, 0, 2)), y_true,
                               self._frames(z, weights, lengths), self.label_lengths(y_true),
                               blank=self.blank, zero_infinity=self.zero_infinity)
        return self._reduce(per, dz, sample_weight)

    def __repr__(self):
        return f"CTC(from_logits={self.from_logits}, zero_infinity={self.zero_infinity})"


def _ctc_labels(y_true, B, C):
    """``y_true`` as int64 ``(B, S)`` labels in [1, C-1], padded at the end with -1."""
    y = np.asarray(y_true)
    if y.ndim != 2:
        raise ValueError(f"y_true: expected labels (B, S) padded with -1 for loss 'ctc', got shape {y.shape}")
    if y.shape[0] != B:
        raise ValueError(f"y_true: expected {B} label rows (one per sample), got {y.shape[0]}")
    if y.dtype.kind == "f":
        if not np.all(y == np.round(y)):
            raise ValueError("y_true: expected integer labels for loss 'ctc', got non-integral values")
    elif y.dtype.kind not in "iu":
        raise TypeError(f"y_true: expected integer labels for loss 'ctc', got dtype {y.dtype}")
    y = y.astype(np.int64)
    pad = y == -1
    if np.any(pad[:, :-1] & ~pad[:, 1:]):
        b = int(np.flatnonzero(np.any(pad[:, :-1] & ~pad[:, 1:], axis=1))[0])
        raise ValueError(f"y_true: sample {b}: a label follows -1 padding; pad each row at its end only")
    real = y[~pad]
    if real.size and (real.min() < 1 or real.max() >= C):
        raise ValueError(f"y_true: expected labels in [1, {C - 1}] (0 is the blank) padded with -1 for "
                         f"loss 'ctc' with {C} classes, got min {real.min()} max {real.max()}")
    return y


_CLASSES = [CategoricalCrossentropy, SparseCategoricalCrossentropy, BinaryCrossentropy,
            MeanSquaredError, MeanAbsoluteError, CTC]
_BY_NAME = {cls.name: cls for cls in _CLASSES}
_BY_NAME.update({"mse": MeanSquaredError, "mae": MeanAbsoluteError})
_BY_NAME.update({cls.__name__: cls for cls in _CLASSES})


def get(identifier):
    """A loss from a Keras name (``'categorical_crossentropy'``, ``'mse'``...), a config or a Loss."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, dict):
        name, config = identifier.get("class_name"), identifier.get("config", {})
    else:
        name, config = identifier, {}
    if isinstance(name, str) and name in _BY_NAME:
        return _BY_NAME[name](**config)
    raise ValueError(f"loss: expected one of {sorted(k for k in _BY_NAME if k.islower())} "
                     f"or a Loss instance, got {identifier!r}")


def serialize(loss):
    if type(loss) not in _CLASSES:
        raise ValueError(f"loss: cannot save custom loss {loss!r}")
    return {"class_name": type(loss).__name__, "config": loss.get_config()}
