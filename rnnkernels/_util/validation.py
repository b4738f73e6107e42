"""Argument checks shared by the Python layers above the kernels (layers,
models, training, audio).  Each raises a ``TypeError`` or ``ValueError`` that
names the argument, what was expected and what came.

``rnnkernels.ops`` and ``rnnkernels.reference`` keep validation of their own
on purpose: each checks the other, so they share no code.
"""
import math

import numpy as np


def check_positive_int(name, value):
    """``value`` as an int >= 1 (bools and non-integers are a TypeError)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    return int(value)


def check_rate(name, rate):
    """A dropout-like rate: a float in [0, 1)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a float in [0, 1), got {type(rate).__name__}")
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name}: expected a float in [0, 1), got {rate}")
    return rate


def check_units(units, name="units"):
    if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
        raise ValueError(f"{name}: expected a positive integer, got {units!r}")
    return int(units)


def check_finite_number(name, value, minimum=None, allow_equal=True):
    """A real, finite number (optionally >= or > ``minimum``), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or (minimum is not None and (value < minimum or
                                                             (not allow_equal and value == minimum))):
        bound = "" if minimum is None else f" {'>=' if allow_equal else '>'} {minimum:g}"
        raise ValueError(f"{name}: expected a finite number{bound}, got {value!r}")
    return value


def check_lengths(lengths, n, max_length=None, argument="lengths"):
    """``lengths`` as int64 ``(n,)`` with values in ``[0, max_length]`` (no
    upper bound when ``max_length`` is None)."""
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu" or arr.shape != (n,):
        raise ValueError(f"{argument}: expected an integer array of shape ({n},), got "
                         f"dtype {arr.dtype} shape {arr.shape}")
    if arr.size and (arr.min() < 0 or (max_length is not None and arr.max() > max_length)):
        upper = "" if max_length is None else f", {max_length}"
        raise ValueError(f"{argument}: expected values in [0{upper}], got min "
                         f"{arr.min()} max {arr.max()}")
    return arr.astype(np.int64)


def check_finite(argument, a, lengths=None):
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
