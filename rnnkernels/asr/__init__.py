"""Speech recognition with CTC: vocabularies, decoding, error rates, the connected-digit
corpus and the recogniser recipe (docs/asr.md).

- :mod:`.text`: the character vocabulary (blank is id 0, as Keras's CTC);
- :mod:`.decode`: greedy (best path) and prefix beam search with a token-level bonus
  and an optional language-model hook;
- :mod:`.metrics`: CER and WER with jiwer;
- :mod:`.corpus`: connected digits from the embedded FSDD recordings, and transcribed folders
  (``transcripts.tsv`` with Common Voice's columns, or a Common Voice release);
- :mod:`.recipes`: the default recogniser and the saved :class:`~.recipes.SpeechRecognizer`.
"""
from .decode import greedy_decode, prefix_beam_search
from .metrics import error_rates
from .text import Vocabulary

__all__ = ["Vocabulary", "greedy_decode", "prefix_beam_search", "error_rates"]
