"""Running a Keras script in a subprocess for the tests that compare against Keras itself.

TensorFlow is slow to import and starts thread pools of its own, so Keras runs in a child
process: a script that starts with :data:`PREAMBLE` (which exits 77 when Keras cannot be
imported) and reads its inputs from the files named on its command line."""
import importlib.util
import subprocess
import sys

import pytest

from .environment import package_env

PREAMBLE = r'''
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
try:
    import keras
except ImportError as e:
    print(f"keras not importable: {e}")
    sys.exit(77)
import numpy as np

d = dict(np.load(sys.argv[1]))
'''


def run_keras_worker(script, *args):
    """Run ``script`` (after :data:`PREAMBLE`) with ``args``; skip the calling test when Keras
    is not installed or not importable, fail it when the script fails.  Returns its stdout."""
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    env = package_env(TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", PREAMBLE + script, *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
