"""``rnnkernels tune``: measure this machine's plan (rnnkernels/_core/tuning.py).

Only this explicit command measures; importing the package never does.  It
times a few training steps (forward and backward, float32, at the configured
thread count) of representative shapes under candidate plans, one choice at a
time from the CPUID defaults: the kernel build (an AVX-512 machine whose
AVX-512 units are narrow may run the AVX2 build faster), the GEMM's k chunk
and row block, the tile widths.  Candidates are interleaved within each
round, and a choice replaces the current one only when its median beats it by
more than ``MARGIN`` (noise must not decide).  The plan that comes out is data:
the same plan gives the same bits every run; a different plan may change last
bits (the tile widths and the build do), never correctness.
"""
import dataclasses
import statistics
import time

import numpy as np

from .. import ops
from .._core import isa, tuning

MARGIN = 0.03  # a candidate must be this much faster than the current choice
NOISE = 0.10   # a stage whose current choice varies more than this (IQR / median) decides nothing

# (name, cell, T, B, I, H): the shapes the tuned plan is measured on; the
# small and medium sizes of `rnnkernels bench`, and a GRU.
WORKLOADS = (
    ("lstm small", "lstm", 50, 32, 40, 128),
    ("lstm medium", "lstm", 50, 64, 128, 256),
    ("gru small", "gru", 50, 32, 40, 128),
)


@dataclasses.dataclass
class Measured:
    stage: str
    plan: tuning.Plan
    ms: dict            # workload -> median ms
    spread: float       # the largest IQR / median over the workloads
    score: float = 1.0  # geometric mean of ms over the current choice's


def _workload(cell, T, B, I, H, seed=0):
    rng = np.random.default_rng(seed)
    G = 4 if cell == "lstm" else 3
    scale = 1 / np.sqrt(H)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    w = [rng.uniform(-scale, scale, s).astype(np.float32) for s in [(G * H, I), (G * H, H), (G * H,), (G * H,)]]
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    forward, backward = getattr(ops, f"{cell}_forward"), getattr(ops, f"{cell}_backward")

    def step():
        out = forward(x, *w)
        backward(out[-1], dy)
    return step


def _seconds(step):
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _spread(times):
    q1, _, q3 = statistics.quantiles(times, n=4)
    return (q3 - q1) / statistics.median(times)


def measure(plans, repeats=7, workloads=None, stage=""):
    """Median ms of each workload under each plan, rounds interleaved (each
    round runs every plan once), after one warm-up of each."""
    steps = {name: _workload(*spec) for name, *spec in workloads or WORKLOADS}
    samples = [{name: [] for name in steps} for _ in plans]
    for round_ in range(repeats + 1):
        for i, plan in enumerate(plans):
            with tuning.using(plan):
                for name, step in steps.items():
                    seconds = _seconds(step)
                    if round_:  # round 0 warms up: buffers, packing, the threads
                        samples[i][name].append(seconds)
    return [Measured(stage, plan, {name: 1e3 * statistics.median(t) for name, t in s.items()},
                     max(_spread(t) for t in s.values()))
            for plan, s in zip(plans, samples)]


def _scored(results, base):
    for r in results:
        r.score = float(np.exp(np.mean([np.log(r.ms[n] / base.ms[n]) for n in base.ms])))
    return results


def _pick(results, current):
    best = min(results, key=lambda r: r.score)
    return best if best.score < 1 - MARGIN else current


def candidates(base):
    """The stages: (name, function from the current plan to its alternatives)."""
    limits = {name: isa.module(name).gemm_limits() for name in isa.available()}

    def builds(p):
        return [tuning.defaults(name).replace(**{k: v for k, v in dataclasses.asdict(p).items()
                                                 if k in ("tile_wide", "tile_narrow")})
                for name in isa.available() if name != p.isa]

    def kc(p):
        return [p.replace(gemm_kc=k) for k in (64, 128, 192, 256, 384, 512) if k != p.gemm_kc]

    def mr(p):
        top = limits[p.isa]["mr_max"]
        return [p.replace(gemm_mr=m) for m in (4, 6, 8, 10, 12) if m <= top and m != p.gemm_mr]

    def tiles(p):
        pairs = [(64, 32), (32, 32), (64, 64), (128, 64), (32, 16)]
        return [p.replace(tile_wide=w, tile_narrow=n) for w, n in pairs if (w, n) != (p.tile_wide, p.tile_narrow)]

    stages = [("kernel build", builds), ("GEMM k chunk", kc), ("GEMM row block", mr), ("tile widths", tiles)]
    if len(limits) < 2 or isa.requested():
        stages = stages[1:]  # one build to choose from, or the user chose it
    return stages


def tune(repeats=7, log=print, workloads=None):
    """Measure and return (plan, every measurement)."""
    workloads = workloads or WORKLOADS
    current = tuning.defaults()
    history = []
    (base,) = measure([current], repeats, workloads, "defaults")
    _scored([base], base)
    history.append(base)
    log(_line(base))
    for stage, alternatives in candidates(current):
        others = alternatives(base.plan)
        if not others:
            continue
        results = measure([base.plan] + others, repeats, workloads, stage)
        _scored(results, results[0])
        for r in results[1:]:
            log(_line(r))
        history += results[1:]
        if results[0].spread > NOISE:
            log(f"  -> {stage}: too noisy to decide (the current choice varied {results[0].spread:.0%}); "
                f"kept {_what(base.plan)}")
            continue
        chosen = _pick(results[1:], results[0])
        if chosen is not results[0]:
            log(f"  -> {stage}: {_what(chosen.plan)} ({(1 - chosen.score) * 100:.0f}% faster)")
        base = results[0] if chosen is results[0] else chosen
    if base.plan != current:  # confirm against the defaults, in one more interleaved run
        first, last = measure([current, base.plan], repeats, workloads, "confirm")
        _scored([first, last], first)
        log(_line(last))
        history.append(last)
        if first.spread > NOISE or last.score > 1 - MARGIN:
            log(f"  -> not confirmed ({last.score:.3f}x of the defaults, spread {first.spread:.0%}): "
                f"the defaults stay")
            base = first
    plan = base.plan.replace(source="tuned")
    return plan, history


def _what(p):
    return f"{p.isa}, kc={p.gemm_kc}, mr={p.gemm_mr}, tiles {p.tile_wide}/{p.tile_narrow}"


def _line(r):
    ms = ", ".join(f"{name} {v:.2f} ms" for name, v in r.ms.items())
    return f"{r.stage:>15}: {_what(r.plan):<40} {ms}  ({r.score:.3f}x, spread {r.spread:.0%})"
