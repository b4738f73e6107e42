"""Non-recurrent layers: Input, Dense, Activation, Dropout, Masking, Flatten,
global pooling over (masked) time, LayerNormalization, BatchNormalization."""
import warnings

import numpy as np

from .. import activations, initializers
from .._util.validation import check_rate, check_units
from .base import Layer


def time_mask(lengths, T, dtype):
    """(B, T) array: 1 where t < lengths[b], else 0."""
    return (np.arange(T)[None, :] < np.asarray(lengths)[:, None]).astype(dtype)


class InputLayer(Layer):
    """Declares the input shape (``shape`` excludes the batch axis); passes data through."""

    def __init__(self, shape=None, batch_size=None, name=None, dtype=None, input_shape=None, **kwargs):
        super().__init__(name=name, input_shape=shape if shape is not None else input_shape,
                         batch_size=batch_size, dtype=dtype, **kwargs)
        if self.declared_input_shape is None:
            raise ValueError("shape: expected the input shape without the batch axis, e.g. (timesteps, features)")

    def forward(self, x, training=False, lengths=None):
        return self._check_input(x)

    def backward(self, dy):
        return dy

    def get_config(self):
        config = super().get_config()
        config["shape"] = config.pop("input_shape")
        return config


def Input(shape, batch_size=None, name=None, dtype=None):
    """Keras's ``Input(shape=...)``, usable as the first entry of a Sequential."""
    return InputLayer(shape=shape, batch_size=batch_size, name=name, dtype=dtype)


class _ActivationMixin:
    """Activation applied last; keeps the pre-activation so the model can fuse it with the loss."""

    def _set_activation(self, activation):
        self.activation, self._act_forward, self._act_backward = activations.get(activation)

    def _activate(self, z):
        self._z = z
        self._a = self._act_forward(z)
        return self._a


class Dense(_ActivationMixin, Layer):
    """``activation(x @ kernel + bias)`` on the last axis; ``x (B, ..., F) -> (B, ..., units)``.

    Weights (Keras layout): ``[kernel (F, units), bias (units,)]``."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.units = check_units(units)
        self._set_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer, "kernel_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "bias_initializer")
        self._x = None

    def expected_weight_shapes(self, input_shape):
        if not input_shape or input_shape[-1] is None:
            raise ValueError(f"{self.name}: the last input dimension must be known, got {input_shape}")
        return [(input_shape[-1], self.units)] + ([(self.units,)] if self.use_bias else [])

    def _build(self, input_shape, rng):
        if not input_shape or input_shape[-1] is None:
            raise ValueError(f"{self.name}: the last input dimension must be known, got {input_shape}")
        self.params = {"kernel": self.kernel_initializer((input_shape[-1], self.units), self.dtype, rng)}
        if self.use_bias:
            self.params["bias"] = self.bias_initializer((self.units,), self.dtype, rng)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, x, training=False, lengths=None):
        x = self._check_input(x)
        self._x = x
        z = x @ self.params["kernel"]
        if self.use_bias:
            z += self.params["bias"]
        return self._activate(z)

    def _check_grad(self, name, g):
        if self._x is None:
            raise ValueError(f"{self.name}: backward needs a forward pass first")
        expected = self._x.shape[:-1] + (self.units,)
        if np.shape(g) != expected:
            raise ValueError(f"{self.name}: {name}: expected shape {expected}, got {np.shape(g)}")
        return np.asarray(g, self.dtype)

    def backward(self, dy):
        dy = self._check_grad("dy", dy)
        return self.backward_from_logits(self._act_backward(dy, self._z, self._a))

    def backward_from_logits(self, dz):
        """Backward from the gradient with respect to the pre-activation."""
        dz = self._check_grad("dz", dz)
        x2 = self._x.reshape(-1, self._x.shape[-1])
        dz2 = dz.reshape(-1, self.units)
        self.grads["kernel"] = x2.T @ dz2
        if self.use_bias:
            self.grads["bias"] = dz2.sum(axis=0)
        return dz @ self.params["kernel"].T

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer)}


class Activation(_ActivationMixin, Layer):
    """Applies an activation element-wise (softmax over the last axis)."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self._set_activation(activation)

    def forward(self, x, training=False, lengths=None):
        return self._activate(self._check_input(x))

    def backward(self, dy):
        return self._act_backward(dy, self._z, self._a)

    def backward_from_logits(self, dz):
        return dz

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


class Dropout(Layer):
    """Inverted dropout: in training, zero each element with probability ``rate`` and scale
    the rest by ``1 / (1 - rate)``; identity at inference.  ``noise_shape`` as in Keras
    (``None`` entries take the input's size), e.g. ``(None, 1, F)`` for the same mask at every step."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_rate("rate", rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = seed  # accepted for Keras compatibility; the model's seed decides the masks

    def forward(self, x, training=False, lengths=None):
        x = self._check_input(x)
        if not training or self.rate == 0:
            self._keep = None
            return x
        shape = x.shape if self.noise_shape is None else tuple(
            s if n is None else n for s, n in zip(x.shape, self.noise_shape))
        shared = self.noise_shape is not None and self.noise_shape[0] == 1  # one mask for the batch
        self._keep = self._mask(shape, self.rate, 0.0, 1.0 / (1.0 - self.rate), None if shared else 0)
        return x * self._keep

    def backward(self, dy):
        return dy if self._keep is None else dy * self._keep

    def get_config(self):
        config = {**super().get_config(), "rate": self.rate}
        if self.noise_shape is not None:
            config["noise_shape"] = list(self.noise_shape)
        return config


class Masking(Layer):
    """Marks time steps whose features all equal ``mask_value`` as padding.

    Input ``(B, T, F)``.  Padding is assumed at the end of each sequence: the length of
    sequence ``b`` is one past its last non-masked step, and the recurrent layers after it
    run only those steps (no work on padding).  A masked step *inside* a sequence is
    treated as data (Keras would skip it); a warning says so.  Output: the input with the
    padded steps zeroed, as Keras's Masking does."""

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)

    def forward(self, x, training=False, lengths=None):
        x = self._check_input(x, ndim=3)
        B, T, _ = x.shape
        valid = np.any(x != self.mask_value, axis=-1)
        last = T - np.argmax(valid[:, ::-1], axis=1)
        computed = np.where(valid.any(axis=1), last, 0).astype(np.int64)
        if lengths is not None:
            computed = np.minimum(computed, lengths)
        inner = valid.sum(axis=1) != computed
        if inner.any():
            warnings.warn(f"{self.name}: {int(inner.sum())} sequence(s) have masked steps before their "
                          "last valid step; they are treated as data (only trailing padding is skipped)",
                          stacklevel=3)
        self._lengths = computed
        self._keep = time_mask(computed, T, self.dtype)[:, :, None]
        return x * self._keep

    def backward(self, dy):
        return dy * self._keep

    def output_lengths(self, lengths):
        return self._lengths

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}


class Flatten(Layer):
    """``(B, d1, d2, ...) -> (B, d1*d2*...)``.  Discards lengths (padding becomes data)."""

    def compute_output_shape(self, input_shape):
        if any(d is None for d in input_shape):
            raise ValueError(f"{self.name}: Flatten needs a fully known input shape, got {input_shape}")
        return (int(np.prod(input_shape)),)

    def forward(self, x, training=False, lengths=None):
        x = self._check_input(x)
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._shape)

    def output_lengths(self, lengths):
        return None


class FrameStack(Layer):
    """Subsampling by stacking: ``(B, T, F) -> (B, ceil(T / stride), stride * F)``, each output
    frame the concatenation of ``stride`` consecutive input frames (as in speech
    recognisers, e.g. Sak et al. 2015), so the layers after it run ``stride`` times fewer
    steps.  Lengths follow: a sequence of ``n`` frames becomes ``ceil(n / stride)``; the frames
    past ``n`` inside its last group are zeros (never another sequence's padding values)."""

    def __init__(self, stride=2, **kwargs):
        super().__init__(**kwargs)
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ValueError(f"stride: expected a positive integer, got {stride!r}")
        self.stride = int(stride)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"{self.name}: expected sequence input (T, F), got input shape {input_shape}")
        T, F = input_shape
        return (None if T is None else -(-T // self.stride), F * self.stride)

    def forward(self, x, training=False, lengths=None):
        x = self._check_input(x, ndim=3)
        B, T, F = x.shape
        k = self.stride
        Tk = -(-T // k)
        padded = np.zeros((B, Tk * k, F), self.dtype)
        padded[:, :T] = x if lengths is None else x * time_mask(lengths, T, self.dtype)[:, :, None]
        self._in = (T, lengths)
        self._lengths = None if lengths is None else -(-np.asarray(lengths, np.int64) // k)
        return padded.reshape(B, Tk, k * F)

    def backward(self, dy):
        T, lengths = self._in
        B, Tk, kF = dy.shape
        dx = dy.reshape(B, Tk * self.stride, kF // self.stride)[:, :T]
        if lengths is not None:
            dx = dx * time_mask(lengths, T, self.dtype)[:, :, None]
        return np.ascontiguousarray(dx)

    def output_lengths(self, lengths):
        return None if lengths is None else -(-np.asarray(lengths, np.int64) // self.stride)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


class GlobalAveragePooling1D(Layer):
    """Mean over time of ``(B, T, F)`` -> ``(B, F)``, over the valid steps only when lengths are known."""

    def compute_output_shape(self, input_shape):
        return (input_shape[-1],)

    def forward(self, x, training=False, lengths=None):
        x = self._check_input(x, ndim=3)
        B, T, _ = x.shape
        if lengths is None:
            self._weights = np.full((B, T, 1), 1.0 / T if T else 0.0, self.dtype)
        else:
            counts = np.maximum(np.asarray(lengths), 1).astype(self.dtype)
            self._weights = (time_mask(lengths, T, self.dtype) / counts[:, None])[:, :, None]
        return np.sum(x * self._weights, axis=1)

    def backward(self, dy):
        return dy[:, None, :] * self._weights

    def output_lengths(self, lengths):
        return None


class GlobalMaxPooling1D(Layer):
    """Max over time of ``(B, T, F)`` -> ``(B, F)``, over the valid steps only when lengths are
    known (a sequence of length 0 gives zeros).  The gradient goes to the first maximum."""

    def compute_output_shape(self, input_shape):
        return (input_shape[-1],)

    def forward(self, x, training=False, lengths=None):
        x = self._check_input(x, ndim=3)
        B, T, F = x.shape
        if lengths is not None:
            valid = time_mask(lengths, T, bool)[:, :, None]
            x = np.where(valid, x, -np.inf)
        self._shape = x.shape
        self._arg = np.argmax(x, axis=1) if T else np.zeros((B, F), np.intp)
        out = np.take_along_axis(x, self._arg[:, None, :], axis=1)[:, 0, :] if T else np.zeros((B, F), self.dtype)
        self._empty = ~np.isfinite(out) & (out < 0)
        return np.where(self._empty, 0, out).astype(self.dtype, copy=False)

    def backward(self, dy):
        dx = np.zeros(self._shape, dy.dtype)
        np.put_along_axis(dx, self._arg[:, None, :], np.where(self._empty, 0, dy)[:, None, :], axis=1)
        return dx

    def output_lengths(self, lengths):
        return None


class _AffineMixin:
    """The learned ``gamma * xhat + beta`` step shared by the normalisation layers."""

    def _affine(self, xhat):
        y = xhat * self.params["gamma"] if self.scale else xhat
        return y + self.params["beta"] if self.center else y

    def _affine_backward(self, dy):
        """Stores the gamma/beta gradients; returns the gradient with respect to xhat."""
        axes = tuple(range(dy.ndim - 1))
        if self.center:
            self.grads["beta"] = dy.sum(axis=axes)
        if self.scale:
            self.grads["gamma"] = (dy * self._xhat).sum(axis=axes)
            dy = dy * self.params["gamma"]
        return dy


class LayerNormalization(_AffineMixin, Layer):
    """Normalizes the last axis of each position: ``gamma * (x - mean) / sqrt(var + epsilon) + beta``.
    Weights: ``[gamma (F,), beta (F,)]`` (Keras order)."""

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, **kwargs):
        super().__init__(**kwargs)
        if axis not in (-1,):
            raise ValueError(f"axis: only the last axis (-1) is supported, got {axis!r}")
        self.axis, self.epsilon, self.center, self.scale = -1, float(epsilon), bool(center), bool(scale)

    def expected_weight_shapes(self, input_shape):
        F = input_shape[-1]
        return [(F,)] * (int(self.scale) + int(self.center))

    def _build(self, input_shape, rng):
        F = input_shape[-1]
        if self.scale:
            self.params["gamma"] = np.ones(F, self.dtype)
        if self.center:
            self.params["beta"] = np.zeros(F, self.dtype)

    def forward(self, x, training=False, lengths=None):
        x = self._check_input(x)
        mean = x.mean(axis=-1, keepdims=True)
        xc = x - mean
        self._inv = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + self.dtype.type(self.epsilon))
        self._xhat = xc * self._inv
        return self._affine(self._xhat)

    def backward(self, dy):
        dy = self._affine_backward(dy)
        xhat = self._xhat
        return self._inv * (dy - dy.mean(axis=-1, keepdims=True)
                            - xhat * (dy * xhat).mean(axis=-1, keepdims=True))

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale}


class BatchNormalization(_AffineMixin, Layer):
    """Batch normalization over the last axis (Keras semantics: batch statistics in training,
    moving averages at inference, ``moving = momentum * moving + (1 - momentum) * batch``).
    For ``(B, T, F)`` input with lengths, statistics use the valid steps only.
    Weights: ``[gamma, beta, moving_mean, moving_variance]`` (the last two are not trained).
    In data-parallel training the statistics are those of the global batch: the sums are
    reduced over the ranks (``_reduce``, set by rnnkernels.distributed), forward and backward."""
    _reduce = None

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True, **kwargs):
        super().__init__(**kwargs)
        if axis not in (-1,):
            raise ValueError(f"axis: only the last axis (-1) is supported, got {axis!r}")
        self.axis, self.momentum, self.epsilon = -1, float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)

    def expected_weight_shapes(self, input_shape):
        F = input_shape[-1]
        return [(F,)] * (int(self.scale) + int(self.center) + 2)

    def _build(self, input_shape, rng):
        F = input_shape[-1]
        self.params = {"gamma": np.ones(F, self.dtype), "beta": np.zeros(F, self.dtype)}
        if not self.scale:
            del self.params["gamma"]
        if not self.center:
            del self.params["beta"]
        self.moving_mean = np.zeros(F, self.dtype)
        self.moving_variance = np.ones(F, self.dtype)

    def get_weights(self):
        return [w.copy() for w in self.params.values()] + [self.moving_mean.copy(), self.moving_variance.copy()]

    def set_weights(self, weights):
        weights = self._validate_weights(weights)
        for p, w in zip(list(self.params.values()) + [self.moving_mean, self.moving_variance], weights):
            p[...] = w

    def forward(self, x, training=False, lengths=None):
        x = self._check_input(x)
        eps = self.dtype.type(self.epsilon)
        if training:
            flat = x.reshape(-1, x.shape[-1])
            if lengths is not None and x.ndim == 3:
                w = time_mask(lengths, x.shape[1], self.dtype).reshape(-1, 1)
            else:
                w = np.ones((flat.shape[0], 1), self.dtype)
            count, total = float(w.sum()), (flat * w).sum(axis=0)
            if self._reduce is not None:  # data-parallel: the statistics of the global batch
                count, total = self._reduce(np.array([count]), total)
                count = float(count[0])
            n = max(count, 1.0)
            mean = total / n
            squares = (((flat - mean) ** 2) * w).sum(axis=0)
            if self._reduce is not None:
                squares, = self._reduce(squares)
            var = squares / n
            m = self.dtype.type(self.momentum)
            self.moving_mean[...] = self.moving_mean * m + mean * (1 - m)
            self.moving_variance[...] = self.moving_variance * m + var * (1 - m)
            self._w = w.reshape(x.shape[:-1] + (1,))
            self._n = n
        else:
            mean, var = self.moving_mean, self.moving_variance
        self._training = training
        self._inv = 1.0 / np.sqrt(var + eps)
        self._xhat = (x - mean) * self._inv
        return self._affine(self._xhat)

    def backward(self, dy):
        dy = self._affine_backward(dy)
        if not self._training:
            return dy * self._inv
        # the statistics come from the valid positions (weight w) but every output uses them
        w, n, xhat = self._w, self._n, self._xhat
        axes = tuple(range(dy.ndim - 1))
        sum_dy, sum_dy_xhat = dy.sum(axis=axes), (dy * xhat).sum(axis=axes)
        if self._reduce is not None:
            sum_dy, sum_dy_xhat = self._reduce(sum_dy, sum_dy_xhat)
        mean_dy = sum_dy / n
        mean_dy_xhat = sum_dy_xhat / n
        return self._inv * (dy - w * (mean_dy + xhat * mean_dy_xhat))

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum,
                "epsilon": self.epsilon, "center": self.center, "scale": self.scale}
