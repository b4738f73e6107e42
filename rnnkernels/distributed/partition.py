"""Which rows of each global batch a rank trains on.

The global batch is the one-process batch: the same seeded permutation of the
samples each epoch (every rank draws it alike from ``(seed, epoch)``), cut into
batches of ``batch_size``.  Each batch is then shared over the ranks as evenly
as possible, counts differing by at most one (a batch of 10 on 4 ranks: 3, 3,
2, 2): for sequences with lengths the rows are dealt by length so the work
is even too (:func:`rows`), else in contiguous parts in rank order.  Losses and metrics are
sums over the whole batch divided by its count, so the parts need not be
equal for the result to be the one-process one.
"""

import numpy as np

__all__ = ["part", "rows", "check_launch"]


def part(n, rank, size):
    """``(start, stop)`` of rank ``rank``'s rows of a batch of ``n`` rows."""
    base, extra = divmod(int(n), int(size))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def rows(n, rank, size, cost=None):
    """The rows (ascending indices) rank ``rank`` trains on in a batch of ``n`` rows.

    Without ``cost``: the contiguous :func:`part`.  With ``cost`` (``(n,)``, e.g. the
    sequences' lengths: the recurrent kernels' work grows with them) the rows are dealt
    longest first in snake order (ranks 0..N-1, then N-1..0, ...), so every rank gets
    about the same work as well as the same count (counts still differ by at most one;
    on the spoken digits, batches of 32: the slowest of 2 ranks has 0.9% more frames than
    the mean, against 4.1% for contiguous parts; of 4 ranks 3.1% against 11.2%).  Any
    fixed assignment gives the one-process result: the loss and gradient are sums."""
    n, rank, size = int(n), int(rank), int(size)
    if cost is None:
        start, stop = part(n, rank, size)
        return np.arange(start, stop)
    cost = np.asarray(cost).reshape(-1)
    if cost.shape[0] != n:
        raise ValueError(f"cost: expected {n} entries (one per row), got {cost.shape[0]}")
    order = np.argsort(-cost.astype(np.float64), kind="stable")
    i = np.arange(n)
    lane = np.where((i // size) % 2 == 0, i % size, size - 1 - i % size)
    return np.sort(order[lane == rank])


class LaunchError(ValueError):
    """A launch that cannot train: every rank raises it alike (one line from rank 0)."""


def check_launch(size, n_samples=None, batch_size=None, n_batches=None, what="training data"):
    """Refuse more ranks than the data or the batch has rows (a rank with nothing to do
    in every batch is a mistake in the launch, not a slow run)."""
    if n_samples is not None and size > n_samples:
        raise LaunchError(f"mpiexec -n {size}: more ranks than samples in the {what} "
                          f"({n_samples}); launch at most {n_samples} ranks")
    if batch_size is not None and size > batch_size:
        raise LaunchError(f"mpiexec -n {size}: more ranks than the batch size ({batch_size}); "
                          f"the global batch is split over the ranks, so give a batch size of at "
                          f"least {size} (each rank takes batch_size / ranks samples)")
    if n_batches is not None and n_batches == 0:
        raise LaunchError(f"{what}: no batches")
