"""10,000 forward/backward calls must keep resident memory flat."""
import os
import sys

import numpy as np
import pytest

from rnnkernels import ops

from helpers.cells import make_case, run


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_reset_before", "rnn_tanh"])
def test_rss_flat_over_10000_calls(cell):
    cases = [make_case(cell, 6, 4, 5, 16, seed=1, lengths=np.array([6, 2, 0, 5])),
             make_case(cell, 6, 4, 5, 16, seed=2, dtype=np.float32)]
    for _ in range(300):  # warm up allocator pools and the scratch buffers
        for case in cases:
            run(ops, cell, case, reverse=True)
    before = _rss_bytes()
    for i in range(5000):
        for case in cases:
            run(ops, cell, case, reverse=bool(i % 2))
    grown = _rss_bytes() - before
    # A leak of even one 4-byte float per call would show as 40 kB; one
    # buffer per call (the smallest here is 256 bytes) as 2.5 MB.
    assert grown < 1 << 20, f"resident memory grew by {grown / 1e6:.2f} MB over 10,000 calls"
