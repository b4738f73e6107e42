"""The tuning plan: every choice that depends on the machine rather than the
problem, in one value that a process uses for all its calls.

A plan says which kernel build runs (:mod:`.isa`), the GEMM kernel's k chunk
and row block, the hidden-unit tile widths, the weight-gradient pieces, the
CPU count those splits follow, and the work per thread below which a call
takes fewer threads.  Results depend on the plan only (the tile widths, the
pieces and the build's vector width may change last bits; the k chunk, the
row block and the thread counts never do), never on timing: a given plan
gives bitwise the same numbers every run and at any thread count.

Where the plan comes from, first match wins:

1. :func:`use` (what ``rnnkernels tune`` measured, or rank 0's plan
   broadcast to every MPI rank, or a test's fixed plan);
2. ``RNNKERNELS_PLAN``: ``default`` for the defaults below, or the path of a
   plan file (JSON, read as data);
3. the plan ``rnnkernels tune`` saved for this CPU in the user cache
   directory (platformdirs), keyed by what CPUID says (:func:`.cpu.signature`)
   and the package version; it is only ever written by that explicit command,
   never measured silently;
4. :func:`defaults`: derived from CPUID (vector ISA, L1 data cache, CPU
   count), never from the model number, which a virtual machine may misreport.

``RNNKERNELS_ISA`` overrides the build whatever the source.
"""
import contextlib
import dataclasses
import json
import os

from .._util.atomic import write_json
from .._version import __version__
from . import cpu as _cpu
from . import isa as _isa
from . import threads as _threads

ENV = "RNNKERNELS_PLAN"
FORMAT = "rnnkernels-plan/1"


@dataclasses.dataclass(frozen=True)
class Plan:
    isa: str                   # the kernel build (isa.ORDER)
    gemm_kc: int               # GEMM k chunk: the strip of B each row block reuses stays in L1
    gemm_mr: int               # GEMM rows per register block (<= the build's mr_max)
    cpus: int                  # the CPU count the splits follow (never a call's thread count)
    tile_wide: int = 64        # hidden units per tile ...
    tile_narrow: int = 32      # ... or this many where wide tiles leave a CPU without one
    tile_narrow_max_h: int = 256  # narrow tiles only up to this H
    wgrad_min_rows: int = 256  # rows per weight-gradient piece, at least
    wgrad_max_pieces: int = 16  # each piece keeps a buffer the size of the gradients
    min_step_flops: int = 500_000  # recurrent flops per step and thread worth another thread
    min_lane_flops: int = 100_000  # the same on the batch-row split, which has no barrier a step
    min_merged_flops: int = 4_000_000  # the same for a merged GEMM (one fork/join each)
    source: str = "defaults"   # where it came from (not part of its identity)

    def to_dict(self):
        out = dataclasses.asdict(self)
        out.pop("source")
        return {"format": FORMAT, "version": __version__, "cpu": _cpu.signature(), **out}

    @classmethod
    def from_dict(cls, data, source):
        """A plan from data read off a file or received from another rank:
        every field checked (a plan file is data, never code)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{source}: not an rnnkernels plan (expected format {FORMAT!r})")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
        unknown = set(data) - set(fields) - {"format", "version", "cpu"}
        if unknown:
            raise ValueError(f"{source}: unknown plan fields {sorted(unknown)}")
        values = {}
        for name in fields:
            if name not in data:
                if fields[name].default is dataclasses.MISSING:
                    raise ValueError(f"{source}: the plan lacks {name!r}")
                continue  # a field newer than the file: its default
            value = data[name]
            if name == "isa":
                if not isinstance(value, str) or value not in _isa.ORDER:
                    raise ValueError(f"{source}: isa: expected one of {', '.join(_isa.ORDER)}, got {value!r}")
            elif not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1 << 40:
                raise ValueError(f"{source}: {name}: expected a positive integer, got {value!r}")
            values[name] = value
        plan = cls(**values, source=source)
        plan.check()
        return plan

    def check(self):
        """Refuse a plan this machine cannot run (a ValueError naming the field)."""
        problem = _isa.why_not(self.isa)
        if problem:
            raise ValueError(f"plan ({self.source}): isa {self.isa!r}: {problem}")
        limits = _isa.module(self.isa).gemm_limits()
        if not 1 <= self.gemm_mr <= limits["mr_max"]:
            raise ValueError(f"plan ({self.source}): gemm_mr: expected 1 to {limits['mr_max']} "
                             f"for the {self.isa!r} build, got {self.gemm_mr}")
        if not 16 <= self.gemm_kc <= 4096:
            raise ValueError(f"plan ({self.source}): gemm_kc: expected 16 to 4096, got {self.gemm_kc}")
        for name in ("tile_wide", "tile_narrow"):
            if getattr(self, name) % 8:
                raise ValueError(f"plan ({self.source}): {name}: expected a multiple of 8, got {getattr(self, name)}")
        if self.cpus > 4096 or self.wgrad_max_pieces > 64:
            raise ValueError(f"plan ({self.source}): cpus <= 4096 and wgrad_max_pieces <= 64 expected")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def default_kc(l1d, vector_bytes):
    """The k chunk whose strip of B (kc rows of one panel, two vectors wide)
    fills two thirds of the L1 data cache, the rest left to A's rows and C;
    a multiple of 64 from 64 to 512."""
    strip_row = 2 * vector_bytes
    l1d = l1d or 32 * 1024
    kc = int(l1d * 2 / 3 // strip_row) // 64 * 64
    return max(64, min(512, kc))


def defaults(isa_name=None):
    """The plan for this CPU without measuring: from CPUID."""
    name = isa_name or _isa.requested() or _isa.default()
    limits = _isa.module(name).gemm_limits()
    facts = _cpu.facts()
    return Plan(isa=name, gemm_kc=default_kc(facts.get("l1d", 0), limits["vector_bytes"]),
                gemm_mr=limits["mr"], cpus=os.cpu_count() or 1, source="defaults")


def cache_path():
    """Where ``rnnkernels tune`` keeps this CPU's plan."""
    import platformdirs

    folder = platformdirs.user_cache_dir("rnnkernels", appauthor=False)
    return os.path.join(folder, "plans", f"{_cpu.signature()}-{__version__}.json")


def load(path, source=None):
    """A plan file, checked (ValueError on anything else)."""
    source = source or path
    try:
        if not os.path.isfile(path):
            raise ValueError(f"{source}: not a regular file")
        if os.path.getsize(path) > 65536:
            raise ValueError(f"{source}: too large for a plan file")
        with open(path, encoding="utf-8") as f:
            data = json.load(f, parse_constant=lambda c: _bad_constant(source, c))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{source}: cannot read the plan ({exc})") from exc
    return Plan.from_dict(data, source)


def _bad_constant(source, constant):
    raise ValueError(f"{source}: {constant} is not a plan value")


def save(plan, path=None):
    """Write ``plan`` atomically (default: this CPU's cache file); returns the path."""
    path = path or cache_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json(path, plan.to_dict(), indent=2)
    return path


_plan = None
_kernels = None  # the plan's kernel build (a module), set with the plan


def _resolve():
    choice = os.environ.get(ENV, "").strip()
    if choice == "default":
        plan = defaults()
        plan = plan.replace(source=f"defaults ({ENV}=default)")
    elif choice:
        plan = load(choice, f"{ENV}={choice}")
    else:
        plan = None
        try:
            path = cache_path()
        except ImportError:  # platformdirs missing: no cache to read
            path = None
        if path and os.path.exists(path):
            plan = load(path, f"tuned ({path})")
        if plan is None:
            plan = defaults()
    forced = _isa.requested()
    if forced and forced != plan.isa:
        limits = _isa.module(forced).gemm_limits()
        plan = plan.replace(isa=forced, gemm_mr=min(plan.gemm_mr, limits["mr_max"]),
                            source=f"{plan.source}, isa from {_isa.ENV}")
    return plan


def use(plan):
    """Make ``plan`` the process's plan (checked); returns the previous one.
    Call it between kernel calls, not during one (a backward uses the build
    its forward ran on either way)."""
    global _plan, _kernels
    plan.check()
    previous = _plan
    module = _isa.module(plan.isa)
    module.configure(plan.gemm_kc, plan.gemm_mr)
    _plan, _kernels = plan, module
    return previous


def current():
    """The process's plan (resolved on first use)."""
    if _plan is None:
        use(_resolve())
    return _plan


def kernels():
    """The compiled kernels module of the plan: what every kernel call runs."""
    if _kernels is None:
        current()  # resolving the plan loads its build
    return _kernels


def ctc_kernels():
    """The CTC loss compiled for the plan's build."""
    return _isa.module(current().isa, "_ctc")


def keyed_kernels():
    """The keyed uniforms and masks (training's random masks) compiled for the plan's build."""
    return _isa.module(current().isa, "_keyed")


def active():
    """The name of the kernel build that runs."""
    return current().isa


def reset():
    """Forget the plan in use: the next call resolves it again (tests)."""
    global _plan, _kernels
    _plan = _kernels = None


@contextlib.contextmanager
def using(plan):
    """Run a block under ``plan``, then go back to the plan before it."""
    previous = use(plan)
    try:
        yield plan
    finally:
        if previous is None:
            reset()
        else:
            use(previous)


def unit_tile(H, plan=None):
    """Hidden units per tile: the wide width, unless that leaves fewer tiles
    than the plan's CPUs (the time loop runs at most one thread per tile) and
    H is small, then the narrow one.  Wider tiles give each gate update more
    units per call; narrower ones give every CPU a tile (docs/design.md,
    "Tiles").  Depends on H and the plan only, so that every thread count
    gives the same GEMM shapes and bitwise-identical results."""
    p = plan or current()
    forced = int(os.environ.get("RNNKERNELS_UNIT_TILE", 0))
    if forced:
        return forced
    wide_enough = H > p.tile_narrow_max_h or H // p.tile_wide >= p.cpus
    return p.tile_wide if wide_enough else p.tile_narrow


def wgrad_pieces(k, plan=None):
    """Pieces of the k = sum(lengths) rows that each weight-gradient GEMM is
    summed over: one per CPU of the plan, each at least wgrad_min_rows rows,
    at most wgrad_max_pieces.  The pieces are added in a fixed order, so the
    count depends on the shape and the plan only, never on a call's thread
    count: results stay bitwise identical for any thread count."""
    p = plan or current()
    return max(1, min(p.cpus, p.wgrad_max_pieces, k // p.wgrad_min_rows))


def threads_for(plan, G, H, P, ntiles, I=0, rows_split=False):
    """Thread counts for one call: (merged GEMMs, time loop), each the
    configured count but no more than its work keeps busy, and for the time
    loop no more than it has pieces to share (hidden-unit tiles, or with the
    row split, the first step's batch rows).  The work split never depends on
    either, so neither do the results.  ``plan`` is the call's row plan."""
    tuned = current()
    nthreads = _threads.kernel_threads()
    merged_flops = 2 * plan.N * G * H * (I + P)
    if rows_split:
        # each thread owns its rows through every step: no barrier a step, one
        # fork/join for the loop, so the loop's work pays for a thread as a
        # merged GEMM's does, and a step's share may be smaller than where a
        # barrier follows it (docs/design.md, "The batch-row split")
        pieces = plan.n_first
        worth = min(2 * plan.N * G * H * P // tuned.min_merged_flops,
                    2 * plan.n_first * G * H * P // tuned.min_lane_flops)
    else:
        # a barrier at every step: each step's product has to pay for it
        pieces, worth = ntiles, 2 * plan.n_first * G * H * P // tuned.min_step_flops
    step = min(nthreads, max(1, pieces), max(1, worth))
    merged = min(nthreads, max(1, merged_flops // tuned.min_merged_flops))
    return int(merged), int(step)


def solo_from(plan, G, H, P, step_threads):
    """The first step of a call's time loop that runs on one thread: steps
    are in decreasing row counts, and one whose product (2 n G H P flops)
    would give each of the team's threads less than ``min_step_flops`` runs
    after the parallel region, without a barrier (a variable-length batch's
    last steps).  From the sizes alone, so forward and backward agree and the
    bits never depend on it (src/_recurrent_t.h, rk_forward_step)."""
    counts = plan.counts
    if step_threads <= 1 or not len(counts):
        return len(counts)
    rows = -(-step_threads * current().min_step_flops // (2 * G * H * P))
    return int((counts >= rows).sum())


# The cells whose time loop can run on the batch-row split (src/_recurrent_t.h,
# rk_forward_lanes and rk_backward_lanes): forward every one-phase cell (the
# GRU before the reset takes two), backward the plain LSTM and RNN.
_LANE_CELLS = frozenset({"lstm", "lstm_peephole", "gru", "rnn_tanh", "rnn_relu"})
_BACKWARD_LANE_CELLS = frozenset({"lstm", "rnn_tanh", "rnn_relu"})


def lane_split(cell_name, plan, weight_bytes, backward=False):
    """Whether a call's time loop splits the batch rows over its threads
    (each thread computing every hidden unit of its own rows, so no barrier
    between steps) instead of the hidden units (one barrier a step): where
    the first step has two rows or more and all of W_hh (``weight_bytes``)
    fits in half the L2 cache CPUID reports, since every thread then reads all
    of it at every step.  From the sizes and the CPU alone, never the thread
    count, so a forward and its backward agree on it for every thread count
    (the bits are the same under both splits either way)."""
    cells = _BACKWARD_LANE_CELLS if backward else _LANE_CELLS
    if cell_name not in cells or plan.n_first < 2:
        return False
    l2 = _cpu.facts().get("l2") or 1 << 20
    return weight_bytes <= l2 // 2


def describe(plan=None):
    """One line for people: the build, the GEMM blocking, the tiles, the source."""
    p = plan or current()
    return (f"{p.isa} ({_isa.TITLES.get(p.isa, p.isa)}), GEMM kc={p.gemm_kc} mr={p.gemm_mr}, "
            f"tiles {p.tile_wide}/{p.tile_narrow}, {p.cpus} CPUs; from {p.source}")

