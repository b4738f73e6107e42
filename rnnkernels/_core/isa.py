"""Which build of the compiled kernels runs.

setup.py compiles the kernels once per instruction set (``_kernels_avx512``
for x86-64-v4, ``_kernels_avx2`` for v3, ``_kernels_baseline`` for v2; off
x86 ``_kernels_generic``; with ``RNNKERNELS_NATIVE=1`` also
``_kernels_native``).  At the first kernel call the widest one this CPU runs
is loaded, as CPUID says (:mod:`.cpu`), the way PyTorch's DispatchStub and
NumPy's CPU dispatch choose; ``RNNKERNELS_ISA`` forces one (for the tests
and for measuring).  Which build runs is the tuning plan's choice
(:mod:`.tuning`, whose ``kernels()`` the callers use); this module only says
which builds exist and which this CPU runs, and loads them.

A build is never imported on a CPU that lacks what it was compiled for: the
check comes first, so a missing instruction is a clear error, never SIGILL.
"""
import importlib.util
import os

from . import cpu as _cpu
from . import openmp as _openmp

ENV = "RNNKERNELS_ISA"
# Widest first: the order in which the default is chosen.
ORDER = ("native", "avx512", "avx2", "baseline", "generic")
TITLES = {
    "native": "this build machine's CPU (-march=native)",
    "avx512": "AVX-512 (x86-64-v4)",
    "avx2": "AVX2 + FMA (x86-64-v3)",
    "baseline": "SSE4.2 (x86-64-v2)",
    "generic": "the compiler's default target",
}
# The x86-64 level each portable build was compiled for (setup.py X86_ISAS).
LEVELS = {"avx512": 4, "avx2": 3, "baseline": 2}
_LEVEL_NEEDS = {4: "AVX-512 F/BW/CD/DQ/VL", 3: "AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE", 2: "SSE4.2, POPCNT"}

_modules = {}


def built():
    """The kernel builds this installation has, widest first."""
    return tuple(name for name in ORDER
                 if importlib.util.find_spec(f"{__package__}._kernels_{name}") is not None)


def why_not(name):
    """Why this CPU cannot run build ``name`` (None when it can)."""
    if name not in ORDER:
        return f"there is no kernel build named {name!r} (the builds are {', '.join(ORDER)})"
    if name not in built():
        return f"this installation has no {name!r} build of the kernels (it has {', '.join(built()) or 'none'})"
    facts = _cpu.facts()
    if name in LEVELS:
        level = LEVELS[name]
        if facts["level"] < level:
            return (f"this CPU ({facts['brand'] or facts['vendor'] or 'unknown'}) lacks x86-64-v{level} "
                    f"({_LEVEL_NEEDS[level]}), which the {name!r} build was compiled for")
    elif name == "native":
        missing = [f for f in _cpu.native_features() if not facts.get(f)]
        if missing:
            return f"this CPU lacks {', '.join(missing)}, which the 'native' build was compiled for"
    return None


def available():
    """The builds this CPU runs, widest first."""
    return tuple(name for name in built() if why_not(name) is None)


def default():
    """The build the kernels load unless a plan or ``RNNKERNELS_ISA`` says
    otherwise: the widest this CPU runs."""
    names = available()
    if not names:
        facts = _cpu.facts()
        raise ImportError(f"rnnkernels: no build of the kernels runs on this CPU "
                          f"({facts['brand'] or facts['vendor'] or 'unknown'}; built: "
                          f"{', '.join(built()) or 'none'}). The x86-64 builds need at least SSE4.2 and POPCNT.")
    return names[0]


def requested():
    """``RNNKERNELS_ISA`` checked (None when unset)."""
    name = os.environ.get(ENV, "").strip().lower()
    if not name:
        return None
    problem = why_not(name)
    if problem:
        raise ValueError(f"{ENV}={name!r}: {problem}; this CPU runs {', '.join(available()) or 'none'}")
    return name


def module(name, family="_kernels"):
    """The kernel build ``name`` of ``family`` (``_kernels``: the recurrent kernels,
    ``_ctc``: the CTC loss, ``_keyed``: the keyed masks), after checking that this
    CPU runs it."""
    mod = _modules.get((family, name))
    if mod is None:
        problem = why_not(name)
        if problem:
            raise ValueError(f"isa: {problem}")
        mod = _modules[family, name] = _openmp.load(f"{family}_{name}")
    return mod
