"""Run by tests/kernels/test_other_cpus.py under qemu-user, as on an older
CPU: import the package, report the level and the build it chose, and check
one LSTM forward and backward against the reference (float64)."""
import numpy as np

from rnnkernels import ops, reference
from rnnkernels._core import cpu, isa, tuning

rng = np.random.default_rng(0)
T, B, I, H = 4, 3, 5, 7
x = rng.standard_normal((T, B, I))
w = [rng.standard_normal(s) * 0.3 for s in [(4 * H, I), (4 * H, H), (4 * H,), (4 * H,)]]
y, h, c, cache = ops.lstm_forward(x, *w, lengths=np.array([4, 2, 3]))
g = ops.lstm_backward(cache, np.ones_like(y))
yr, hr, cr, cache_r = reference.lstm_forward(x, *w, lengths=np.array([4, 2, 3]))
gr = reference.lstm_backward(cache_r, np.ones_like(yr))
err = max(float(np.abs(y - yr).max()), *(float(np.abs(g[k] - gr[k]).max()) for k in ("x", "w_ih", "w_hh")))
print(cpu.facts()["level"], tuning.active(), ",".join(isa.available()), f"{err:.3e}")
