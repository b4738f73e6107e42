"""Layer base class: building, parameters, weights in Keras layout, configs.

Protocol used by :class:`rnnkernels.models.Sequential` (and usable directly):

- ``build(input_shape, rng, dtype)``: ``input_shape`` excludes the batch axis;
  creates ``params`` (internal layout) from initializers drawn from ``rng``.
- ``forward(x, training=False, lengths=None) -> y``: ``lengths (B,)`` are the
  valid time steps of each sequence (padding at the end) or None.  With
  ``training=True`` the layer keeps what ``backward`` needs.
- ``output_lengths(lengths)``: the lengths travelling to the next layer
  (Keras's mask propagation).
- ``backward(dy) -> dx``: gradient with respect to the input of the last
  training forward pass; parameter gradients go to ``grads`` (same keys as ``params``).
- ``get_weights()`` / ``set_weights()``: Keras's exact layouts and order.
"""
import itertools
from collections import defaultdict

import numpy as np

from .._util.keyed_random import KeyedRandom

_counters = defaultdict(itertools.count)
_default_rng = np.random.default_rng()


def _snake(name):
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower())):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _auto_name(cls_name):
    base = _snake(cls_name)
    n = next(_counters[base])
    return base if n == 0 else f"{base}_{n}"


class Layer:
    """Base class of every layer."""
    #: whether padded steps (``lengths``) are honoured; others refuse lengths-carrying input
    supports_lengths = True

    def __init__(self, name=None, input_shape=None, input_dim=None, batch_size=None,
                 batch_input_shape=None, dtype=None, trainable=True):
        self.name = name or _auto_name(type(self).__name__)
        if batch_input_shape is not None:
            batch_size, input_shape = batch_input_shape[0], tuple(batch_input_shape[1:])
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        if input_shape is not None:
            if isinstance(input_shape, (int, np.integer)):
                input_shape = (int(input_shape),)
            try:
                input_shape = tuple(None if d is None else int(d) for d in input_shape)
            except (TypeError, ValueError):
                raise TypeError(f"input_shape: expected a tuple of ints (without the batch axis), "
                                f"got {input_shape!r}") from None
            if any(d is not None and d < 1 for d in input_shape):
                raise ValueError(f"input_shape: expected positive sizes, got {input_shape}")
        self.declared_input_shape = input_shape
        self.batch_size = None if batch_size is None else int(batch_size)
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.trainable = bool(trainable)
        self.built = False
        self.input_shape = None
        self.output_shape = None
        self.params = {}
        self.grads = {}
        # False when nothing before this layer learns (the model's first trainable layer):
        # a layer may then skip its input gradient and return None from backward
        self.needs_input_grad = True
        self.rng = None

    # building -------------------------------------------------------------
    def build(self, input_shape, rng=None, dtype=None):
        """Create the parameters for inputs of shape ``(batch,) + input_shape``."""
        input_shape = tuple(input_shape)
        if self.dtype is None:
            self.dtype = np.dtype(dtype or "float32")
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype}")
        self._build(input_shape, rng if rng is not None else _default_rng)
        self.input_shape = input_shape
        self.output_shape = self.compute_output_shape(input_shape)
        self.built = True

    def _build(self, input_shape, rng):
        pass

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def _random(self):
        return self.rng if self.rng is not None else _default_rng

    def _uniform(self, shape, batch_axis=0):
        """Uniforms in [0, 1) of ``shape`` for this training call's masks.  Under fit the
        layer's generator is a :class:`~rnnkernels._util.keyed_random.KeyedRandom`: each
        sample's values (``batch_axis`` runs over the samples; None: one draw shared by
        the batch) depend on the sample, not on its batch or position, so training gives
        the same masks in one process or split over many; a numpy Generator draws in
        call order."""
        rng = self._random()
        if isinstance(rng, KeyedRandom):
            return rng.random(shape, batch_axis)
        return rng.random(shape)

    def _mask(self, shape, rate, below, above, batch_axis=0):
        """A mask of ``shape`` in the layer's dtype: ``below`` where this call's
        uniform (as :meth:`_uniform` draws it) is under ``rate``, else ``above``
        (dropout: 0 and 1/(1-rate); zoneout: 1 and 0).  Under fit the keyed
        generator writes it in one compiled pass."""
        rng = self._random()
        if isinstance(rng, KeyedRandom):
            return rng.masks(shape, rate, below, above, self.dtype, batch_axis)
        return np.where(rng.random(shape) < rate, below, above).astype(self.dtype)

    def _check_input(self, x, ndim=None):
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        if x.dtype != self.dtype:
            if x.dtype.kind not in "fiub":
                raise TypeError(f"{self.name}: expected a numeric input array, got dtype {x.dtype}")
            x = x.astype(self.dtype)
        if ndim is not None and x.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
            raise ValueError(f"{self.name}: expected input with {ndim} dimensions "
                             f"(batch first), got shape {x.shape}")
        want = self.input_shape
        if want is not None and (x.ndim - 1 != len(want) or any(
                w is not None and g != w for g, w in zip(x.shape[1:], want))):
            raise ValueError(f"{self.name}: expected input shape (batch,) + {want}, got {x.shape}")
        return x

    def __call__(self, x, training=False, lengths=None):
        """Build on first use from ``x``'s shape, then run :meth:`forward`."""
        if not self.built:
            x = np.asarray(x)
            self.build(x.shape[1:], dtype=x.dtype if x.dtype in (np.float32, np.float64) else None)
        return self.forward(x, training=training, lengths=lengths)

    # running --------------------------------------------------------------
    def forward(self, x, training=False, lengths=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy):  # pragma: no cover - abstract
        raise NotImplementedError

    def output_lengths(self, lengths):
        return lengths

    # parameters -----------------------------------------------------------
    def trainable_params(self):
        return list(self.params.values()) if self.trainable else []

    def trainable_grads(self):
        return [self.grads[k] for k in self.params] if self.trainable else []

    def count_params(self):
        return int(sum(w.size for w in self.get_weights())) if self.built else 0

    def get_weights(self):
        """Weights in Keras's layout and order (copies)."""
        return [w.copy() for w in self.params.values()]

    def weight_shapes(self):
        """Shapes :meth:`set_weights` expects, in order."""
        return [w.shape for w in self.get_weights()]

    def expected_weight_shapes(self, input_shape):
        """The shapes :meth:`get_weights` will have once built for ``input_shape``, computed
        from the config without building (the model loader compares a file's arrays with
        them before allocating anything); ``None`` when only building can tell.  Layers
        without weights give ``[]``."""
        return [] if type(self)._build is Layer._build else None

    def set_weights(self, weights):
        """Set weights from Keras-layout arrays (validated before anything changes)."""
        weights = self._validate_weights(weights)
        for p, w in zip(self.params.values(), weights):
            p[...] = w

    def _validate_weights(self, weights):
        if not self.built:
            raise ValueError(f"{self.name}: the layer is not built yet; give input_shape= or call "
                             "it on data before set_weights")
        expected = self.weight_shapes()
        if not isinstance(weights, (list, tuple)) or len(weights) != len(expected):
            n = len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__
            raise ValueError(f"{self.name}: expected a list of {len(expected)} arrays with shapes "
                             f"{expected}, got {n}")
        out = []
        for i, (w, shape) in enumerate(zip(weights, expected)):
            w = np.asarray(w)
            if w.dtype.kind not in "fiub":
                raise TypeError(f"{self.name}: weights[{i}]: expected a numeric array, got dtype {w.dtype}")
            if w.shape != tuple(shape):
                raise ValueError(f"{self.name}: weights[{i}]: expected shape {tuple(shape)}, got {w.shape}")
            out.append(w.astype(self.dtype))
        return out

    # configuration --------------------------------------------------------
    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable}
        if self.dtype is not None:
            config["dtype"] = self.dtype.name
        if self.declared_input_shape is not None:
            config["input_shape"] = list(self.declared_input_shape)
        if self.batch_size is not None:
            config["batch_size"] = self.batch_size
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}>"
