"""Shared code of the Keras drop-in tests: a keras.layers layer and ours with the same
weights, run on the same inputs, outputs and gradients compared."""
import numpy as np

TOL = {"float64": dict(rtol=1e-9, atol=1e-10), "float32": dict(rtol=2e-4, atol=2e-5)}


def perturbed(weights, rng, scale=0.3):
    """The weights plus noise, so that biases (zeros at initialisation) are non-zero."""
    return [(w + scale * rng.standard_normal(w.shape)).astype(w.dtype) for w in weights]


def right_padded_mask(lengths, T):
    return np.arange(T)[None, :] < np.asarray(lengths)[:, None]


def pair(keras, ours_cls, theirs_cls, x_shape, dtype, rng, **config):
    """(theirs, ours), built on ``x_shape``, ours holding theirs' (perturbed) weights."""
    theirs = theirs_cls(dtype=dtype, **config)
    ours = ours_cls(dtype=dtype, **config)
    theirs.build(x_shape)
    ours.build(x_shape)
    theirs.set_weights(perturbed(theirs.get_weights(), rng))
    ours.set_weights(theirs.get_weights())
    return theirs, ours


def flatten(result):
    return list(result) if isinstance(result, (list, tuple)) else [result]
