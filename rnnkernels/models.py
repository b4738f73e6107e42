"""Keras-style :class:`Sequential` model: a linear stack of layers with
Keras's training API (fit/evaluate/predict: :mod:`rnnkernels.engine.trainer`)
and one-file saving (:mod:`rnnkernels.engine.saving`, format in
docs/training.md).
"""
import os
import secrets

import numpy as np

from ._util.padding import pad_sequences
from .engine import saving
from .engine.trainer import Trainer
from .layers import Layer
from .layers.core import InputLayer

__all__ = ["Sequential", "load_model", "pad_sequences"]


class Sequential(Trainer):
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
        saving.save_model(self, _filepath(filepath), include_optimizer)

    def save_weights(self, filepath):
        """Save only the weights (Keras layouts), atomically."""
        saving.save_weights(self, _filepath(filepath))

    def load_weights(self, filepath):
        """Load weights saved by :meth:`save_weights` (or :meth:`save`); all shapes are checked
        before any weight changes."""
        saving.load_weights(self, _filepath(filepath))

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
    return saving.load_model(_filepath(filepath), Sequential)
