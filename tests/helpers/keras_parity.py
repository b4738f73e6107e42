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


def run(layer, x, weights_of, mask=None, initial_state=None, training=False, graph=False, seed=7):
    """Outputs of ``layer(x)`` and the gradients of a random projection of all of them with
    respect to x, the initial states (if given) and the layer's weights; TensorFlow backend
    (GradientTape)."""
    import tensorflow as tf
    x = tf.constant(x)
    init = None if initial_state is None else [tf.constant(s) for s in initial_state]
    kwargs = {} if mask is None else {"mask": tf.constant(mask)}

    def body(x, init):
        with tf.GradientTape() as tape:
            tape.watch(x)
            if init is not None:
                tape.watch(init)
            outs = flatten(layer(x, initial_state=init, training=training, **kwargs))
            loss = 0
            for k, o in enumerate(outs):
                w = tf.constant(np.random.default_rng(seed + k).standard_normal(o.shape), o.dtype)
                loss += tf.reduce_sum(w * o)
        sources = [x] + ([] if init is None else list(init)) + list(weights_of(layer))
        return outs, tape.gradient(loss, sources)

    if graph:
        body = tf.function(body)
    outs, grads = body(x, init)
    return [o.numpy() for o in outs], [g.numpy() for g in grads]
