"""Which recordings share a batch, so that padding stays bounded.

A batch is padded to its longest recording: one 10-minute recording among
one-second clips made every batch that drew it 600 times larger than the
others (2.8 GB peak against 0.27 GB without it).  Two rules here, both seeded
and deterministic, neither depending on the thread count:

- **Long recordings get batches of their own.**  A recording longer than
  ``LONG_FACTOR`` times the 95th-percentile length of its set is *long*; the
  long ones are packed, longest first, into batches whose padded frames
  (batch size x longest) stay within ``batch_size`` x that threshold, and a
  recording above even that sits alone.  Peak memory then follows the longest
  recording itself, not the batch size times it.  A set without outliers (the
  spoken digits: the longest training clip is 1.9x the 95th percentile) has no long
  recording, and its batches are exactly those of a plain shuffle.
- **Bucketing** (optional, ``bucket=True``; ``rnnkernels train --bucket``): the
  epoch's shuffled order is cut into chunks of ``BUCKET_CHUNK`` batches, each
  chunk sorted by length and cut into batches, and the batches are shuffled,
  as a length-bucketing sampler does: less padding in every batch, batches of
  similar lengths.

The number of batches of an epoch is the same every epoch (``len()`` is fixed
before training starts): ``ceil(short / batch_size)`` plus the long batches,
whose composition does not depend on the epoch.
"""
import numpy as np

#: a recording longer than this times the 95th-percentile length of its set is "long"
LONG_FACTOR = 4.0
#: batches per sorted chunk when bucketing
BUCKET_CHUNK = 20


def long_threshold(lengths):
    """Frames above which a recording of this set is long (at least 1)."""
    lengths = np.asarray(lengths)
    if lengths.size == 0:
        return 1
    return max(1, int(np.ceil(LONG_FACTOR * np.quantile(lengths, 0.95))))


def _cut(order, lengths, batch_size, budget):
    """``order`` (sorted by length, either way) cut greedily into batches: a batch ends
    when one more recording would make it hold more than ``batch_size`` or pad it beyond
    ``budget`` frames (its padded size: its rows times its longest)."""
    batches, current, longest = [], [], 0
    for i in order:
        longest_with = max(longest, int(lengths[i]))
        if current and (len(current) == batch_size or (len(current) + 1) * longest_with > budget):
            batches.append(np.array(current, dtype=np.intp))
            current, longest_with = [], int(lengths[i])
        current.append(i)
        longest = longest_with
    if current:
        batches.append(np.array(current, dtype=np.intp))
    return batches


def _pack_long(long_ids, lengths, batch_size, budget):
    """Long recordings, longest first (ties by index), packed greedily (:func:`_cut`)."""
    return _cut(sorted(long_ids, key=lambda i: (-int(lengths[i]), int(i))), lengths, batch_size, budget)


class BatchPlan:
    """The batches of every epoch of a training set of recordings of ``lengths`` frames."""

    def __init__(self, lengths, batch_size, bucket=False):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.bucket = bool(bucket)
        self.threshold = long_threshold(self.lengths)
        is_long = self.lengths > self.threshold
        self.n_short = int((~is_long).sum())
        self.long_batches = _pack_long(np.flatnonzero(is_long), self.lengths, self.batch_size,
                                       self.batch_size * self.threshold)

    def __len__(self):
        return -(-self.n_short // self.batch_size) + len(self.long_batches)

    def epoch(self, order, rng):
        """The epoch's batches (arrays of indices) from its shuffled ``order`` of all the
        recordings; ``rng`` shuffles the batches when there is anything to mix in (long
        batches, or bucketing), and is not drawn from otherwise."""
        order = np.asarray(order)
        short = order[self.lengths[order] <= self.threshold]
        bs = self.batch_size
        if self.bucket:
            batches = []
            chunk = bs * BUCKET_CHUNK
            for start in range(0, len(short), chunk):
                part = short[start:start + chunk]
                part = part[np.argsort(self.lengths[part], kind="stable")]
                batches += [part[i:i + bs] for i in range(0, len(part), bs)]
        else:
            batches = [short[i:i + bs] for i in range(0, len(short), bs)]
        batches += self.long_batches
        if self.bucket or self.long_batches:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches


def inference_batches(lengths, batch_size):
    """Batches (arrays of indices) for inference over recordings of ``lengths`` frames:
    sorted by length, at most ``batch_size`` each, and no batch padded beyond
    ``batch_size`` times the set's long threshold unless one recording alone is longer.
    Each recording's outputs do not depend on its batch, so the caller puts them back in
    order."""
    lengths = np.asarray(lengths, dtype=np.int64)
    budget = int(batch_size) * long_threshold(lengths)
    return _cut(np.argsort(lengths, kind="stable"), lengths, batch_size, budget)
