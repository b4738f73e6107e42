"""Shared fixtures and settings of the test suites.

The suites import the installed package (pyproject.toml puts only tests/ on
sys.path, for tests/helpers).  ``CI=true`` (set by CI and by .ci/run) makes
checks that a user's own build may legitimately skip, such as OpenMP being
compiled in, fail instead of skipping.

The tests run under a fixed tuning plan, the CPUID defaults
(``RNNKERNELS_PLAN=default``), so that a plan ``rnnkernels tune`` saved on
this machine changes nothing here; ``RNNKERNELS_ISA`` still picks the kernel
build (CI runs the kernel tests once per build this CPU runs).
"""
import os

os.environ.setdefault("RNNKERNELS_PLAN", "default")  # before anything asks for the plan

import pytest

import rnnkernels
from helpers.environment import FSDD


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def threads(request):
    """Run the test at 1 and at 2 kernel threads."""
    with rnnkernels.num_threads(request.param):
        yield request.param


@pytest.fixture
def fsdd():
    """The FSDD recordings folder, or a skip where it is not beside the checkout."""
    if not os.path.isdir(FSDD):
        pytest.skip(f"FSDD recordings not present at {FSDD}")
    return FSDD
