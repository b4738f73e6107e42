"""Run by test_torch_backend.py in a child process with KERAS_BACKEND=torch: our layers
against keras.layers with the same weights (outputs, and gradients through torch
autograd), then a small model.fit.  Prints one JSON line; exits 77 when the torch
backend cannot run here.  Writes each layer case's inputs, weights and our outputs and
gradients to the .npz file named by argv[1], so that the parent can run the same case
under the TensorFlow backend and compare in float64."""
import json
import os
import sys

os.environ["KERAS_BACKEND"] = "torch"
try:
    import torch
    import keras
except ImportError as exc:
    print(json.dumps({"skip": f"torch backend not importable: {exc}"}))
    sys.exit(77)
import numpy as np

from rnnkernels.keras import GRU, LSTM, Bidirectional, SimpleRNN

assert keras.backend.backend() == "torch", keras.backend.backend()
CELLS = {"lstm": (LSTM, keras.layers.LSTM, {}), "gru": (GRU, keras.layers.GRU, {}),
         "gru_reset_before": (GRU, keras.layers.GRU, {"reset_after": False}),
         "rnn_relu": (SimpleRNN, keras.layers.SimpleRNN, {"activation": "relu"})}


def run(layer, x, mask):
    x = torch.tensor(x, requires_grad=True)
    kwargs = {} if mask is None else {"mask": torch.tensor(mask)}
    outs = layer(x, **kwargs)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    loss = sum((o * torch.from_numpy(np.random.default_rng(k).standard_normal(tuple(o.shape)))).sum()
               for k, o in enumerate(outs))
    weights = [w.value for w in layer.trainable_weights]
    grads = torch.autograd.grad(loss, [x] + weights)
    return [o.detach().numpy() for o in outs] + [g.numpy() for g in grads]


def worst(a, b):
    """Largest |a - b| / (1 + |b|) over all arrays (outputs and gradients are O(1) here)."""
    assert len(a) == len(b) and all(u.shape == v.shape for u, v in zip(a, b))
    return max(float(np.max(np.abs(u - v) / (1 + np.abs(v)))) for u, v in zip(a, b))


results = {}
arrays = {}
rng = np.random.default_rng(0)
for name, (ours_cls, theirs_cls, base) in CELLS.items():
    for go_backwards in (False, True):
        for masked in (False, True):
            config = dict(units=3, return_sequences=True, return_state=True, go_backwards=go_backwards,
                          dtype="float64", **base)
            theirs, ours = theirs_cls(**config), ours_cls(**config)
            theirs.build((4, 6, 2))
            ours.build((4, 6, 2))
            theirs.set_weights([w + 0.3 * rng.standard_normal(w.shape) for w in theirs.get_weights()])
            ours.set_weights(theirs.get_weights())
            x = rng.standard_normal((4, 6, 2))
            mask = (np.arange(6)[None, :] < np.array([6, 3, 0, 1])[:, None]) if masked else None
            got, want = run(ours, x, mask), run(theirs, x, mask)
            case = f"{name} go_backwards={go_backwards} masked={masked}"
            results[case] = [worst(got, want), ours.last_path]
            arrays.update({f"{case}|x": x, **({} if mask is None else {f"{case}|mask": mask})})
            arrays.update({f"{case}|weight{k}": w for k, w in enumerate(theirs.get_weights())})
            arrays.update({f"{case}|got{k}": g for k, g in enumerate(got)})
# not right-padded: Keras's loop
theirs, ours = keras.layers.LSTM(3, dtype="float64"), LSTM(3, dtype="float64")
theirs.build((2, 5, 2))
ours.build((2, 5, 2))
ours.set_weights(theirs.get_weights())
x = rng.standard_normal((2, 5, 2))
mask = np.ones((2, 5), bool)
mask[:, 0] = False
results["left-padded mask"] = [worst(run(ours, x, mask), run(theirs, x, mask)), ours.last_path]
# Bidirectional
theirs = keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True, dtype="float64"), dtype="float64")
ours = Bidirectional(keras.layers.GRU(3, return_sequences=True, dtype="float64"), dtype="float64")
theirs.build((2, 5, 2))
ours.build((2, 5, 2))
ours.set_weights(theirs.get_weights())
results["bidirectional gru"] = [worst(run(ours, x, None), run(theirs, x, None)), ours.forward_layer.last_path]


# model.fit, ours against keras.layers from the same weights
def model(rnn):
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((6, 2)), rnn, keras.layers.Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy")
    return m


xs = rng.standard_normal((32, 6, 2)).astype("float32")
ys = np.eye(3, dtype="float32")[rng.integers(0, 3, 32)]
m_ours, m_theirs = model(LSTM(5)), model(keras.layers.LSTM(5))
m_theirs.set_weights(m_ours.get_weights())
h_ours = m_ours.fit(xs, ys, epochs=3, batch_size=8, shuffle=False, verbose=0).history["loss"]
h_theirs = m_theirs.fit(xs, ys, epochs=3, batch_size=8, shuffle=False, verbose=0).history["loss"]
results["fit losses"] = [h_ours, h_theirs, m_ours.layers[0].last_path]
# double backward is refused with a clear error
layer = LSTM(3, dtype="float64")
xd = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
try:
    (g,) = torch.autograd.grad(layer(xd).sum(), xd, create_graph=True)
    g.sum().backward()
    results["double backward"] = "allowed"
except RuntimeError as exc:
    results["double backward"] = str(exc)
np.savez(sys.argv[1], **arrays)
print(json.dumps(results))
