"""The packed layout of a batch: how the caller's rows map to the kernels'.

Sequences are sorted by length (longest first) and step ``s`` keeps only the
``counts[s]`` sequences still running, as PyTorch's PackedSequence does, so
work follows ``sum(lengths)`` rather than ``T * B``.  A reversed sequence is
packed back to front, so the kernels always run forward in time.  The state
buffers are ``(N + B, .)`` (src/_recurrent_t.h); with equal lengths they are
the familiar ``(T+1, B, .)`` and ``y`` is a view of them.

Two kinds of caller layout: a padded time-major batch ``(T, B, F)`` with
lengths (:func:`plan`), and a PackedSequence's ``data`` ``(N, F)`` with its
``batch_sizes`` (:func:`packed_plan`), which already is the kernels' layout.
"""
import functools

import numpy as np

from . import openmp as _openmp
from .memory import copy as _aligned_copy, empty as _aligned_empty, zeros as _aligned_zeros


def _layout():
    """The compiled row copies (imported on first use, like the kernels)."""
    return _openmp.load("_layout")


def _frozen(*arrays):
    for a in arrays:
        if isinstance(a, np.ndarray):
            a.flags.writeable = False


class Plan:
    """How a batch maps to the kernels' packed rows.

    ``counts``, ``offsets``: the packed layout; ``order``: the caller's
    sequence of each sorted position; ``x_rows``/``y_rows``: the caller's row
    of each packed row for the inputs (and dX) and for the outputs (and dy),
    or None where they are the packed rows themselves; ``padding``: the
    caller's rows no packed row fills (zeroed by the kernels); ``R``: the
    caller's row count and ``row_shape`` its shape ((T, B) or (N,));
    ``identity``: the caller's rows are the packed ones and ``y`` is a view
    of the state buffer (equal lengths, forward)."""

    def __init__(self, T, B, lengths, reverse, sorted_lengths=None):
        self.T, self.B, self.R, self.row_shape = T, B, T * B, (T, B)
        if lengths is None:
            lengths = np.full(B, T, dtype=np.int64)
        # Longest first; stable so equal lengths keep their order.  With the
        # sequences already longest first (in_order), the initial and final
        # states need no gathers.
        self.order, self.S, self.N, self.in_order = sorted_lengths or _layout().longest_first(lengths, T)
        S, N = self.S, self.N
        # The common case (all full length, forward) needs no gathers at all.
        self.identity = S == T and N == T * B and not reverse and self.in_order
        self.counts = np.empty(S, dtype=np.intp)
        self.offsets = np.empty(S + 1, dtype=np.intp)
        # the padded row (t * B + b) that packed row p comes from; and the
        # padded rows that no packed row fills
        padded_of_packed = np.empty(0 if self.identity else N, dtype=np.intp)
        self.padding = np.empty(T * B - N, dtype=np.intp)
        _layout().plan_rows(lengths, self.order, self.counts, self.offsets,
                            padded_of_packed, self.padding, T, reverse)
        self.x_rows = self.y_rows = None if self.identity else padded_of_packed
        self.n_first = int(self.counts[0]) if S else 0

    # ------------------------------------------------------------ buffers
    def output_buffer(self, P, dtype):
        """(R, P) outputs for the kernels to write in place (they zero the
        padding rows themselves; with no packed row at all they never run,
        so the buffer comes zeroed); None when y is a view of the state buffer."""
        if self.identity:
            return None
        return (_aligned_empty if self.N else _aligned_zeros)((self.R, P), dtype)

    def input_grad_buffer(self, I, dtype):
        """dL/dx as (R, I) rows: the kernels write the packed rows through
        ``x_rows`` and zero the padding (zeroed here when there are no packed rows)."""
        return (_aligned_empty if self.N else _aligned_zeros)((self.R, I), dtype)

    def state_buffer(self, init, width=None):
        """(N + B, width) state buffer with the initial states placed."""
        buf = _aligned_empty((self.N + self.B, init.shape[1] if width is None else width), init.dtype)
        if not self.in_order:
            init = init[self.order]
        buf[: self.n_first] = init[: self.n_first]
        buf[self.N + self.n_first:] = init[self.n_first:]
        return buf

    def packed_rows(self, a, name):
        """A per-row, per-step array in the caller's layout (row_shape + (F,))
        in the kernels' packed row order, (N, F): a view where the rows are
        the packed ones, else a gathered copy."""
        a = a.reshape(self.R, a.shape[-1])
        if self.x_rows is None:
            return np.ascontiguousarray(a)
        out = _aligned_empty((self.N, a.shape[1]), a.dtype)
        if self.N:
            _layout().take_rows(np.ascontiguousarray(a), self.x_rows, out, 1)
        return out

    # ------------------------------------------------------------ results
    def outputs(self, buf, y):
        """y in the caller's layout: the kernels' output buffer, or with equal
        lengths a view of their state buffer."""
        P = buf.shape[1]
        if self.identity:
            return buf[self.B:].reshape(self.row_shape + (P,))
        return y.reshape(self.row_shape + (P,))

    def final(self, buf):
        if self.in_order:
            return buf[self.N:].copy()
        out = np.empty((self.B, buf.shape[1]), buf.dtype)
        out[self.order] = buf[self.N:]
        return out

    def to_sorted(self, a):
        """A new aligned array of a's rows, longest sequence first."""
        return _aligned_copy(a if self.in_order else a[self.order])

    def from_sorted(self, a):
        """a's rows back in the caller's order (a itself when already in it:
        only ever called on buffers made for this call)."""
        if self.in_order:
            return a
        out = np.empty_like(a)
        out[self.order] = a
        return out


class PackedPlan(Plan):
    """The plan of a PackedSequence: ``data`` (N, F) whose step s holds
    ``batch_sizes[s]`` rows, longest sequence first: the kernels' own layout.
    Reversed, each sequence runs back to front, its packed rows read and
    written through a row map."""

    def __init__(self, batch_sizes, reverse):
        counts = np.ascontiguousarray(batch_sizes, dtype=np.intp)
        S = counts.size
        self.counts = counts
        self.offsets = np.zeros(S + 1, dtype=np.intp)
        np.cumsum(counts, out=self.offsets[1:])
        self.S, self.T = S, S
        self.B = int(counts[0]) if S else 0
        self.N = self.R = int(self.offsets[-1])
        self.row_shape = (self.N,)
        self.order = np.arange(self.B, dtype=np.intp)
        self.in_order = True
        self.padding = np.empty(0, dtype=np.intp)
        self.n_first = self.B
        # equal batch sizes, forward: the data is time-major (S, B) rows and
        # y a view of the state buffer, exactly as a padded batch's
        self.identity = not reverse and bool(np.all(counts == self.B))
        if self.identity:
            self.x_rows = self.y_rows = None
        elif not reverse:
            self.x_rows = None
            self.y_rows = _identity_rows(self.N)
        else:
            # packed row (s, j) reads step lengths[j] - 1 - s of sequence j
            lengths = (counts[:, None] > np.arange(self.B)[None, :]).sum(axis=0)
            s = np.repeat(np.arange(S), counts)
            j = np.arange(self.N) - self.offsets[s]
            self.x_rows = self.y_rows = np.ascontiguousarray(self.offsets[lengths[j] - 1 - s] + j)
        _frozen(self.counts, self.offsets, self.x_rows, self.y_rows)


@functools.lru_cache(maxsize=8)
def _identity_rows(n):
    rows = np.arange(n, dtype=np.intp)
    rows.flags.writeable = False
    return rows


def plan(T, B, lengths, reverse):
    """The plan for a padded batch; equal lengths (the common case) come from
    a cache, their plan depending on (T, B, reverse) alone: inside a training
    loop, where the kernels have just evicted the interpreter's data from the
    caches, building one was a visible share of a small call."""
    if lengths is None:
        return _equal_plan(T, B, reverse)
    sorted_lengths = _layout().longest_first(lengths, T)  # checks the range too
    if B and sorted_lengths[2] == T * B:  # every sequence T long
        return _equal_plan(T, B, reverse)
    return Plan(T, B, lengths, reverse, sorted_lengths)


@functools.lru_cache(maxsize=16)
def _equal_plan(T, B, reverse):
    p = Plan(T, B, None, reverse)
    _frozen(*vars(p).values())
    return p


def packed_plan(batch_sizes, reverse):
    """The plan for a PackedSequence's batch_sizes (checked by ops).  The
    last few are kept by their values: a padded batch reaches the kernels as
    a PackedSequence with every batch size equal (rnnkernels.torch), and a
    training loop asks for the same plan at every call, just after the
    kernels have evicted the interpreter's data (see ``plan``)."""
    key = (batch_sizes.tobytes(), bool(reverse))
    found = _packed_plans.get(key)
    if found is None:
        found = PackedPlan(batch_sizes, reverse)
        _frozen(*vars(found).values())
        if len(_packed_plans) >= _PACKED_PLANS_KEPT:
            _packed_plans.pop(next(iter(_packed_plans)), None)  # the oldest
        _packed_plans[key] = found
    return found


_PACKED_PLANS_KEPT = 8
_packed_plans = {}  # (batch_sizes' bytes, reverse) -> PackedPlan; single dict operations, atomic under the GIL
