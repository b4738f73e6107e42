"""Property-based fuzzing of rnnkernels.ops against rnnkernels.reference over
random cells, shapes, dtypes, memory layouts, lengths and directions.

Budget: RNNKERNELS_FUZZ_EXAMPLES examples per test (default 60, bounded for
CI); for a long run, e.g.
    RNNKERNELS_FUZZ_EXAMPLES=5000 pytest tests/kernels/test_ops_fuzz.py
"""
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnkernels
from rnnkernels import ops, reference

from helpers.cells import CELLS, assert_close, make_case, run

EXAMPLES = int(os.environ.get("RNNKERNELS_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("RNNKERNELS_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _layout(a, kind):
    """The same values in another memory layout."""
    if a is None or kind == "c":
        return a
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "strided":
        big = np.zeros(a.shape[:-1] + (a.shape[-1] * 2,), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if kind == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    raise AssertionError(kind)


@st.composite
def problems(draw):
    cell = draw(st.sampled_from(sorted(CELLS)))
    T = draw(st.integers(1, 9))
    B = draw(st.integers(1, 9))
    I = draw(st.integers(1, 12))
    H = draw(st.one_of(st.integers(1, 40), st.sampled_from([63, 64, 65, 97, 130])))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    varlen = draw(st.booleans())
    lengths = np.array(draw(st.lists(st.integers(0, T), min_size=B, max_size=B))) if varlen else None
    case = make_case(cell, T, B, I, H, dtype=dtype, seed=draw(st.integers(0, 2**16)),
                     bias=draw(st.booleans()), states=draw(st.booleans()),
                     grads=draw(st.booleans()), lengths=lengths)
    layout = draw(st.sampled_from(["c", "fortran", "strided", "readonly"]))
    reverse = draw(st.booleans())
    threads = draw(st.sampled_from([1, 2, 3]))
    return cell, case, layout, reverse, threads


@FUZZ
@given(problems())
def test_ops_matches_reference(problem):
    cell, case, layout, reverse, threads = problem
    dtype = case["x"].dtype.type
    want = run(reference, cell, case, reverse=reverse)
    odd = {k: (_layout(v, layout) if isinstance(v, np.ndarray) and k != "lengths" else v)
           for k, v in case.items()}
    with rnnkernels.num_threads(threads):
        got = run(ops, cell, odd, reverse=reverse)
    assert_close(got, want, dtype, f"{cell} layout={layout} reverse={reverse}")
