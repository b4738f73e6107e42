"""Decoding and error rates: greedy by hand, the beam search's scores against the CTC
loss, the bonus and LM hooks, jiwer's rates."""
import itertools

import numpy as np
import pytest

from rnnkernels import ops
from rnnkernels.asr import Vocabulary, error_rates, greedy_decode, prefix_beam_search
from rnnkernels.asr.decode import collapse, greedy_batch


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def test_greedy_collapses_repeats_and_drops_blanks():
    path = [0, 1, 1, 0, 1, 2, 2, 0, 0, 3]
    lp = np.log(np.eye(4)[path] * 0.9 + 0.025)
    assert greedy_decode(lp) == [1, 1, 2, 3]
    assert greedy_decode(lp, return_frames=True) == ([1, 1, 2, 3], [1, 4, 5, 9])
    assert greedy_decode(lp, length=3) == [1]
    assert collapse([2, 2, 0, 2], blank=0) == ([2, 2], [0, 3])
    assert greedy_decode(lp, blank=1) == [0, 0, 2, 0, 3]
    assert greedy_batch(np.stack([lp, lp]), [10, 2]) == [[1, 1, 2, 3], [1]]
    with pytest.raises(ValueError, match="log_probs"):
        greedy_decode(lp[0])
    with pytest.raises(ValueError, match="blank"):
        greedy_decode(lp, blank=4)


@pytest.mark.parametrize("seed", range(4))
def test_a_wide_beam_is_exact(seed):
    """With room for every prefix, each score is exactly log P(labels) = -ctc_loss, and the
    best is the most likely label sequence of all (enumerated)."""
    rng = np.random.default_rng(seed)
    T, C = 5, 3
    lp = _log_softmax(rng.standard_normal((T, C)) * 1.5)
    ranked = prefix_beam_search(lp, beam_width=10_000, prune=None, n_best=10_000)
    for labels, score in ranked:
        targets = np.array([labels or [1]])
        loss = ops.ctc_loss(lp[:, None, :].copy(), targets, [T], [len(labels)], training=False)[0][0]
        assert score == pytest.approx(-loss, abs=1e-10)
    best = max((seq for n in range(T + 1) for seq in itertools.product(range(1, C), repeat=n)),
               key=lambda seq: -ops.ctc_loss(lp[:, None, :].copy(), np.array([list(seq) or [1]]), [T],
                                             [len(seq)], training=False)[0][0])
    assert ranked[0][0] == list(best)
    assert prefix_beam_search(lp, beam_width=10_000, prune=None) == list(best)


def test_beam_finds_what_greedy_misses():
    """Best path "blank" vs the label "1" spread over frames: the sum over paths wins."""
    p = np.array([[0.4, 0.3, 0.3], [0.4, 0.3, 0.3]])
    lp = np.log(p)
    assert greedy_decode(lp) == []
    # P("") = 0.16; P("1") = 0.3*0.3 + 0.4*0.3*2 = 0.33; P("2") the same, "1" first by order
    assert prefix_beam_search(lp, beam_width=4) == [1]


def test_bonus_and_lm_hook():
    p = np.array([[0.6, 0.4], [0.6, 0.4]])
    lp = np.log(p)
    assert prefix_beam_search(lp) == [1]  # P("1") = .4*.4 + 2*.6*.4 = .64 > P("") = .36
    calls = []

    def lm(prefix, token):
        calls.append((prefix, token))
        return -100.0  # forbids every label
    assert prefix_beam_search(lp, lm=lm) == []
    assert calls and all(isinstance(pre, tuple) for pre, _ in calls)
    assert prefix_beam_search(lp, token_bonus=-100.0) == []
    quiet = np.log(np.array([[0.9, 0.1], [0.9, 0.1]]))  # P("") = .81, P("1") = .19
    assert prefix_beam_search(quiet) == []
    assert prefix_beam_search(quiet, token_bonus=2.0) == [1]  # .19 e^2 = 1.4 > .81
    assert prefix_beam_search(quiet, lm=lambda prefix, token: 2.0) == [1]
    with pytest.raises(ValueError, match="beam_width"):
        prefix_beam_search(lp, beam_width=0)
    with pytest.raises(TypeError, match="lm"):
        prefix_beam_search(lp, lm="kenlm")


def test_vocabulary_and_error_rates():
    v = Vocabulary.from_texts(["4823", "17"])
    assert len(v) == 7 and v.encode("42") == [4, 2] and v.decode([4, 0, 2, 99]) == "42"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        v.encode("9")
    r = error_rates(["4823", "17", "5"], ["4823", "71", ""])
    # digits: 0 + 2 substitutions... jiwer's edit distance "17"->"71" is 2, "5"->"" 1: 3 of 7
    assert r["cer"] == pytest.approx(3 / 7) and r["wer"] == pytest.approx(2 / 3) and r["n"] == 3
    assert "utterance error rate" in r["note"]
    words = error_rates(["the cat sat"], ["the bat sat"])
    assert words["wer"] == pytest.approx(1 / 3) and words["cer"] == pytest.approx(1 / 11)
    with pytest.raises(ValueError, match="hypotheses"):
        error_rates(["1"], [])
