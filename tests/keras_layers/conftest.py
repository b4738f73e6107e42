"""The Keras suite: TensorFlow backend in this process (set before Keras is imported);
the torch backend runs in subprocesses (test_torch_backend.py).  Skips cleanly without
tensorflow or keras."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":  # keras imported earlier with another backend
    pytest.skip(f"keras already runs the {keras.backend.backend()} backend in this process",
                allow_module_level=True)
