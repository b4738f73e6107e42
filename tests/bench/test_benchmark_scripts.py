"""The scripts in benchmarks/ import what exists: a moved module (the house layout's
rnnkernels._argtypes -> rnnkernels._util.argtypes) once broke benchmarks/seed_fsdd.py
with nothing in the test run to notice."""
import ast
import importlib
import pathlib

import pytest

SCRIPTS = sorted((pathlib.Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_rnnkernels_import_resolves(script):
    missing = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            names = [(a.name, None) for a in node.names if a.name.split(".")[0] == "rnnkernels"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "rnnkernels":
            names = [(node.module, a.name) for a in node.names]
        else:
            continue
        for module, name in names:
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if (exc.name or "").split(".")[0] == "rnnkernels":
                    missing.append(f"{module} ({exc})")
                continue  # an optional dependency the module needs: not this test's business
            except ImportError:
                continue  # an extra (torch, keras) not installed here
            if name is not None and not hasattr(mod, name):
                try:
                    importlib.import_module(f"{module}.{name}")
                except ImportError:
                    missing.append(f"{module}.{name}")
    assert not missing, f"{script.name}: {missing}"
