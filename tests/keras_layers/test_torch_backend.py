"""The torch backend, in a child process (KERAS_BACKEND is fixed when Keras is imported):
our layers against keras.layers with the same weights, gradients through torch autograd,
and model.fit.

Two bounds, because Keras's torch backend is not float64 throughout: its ``ops.matmul``
takes its result dtype from ``dtypes.result_type(torch.float64, torch.float64)``, which
says float32 (Keras 3.15), so keras.layers that multiply through ops.matmul (SimpleRNN,
GRU with reset_after=False, any masked cell) round every product to float32, and differ
from the float64 truth by 1e-7 to 2e-6 relative, depending on the CPU.  Ours against
keras.layers under torch is therefore held at float32's level (2e-5 relative).  The
float64 check is the other test: the same cases, same weights and inputs, run here under
the TensorFlow backend, must give our torch-backend numbers to 1e-12 relative; and
tests/keras_layers/test_parity.py holds ours against keras.layers under TensorFlow at
float64's 1e-10."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_backend_script.py")


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    for name in ("torch", "keras"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed")
    env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    import rnnkernels
    root = os.path.dirname(os.path.dirname(os.path.abspath(rnnkernels.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    arrays = tmp_path_factory.mktemp("torch_backend") / "cases.npz"
    proc = subprocess.run([sys.executable, SCRIPT, str(arrays)], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), dict(np.load(arrays))


@pytest.fixture(scope="module")
def results(child):
    return child[0]


def test_layers_match_keras_under_torch(results):
    cases = {k: v for k, v in results.items() if k not in ("fit losses", "double backward")}
    assert len(cases) == 18
    for name, (error, path) in cases.items():
        assert error < 2e-5, (name, error)
        assert path == ("keras: the mask is not right-padded" if name == "left-padded mask" else "rnnkernels"), name


def test_torch_backend_gives_the_tensorflow_backends_numbers(child):
    """Each layer case of the child, rerun here under TensorFlow (GradientTape, the same
    projection of the outputs), gives the child's outputs and gradients in float64."""
    pytest.importorskip("tensorflow")
    import keras
    from helpers.keras_parity import run
    from rnnkernels.keras import GRU, SimpleRNN
    from rnnkernels.keras import LSTM as OurLSTM
    assert keras.backend.backend() == "tensorflow"
    cells = {"lstm": (OurLSTM, {}), "gru": (GRU, {}), "gru_reset_before": (GRU, {"reset_after": False}),
             "rnn_relu": (SimpleRNN, {"activation": "relu"})}
    _, arrays = child
    cases = sorted({key.split("|")[0] for key in arrays})
    assert len(cases) == 16
    for case in cases:
        name, backwards, masked = case.split(" ")
        cls, base = cells[name]
        layer = cls(units=3, return_sequences=True, return_state=True, dtype="float64",
                    go_backwards=backwards == "go_backwards=True", **base)
        x = arrays[f"{case}|x"]
        layer.build(x.shape)
        layer.set_weights([arrays[f"{case}|weight{k}"] for k in range(len(layer.get_weights()))])
        # the child's projection of the outputs: seeds 0, 1, ...
        outs, grads = run(layer, x, lambda lay: lay.trainable_weights, arrays.get(f"{case}|mask"), seed=0)
        got = outs + grads
        want = [arrays[f"{case}|got{k}"] for k in range(len(got))]
        assert f"{case}|got{len(got)}" not in arrays, case
        assert layer.last_path == "rnnkernels", case
        for k, (u, v) in enumerate(zip(got, want)):
            np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-14, err_msg=f"{case} [{k}]")


def test_fit_under_torch_follows_keras(results):
    ours, theirs, path = results["fit losses"]
    assert path == "rnnkernels"
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_double_backward_is_refused(results):
    assert "double backward" in results["double backward"] and "not supported" in results["double backward"]
