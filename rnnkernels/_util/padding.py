"""The one padding function: variable-length sequences into one array."""
import numpy as np


def pad_sequences(sequences, max_len=None, dtype="float32", value=0.0, time_major=False,
                  argument="sequences"):
    """Stack variable-length ``(T_i, F)`` sequences into one padded array.

    Returns ``(x, lengths)``: ``x`` is ``(N, T_max, F)`` (``(T_max, N, F)`` with
    ``time_major=True``) in ``dtype``, padded at the end with ``value``;
    ``lengths`` ``(N,)`` int64 holds each sequence's real number of steps.
    ``T_max`` is the longest sequence, so nothing is cut unless ``max_len`` is
    given: longer sequences are then cut to ``max_len`` steps and their
    lengths say so.  Errors name ``argument`` (the caller's argument).
    """
    if isinstance(sequences, np.ndarray) and sequences.ndim != 1 and sequences.dtype != object:
        sequences = list(sequences)
    seqs = list(sequences)
    if not seqs:
        raise ValueError(f"{argument}: expected at least one sequence, got none")
    arrays = []
    for i, s in enumerate(seqs):
        a = np.asarray(s)
        if a.ndim != 2:
            raise ValueError(f"{argument}[{i}]: expected a (timesteps, features) array, got shape {a.shape}")
        arrays.append(a)
    n_feat = arrays[0].shape[1]
    for i, a in enumerate(arrays):
        if a.shape[1] != n_feat:
            raise ValueError(f"{argument}[{i}]: expected {n_feat} features like {argument}[0], "
                             f"got {a.shape[1]}")
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    if max_len is not None:
        if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
            raise ValueError(f"max_len: expected a positive integer, got {max_len!r}")
        lengths = np.minimum(lengths, int(max_len))
    t_max = int(lengths.max())
    x = np.full((len(arrays), t_max, n_feat), value, dtype=dtype)
    for i, (a, n) in enumerate(zip(arrays, lengths)):
        x[i, :n] = a[:n]
    if time_major:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    return x, lengths
