"""Benchmark cases: the sizes, the inputs (seeded, identical for every system), the work
counted as GEMM flops."""
import math
import zlib
from dataclasses import dataclass, field

import numpy as np


CELLS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
SYSTEMS = ("rnnkernels", "torch", "keras")
PEERS = ("torch", "keras")
MODES = ("fwd", "fwdbwd")
MODE_TITLES = {"fwd": "forward-only ms", "fwdbwd": "forward+backward ms"}
DTYPES = ("float32", "float64")
SCHEMA = "rnnkernels-bench/2"


@dataclass(frozen=True)
class Size:
    """Problem size: T time steps, B sequences, I inputs, H hidden units."""
    T: int
    B: int
    I: int
    H: int

    def __str__(self):
        return f"T={self.T} B={self.B} I={self.I} H={self.H}"


SIZES = {
    "small": Size(100, 32, 40, 128),
    "medium": Size(100, 64, 80, 256),
    "large": Size(200, 64, 128, 512),
}
# --quick: same names, so every code path (targets included) runs in seconds.
QUICK_SIZES = {
    "small": Size(6, 3, 4, 8),
    "medium": Size(8, 4, 5, 12),
    "large": Size(10, 4, 6, 16),
}
GEMM_N, QUICK_GEMM_N = 2048, 256
# Largest forward-output difference to a system's own rnnkernels twin that still
# counts as "the same computation" (outputs are bounded by 1 for tanh cells).
CHECK_TOLERANCE = {"float32": 1e-3, "float64": 1e-9}
# Timings whose interquartile range exceeds this share of the median are flagged.
NOISY_IQR_PCT = 25


def gemm_flops(cell, size, mode, tokens=None):
    """GEMM flops of one call: forward ``2*N*G*H*(I+H)`` with N = valid
    (time, sequence) pairs (T*B when padded), backward twice the forward."""
    n = size.T * size.B if tokens is None else int(tokens)
    forward = 2.0 * n * GATES[cell] * size.H * (size.I + size.H)
    return forward if mode == "fwd" else 3.0 * forward


def geometric_mean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


# --------------------------------------------------------------------- inputs
def case_seed(base_seed, cell, size_name):
    """Seed that depends on the case, not on which other cases run."""
    return (int(base_seed) * 1_000_003 + zlib.crc32(f"{cell}/{size_name}".encode())) % 2**32


def make_inputs(cell, size, dtype, seed, varlen=False):
    """Inputs shared by every system: ``x (T, B, I)``, PyTorch-layout weights
    ``w_ih (G*H, I)``, ``w_hh (G*H, H)``, ``b_ih, b_hh (G*H,)``, the output
    gradient ``dy (T, B, H)`` and ``lengths (B,)`` (None unless ``varlen``;
    evenly spread over [ceil(T/4), T]). Drawn in float64, then cast, so both dtypes
    see the same numbers."""
    rng = np.random.default_rng(seed)
    T, B, I, H = size.T, size.B, size.I, size.H
    G = GATES[cell]
    k = 1.0 / math.sqrt(H)  # PyTorch's default initialisation range
    data = {
        "x": rng.uniform(-1.0, 1.0, (T, B, I)),
        "w_ih": rng.uniform(-k, k, (G * H, I)),
        "w_hh": rng.uniform(-k, k, (G * H, H)),
        "b_ih": rng.uniform(-k, k, G * H),
        "b_hh": rng.uniform(-k, k, G * H),
        "dy": rng.standard_normal((T, B, H)),
    }
    data = {name: np.ascontiguousarray(a, dtype=dtype) for name, a in data.items()}
    if varlen:
        # Evenly spread over [ceil(T/4), T] in random order, not B independent
        # draws: the mean of 32 or 64 draws strays by several percent, so a
        # varlen/padded ratio would measure the draw as much as the kernels
        # (the seeded draws had sum(lengths)/(T*B) from 0.58 to 0.67).
        # Evenly spread, every case's share of the padded work is 0.625.
        lo = max(1, math.ceil(T / 4))
        data["lengths"] = rng.permutation(np.round(np.linspace(lo, T, B)).astype(np.int64))
    else:
        data["lengths"] = None
    return data


def tokens_of(data):
    """Valid (time, sequence) pairs: the unit of work."""
    x = data["x"]
    return int(np.sum(data["lengths"])) if data["lengths"] is not None else x.shape[0] * x.shape[1]


@dataclass
class Case:
    """One cell x size x dtype, either full-length or variable-length, with
    every contender that is timed interleaved with the others."""
    cell: str
    size_name: str
    size: Size
    dtype: str
    varlen: bool
    threads: list            # thread counts every system runs at
    extra_threads: list = field(default_factory=list)  # rnnkernels only (thread scaling)

    @property
    def case_id(self):
        return f"{self.cell}-{self.size_name}-{self.dtype}" + ("-varlen" if self.varlen else "")


def plan_cases(options):
    """Cases to time: the matrix for every dtype, the variable-length matrix
    with --varlen, and for --targets the 1- and 2-thread medium LSTM."""
    sizes = QUICK_SIZES if options.quick else SIZES
    cases = []
    for varlen in (False, True) if options.varlen else (False,):
        for dtype in options.dtype:
            for cell in options.cells:
                for size_name in options.sizes:
                    cases.append(Case(cell, size_name, sizes[size_name], dtype, varlen, list(options.threads)))
    if options.targets:
        for case in cases:
            if (case.cell, case.size_name, case.dtype, case.varlen) == ("lstm", "medium", "float32", False):
                case.extra_threads = [t for t in (1, 2) if t not in case.threads]
    return cases
