"""The character vocabulary of a CTC model: id 0 is the blank (Keras's convention), ids
1..n the characters, sorted."""

BLANK = 0


class Vocabulary:
    """Characters <-> ids; ``len(vocab)`` counts the blank (the model's output size)."""

    def __init__(self, characters):
        chars = list(characters)
        if not chars:
            raise ValueError("characters: expected at least one character, got none")
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"characters: expected single characters, got {c!r}")
        if len(set(chars)) != len(chars):
            raise ValueError(f"characters: expected distinct characters, got {''.join(chars)!r}")
        self.characters = chars
        self._ids = {c: i + 1 for i, c in enumerate(chars)}

    @classmethod
    def from_texts(cls, texts):
        """The sorted set of characters the transcripts use."""
        chars = sorted({c for t in texts for c in t})
        if not chars:
            raise ValueError("transcripts: every transcript is empty, no characters to learn")
        return cls(chars)

    def __len__(self):
        return len(self.characters) + 1

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and other.characters == self.characters

    def encode(self, text, source=None):
        """The ids of ``text``'s characters; a character outside the vocabulary is an error."""
        try:
            return [self._ids[c] for c in text]
        except KeyError as exc:
            where = f" ({source})" if source else ""
            raise ValueError(f"transcript {text!r}{where}: character {exc.args[0]!r} is not in the "
                             f"vocabulary {''.join(self.characters)!r}") from None

    def decode(self, ids):
        """Text of label ids (the blank and unknown ids are skipped)."""
        n = len(self.characters)
        return "".join(self.characters[i - 1] for i in ids if 1 <= i <= n)

    def to_list(self):
        return list(self.characters)
