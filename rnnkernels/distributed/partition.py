"""Which rows of each global batch a rank trains on.

The global batch is the one-process batch: the same seeded permutation of the
samples each epoch (every rank draws it alike from ``(seed, epoch)``), cut into
batches of ``batch_size``.  Each batch is then cut into ``size`` contiguous
parts in rank order, as evenly as possible: the first ``n % size`` ranks take
one row more (a batch of 10 on 4 ranks: 3, 3, 2, 2).  Losses and metrics are
sums over the whole batch divided by its count, so the parts need not be
equal for the result to be the one-process one.
"""

__all__ = ["part", "check_launch"]


def part(n, rank, size):
    """``(start, stop)`` of rank ``rank``'s rows of a batch of ``n`` rows."""
    base, extra = divmod(int(n), int(size))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


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
