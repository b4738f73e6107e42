"""Activations (Keras names, as ``keras.activations``) with their backward passes.

``forward(z) -> a`` and ``backward(da, z, a) -> dz``; backward receives both the
input and the output so each derivative uses whichever is cheaper and exact.
"""
import numpy as np


def log_softmax(z):
    """log(softmax(z)) over the last axis, stably (the maximum subtracted first)."""
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(z):
    """Softmax over the last axis."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(z):
    """1 / (1 + exp(-z)) without overflow for large |z|."""
    # exp of a non-positive number only, so no overflow warning for large |z|
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)



def _linear_backward(da, z, a):
    return da


def _relu_backward(da, z, a):
    return da * (z > 0)


def _sigmoid_backward(da, z, a):
    return da * a * (1 - a)


def _tanh_backward(da, z, a):
    return da * (1 - a * a)


def _softmax_backward(da, z, a):
    return a * (da - np.sum(da * a, axis=-1, keepdims=True))


def _softplus(z):
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def _elu(z):
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0))).astype(z.dtype, copy=False)


def _elu_backward(da, z, a):
    return da * np.where(z > 0, 1.0, a + 1.0).astype(z.dtype, copy=False)


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _selu(z):
    return (_SELU_SCALE * np.where(z > 0, z, _SELU_ALPHA * np.expm1(np.minimum(z, 0)))).astype(z.dtype, copy=False)


def _selu_backward(da, z, a):
    return da * np.where(z > 0, _SELU_SCALE, a + _SELU_SCALE * _SELU_ALPHA).astype(z.dtype, copy=False)


def _silu_backward(da, z, a):
    s = sigmoid(z)
    return da * (s * (1 + z * (1 - s)))


ACTIVATIONS = {
    "linear": (lambda z: z, _linear_backward),
    "relu": (lambda z: np.maximum(z, 0), _relu_backward),
    "sigmoid": (sigmoid, _sigmoid_backward),
    "tanh": (np.tanh, _tanh_backward),
    "softmax": (softmax, _softmax_backward),
    "softplus": (_softplus, lambda da, z, a: da * sigmoid(z)),
    "elu": (_elu, _elu_backward),
    "selu": (_selu, _selu_backward),
    "silu": (lambda z: z * sigmoid(z), _silu_backward),
}
ACTIVATIONS["swish"] = ACTIVATIONS["silu"]


def get(name, argument="activation"):
    """``(name, forward, backward)`` for an activation name (None means 'linear')."""
    if name is None:
        name = "linear"
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"{argument}: expected one of {sorted(ACTIVATIONS)}, got {name!r}")
    forward, backward = ACTIVATIONS[name]
    return name, forward, backward
