"""Weight initializers with Keras's names and defaults.

Every initializer is a callable ``init(shape, dtype, rng) -> ndarray`` where
``rng`` is a :class:`numpy.random.Generator`, so a model's seed alone decides
its initial weights.  Shapes are Keras's (``kernel (fan_in, fan_out)``); layers
convert to their internal layout afterwards.
"""
import numpy as np

__all__ = ["Initializer", "Zeros", "Ones", "Constant", "GlorotUniform", "GlorotNormal",
           "HeUniform", "HeNormal", "LecunUniform", "LecunNormal", "RandomUniform",
           "RandomNormal", "Orthogonal", "get", "serialize"]


def _fans(shape):
    if len(shape) < 1:
        raise ValueError(f"shape: expected at least 1 dimension, got {shape}")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Base class; subclasses implement ``__call__(shape, dtype, rng)``."""

    def get_config(self):
        return {}

    def __call__(self, shape, dtype, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    def __call__(self, shape, dtype, rng):
        return np.zeros(shape, dtype)


class Ones(Initializer):
    def __call__(self, shape, dtype, rng):
        return np.ones(shape, dtype)


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = float(value)

    def get_config(self):
        return {"value": self.value}

    def __call__(self, shape, dtype, rng):
        return np.full(shape, self.value, dtype)


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05):
        self.minval, self.maxval = float(minval), float(maxval)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval}

    def __call__(self, shape, dtype, rng):
        return rng.uniform(self.minval, self.maxval, size=shape).astype(dtype)


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05):
        self.mean, self.stddev = float(mean), float(stddev)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev}

    def __call__(self, shape, dtype, rng):
        return rng.normal(self.mean, self.stddev, size=shape).astype(dtype)


class _VarianceScaling(Initializer):
    """Keras's VarianceScaling: uniform or truncated normal with variance scale/fan."""
    scale, mode, distribution = 1.0, "fan_avg", "uniform"

    def __call__(self, shape, dtype, rng):
        fan_in, fan_out = _fans(tuple(shape))
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        variance = self.scale / max(1.0, fan)
        if self.distribution == "uniform":
            limit = np.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, size=shape).astype(dtype)
        # truncated normal at 2 stddev; 0.8796... is the stddev of a unit normal truncated there
        stddev = np.sqrt(variance) / 0.87962566103423978
        out = rng.normal(0.0, 1.0, size=shape)
        bad = np.abs(out) > 2.0
        while bad.any():
            out[bad] = rng.normal(0.0, 1.0, size=int(bad.sum()))
            bad = np.abs(out) > 2.0
        return (out * stddev).astype(dtype)


class GlorotUniform(_VarianceScaling):
    pass


class GlorotNormal(_VarianceScaling):
    distribution = "normal"


class HeUniform(_VarianceScaling):
    scale, mode = 2.0, "fan_in"


class HeNormal(_VarianceScaling):
    scale, mode, distribution = 2.0, "fan_in", "normal"


class LecunUniform(_VarianceScaling):
    mode = "fan_in"


class LecunNormal(_VarianceScaling):
    mode, distribution = "fan_in", "normal"


class Orthogonal(Initializer):
    """Orthogonal matrix (QR of a Gaussian matrix, sign-corrected), times ``gain``."""

    def __init__(self, gain=1.0):
        self.gain = float(gain)

    def get_config(self):
        return {"gain": self.gain}

    def __call__(self, shape, dtype, rng):
        shape = tuple(shape)
        if len(shape) < 2:
            raise ValueError(f"Orthogonal: expected a shape with at least 2 dimensions, got {shape}")
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        a = rng.normal(0.0, 1.0, size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (self.gain * q[:rows, :cols]).reshape(shape).astype(dtype)


_BY_NAME = {
    "zeros": Zeros, "ones": Ones, "constant": Constant,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform, "he_normal": HeNormal,
    "lecun_uniform": LecunUniform, "lecun_normal": LecunNormal,
    "random_uniform": RandomUniform, "random_normal": RandomNormal,
    "orthogonal": Orthogonal,
}
_NAME_OF = {cls: name for name, cls in _BY_NAME.items()}


def get(identifier, argument="initializer"):
    """An initializer from a name (``'glorot_uniform'``), a config dict, an
    :class:`Initializer` or any callable ``(shape, dtype, rng)``."""
    if isinstance(identifier, Initializer) or (callable(identifier) and not isinstance(identifier, type)):
        return identifier
    if isinstance(identifier, dict):
        name, config = identifier.get("class_name"), identifier.get("config", {})
    else:
        name, config = identifier, {}
    if isinstance(name, str):
        key = name if name in _BY_NAME else {cls.__name__: n for n, cls in _BY_NAME.items()}.get(name)
        if key is not None:
            return _BY_NAME[key](**config)
    raise ValueError(f"{argument}: expected one of {sorted(_BY_NAME)} or an Initializer, got {identifier!r}")


def serialize(init):
    """JSON-able description of ``init`` (only built-in initializers can be saved)."""
    if type(init) not in _NAME_OF:
        raise ValueError(f"initializer: cannot save custom initializer {init!r}; use a built-in one")
    return {"class_name": _NAME_OF[type(init)], "config": init.get_config()}
