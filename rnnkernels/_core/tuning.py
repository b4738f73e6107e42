"""Choices that depend on the problem's shape and the machine, never on a call's
thread count: tile widths, weight-gradient pieces and how many threads a call's
work keeps busy.  Results are bitwise identical for any thread count because
every work split here is a function of the shape and the machine only."""
import os

from . import threads as _threads

# CPUs of this machine: the tile width and the weight-gradient pieces follow it
# (never a call's thread count).
CPUS = os.cpu_count() or 1


def unit_tile(H):
    """Hidden units per tile: 64, unless that leaves fewer tiles than the
    machine has CPUs (the time loop runs at most one thread per tile) and H
    is at most 256, then 32.  Wider tiles give each gate update more units
    per call; narrower ones give every CPU a tile (docs/design.md, "Tiles").
    Depends on H and the machine only, so that every thread count gives the
    same GEMM shapes and bitwise-identical results."""
    forced = int(os.environ.get("RNNKERNELS_UNIT_TILE", 0))
    if forced:
        return forced
    return 64 if H > 256 or H // 64 >= CPUS else 32


# Recurrent flops per step and thread below which another thread costs more
# than it brings: each step ends in a barrier, and on a busy machine a thread
# that has lost its core turns every barrier into a scheduler round trip.
_MIN_FLOPS_PER_THREAD = 500_000


# The same for the merged GEMMs, which have one fork/join per GEMM.
_MIN_MERGED_FLOPS_PER_THREAD = 4_000_000


def wgrad_pieces(k):
    """Pieces of the k = sum(lengths) rows that each weight-gradient GEMM is
    summed over (see _common.weight_grads): one per CPU of this machine, each
    at least 256 rows (one of the kernel's k chunks), at most 16 (each piece
    keeps a buffer the size of the gradients).  The pieces are added in a
    fixed order, so the count depends on the shape and the machine only,
    never on a call's thread count: results stay bitwise identical for any
    thread count."""
    return max(1, min(CPUS, 16, k // 256))


def threads_for(plan, G, H, P, ntiles, I=0, rows_split=False):
    """Thread counts for one call: (merged GEMMs, time loop), each the
    configured count but no more than its work keeps busy, and for the time
    loop no more than it has pieces to share (hidden-unit tiles, or with the
    row split, the first step's batch rows).  The work split never depends on
    either, so neither do the results."""
    nthreads = _threads.kernel_threads()
    step_flops = 2 * plan.n_first * G * H * P
    merged_flops = 2 * plan.N * G * H * (I + P)
    pieces = plan.n_first if rows_split else ntiles
    step = min(nthreads, max(1, pieces), max(1, step_flops // _MIN_FLOPS_PER_THREAD))
    merged = min(nthreads, max(1, merged_flops // _MIN_MERGED_FLOPS_PER_THREAD))
    return int(merged), int(step)
