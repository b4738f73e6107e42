"""Recurrent layers on the kernels: SimpleRNN, LSTM, GRU and the Bidirectional wrapper.

Data flow: the batch-major input ``(B, T, F)`` is viewed time-major once,
``lengths`` (from Masking or the model) go to the kernel so padded steps cost
nothing, and the kernel's time-major output is viewed batch-major again.

Parameters are kept in the kernels' (PyTorch) layout: ``w_ih (G*U, F)``,
``w_hh (G*U, U)``, ``b_ih``/``b_hh (G*U,)`` with gate orders i,f,g,o (LSTM) and
r,z,n (GRU).  ``get_weights``/``set_weights`` speak Keras's layout and gate
order (LSTM i,f,c,o; GRU z,r,h), converting on the way.
"""
import concurrent.futures
import contextvars
import os
import threading

import numpy as np

from .. import _config, _memory, initializers
from . import _kernels
from .base import Layer, check_rate, check_units


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

_pool = None
_pool_lock = threading.Lock()
_pool_free = threading.Lock()  # held by the caller whose forward direction the worker runs


def _direction_pool():
    """The worker thread that runs a Bidirectional layer's forward direction while the
    calling thread runs the backward one.  One serves the process; a caller that finds it
    busy with another thread's layer runs its two directions itself (see _both_directions)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rnnkernels-direction")
            # its scratch buffers are its own: release_memory() must reach them there
            _memory._worker_scratch[:] = [lambda: _release_worker_scratch(pool)]
            _pool = pool
        return _pool


def _release_worker_scratch(pool):
    try:
        pool.submit(_memory.release_scratch).result()
    except RuntimeError:  # interpreter shutting down: the worker and its buffers are gone
        pass


def _forget_pool_in_child():
    """After fork() the child has the pool object but not its thread: a task submitted
    there would wait forever.  Start afresh (the locks too: another thread may have held
    them at the fork)."""
    global _pool, _pool_lock, _pool_free
    _pool = None
    _pool_lock, _pool_free = threading.Lock(), threading.Lock()
    _memory._worker_scratch.clear()


if hasattr(os, "register_at_fork"):  # no fork() where it is missing (Windows)
    os.register_at_fork(after_in_child=_forget_pool_in_child)


class Bidirectional(Layer):
    """Runs ``layer`` forward and a copy backward over each sequence's valid span (the kernel's
    ``reverse=True`` with lengths, as PyTorch's packed bidirectional RNN), then merges:
    ``merge_mode`` 'concat' (default), 'sum', 'mul' or 'ave'.  With return_sequences the
    backward outputs are aligned with the input time steps.
    Weights: the forward layer's, then the backward layer's (Keras order).

    As Keras's wrapper, it takes ``return_state`` and ``stateful`` from ``layer``:

    - ``return_state=True``: ``forward`` returns ``[output] + forward_states + backward_states``
      (``h, c`` per direction for LSTM, ``h`` for GRU and SimpleRNN), and ``initial_state``
      takes a list in the same order (the first half starts the forward direction, the
      second half the backward one).  ``backward`` then takes ``[doutput, dstates...]``
      (None entries mean zero) and leaves the initial-state gradients, in that order, in
      ``state_grads``.
    - ``stateful=True``: each direction starts a batch from the states it ended the previous
      one with, until :meth:`reset_states`.  As in Keras, the backward direction's carried
      state is where it ended the previous batch, its first time step: splitting a sequence
      into batches gives the forward direction the whole-sequence result, not the backward one.

    A ``backward_layer`` must match ``layer`` in type, units, return_sequences, return_state
    and stateful and have ``go_backwards=True`` (Keras refuses two directions with the same
    ``go_backwards``).

    The two directions are independent, so with two or more threads they run at the same
    time, each on its share of the threads (the kernels release the GIL).  Each kernel gives
    the same bits on any number of threads, so the results are those of one direction after
    the other.  Not while training with ``dropout`` or ``recurrent_dropout``: their masks
    come from one random generator, in a fixed order."""

    def __init__(self, layer, merge_mode="concat", backward_layer=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(layer, _Recurrent):
            raise TypeError(f"layer: expected a SimpleRNN, LSTM or GRU instance, got {type(layer).__name__}")
        if merge_mode not in ("concat", "sum", "mul", "ave"):
            raise ValueError(f"merge_mode: expected 'concat', 'sum', 'mul' or 'ave', got {merge_mode!r}")
        if layer.go_backwards:
            raise ValueError("layer: expected go_backwards=False (Bidirectional runs a go_backwards copy "
                             "of it; Keras refuses two directions with the same go_backwards), got True")
        self.merge_mode = merge_mode
        self.forward_layer = layer
        if backward_layer is None:
            config = layer.get_config()
            config.update(name="backward_" + layer.name, go_backwards=True)
            config.pop("input_shape", None)
            backward_layer = type(layer).from_config(config)
        else:
            if type(backward_layer) is not type(layer):
                raise ValueError(f"backward_layer: expected the type of layer, {type(layer).__name__}, "
                                 f"got {type(backward_layer).__name__}")
            for attr in ("units", "return_sequences", "return_state", "stateful"):
                if getattr(backward_layer, attr) != getattr(layer, attr):
                    raise ValueError(f"backward_layer: expected {attr}={getattr(layer, attr)!r} as layer, "
                                     f"got {getattr(backward_layer, attr)!r}")
            if not backward_layer.go_backwards:
                raise ValueError("backward_layer: expected go_backwards=True (Keras refuses two directions "
                                 "with the same go_backwards), got False")
        self.backward_layer = backward_layer
        if layer.name and not layer.name.startswith("forward_"):
            layer.name = "forward_" + layer.name
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.stateful = layer.stateful
        self.state_grads = None
        if self.declared_input_shape is None and layer.declared_input_shape is not None:
            self.declared_input_shape = layer.declared_input_shape

    @property
    def n_states(self):
        """States per sample: the forward layer's, then the backward layer's."""
        return 2 * self.forward_layer.n_states

    @property
    def states(self):
        """Carried states ``forward_states + backward_states`` (stateful), or None."""
        f, b = self.forward_layer.states, self.backward_layer.states
        return None if f is None or b is None else list(f) + list(b)

    def reset_states(self, states=None):
        """Forget both directions' carried states, or set them to ``states``
        (``forward_states + backward_states``, each ``(batch, units)``)."""
        if states is None:
            self.forward_layer.reset_states()
            self.backward_layer.reset_states()
            return
        states = self._check_states("states", states, None)
        n = self.forward_layer.n_states
        self.forward_layer.reset_states(states[:n])
        self.backward_layer.reset_states(states[n:])

    def _check_states(self, arg, states, B):
        """``states`` as a list of ``n_states`` arrays ``(B, units)`` in the layer's dtype."""
        n, U = self.n_states, self.forward_layer.units
        names = ["h", "c"][:self.forward_layer.n_states]
        order = ", ".join([f"forward {s}" for s in names] + [f"backward {s}" for s in names])
        if not isinstance(states, (list, tuple)) or len(states) != n:
            got = f"{len(states)} arrays" if isinstance(states, (list, tuple)) else type(states).__name__
            raise ValueError(f"{arg}: expected a list of {n} arrays ({order}), got {got}")
        out = []
        for i, s in enumerate(states):
            s = np.asarray(s)
            if s.dtype.kind not in "fiub":
                raise TypeError(f"{arg}[{i}]: expected a numeric array, got dtype {s.dtype}")
            b = s.shape[0] if B is None and s.ndim == 2 else B
            if s.shape != (b, U):
                raise ValueError(f"{arg}[{i}]: expected shape ({'batch' if b is None else b}, {U}), "
                                 f"got {s.shape}")
            out.append(np.array(s, self.dtype or np.float32))
        if B is None and len({s.shape[0] for s in out}) > 1:
            raise ValueError(f"{arg}: expected arrays with one batch size, got {[s.shape for s in out]}")
        return out

    def _build(self, input_shape, rng):
        for layer in (self.forward_layer, self.backward_layer):
            layer.dtype = self.dtype
            layer.build(input_shape, rng, self.dtype)

    def compute_output_shape(self, input_shape):
        shape = self.forward_layer.compute_output_shape(input_shape)
        return shape[:-1] + (2 * shape[-1],) if self.merge_mode == "concat" else shape

    @property
    def params(self):
        p = {}
        for prefix, layer in (("forward/", self.forward_layer), ("backward/", self.backward_layer)):
            p.update({prefix + k: v for k, v in layer.params.items()})
        return p

    @params.setter
    def params(self, value):
        pass  # owned by the two directions

    @property
    def grads(self):
        g = {}
        for prefix, layer in (("forward/", self.forward_layer), ("backward/", self.backward_layer)):
            g.update({prefix + k: v for k, v in layer.grads.items()})
        return g

    @grads.setter
    def grads(self, value):
        pass

    def get_weights(self):
        if not self.built:
            return []
        return self.forward_layer.get_weights() + self.backward_layer.get_weights()

    def weight_shapes(self):
        return self.forward_layer.weight_shapes() + self.backward_layer.weight_shapes()

    def set_weights(self, weights):
        weights = self._validate_weights(weights)
        n = len(self.forward_layer.weight_shapes())
        self.forward_layer.set_weights(weights[:n])
        self.backward_layer.set_weights(weights[n:])

    def forward(self, x, training=False, lengths=None, initial_state=None):
        """``x (B, T, F)`` -> the merged output; with return_state a list
        ``[output] + forward_states + backward_states``.  ``initial_state``: that list of
        states (each ``(B, units)``); without it a stateful layer starts from its carried states."""
        x = self._check_input(x, ndim=3)
        B = x.shape[0]
        fwd, bwd = self.forward_layer, self.backward_layer
        declared = self.batch_size if self.batch_size is not None else fwd.batch_size
        if self.stateful and declared is not None and B != declared:
            raise ValueError(f"{self.name}: stateful layer declared batch_size={declared}, "
                             f"got a batch of {B}")
        if initial_state is not None:
            initial_state = self._check_states("initial_state", initial_state, B)
            n = fwd.n_states
            starts = (initial_state[:n], initial_state[n:])
        else:
            starts = (fwd._initial_states(B, None), bwd._initial_states(B, None))
        x_tm = x.transpose(1, 0, 2)

        def direction(layer, reverse, start):
            y_tm, finals = layer._core_forward(x_tm, lengths, reverse, training, start)
            if self.stateful:
                layer.states = [np.array(f) for f in finals]
            return y_tm, finals

        fwd.rng = bwd.rng = self.rng
        outs, finals_all = [], []
        for y_tm, finals in self._both_directions(
                lambda: direction(fwd, False, starts[0]), lambda: direction(bwd, True, starts[1]),
                training):
            outs.append(y_tm.transpose(1, 0, 2) if self.return_sequences else finals[0])
            finals_all.extend(finals)
        a, b = outs
        self._outs = outs
        if self.merge_mode == "concat":
            out = np.concatenate([a, b], axis=-1)
        elif self.merge_mode == "sum":
            out = a + b
        elif self.merge_mode == "mul":
            out = a * b
        else:
            out = (a + b) * self.dtype.type(0.5)
        return [out] + finals_all if self.return_state else out

    def backward(self, dy):
        """``dy`` like the output (with return_state a list ``[doutput] + dforward_states +
        dbackward_states``; None entries mean zero).  Returns ``dx (B, T, F)``; the initial-state
        gradients (forward's, then backward's) go to ``state_grads``."""
        fwd, bwd = self.forward_layer, self.backward_layer
        n = fwd.n_states
        dstates = ([None] * n, [None] * n)
        if self.return_state:
            if not isinstance(dy, (list, tuple)) or len(dy) != 1 + 2 * n:
                got = f"{len(dy)} entries" if isinstance(dy, (list, tuple)) else type(dy).__name__
                raise ValueError(f"dy: expected a list of {1 + 2 * n} gradients (output, then the "
                                 f"{2 * n} states), got {got}")
            dy, dstates = dy[0], (list(dy[1:1 + n]), list(dy[1 + n:]))
        a, b = self._outs
        U = fwd.units
        if dy is None:
            da = db = None
        elif self.merge_mode == "concat":
            da, db = dy[..., :U], dy[..., U:]
        elif self.merge_mode == "sum":
            da = db = dy
        elif self.merge_mode == "mul":
            da, db = dy * b, dy * a
        else:
            da = db = dy * self.dtype.type(0.5)

        def direction(layer, d, ds):
            dy_tm = None
            if self.return_sequences:
                if d is not None:
                    dy_tm = d.transpose(1, 0, 2)
            elif d is not None:
                ds[0] = d if ds[0] is None else ds[0] + d
            return layer._core_backward(dy_tm, ds)

        (dx_f, ds_f), (dx_b, ds_b) = self._both_directions(
            lambda: direction(fwd, da, dstates[0]), lambda: direction(bwd, db, dstates[1]), True)
        self.state_grads = list(ds_f) + list(ds_b)
        return (dx_f + dx_b).transpose(1, 0, 2)

    def _both_directions(self, forward_task, backward_task, training):
        """``[forward_task(), backward_task()]``, run at the same time when there are two
        threads or more to share and neither direction draws dropout masks."""
        n = _config.get_num_threads()
        draws = training and any(l.dropout > 0 or l.recurrent_dropout > 0
                                 for l in (self.forward_layer, self.backward_layer))
        # The worker busy with another thread's layer: queueing behind it would be slower
        # than running both directions here, as before.
        if n < 2 or draws or not _pool_free.acquire(blocking=False):
            return [forward_task(), backward_task()]
        held = _pool_free
        try:
            def run(share, task):
                with _config.thread_share(share):
                    return task()

            try:  # in the caller's context: np.errstate and other contextvars apply there too
                other = _direction_pool().submit(contextvars.copy_context().run, run, (n + 1) // 2,
                                                 forward_task)
            except RuntimeError:  # interpreter shutting down: no new threads
                return [forward_task(), backward_task()]
            try:
                second = run(n // 2, backward_task)
            except BaseException:
                concurrent.futures.wait([other])  # never leave it running on our arrays
                raise
            return [other.result(), second]
        finally:
            held.release()

    def output_lengths(self, lengths):
        return lengths if self.return_sequences else None

    def get_config(self):
        config = super().get_config()
        config.update(merge_mode=self.merge_mode,
                      layer={"class_name": type(self.forward_layer).__name__,
                             "config": self.forward_layer.get_config()},
                      backward_layer={"class_name": type(self.backward_layer).__name__,
                                      "config": self.backward_layer.get_config()})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        spec, back = config.pop("layer"), config.pop("backward_layer", None)
        layer = _RECURRENT[spec["class_name"]].from_config(spec["config"])
        if back is not None:
            back = _RECURRENT[back["class_name"]].from_config(back["config"])
        return cls(layer, backward_layer=back, **config)
