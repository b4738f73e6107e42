"""Keras-style layers on the rnnkernels kernels.

Recurrent: :class:`SimpleRNN`, :class:`LSTM`, :class:`GRU`, :class:`Bidirectional`.
Core: :class:`Dense`, :class:`Dropout`, :class:`Activation`, :class:`Masking`,
:class:`Flatten`, :class:`FrameStack` (subsampling), :class:`GlobalAveragePooling1D`, :class:`GlobalMaxPooling1D`,
:class:`LayerNormalization`, :class:`BatchNormalization`, :class:`InputLayer` / :func:`Input`.
See docs/training.md.
"""
from .base import Layer
from .core import (Activation, BatchNormalization, Dense, Dropout, Flatten, FrameStack, GlobalAveragePooling1D,
                   GlobalMaxPooling1D, Input, InputLayer, LayerNormalization, Masking)
from .bidirectional import Bidirectional
from .recurrent import GRU, LSTM, SimpleRNN

__all__ = ["Layer", "Dense", "Dropout", "Activation", "Masking", "Flatten", "FrameStack", "GlobalAveragePooling1D",
           "GlobalMaxPooling1D", "LayerNormalization", "BatchNormalization", "InputLayer", "Input",
           "SimpleRNN", "LSTM", "GRU", "Bidirectional", "get", "serialize", "deserialize"]

_CLASSES = {cls.__name__: cls for cls in (Dense, Dropout, Activation, Masking, Flatten, FrameStack,
                                          GlobalAveragePooling1D, GlobalMaxPooling1D,
                                          LayerNormalization, BatchNormalization, InputLayer,
                                          SimpleRNN, LSTM, GRU, Bidirectional)}


def serialize(layer):
    """``{'class_name', 'config'}`` for a built-in layer."""
    if type(layer) not in _CLASSES.values():
        raise ValueError(f"layer: cannot save custom layer {layer!r}; only built-in layers are saved")
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(spec):
    """A layer from :func:`serialize`'s output."""
    if not isinstance(spec, dict) or spec.get("class_name") not in _CLASSES:
        raise ValueError(f"layer: expected one of {sorted(_CLASSES)}, got {spec!r:.200}")
    return _CLASSES[spec["class_name"]].from_config(spec.get("config", {}))


get = deserialize
