"""Modules that moved keep their old import paths, with a DeprecationWarning,
and the old name is the new module itself."""
import contextlib
import importlib
import subprocess
import sys

import pytest

from helpers.environment import package_env

MOVED = {"rnnkernels.datasets": "rnnkernels.audio.datasets",
         "rnnkernels.recipes": "rnnkernels.audio.recipes",
         "rnnkernels.interop": "rnnkernels.engine.interop"}


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_old_path_is_the_new_module_with_a_warning(old, new):
    # in a fresh interpreter: here the old name may be imported already, and
    # a module warns only when it is first imported
    code = (f"import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            f"try:\n    import {old}\nexcept DeprecationWarning as w:\n    print(w)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=package_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{old} is now {new}; the old name goes away in 0.3"
    with pytest.warns(DeprecationWarning) if old not in sys.modules else contextlib.nullcontext():
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_one_padding_function():
    from rnnkernels import audio, models
    from rnnkernels._util.padding import pad_sequences
    assert models.pad_sequences is pad_sequences
    x, lengths = audio.pad_batch([[[1.0]], [[2.0], [3.0]]], time_major=True)
    assert x.shape == (2, 2, 1) and lengths.tolist() == [1, 2] and x[1, 0, 0] == 0 and x[1, 1, 0] == 3
