"""The packed layout of a batch: how a (T, B) batch with lengths maps to the
kernels' rows.

Sequences are sorted by length (longest first) and step ``s`` keeps only the
``counts[s]`` sequences still running, as PyTorch's PackedSequence does, so
work follows ``sum(lengths)`` rather than ``T * B``.  A reversed sequence is
packed back to front, so the kernels always run forward in time.  The state
buffers are ``(N + B, H)`` (see src/_lstm.pyx); with equal lengths they are the
familiar ``(T+1, B, H)`` and ``y`` is a view of them.
"""
import functools

import numpy as np

from .memory import copy as _aligned_copy, empty as _aligned_empty, zeros as _aligned_zeros


def _layout():
    """The compiled row copies (imported on first use, like the kernels)."""
    from . import _layout as layout
    return layout


NO_ROWS = np.empty(0, dtype=np.intp)
NO_ROWS.flags.writeable = False


class Plan:
    """How a (T, B) batch with given lengths maps to the kernels' packed rows."""

    def __init__(self, T, B, lengths, reverse, sorted_lengths=None):
        self.T, self.B = T, B
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
        # padded (t, b), flattened, that packed row p comes from; and the
        # padded rows that no packed row fills
        self.padded_of_packed = np.empty(0 if self.identity else N, dtype=np.intp)
        self.padding = np.empty(T * B - N, dtype=np.intp)
        _layout().plan_rows(lengths, self.order, self.counts, self.offsets,
                            self.padded_of_packed, self.padding, T, reverse)
        self.n_first = int(self.counts[0]) if S else 0

    @property
    def rows(self):
        """Row of the caller's (T*B, F) arrays for each packed row, or an empty
        index when they are the same rows (the kernels' convention)."""
        return NO_ROWS if self.identity else self.padded_of_packed

    def output_buffer(self, H, dtype):
        """(T*B, H) outputs for the kernels to write in place (they zero the
        padding rows themselves; with no packed row at all they never run,
        so the buffer comes zeroed); (0, H) when y is a view of the state
        buffer."""
        if self.identity:
            return np.empty((0, H), dtype)
        return (_aligned_empty if self.N else _aligned_zeros)((self.T * self.B, H), dtype)

    def input_grad_buffer(self, I, dtype):
        """dL/dx as (T*B, I) rows: the kernels write the packed rows through
        ``rows`` and zero the padding (zeroed here when there are no packed rows)."""
        return (_aligned_empty if self.N else _aligned_zeros)((self.T * self.B, I), dtype)

    def state_buffer(self, init, H):
        """(N + B, H) state buffer with the initial states placed (see _lstm.pyx)."""
        buf = _aligned_empty((self.N + self.B, H), init.dtype)
        if not self.in_order:
            init = init[self.order]
        buf[: self.n_first] = init[: self.n_first]
        buf[self.N + self.n_first:] = init[self.n_first:]
        return buf

    def outputs(self, buf, y):
        """y (T, B, H): the kernels' output buffer, or with equal lengths a
        view of their state buffer."""
        H = buf.shape[1]
        if self.identity:
            return buf[self.B:].reshape(self.T, self.B, H)
        return y.reshape(self.T, self.B, H)

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


def plan(T, B, lengths, reverse):
    """The plan for a batch; equal lengths (the common case) come from a cache,
    their plan depending on (T, B, reverse) alone: inside a training loop,
    where the kernels have just evicted the interpreter's data from the
    caches, building one was a visible share of a small call."""
    if lengths is None:
        return _equal_plan(T, B, reverse)
    sorted_lengths = _layout().longest_first(lengths, T)  # checks the range too
    if B and sorted_lengths[2] == T * B:  # every sequence T long
        return _equal_plan(T, B, reverse)
    return Plan(T, B, lengths, reverse, sorted_lengths)


@functools.lru_cache(maxsize=16)
def _equal_plan(T, B, reverse):
    plan = Plan(T, B, None, reverse)
    for a in vars(plan).values():
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
    return plan


