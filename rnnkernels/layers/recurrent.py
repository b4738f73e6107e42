"""Recurrent layers on the kernels: SimpleRNN, LSTM and GRU (Bidirectional: bidirectional.py).

Data flow: the batch-major input ``(B, T, F)`` is viewed time-major once,
``lengths`` (from Masking or the model) go to the kernel so padded steps cost
nothing, and the kernel's time-major output is viewed batch-major again.

Parameters are kept in the kernels' (PyTorch) layout: ``w_ih (G*U, F)``,
``w_hh (G*U, U)``, ``b_ih``/``b_hh (G*U,)`` with gate orders i,f,g,o (LSTM) and
r,z,n (GRU).  ``get_weights``/``set_weights`` speak Keras's layout and gate
order (LSTM i,f,c,o; GRU z,r,h), converting on the way.
"""
import numpy as np

from .. import initializers
from . import _kernels
from .._util.validation import check_rate, check_units
from .base import Layer


def _reorder_gates(a, perm, units, axis):
    """Blocks of ``units`` along ``axis`` taken in the order ``perm``."""
    return np.concatenate([np.take(a, np.arange(p * units, (p + 1) * units), axis=axis) for p in perm],
                          axis=axis)


class _Recurrent(Layer):
    """Shared machinery of SimpleRNN, LSTM and GRU."""
    kind = None          # 'rnn', 'lstm', 'gru'
    gates = 1
    n_states = 1
    #: keras gate block feeding each internal gate block (internal order)
    keras_from_internal = (0,)

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", dropout=0.0, recurrent_dropout=0.0,
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, **kwargs):
        super().__init__(**kwargs)
        self.units = check_units(units)
        self.activation = activation
        self.recurrent_activation = recurrent_activation
        self._check_activations()
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer, "kernel_initializer")
        self.recurrent_initializer = initializers.get(recurrent_initializer, "recurrent_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "bias_initializer")
        self.dropout = check_rate("dropout", dropout)
        self.recurrent_dropout = check_rate("recurrent_dropout", recurrent_dropout)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)  # accepted for Keras compatibility; the kernels never unroll
        self.states = None
        self._cache = None

    def _check_activations(self):
        if self.activation != "tanh":
            raise ValueError(f"activation: the {type(self).__name__} kernel computes tanh; got "
                             f"{self.activation!r}")
        if self.recurrent_activation != "sigmoid":
            raise ValueError(f"recurrent_activation: the {type(self).__name__} kernel computes sigmoid; "
                             f"got {self.recurrent_activation!r}")

    # weights --------------------------------------------------------------
    def _keras_bias_shape(self):
        return (self.gates * self.units,)

    def _build(self, input_shape, rng):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"{self.name}: expected input shape (timesteps, features) with known "
                             f"features, got {input_shape}")
        F, U, G = input_shape[-1], self.units, self.gates
        self.params = {"w_ih": np.zeros((G * U, F), self.dtype), "w_hh": np.zeros((G * U, U), self.dtype)}
        for name in self._bias_names():
            self.params[name] = np.zeros(G * U, self.dtype)
        weights = [self.kernel_initializer((F, G * U), self.dtype, rng),
                   self.recurrent_initializer((U, G * U), self.dtype, rng)]
        if self.use_bias:
            weights.append(self._initial_bias(rng))
        self._set_keras(weights)

    def _bias_names(self):
        return ("b_ih",) if self.use_bias else ()

    def _initial_bias(self, rng):
        return self.bias_initializer(self._keras_bias_shape(), self.dtype, rng)

    def _to_internal(self, a, axis):
        return _reorder_gates(a, self.keras_from_internal, self.units, axis)

    def _to_keras(self, a, axis):
        inverse = np.argsort(self.keras_from_internal)
        return _reorder_gates(a, inverse, self.units, axis)

    def get_weights(self):
        """Keras layout: ``[kernel (F, G*U), recurrent_kernel (U, G*U), bias]`` in Keras gate
        order; ``[]`` before the layer is built, as in Keras."""
        if not self.built:
            return []
        p = self.params
        out = [self._to_keras(p["w_ih"].T, 1), self._to_keras(p["w_hh"].T, 1)]
        if self.use_bias:
            out.append(self._keras_bias())
        return out

    def _keras_bias(self):
        return self._to_keras(self.params["b_ih"], 0)

    def set_weights(self, weights):
        self._set_keras(self._validate_weights(weights))

    def weight_shapes(self):
        F, U, G = self.input_shape[-1], self.units, self.gates
        return [(F, G * U), (U, G * U)] + ([self._keras_bias_shape()] if self.use_bias else [])

    def _validate_weights(self, weights):
        if not self.built:
            raise ValueError(f"{self.name}: the layer is not built yet; give input_shape= or call "
                             "it on data before set_weights")
        return super()._validate_weights(weights)

    def _set_keras(self, weights):
        p = self.params
        p["w_ih"][...] = self._to_internal(weights[0], 1).T
        p["w_hh"][...] = self._to_internal(weights[1], 1).T
        if self.use_bias:
            self._set_keras_bias(weights[2])

    def _set_keras_bias(self, bias):
        self.params["b_ih"][...] = self._to_internal(bias, 0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units) if self.return_sequences else (self.units,)

    # kernels --------------------------------------------------------------
    def _kernel_forward(self, x, p, states, lengths, reverse, training):
        """-> y (T, B, U), final states list, cache."""
        raise NotImplementedError

    def _kernel_backward(self, cache, dy, dfinals):
        """-> kernel gradient dict with 'states' (list of initial-state gradients)."""
        raise NotImplementedError

    def _core_forward(self, x_tm, lengths, reverse, training, initial_state):
        """Run the recurrence on time-major ``x_tm (T, B, F)``; returns ``y_tm, finals``."""
        T, B, F = x_tm.shape
        rng = self._random()
        self._dp_mask = None
        if training and self.dropout > 0:
            # Keras: one input mask per sequence, shared by every step (and every gate)
            self._dp_mask = ((rng.random((B, F)) >= self.dropout).astype(self.dtype)
                             * self.dtype.type(1.0 / (1.0 - self.dropout)))
            x_tm = x_tm * self._dp_mask
        p = {k: v for k, v in self.params.items()}
        self._rec_mask = None
        if training and self.recurrent_dropout > 0:
            # Keras multiplies h_{t-1} by a per-sequence mask m before the recurrent matmul:
            # W_hh (m * h) = (W_hh * m) h, so each sequence runs with its own masked W_hh.
            U = self.units
            self._rec_mask = ((rng.random((B, U)) >= self.recurrent_dropout).astype(self.dtype)
                              * self.dtype.type(1.0 / (1.0 - self.recurrent_dropout)))
            ys, finals, caches = [], [], []
            for b in range(B):
                pb = dict(p, w_hh=p["w_hh"] * self._rec_mask[b])
                sb = None if initial_state is None else [s[b:b + 1] for s in initial_state]
                lb = None if lengths is None else lengths[b:b + 1]
                yb, fb, cb = self._kernel_forward(x_tm[:, b:b + 1], pb, sb, lb, reverse, True)
                ys.append(yb)
                finals.append(fb)
                caches.append(cb)
            y = np.concatenate(ys, axis=1)
            finals = [np.concatenate([f[k] for f in finals], axis=0) for k in range(self.n_states)]
            self._cache = caches
            return y, finals
        y, finals, cache = self._kernel_forward(x_tm, p, initial_state, lengths, reverse, training)
        self._cache = cache if training else None
        return y, finals

    def _core_backward(self, dy_tm, dfinals):
        """Backward of the last training ``_core_forward``; returns ``dx_tm, dstates``."""
        if self._cache is None:
            raise ValueError(f"{self.name}: backward needs a forward pass with training=True first")
        if self._rec_mask is not None:
            grads_b = []
            for b, cache in enumerate(self._cache):
                dyb = None if dy_tm is None else dy_tm[:, b:b + 1]
                dfb = [None if d is None else d[b:b + 1] for d in dfinals]
                g = self._kernel_backward(cache, dyb, dfb)
                g["w_hh"] = g["w_hh"] * self._rec_mask[b]
                grads_b.append(g)
            grads = {}
            for key in self.params:
                total = grads_b[0][key].copy()
                for g in grads_b[1:]:  # fixed order: deterministic
                    total += g[key]
                grads[key] = total
            grads["x"] = np.concatenate([g["x"] for g in grads_b], axis=1)
            grads["states"] = [np.concatenate([g["states"][k] for g in grads_b], axis=0)
                               for k in range(self.n_states)]
        else:
            grads = self._kernel_backward(self._cache, dy_tm, dfinals)
        for key in self.params:
            self.grads[key] = grads[key]
        dx = grads["x"]
        if self._dp_mask is not None:
            dx = dx * self._dp_mask
        return dx, grads["states"]

    # layer protocol -------------------------------------------------------
    def _initial_states(self, B, initial_state):
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)):
                initial_state = [initial_state]
            if len(initial_state) != self.n_states:
                raise ValueError(f"initial_state: expected {self.n_states} arrays of shape ({B}, "
                                 f"{self.units}), got {len(initial_state)}")
            return [np.asarray(s, self.dtype) for s in initial_state]
        if self.stateful and self.states is not None:
            if self.states[0].shape[0] != B:
                raise ValueError(f"{self.name}: stateful layer holds states for batch size "
                                 f"{self.states[0].shape[0]}, got a batch of {B}; use a fixed "
                                 "batch_size that divides the data, or call reset_states()")
            return self.states
        return None

    def forward(self, x, training=False, lengths=None, initial_state=None):
        """``x (B, T, F)`` -> ``(B, T, U)`` with return_sequences, else ``(B, U)``;
        with return_state a list ``[output, h_n(, c_n)]``."""
        x = self._check_input(x, ndim=3)
        B = x.shape[0]
        if self.stateful and self.batch_size is not None and B != self.batch_size:
            raise ValueError(f"{self.name}: stateful layer declared batch_size={self.batch_size}, "
                             f"got a batch of {B}")
        states = self._initial_states(B, initial_state)
        y_tm, finals = self._core_forward(x.transpose(1, 0, 2), lengths, self.go_backwards,
                                          training, states)
        if self.stateful:
            self.states = [np.array(f) for f in finals]
        if self.return_sequences:
            out = y_tm.transpose(1, 0, 2)
            # Keras's go_backwards returns the outputs in processing order (reversed time)
            out = np.ascontiguousarray(out[:, ::-1] if self.go_backwards else out)
        else:
            out = finals[0]
        return [out] + list(finals) if self.return_state else out

    def backward(self, dy):
        """``dy`` like the output (a list ``[dout, dh_n(, dc_n)]`` with return_state; None entries
        mean zero).  Returns ``dx (B, T, F)``; initial-state gradients go to ``state_grads``."""
        dstates = [None] * self.n_states
        if self.return_state:
            dy, dstates = dy[0], list(dy[1:])
        dy_tm = None
        if self.return_sequences:
            if dy is not None:
                dy_tm = (dy[:, ::-1] if self.go_backwards else dy).transpose(1, 0, 2)
        elif dy is not None:
            dstates[0] = dy if dstates[0] is None else dstates[0] + dy
        dx_tm, self.state_grads = self._core_backward(dy_tm, dstates)
        return dx_tm.transpose(1, 0, 2)

    def output_lengths(self, lengths):
        return lengths if self.return_sequences else None

    def reset_states(self, states=None):
        """Forget the carried states (stateful layers), or set them to ``states``."""
        if states is None:
            self.states = None
        else:
            states = states if isinstance(states, (list, tuple)) else [states]
            self.states = [np.array(s, self.dtype) for s in states]

    def get_config(self):
        config = {**super().get_config(), "units": self.units, "activation": self.activation,
                  "recurrent_activation": self.recurrent_activation, "use_bias": self.use_bias,
                  "kernel_initializer": initializers.serialize(self.kernel_initializer),
                  "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
                  "bias_initializer": initializers.serialize(self.bias_initializer),
                  "dropout": self.dropout, "recurrent_dropout": self.recurrent_dropout,
                  "return_sequences": self.return_sequences, "return_state": self.return_state,
                  "go_backwards": self.go_backwards, "stateful": self.stateful}
        return config


class SimpleRNN(_Recurrent):
    """Fully connected recurrence ``h' = activation(x W + h U + b)``; ``activation`` tanh or relu.
    Weights: ``[kernel (F, U), recurrent_kernel (U, U), bias (U,)]``."""
    kind = "rnn"

    def __init__(self, units, activation="tanh", **kwargs):
        super().__init__(units, activation=activation, **kwargs)

    def _check_activations(self):
        if self.activation not in ("tanh", "relu"):
            raise ValueError(f"activation: SimpleRNN supports 'tanh' or 'relu', got {self.activation!r}")

    def get_config(self):
        config = super().get_config()
        del config["recurrent_activation"]
        return config

    def _kernel_forward(self, x, p, states, lengths, reverse, training):
        h0 = None if states is None else states[0]
        y, h, cache = _kernels.rnn_forward(x, p["w_ih"], p["w_hh"], p.get("b_ih"), p.get("b_hh"), h0=h0,
                                           lengths=lengths, reverse=reverse, nonlinearity=self.activation,
                                           training=training)
        return y, [h], cache

    def _kernel_backward(self, cache, dy, dfinals):
        g = _kernels.rnn_backward(cache, dy, dh_n=dfinals[0])
        g["states"] = [g["h0"]]
        return g


class LSTM(_Recurrent):
    """Long short-term memory.  Weights (Keras): ``[kernel (F, 4U), recurrent_kernel (U, 4U),
    bias (4U,)]``, gates i, f, c, o; ``unit_forget_bias`` starts the forget-gate bias at 1."""
    kind = "lstm"
    gates = 4
    n_states = 2
    keras_from_internal = (0, 1, 2, 3)  # i,f,c,o == i,f,g,o

    def __init__(self, units, unit_forget_bias=True, **kwargs):
        super().__init__(units, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _initial_bias(self, rng):
        bias = super()._initial_bias(rng)
        if self.unit_forget_bias:
            U = self.units
            bias[:U] = self.bias_initializer((U,), self.dtype, rng)
            bias[U:2 * U] = 1.0
            bias[2 * U:] = self.bias_initializer((2 * U,), self.dtype, rng)
        return bias

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}

    def _kernel_forward(self, x, p, states, lengths, reverse, training):
        h0, c0 = (None, None) if states is None else states
        y, h, c, cache = _kernels.lstm_forward(x, p["w_ih"], p["w_hh"], p.get("b_ih"), p.get("b_hh"),
                                               h0=h0, c0=c0, lengths=lengths, reverse=reverse,
                                               training=training)
        return y, [h, c], cache

    def _kernel_backward(self, cache, dy, dfinals):
        g = _kernels.lstm_backward(cache, dy, dh_n=dfinals[0], dc_n=dfinals[1])
        g["states"] = [g["h0"], g["c0"]]
        return g


class GRU(_Recurrent):
    """Gated recurrent unit.  Weights (Keras): ``[kernel (F, 3U), recurrent_kernel (U, 3U), bias]``
    with gates z, r, h; bias ``(2, 3U)`` (input and recurrent biases) when ``reset_after=True``
    (Keras's default, PyTorch's equations), ``(3U,)`` when ``reset_after=False``."""
    kind = "gru"
    gates = 3
    keras_from_internal = (1, 0, 2)  # internal r,z,n <- keras z,r,h

    def __init__(self, units, reset_after=True, **kwargs):
        self.reset_after = bool(reset_after)
        super().__init__(units, **kwargs)

    def _bias_names(self):
        if not self.use_bias:
            return ()
        return ("b_ih", "b_hh") if self.reset_after else ("b_ih",)

    def _keras_bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _keras_bias(self):
        if not self.reset_after:
            return super()._keras_bias()
        return np.stack([self._to_keras(self.params["b_ih"], 0), self._to_keras(self.params["b_hh"], 0)])

    def _set_keras_bias(self, bias):
        if not self.reset_after:
            return super()._set_keras_bias(bias)
        self.params["b_ih"][...] = self._to_internal(bias[0], 0)
        self.params["b_hh"][...] = self._to_internal(bias[1], 0)

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}

    def _kernel_forward(self, x, p, states, lengths, reverse, training):
        h0 = None if states is None else states[0]
        y, h, cache = _kernels.gru_forward(x, p["w_ih"], p["w_hh"], p.get("b_ih"), p.get("b_hh"), h0=h0,
                                           lengths=lengths, reverse=reverse, reset_after=self.reset_after,
                                           training=training)
        return y, [h], cache

    def _kernel_backward(self, cache, dy, dfinals):
        g = _kernels.gru_backward(cache, dy, dh_n=dfinals[0])
        g["states"] = [g["h0"]]
        return g


_RECURRENT = {cls.__name__: cls for cls in (SimpleRNN, LSTM, GRU)}

