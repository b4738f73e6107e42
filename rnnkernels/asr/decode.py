"""CTC decoding: greedy (best path) and prefix beam search.

No maintained decoder library fits here: pyctcdecode (last release January 2023) pins
numpy below 2, and torchaudio's / flashlight-text's decoders need PyTorch or a C++
build with KenLM.  So the search is ours, small and exact: with a beam wide enough to
keep every prefix, a prefix's score is exactly its CTC log-probability (tests check it
against the CTC loss).

Frames are rows of ``log_probs (T, C)``, log-probabilities of the C classes (blank
included); ``blank`` is 0 by default (Keras's convention).

Prefix beam search (Hannun et al. 2014): each prefix keeps two log-scores, of the paths
ending in a blank and of those ending in its last label; at each frame every prefix
either stays (blank, or its last label repeated) or grows by one label, and a repeated
label only grows the prefix across a blank.  ``token_bonus`` (a log-space reward per
emitted label, the "insertion bonus") and ``lm`` (a function ``lm(prefix, token) ->
log-score`` added when ``prefix`` grows by ``token``, e.g. ``alpha * log P_LM(token |
prefix)``) shape the search; both are applied once per label, when it is emitted.
"""
import math

import numpy as np

__all__ = ["greedy_decode", "greedy_batch", "prefix_beam_search", "collapse"]

_NEG_INF = -math.inf


def _frames(log_probs, length, name="log_probs"):
    lp = np.asarray(log_probs)
    if lp.ndim != 2 or lp.shape[1] < 1:
        raise ValueError(f"{name}: expected (T, C) frame scores, got shape {lp.shape}")
    if lp.dtype.kind != "f":
        raise TypeError(f"{name}: expected floating-point log-probabilities, got dtype {lp.dtype}")
    if length is not None:
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or not 0 <= length <= lp.shape[0]:
            raise ValueError(f"length: expected an integer in [0, {lp.shape[0]}], got {length!r}")
        lp = lp[:int(length)]
    return lp


def _blank(blank, C):
    if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)) or not 0 <= blank < C:
        raise ValueError(f"blank: expected a class index in [0, {C - 1}], got {blank!r}")
    return int(blank)


def collapse(path, blank=0):
    """A frame path to labels: merge repeats, then drop blanks.  Returns ``(labels, frames)``,
    the frame where each label starts."""
    labels, frames, previous = [], [], None
    for t, k in enumerate(int(k) for k in path):
        if k != previous and k != blank:
            labels.append(k)
            frames.append(t)
        previous = k
    return labels, frames


def greedy_decode(log_probs, length=None, blank=0, return_frames=False):
    """Best path: the most likely class of each frame, collapsed.  ``log_probs (T, C)`` (or
    probabilities: only the argmax matters).  Returns the label ids, and with
    ``return_frames`` the frame where each starts."""
    lp = _frames(log_probs, length)
    blank = _blank(blank, lp.shape[1])
    labels, frames = collapse(np.argmax(lp, axis=1), blank)
    return (labels, frames) if return_frames else labels


def greedy_batch(outputs, lengths=None, blank=0):
    """:func:`greedy_decode` of each sample of ``outputs (B, T, C)`` over its ``lengths``."""
    out = np.asarray(outputs)
    if out.ndim != 3:
        raise ValueError(f"outputs: expected (B, T, C), got shape {out.shape}")
    B, T = out.shape[:2]
    n = np.full(B, T) if lengths is None else np.asarray(lengths)
    if n.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},), got {n.shape}")
    best = np.argmax(out, axis=2)
    return [collapse(best[b, :int(n[b])], blank)[0] for b in range(B)]


def _lse(a, b):
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    m = a if a > b else b
    return m + math.log1p(math.exp(-abs(a - b)))


def prefix_beam_search(log_probs, beam_width=8, length=None, blank=0, token_bonus=0.0, lm=None,
                       prune=-12.0, n_best=1):
    """CTC prefix beam search over ``log_probs (T, C)`` (log-probabilities per frame).

    ``beam_width``: prefixes kept after each frame; ``token_bonus``: added per emitted label;
    ``lm(prefix, token)``: optional log-score added when ``prefix`` (a tuple of ids) grows by
    ``token``; ``prune``: labels whose log-probability in a frame is below ``prune`` (and
    below the frame's best) are not tried there (None tries all).  Returns the best label
    ids, or with ``n_best > 1`` a list of ``(ids, score)`` best first, score being the
    prefix's log-probability plus its bonuses.
    """
    lp = _frames(log_probs, length)
    T, C = lp.shape
    blank = _blank(blank, C)
    if isinstance(beam_width, bool) or not isinstance(beam_width, (int, np.integer)) or beam_width < 1:
        raise ValueError(f"beam_width: expected a positive integer, got {beam_width!r}")
    if isinstance(n_best, bool) or not isinstance(n_best, (int, np.integer)) or n_best < 1:
        raise ValueError(f"n_best: expected a positive integer, got {n_best!r}")
    if lm is not None and not callable(lm):
        raise TypeError(f"lm: expected a function lm(prefix, token) -> log-score, got {type(lm).__name__}")
    bonus = float(token_bonus)
    lp = lp.astype(np.float64)
    # prefix -> [log P(paths ending in blank), log P(paths ending in its last label)]
    beams = {(): [0.0, _NEG_INF]}
    extension = {}  # (prefix, token) -> bonus + lm score, computed once
    for t in range(T):
        row = lp[t]
        if prune is None:
            tokens = [k for k in range(C) if k != blank]
        else:
            keep = (row >= prune) | (row >= row.max())
            tokens = [int(k) for k in np.flatnonzero(keep) if k != blank]
        nxt = {}

        def entry(prefix):
            e = nxt.get(prefix)
            if e is None:
                e = nxt[prefix] = [_NEG_INF, _NEG_INF]
            return e

        for prefix, (p_b, p_nb) in beams.items():
            total = _lse(p_b, p_nb)
            stay = entry(prefix)
            stay[0] = _lse(stay[0], total + row[blank])
            last = prefix[-1] if prefix else None
            for k in tokens:
                key = (prefix, k)
                extra = extension.get(key)
                if extra is None:
                    extra = extension[key] = bonus + (float(lm(prefix, k)) if lm is not None else 0.0)
                grown = entry(prefix + (k,))
                if k == last:
                    # "a a" needs a blank between: only the blank-ending paths grow; the others
                    # stay on the same prefix (the repeat merges)
                    grown[1] = _lse(grown[1], p_b + row[k] + extra)
                    stay[1] = _lse(stay[1], p_nb + row[k])
                else:
                    grown[1] = _lse(grown[1], total + row[k] + extra)
        ranked = sorted(nxt.items(), key=lambda kv: (-_lse(*kv[1]), kv[0]))
        beams = dict(ranked[:beam_width])
    ranked = sorted(((list(p), _lse(*s)) for p, s in beams.items()), key=lambda r: (-r[1], r[0]))
    if n_best == 1:
        return ranked[0][0]
    return ranked[:n_best]
