"""Error rates with jiwer: CER (characters) and WER (words).

For digit strings written without spaces ("4823"), each utterance is one word: CER is
the digit error rate and WER the utterance error rate (the share of utterances with any
error).  :func:`error_rates` says which applies in its ``note``.
"""

__all__ = ["error_rates"]


def error_rates(references, hypotheses):
    """``{'cer', 'wer', 'n', 'note'}`` of hypotheses against references (lists of strings).

    An empty reference counts its hypothesis's characters as insertions (jiwer refuses
    empty references; this sums edits and reference lengths itself, so the rates are
    totals over the corpus, not means of per-utterance rates)."""
    import jiwer

    refs, hyps = list(references), list(hypotheses)
    if len(refs) != len(hyps):
        raise ValueError(f"hypotheses: expected {len(refs)} (one per reference), got {len(hyps)}")
    if not refs:
        raise ValueError("references: expected at least one, got none")
    char_edits = char_total = word_edits = word_total = 0
    for r, h in zip(refs, hyps):
        if not isinstance(r, str) or not isinstance(h, str):
            raise TypeError("references and hypotheses: expected strings")
        if r:
            c = jiwer.process_characters(r, h)
            char_edits += c.substitutions + c.deletions + c.insertions
            char_total += len(r)
        else:
            char_edits += len(h)
        if r.split():
            w = jiwer.process_words(r, h if h.split() else "")
            word_edits += w.substitutions + w.deletions + w.insertions
            word_total += len(r.split())
        else:
            word_edits += len(h.split())
    spaces = any(" " in r.strip() for r in refs)
    note = ("CER: character error rate; WER: word error rate" if spaces else
            "transcripts have no spaces: CER is the symbol (digit) error rate, WER the utterance error rate")
    return {"cer": char_edits / max(char_total, 1), "wer": word_edits / max(word_total, 1), "n": len(refs),
            "note": note}
