"""Optimizers and learning-rate schedules with Keras 3's names, defaults and update rules.

An optimizer updates a list of parameter arrays in place from a matching list
of gradients: ``opt.apply_gradients(params, grads)``.  Its per-parameter slots
(momenta, second moments...) and its step counter are exposed by
:meth:`Optimizer.get_state` / :meth:`Optimizer.set_state` so a saved model
resumes training exactly.  Every update is element-wise or a fixed-order
reduction, so results never depend on the number of threads.

Gradient clipping (at most one of these, as in Keras): ``clipnorm`` rescales
each gradient to that L2 norm at most, ``global_clipnorm`` rescales all of them
together so their joint norm is at most that, ``clipvalue`` clips each element
to ``[-clipvalue, clipvalue]``.
"""
import math

import numpy as np

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad",
           "LearningRateSchedule", "ExponentialDecay", "InverseTimeDecay", "PiecewiseConstantDecay",
           "CosineDecay", "get", "serialize"]


# ------------------------------------------------------------------ schedules
class LearningRateSchedule:
    """A learning rate as a function of the optimizer step (0 for the first update)."""

    def __call__(self, step):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self):
        return dict(self._config)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._config.items())})"


def _positive(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'} "
                         f"finite number, got {value}")
    return value


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)`` (floored when staircase)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        self._config = {"initial_learning_rate": _positive("initial_learning_rate", initial_learning_rate),
                        "decay_steps": _positive("decay_steps", decay_steps),
                        "decay_rate": _positive("decay_rate", decay_rate), "staircase": bool(staircase)}

    def __call__(self, step):
        c = self._config
        p = step / c["decay_steps"]
        if c["staircase"]:
            p = math.floor(p)
        return c["initial_learning_rate"] * c["decay_rate"] ** p


class InverseTimeDecay(LearningRateSchedule):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)``."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        self._config = {"initial_learning_rate": _positive("initial_learning_rate", initial_learning_rate),
                        "decay_steps": _positive("decay_steps", decay_steps),
                        "decay_rate": _positive("decay_rate", decay_rate, True), "staircase": bool(staircase)}

    def __call__(self, step):
        c = self._config
        p = step / c["decay_steps"]
        if c["staircase"]:
            p = math.floor(p)
        return c["initial_learning_rate"] / (1.0 + c["decay_rate"] * p)


class PiecewiseConstantDecay(LearningRateSchedule):
    """Step schedule: ``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after the last boundary."""

    def __init__(self, boundaries, values):
        boundaries = [int(b) for b in boundaries]
        values = [_positive(f"values[{i}]", v, allow_zero=True) for i, v in enumerate(values)]
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"values: expected len(boundaries) + 1 = {len(boundaries) + 1} values, "
                             f"got {len(values)}")
        if any(b1 <= b0 for b0, b1 in zip(boundaries, boundaries[1:])):
            raise ValueError(f"boundaries: expected strictly increasing steps, got {boundaries}")
        self._config = {"boundaries": boundaries, "values": values}

    def __call__(self, step):
        for b, v in zip(self._config["boundaries"], self._config["values"]):
            if step <= b:
                return v
        return self._config["values"][-1]


class CosineDecay(LearningRateSchedule):
    """Optional linear warmup from ``initial_learning_rate`` to ``warmup_target`` over
    ``warmup_steps``, then cosine decay over ``decay_steps`` down to ``alpha`` times the peak."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None,
                 warmup_steps=0):
        self._config = {"initial_learning_rate": _positive("initial_learning_rate", initial_learning_rate, True),
                        "decay_steps": _positive("decay_steps", decay_steps),
                        "alpha": _positive("alpha", alpha, True),
                        "warmup_target": None if warmup_target is None else
                        _positive("warmup_target", warmup_target),
                        "warmup_steps": int(_positive("warmup_steps", warmup_steps, True))}

    def __call__(self, step):
        c = self._config
        peak = c["initial_learning_rate"] if c["warmup_target"] is None else c["warmup_target"]
        if step < c["warmup_steps"]:
            return c["initial_learning_rate"] + (peak - c["initial_learning_rate"]) * step / c["warmup_steps"]
        t = min(step - c["warmup_steps"], c["decay_steps"]) / c["decay_steps"]
        cosine = 0.5 * (1.0 + math.cos(math.pi * t))
        return peak * ((1.0 - c["alpha"]) * cosine + c["alpha"])


_SCHEDULES = {cls.__name__: cls for cls in (ExponentialDecay, InverseTimeDecay,
                                            PiecewiseConstantDecay, CosineDecay)}


# ----------------------------------------------------------------- optimizers
class Optimizer:
    """Base class: clipping, learning rate (a float or a schedule), step counter, slots."""
    #: names of the per-parameter slots, each an array shaped like its parameter
    slot_names = ()

    def __init__(self, learning_rate=0.001, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 name=None):
        self.learning_rate = learning_rate
        given = [n for n, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                                ("global_clipnorm", global_clipnorm)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"clipping: set at most one of clipnorm, clipvalue, global_clipnorm; got {given}")
        self.clipnorm = None if clipnorm is None else _positive("clipnorm", clipnorm)
        self.clipvalue = None if clipvalue is None else _positive("clipvalue", clipvalue)
        self.global_clipnorm = None if global_clipnorm is None else _positive("global_clipnorm", global_clipnorm)
        self.name = name or type(self).__name__.lower()
        self.iterations = 0
        self._slots = None

    # learning rate --------------------------------------------------------
    @property
    def learning_rate(self):
        """The float learning rate, or the schedule when one was given."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(value, dict):
            value = _SCHEDULES[value["class_name"]](**value["config"])
        if not isinstance(value, LearningRateSchedule) and not callable(value):
            value = _positive("learning_rate", value, allow_zero=True)
        self._learning_rate = value

    def current_learning_rate(self):
        """The learning rate the next update will use.  A schedule's value is checked each
        time (finite and non-negative): a ValueError before it can reach the weights."""
        lr = self._learning_rate
        if not callable(lr):
            return lr
        try:
            value = lr(self.iterations)
            rate = float(value)
        except (OverflowError, ZeroDivisionError) as exc:
            raise ValueError(f"learning_rate: the schedule {lr!r} failed at step {self.iterations} "
                             f"({type(exc).__name__}: {exc})") from None
        except (TypeError, ValueError):
            raise ValueError(f"learning_rate: the schedule {lr!r} gave {value!r} at step "
                             f"{self.iterations}; expected a number") from None
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"learning_rate: the schedule {lr!r} gave {rate} at step {self.iterations}; "
                             "expected a finite, non-negative number (the weights were not changed)")
        return rate

    # updates --------------------------------------------------------------
    def _clip(self, grads):
        if self.clipvalue is not None:
            return [np.clip(g, -self.clipvalue, self.clipvalue) for g in grads]
        if self.clipnorm is not None:
            out = []
            for g in grads:
                norm = math.sqrt(float(np.dot(g.ravel(), g.ravel())))
                out.append(g * (self.clipnorm / norm) if norm > self.clipnorm else g)
            return out
        if self.global_clipnorm is not None:
            norm = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads))
            if norm > self.global_clipnorm:
                return [g * (self.global_clipnorm / norm) for g in grads]
        return grads

    def build(self, params):
        self._slots = [{name: self._initial_slot(name, p) for name in self.slot_names} for p in params]

    def _initial_slot(self, name, p):
        return np.zeros_like(p)

    def apply_gradients(self, params, grads):
        """Update each array of ``params`` in place from the matching gradient."""
        if len(params) != len(grads):
            raise ValueError(f"grads: expected {len(params)} gradients (one per parameter), got {len(grads)}")
        for i, (p, g) in enumerate(zip(params, grads)):
            if g.shape != p.shape:
                raise ValueError(f"grads[{i}]: expected shape {p.shape}, got {g.shape}")
        if self._slots is None:
            self.build(params)
        elif len(self._slots) != len(params):
            raise ValueError(f"params: this optimizer was built for {len(self._slots)} parameters, "
                             f"got {len(params)}")
        grads = self._clip(grads)
        lr = self.current_learning_rate()
        step = self.iterations + 1
        for p, g, slots in zip(params, grads, self._slots):
            self._update(p, g.astype(p.dtype, copy=False), slots, lr, step)
        self.iterations += 1

    def _update(self, p, g, slots, lr, step):  # pragma: no cover - abstract
        raise NotImplementedError

    # state ----------------------------------------------------------------
    def get_state(self):
        """``(iterations, [slot arrays in parameter order, slot_names order]))``."""
        arrays = [] if self._slots is None else [s[n] for s in self._slots for n in self.slot_names]
        return self.iterations, arrays

    def set_state(self, iterations, arrays, params):
        """Restore what :meth:`get_state` returned, for a model whose parameters are ``params``."""
        k = len(self.slot_names)
        if len(arrays) not in (0, k * len(params)):
            raise ValueError(f"optimizer state: expected {k * len(params)} slot arrays for "
                             f"{len(params)} parameters, got {len(arrays)}")
        for j, a in enumerate(arrays):
            if a.shape != params[j // k].shape:
                raise ValueError(f"optimizer state: slot {j} has shape {a.shape}, its parameter "
                                 f"{params[j // k].shape}")
        self.iterations = int(iterations)
        if arrays:
            self._slots = [{n: np.array(arrays[i * k + s], dtype=params[i].dtype)
                            for s, n in enumerate(self.slot_names)} for i in range(len(params))]
        else:
            self._slots = None

    def get_config(self):
        lr = self._learning_rate
        if isinstance(lr, LearningRateSchedule):
            lr = {"class_name": type(lr).__name__, "config": lr.get_config()}
        elif callable(lr):
            raise ValueError("learning_rate: a plain callable schedule cannot be saved; use a "
                             "LearningRateSchedule")
        config = {"learning_rate": lr, "name": self.name}
        for key in ("clipnorm", "clipvalue", "global_clipnorm"):
            if getattr(self, key) is not None:
                config[key] = getattr(self, key)
        return config

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"


class SGD(Optimizer):
    """``v = momentum*v - lr*g; w += v`` (Nesterov: ``w += momentum*v - lr*g``)."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.momentum = _positive("momentum", momentum, allow_zero=True)
        if self.momentum >= 1:
            raise ValueError(f"momentum: expected a value in [0, 1), got {momentum}")
        self.nesterov = bool(nesterov)
        self.slot_names = ("momentum",) if self.momentum else ()

    def _update(self, p, g, slots, lr, step):
        if not self.momentum:
            p -= lr * g
            return
        v = slots["momentum"]
        v *= self.momentum
        v -= lr * g
        if self.nesterov:
            p += self.momentum * v - lr * g
        else:
            p += v

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Keras form: bias correction folded into the step size, epsilon outside the sqrt)."""
    slot_names = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2 = float(beta_1), float(beta_2)
        for name, b in (("beta_1", self.beta_1), ("beta_2", self.beta_2)):
            if not 0 <= b < 1:
                raise ValueError(f"{name}: expected a value in [0, 1), got {b}")
        self.epsilon = _positive("epsilon", epsilon, allow_zero=True)
        self.amsgrad = bool(amsgrad)
        if self.amsgrad:
            self.slot_names = ("m", "v", "v_hat")

    def _update(self, p, g, slots, lr, step):
        m, v = slots["m"], slots["v"]
        alpha = lr * math.sqrt(1 - self.beta_2 ** step) / (1 - self.beta_1 ** step)
        m += (g - m) * (1 - self.beta_1)
        v += (g * g - v) * (1 - self.beta_2)
        if self.amsgrad:
            np.maximum(slots["v_hat"], v, out=slots["v_hat"])
            v = slots["v_hat"]
        p -= alpha * m / (np.sqrt(v) + self.epsilon)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay: ``w -= lr * weight_decay * w`` before each Adam step."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.weight_decay = _positive("weight_decay", weight_decay, allow_zero=True)

    def _update(self, p, g, slots, lr, step):
        p -= (lr * self.weight_decay) * p
        super()._update(p, g, slots, lr, step)

    def get_config(self):
        return {**super().get_config(), "weight_decay": self.weight_decay}


class RMSprop(Optimizer):
    """``v = rho*v + (1-rho)*g^2; w -= lr*g/sqrt(v + eps)`` (Keras 3; optional centering, momentum)."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho = float(rho)
        if not 0 <= self.rho < 1:
            raise ValueError(f"rho: expected a value in [0, 1), got {rho}")
        self.momentum = _positive("momentum", momentum, allow_zero=True)
        self.epsilon = _positive("epsilon", epsilon, allow_zero=True)
        self.centered = bool(centered)
        self.slot_names = ("velocity",) + (("momentum",) if self.momentum else ()) + \
            (("average_gradient",) if self.centered else ())

    def _update(self, p, g, slots, lr, step):
        vel = slots["velocity"]
        vel *= self.rho
        vel += (1 - self.rho) * g * g
        if self.centered:
            avg = slots["average_gradient"]
            avg *= self.rho
            avg += (1 - self.rho) * g
            denominator = vel - avg * avg + self.epsilon
        else:
            denominator = vel + self.epsilon
        increment = lr * g / np.sqrt(denominator)
        if self.momentum:
            m = slots["momentum"]
            m *= self.momentum
            m += increment
            p -= m
        else:
            p -= increment

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


class Adagrad(Optimizer):
    """``acc += g^2; w -= lr*g/sqrt(acc + eps)``; accumulators start at ``initial_accumulator_value``."""
    slot_names = ("accumulator",)

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value = _positive("initial_accumulator_value",
                                                   initial_accumulator_value, allow_zero=True)
        self.epsilon = _positive("epsilon", epsilon, allow_zero=True)

    def _initial_slot(self, name, p):
        return np.full_like(p, self.initial_accumulator_value)

    def _update(self, p, g, slots, lr, step):
        acc = slots["accumulator"]
        acc += g * g
        p -= lr * g / np.sqrt(acc + self.epsilon)

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


_CLASSES = {cls.__name__: cls for cls in (SGD, Adam, AdamW, RMSprop, Adagrad)}
_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}


def get(identifier):
    """An optimizer from a name (``'adam'``, Keras's defaults), a config dict or an Optimizer."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        cls = _CLASSES.get(identifier.get("class_name"))
        if cls is not None:
            return cls(**identifier.get("config", {}))
    elif isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"optimizer: expected one of {sorted(_BY_NAME)} or an Optimizer instance, "
                     f"got {identifier!r}")


def serialize(optimizer):
    if type(optimizer) not in _CLASSES.values():
        raise ValueError(f"optimizer: cannot save custom optimizer {optimizer!r}")
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}
