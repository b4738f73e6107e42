"""The JAX backend (a child process) has no kernel path: Keras's own loop, Keras's numbers."""
import importlib.util
import subprocess
import sys

import pytest

SCRIPT = r'''
import os
os.environ["KERAS_BACKEND"] = "jax"
import numpy as np, keras
from rnnkernels.keras import GRU
rng = np.random.default_rng(0)
theirs, ours = keras.layers.GRU(3, return_sequences=True), GRU(3, return_sequences=True)
theirs.build((2, 4, 2)); ours.build((2, 4, 2))
ours.set_weights(theirs.get_weights())
x = rng.standard_normal((2, 4, 2)).astype("float32")
assert np.array_equal(np.asarray(ours(x)), np.asarray(theirs(x)))
assert ours.last_path == "keras: backend 'jax'", ours.last_path
print("ok")
'''


def test_jax_backend_runs_keras():
    for name in ("jax", "keras"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed")
    from helpers.environment import package_env
    env = package_env(KERAS_BACKEND="jax", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
