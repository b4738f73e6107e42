"""The Bidirectional wrapper: a recurrent layer run forward and a copy run
backward over each sequence's valid span, the outputs merged."""
import numpy as np

from .._core.pair import run_pair
from .._util.keyed_random import KeyedRandom
from .base import Layer
from .recurrent import _RECURRENT, _Recurrent


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
            for attr in ("units", "output_units", "return_sequences", "return_state", "stateful"):
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
        """``states`` as a list of ``n_states`` arrays ``(B, size)`` in the layer's dtype (h's
        size is the direction's output units, c's its units)."""
        n, sizes = self.n_states, self.forward_layer._state_sizes() * 2
        names = ["h", "c"][:self.forward_layer.n_states]
        order = ", ".join([f"forward {s}" for s in names] + [f"backward {s}" for s in names])
        if not isinstance(states, (list, tuple)) or len(states) != n:
            got = f"{len(states)} arrays" if isinstance(states, (list, tuple)) else type(states).__name__
            raise ValueError(f"{arg}: expected a list of {n} arrays ({order}), got {got}")
        out = []
        for i, s in enumerate(states):
            U = sizes[i]
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

    def expected_weight_shapes(self, input_shape):
        return (self.forward_layer.expected_weight_shapes(input_shape)
                + self.backward_layer.expected_weight_shapes(input_shape))

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

        if isinstance(self.rng, KeyedRandom):  # a stream per direction: they may run at once
            fwd.rng, bwd.rng = self.rng.child(0), self.rng.child(1)
        else:
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
        U = fwd.output_units
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
            return layer._core_backward(dy_tm, ds, self.needs_input_grad)

        (dx_f, ds_f), (dx_b, ds_b) = self._both_directions(
            lambda: direction(fwd, da, dstates[0]), lambda: direction(bwd, db, dstates[1]), True)
        self.state_grads = list(ds_f) + list(ds_b)
        return None if dx_f is None else (dx_f + dx_b).transpose(1, 0, 2)
    def _both_directions(self, forward_task, backward_task, training):
        """``[forward_task(), backward_task()]``, at the same time when neither
        direction draws dropout masks (they come from one generator, in a fixed order)."""
        draws = training and not isinstance(self.rng, KeyedRandom) and any(
            l.draws_masks() for l in (self.forward_layer, self.backward_layer))
        return run_pair(forward_task, backward_task, concurrent_ok=not draws)

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
