"""Recurrent layers on the kernels: SimpleRNN, LSTM and GRU (Bidirectional: bidirectional.py).

Data flow: the batch-major input ``(B, T, F)`` is viewed time-major once,
``lengths`` (from Masking or the model) go to the kernel so padded steps cost
nothing, and the kernel's time-major output is viewed batch-major again.

Parameters are kept in the kernels' (PyTorch) layout: ``w_ih (G*U, F)``,
``w_hh (G*U, P)``, ``b_ih``/``b_hh (G*U,)`` with gate orders i,f,g,o (LSTM) and
r,z,n (GRU), from the cell table (rnnkernels/_core/cells.py); P = U unless the
LSTM projects.  ``get_weights``/``set_weights`` speak Keras's layout and gate
order (LSTM i,f,c,o; GRU z,r,h), converting on the way, with the variants'
weights after Keras's three.

Variants (the kernels compute each; docs/kernel-abi.md has the equations):
``LSTM(projection=P)`` (PyTorch's ``proj_size``), ``LSTM(peephole=True)``,
``LSTM/GRU(layer_norm=True)`` (haste's LayerNormLSTM/GRU), ``zoneout=``
(LSTM: a rate for h and c, or a pair; GRU: a rate), and ``recurrent_dropout``
(one mask per sequence on h_{t-1}, fixed over time, scaled by 1/(1-p), as
Keras 2 and the kernels' ``recurrent_mask``; Keras 3 draws one mask per gate).
"""
import numpy as np

from .. import initializers
from .._core.cells import CELLS
from .._util.validation import check_rate, check_units
from . import _kernels
from .base import Layer


def _reorder_gates(a, perm, units, axis):
    """Blocks of ``units`` along ``axis`` taken in the order ``perm``."""
    return np.concatenate([np.take(a, np.arange(p * units, (p + 1) * units), axis=axis) for p in perm],
                          axis=axis)


class _Recurrent(Layer):
    """Shared machinery of SimpleRNN, LSTM and GRU; ``kind`` names the row of
    the cell table."""
    kind = None          # 'rnn', 'lstm', 'gru'

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
        # variants (set by the subclasses that have them)
        self.projection = None
        self.peephole = False
        self.layer_norm = False
        self.zoneout = 0.0
        self.zoneout_c = 0.0

    # the cell table -------------------------------------------------------
    @property
    def gates(self):
        return CELLS[self.kind].gates

    @property
    def n_states(self):
        return len(CELLS[self.kind].states)

    @property
    def keras_from_internal(self):
        return CELLS[self.kind].keras_from_internal

    @property
    def output_units(self):
        """The size of h and of the outputs: the projection's P, else units."""
        return self.projection or self.units

    def _check_activations(self):
        if self.activation != "tanh":
            raise ValueError(f"activation: the {type(self).__name__} kernel computes tanh; got "
                             f"{self.activation!r}")
        if self.recurrent_activation != "sigmoid":
            raise ValueError(f"recurrent_activation: the {type(self).__name__} kernel computes sigmoid; "
                             f"got {self.recurrent_activation!r}")

    def _check_variants(self):
        """Variants that cannot go together: the kernels' rule (ops names the pair too)."""
        on = [name for name, v in (("projection", self.projection), ("peephole", self.peephole),
                                   ("layer_norm", self.layer_norm),
                                   ("zoneout", self.zoneout or self.zoneout_c)) if v]
        allowed = {frozenset({"projection", "peephole"})}
        for a in on:
            for b in on:
                if a < b and frozenset({a, b}) not in allowed:
                    raise ValueError(f"{a}, {b}: {type(self).__name__} cannot combine these variants; "
                                     "give one of them")

    # weights --------------------------------------------------------------
    def _keras_bias_shape(self):
        return (self.gates * self.units,)

    def _variant_params(self):
        """Names and shapes of the variants' parameters (internal layout)."""
        U, G = self.units, self.gates
        out = []
        if self.projection:
            out.append(("w_hr", (self.projection, U)))
        if self.peephole:
            out += [("w_ci", (U,)), ("w_cf", (U,)), ("w_co", (U,))]
        if self.layer_norm:
            out += [("gamma_ih", (G * U,)), ("gamma_hh", (G * U,))]
            if self.kind == "lstm":
                out += [("gamma_c", (U,)), ("beta_c", (U,))]
        return out

    def _build(self, input_shape, rng):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"{self.name}: expected input shape (timesteps, features) with known "
                             f"features, got {input_shape}")
        F, U, G, P = input_shape[-1], self.units, self.gates, self.output_units
        self.params = {"w_ih": np.zeros((G * U, F), self.dtype), "w_hh": np.zeros((G * U, P), self.dtype)}
        for name in self._bias_names():
            self.params[name] = np.zeros(G * U, self.dtype)
        for name, shape in self._variant_params():
            self.params[name] = np.zeros(shape, self.dtype)
        weights = [self.kernel_initializer((F, G * U), self.dtype, rng),
                   self.recurrent_initializer((P, G * U), self.dtype, rng)]
        if self.use_bias:
            weights.append(self._initial_bias(rng))
        weights += self._initial_variant_weights(rng)
        self._set_keras(weights)

    def _initial_variant_weights(self, rng):
        """Keras-layout initial values of the variants' weights: the projection
        from the kernel initializer, peepholes and LayerNorm biases zero,
        LayerNorm gains one."""
        out = []
        for name, shape in self._variant_params():
            if name == "w_hr":
                out.append(self.kernel_initializer((shape[1], shape[0]), self.dtype, rng))
            elif name.startswith("gamma"):
                out.append(np.ones(shape, self.dtype))
            else:
                out.append(np.zeros(shape, self.dtype))
        return out

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
        """Keras layout: ``[kernel (F, G*U), recurrent_kernel (P, G*U), bias]`` in Keras gate
        order, then the variants' weights (``projection_kernel (U, P)``; the peepholes
        ``(U,)`` of i, f, o; LayerNorm's ``gamma_kernel``, ``gamma_recurrent (G*U,)`` in
        Keras gate order, the LSTM's ``gamma_cell``, ``beta_cell (U,)``); ``[]`` before the
        layer is built, as in Keras."""
        if not self.built:
            return []
        p = self.params
        out = [self._to_keras(p["w_ih"].T, 1), self._to_keras(p["w_hh"].T, 1)]
        if self.use_bias:
            out.append(self._keras_bias())
        for name, _ in self._variant_params():
            if name == "w_hr":
                out.append(p["w_hr"].T.copy())
            elif name in ("gamma_ih", "gamma_hh"):
                out.append(self._to_keras(p[name], 0))
            else:
                out.append(p[name].copy())
        return out

    def _keras_bias(self):
        return self._to_keras(self.params["b_ih"], 0)

    def set_weights(self, weights):
        self._set_keras(self._validate_weights(weights))

    def weight_shapes(self):
        return self.expected_weight_shapes(self.input_shape)

    def expected_weight_shapes(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"{self.name}: expected input shape (timesteps, features) with known "
                             f"features, got {input_shape}")
        F, U, G, P = input_shape[-1], self.units, self.gates, self.output_units
        shapes = [(F, G * U), (P, G * U)] + ([self._keras_bias_shape()] if self.use_bias else [])
        for name, shape in self._variant_params():
            shapes.append((shape[1], shape[0]) if name == "w_hr" else shape)
        return shapes

    def _validate_weights(self, weights):
        if not self.built:
            raise ValueError(f"{self.name}: the layer is not built yet; give input_shape= or call "
                             "it on data before set_weights")
        return super()._validate_weights(weights)

    def _set_keras(self, weights):
        p = self.params
        p["w_ih"][...] = self._to_internal(weights[0], 1).T
        p["w_hh"][...] = self._to_internal(weights[1], 1).T
        k = 2
        if self.use_bias:
            self._set_keras_bias(weights[2])
            k = 3
        for name, _ in self._variant_params():
            w = weights[k]
            k += 1
            if name == "w_hr":
                p["w_hr"][...] = w.T
            elif name in ("gamma_ih", "gamma_hh"):
                p[name][...] = self._to_internal(w, 0)
            else:
                p[name][...] = w

    def _set_keras_bias(self, bias):
        self.params["b_ih"][...] = self._to_internal(bias, 0)

    def compute_output_shape(self, input_shape):
        P = self.output_units
        return (input_shape[0], P) if self.return_sequences else (P,)

    # kernels --------------------------------------------------------------
    def _kernel_options(self):
        """The cell's own ops options (GRU: reset_after; RNN: nonlinearity)."""
        return {}

    def _variant_arguments(self, training, T, B):
        """The ops keyword arguments of this layer's variants for one call, and
        the masks it draws (recurrent dropout, zoneout) from its generator."""
        p = self.params
        kw = {}
        if self.projection:
            kw["w_hr"] = p["w_hr"]
        if self.peephole:
            kw["peephole"] = (p["w_ci"], p["w_cf"], p["w_co"])
        if self.layer_norm:
            names = ("gamma_ih", "gamma_hh", "gamma_c", "beta_c") if self.kind == "lstm" else ("gamma_ih", "gamma_hh")
            kw["layer_norm"] = tuple(p[n] for n in names)
        self._rec_mask = None  # the last call's recurrent-dropout mask, for inspection
        if training and self.recurrent_dropout > 0:
            kw["recurrent_mask"] = self._rec_mask = self._mask(
                (B, self.output_units), self.recurrent_dropout, 0.0, 1.0 / (1.0 - self.recurrent_dropout))
        if self.zoneout or self.zoneout_c:
            if training:  # each unit keeps its previous state with the rate's probability, anew each step
                z_h = self._mask((T, B, self.output_units), self.zoneout, 1.0, 0.0, 1) \
                    if self.zoneout else None
                z_c = self._mask((T, B, self.units), self.zoneout_c, 1.0, 0.0, 1) \
                    if self.kind == "lstm" and self.zoneout_c else None
            else:         # the expectation
                z_h = self.zoneout or None
                z_c = self.zoneout_c or None
            kw["zoneout"] = (z_h, z_c) if self.kind == "lstm" else z_h
        return kw

    def draws_masks(self):
        """Whether a training call draws random masks (dropout, recurrent dropout, zoneout)."""
        return self.dropout > 0 or self.recurrent_dropout > 0 or bool(self.zoneout or self.zoneout_c)

    def _kernel_forward(self, x, states, lengths, reverse, training):
        """-> y (T, B, P), final states list, cache."""
        p = self.params
        forward = getattr(_kernels, f"{self.kind}_forward")
        named = dict(zip(("h0", "c0"), [None] * self.n_states if states is None else states))
        out = forward(x, p["w_ih"], p["w_hh"], p.get("b_ih"), p.get("b_hh"), lengths=lengths, reverse=reverse,
                      training=training, **named, **self._kernel_options(),
                      **self._variant_arguments(training, x.shape[0], x.shape[1]))
        return out[0], list(out[1:-1]), out[-1]

    def _kernel_backward(self, cache, dy, dfinals, input_grad=True):
        """-> kernel gradient dict with 'states' (the initial states' gradients)."""
        g = getattr(_kernels, f"{self.kind}_backward")(cache, dy, *dfinals, input_grad=input_grad)
        g["states"] = [g[f"{s}0"] for s in CELLS[self.kind].states]
        return g

    def _core_forward(self, x_tm, lengths, reverse, training, initial_state):
        """Run the recurrence on time-major ``x_tm (T, B, F)``; returns ``y_tm, finals``."""
        T, B, F = x_tm.shape
        self._dp_mask = None
        if training and self.dropout > 0:
            # Keras: one input mask per sequence, shared by every step (and every gate)
            self._dp_mask = self._mask((B, F), self.dropout, 0.0, 1.0 / (1.0 - self.dropout))
            x_tm = x_tm * self._dp_mask
        y, finals, cache = self._kernel_forward(x_tm, initial_state, lengths, reverse, training)
        self._cache = cache if training else None
        return y, finals

    def _core_backward(self, dy_tm, dfinals, input_grad=True):
        """Backward of the last training ``_core_forward``; returns ``dx_tm, dstates``
        (dx_tm None without ``input_grad``)."""
        if self._cache is None:
            raise ValueError(f"{self.name}: backward needs a forward pass with training=True first")
        grads = self._kernel_backward(self._cache, dy_tm, dfinals, input_grad)
        for key in self.params:
            self.grads[key] = grads[key]
        dx = grads["x"]
        if dx is not None and self._dp_mask is not None:
            dx = dx * self._dp_mask
        return dx, grads["states"]

    # layer protocol -------------------------------------------------------
    def _state_sizes(self):
        return [self.output_units, self.units][:self.n_states]

    def _initial_states(self, B, initial_state):
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)):
                initial_state = [initial_state]
            if len(initial_state) != self.n_states:
                raise ValueError(f"initial_state: expected {self.n_states} arrays of shapes "
                                 f"{[(B, n) for n in self._state_sizes()]}, got {len(initial_state)}")
            return [np.asarray(s, self.dtype) for s in initial_state]
        if self.stateful and self.states is not None:
            if self.states[0].shape[0] != B:
                raise ValueError(f"{self.name}: stateful layer holds states for batch size "
                                 f"{self.states[0].shape[0]}, got a batch of {B}; use a fixed "
                                 "batch_size that divides the data, or call reset_states()")
            return self.states
        return None

    def forward(self, x, training=False, lengths=None, initial_state=None):
        """``x (B, T, F)`` -> ``(B, T, P)`` with return_sequences, else ``(B, P)``;
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
        dx_tm, self.state_grads = self._core_backward(dy_tm, dstates, self.needs_input_grad)
        return None if dx_tm is None else dx_tm.transpose(1, 0, 2)

    def output_lengths(self, lengths):
        return lengths if self.return_sequences else None

    def reset_states(self, states=None):
        """Forget the carried states (stateful layers), or set them to ``states``."""
        if states is None:
            self.states = None
            return
        states = states if isinstance(states, (list, tuple)) else [states]
        sizes = self._state_sizes()
        if len(states) != self.n_states:
            raise ValueError(f"states: expected {self.n_states} arrays of shapes "
                             f"{[('batch', n) for n in sizes]}, got {len(states)}")
        out = []
        for i, (s, n) in enumerate(zip(states, sizes)):
            s = np.asarray(s)
            if s.dtype.kind not in "fiub":
                raise TypeError(f"states[{i}]: expected a numeric array, got dtype {s.dtype}")
            B = out[0].shape[0] if out else (self.batch_size or (s.shape[0] if s.ndim == 2 else 1))
            if s.shape != (B, n) or B < 1:
                raise ValueError(f"states[{i}]: expected shape ({B}, {n}) for {self.name} "
                                 f"({n} units, batch {B}), got {s.shape}")
            s = np.array(s, self.dtype or np.float32)
            if not np.isfinite(s).all():
                raise ValueError(f"states[{i}]: expected finite values, got NaN or infinity")
            out.append(s)
        self.states = out

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


def _zoneout_rate(name, value):
    return check_rate(name, value) if value is not None else 0.0


class SimpleRNN(_Recurrent):
    """Fully connected recurrence ``h' = activation(x W + h U + b)``; ``activation`` tanh or relu.
    Weights: ``[kernel (F, U), recurrent_kernel (U, U), bias (U,)]``."""
    kind = "rnn"

    def __init__(self, units, activation="tanh", **kwargs):
        super().__init__(units, activation=activation, **kwargs)

    def _check_activations(self):
        if self.activation not in ("tanh", "relu"):
            raise ValueError(f"activation: SimpleRNN supports 'tanh' or 'relu', got {self.activation!r}")

    def _kernel_options(self):
        return {"nonlinearity": self.activation}

    def get_config(self):
        config = super().get_config()
        del config["recurrent_activation"]
        return config


class LSTM(_Recurrent):
    """Long short-term memory.  Weights (Keras): ``[kernel (F, 4U), recurrent_kernel (P, 4U),
    bias (4U,)]``, gates i, f, c, o, then the variants' (see get_weights);
    ``unit_forget_bias`` starts the forget-gate bias at 1.

    Variants: ``projection=P`` (h = W_hr (o tanh c), P outputs: PyTorch's ``proj_size``,
    LSTMP), ``peephole=True`` (i, f see c_{t-1}, o sees c_t), ``layer_norm=True``
    (LayerNorm LSTM), ``zoneout`` (a rate for h and c, or a pair ``(z_h, z_c)``).
    Projection and peephole combine; the others stand alone."""
    kind = "lstm"

    def __init__(self, units, unit_forget_bias=True, projection=None, peephole=False, layer_norm=False,
                 zoneout=0.0, **kwargs):
        super().__init__(units, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.projection = None if projection is None else check_units(projection, "projection")
        self.peephole = bool(peephole)
        self.layer_norm = bool(layer_norm)
        if isinstance(zoneout, (tuple, list)):
            if len(zoneout) != 2:
                raise ValueError(f"zoneout: expected a rate or a pair (z_h, z_c), got {zoneout!r}")
            self.zoneout = _zoneout_rate("zoneout[0]", zoneout[0])
            self.zoneout_c = _zoneout_rate("zoneout[1]", zoneout[1])
        else:
            self.zoneout = self.zoneout_c = _zoneout_rate("zoneout", zoneout)
        self._check_variants()

    def _initial_bias(self, rng):
        bias = super()._initial_bias(rng)
        if self.unit_forget_bias:
            U = self.units
            bias[:U] = self.bias_initializer((U,), self.dtype, rng)
            bias[U:2 * U] = 1.0
            bias[2 * U:] = self.bias_initializer((2 * U,), self.dtype, rng)
        return bias

    def get_config(self):
        config = {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}
        if self.projection:
            config["projection"] = self.projection
        if self.peephole:
            config["peephole"] = True
        if self.layer_norm:
            config["layer_norm"] = True
        if self.zoneout or self.zoneout_c:
            config["zoneout"] = [self.zoneout, self.zoneout_c]
        return config


class GRU(_Recurrent):
    """Gated recurrent unit.  Weights (Keras): ``[kernel (F, 3U), recurrent_kernel (U, 3U), bias]``
    with gates z, r, h; bias ``(2, 3U)`` (input and recurrent biases) when ``reset_after=True``
    (Keras's default, PyTorch's equations), ``(3U,)`` when ``reset_after=False``.

    Variants: ``layer_norm=True`` (LayerNorm GRU, reset_after only), ``zoneout`` (a rate)."""
    kind = "gru"

    def __init__(self, units, reset_after=True, layer_norm=False, zoneout=0.0, **kwargs):
        self.reset_after = bool(reset_after)
        super().__init__(units, **kwargs)
        self.layer_norm = bool(layer_norm)
        if self.layer_norm and not self.reset_after:
            raise ValueError("layer_norm: the LayerNorm GRU has reset_after=True equations; got reset_after=False")
        self.zoneout = _zoneout_rate("zoneout", zoneout)
        self._check_variants()

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

    def _kernel_options(self):
        return {"reset_after": self.reset_after}

    def get_config(self):
        config = {**super().get_config(), "reset_after": self.reset_after}
        if self.layer_norm:
            config["layer_norm"] = True
        if self.zoneout:
            config["zoneout"] = self.zoneout
        return config


_RECURRENT = {cls.__name__: cls for cls in (SimpleRNN, LSTM, GRU)}
assert {cls.kind for cls in _RECURRENT.values()} == set(CELLS)  # a layer for every cell of the table
