"""``rnnkernels transcribe MODEL FILE...``: the transcript of each audio file, with
``--timestamps`` each character's start time."""
import json

from .._util.argtypes import positive_int
from .common import apply_threads


def add_parser(sub):
    tr = sub.add_parser("transcribe", help="transcripts of audio files (a model from train --task ctc)",
                        description="Transcribe audio files with a speech recogniser saved by "
                                    "`rnnkernels train --task ctc --save`.")
    tr.add_argument("model", metavar="MODEL")
    tr.add_argument("files", metavar="FILE", nargs="+")
    tr.add_argument("--beam", type=positive_int, default=8, metavar="N",
                    help="prefix beam search width; 1: greedy (default: %(default)s)")
    tr.add_argument("--timestamps", action="store_true",
                    help="each character's start time (its first frame on the best path)")
    tr.add_argument("--threads", type=positive_int, metavar="N")
    tr.add_argument("--json", action="store_true", help="one JSON object per file")
    tr.set_defaults(run=run)
    return tr


def run(args):
    from ..asr.recipes import SpeechRecognizer

    apply_threads(args)
    recognizer = SpeechRecognizer.load(args.model)
    texts, times = recognizer.transcribe_files(args.files, beam=args.beam, timestamps=True)
    for path, text, marks in zip(args.files, texts, times):
        if args.json:
            item = {"file": path, "text": text}
            if args.timestamps:
                item["timestamps"] = [{"token": c, "start": t} for c, t in marks]
            print(json.dumps(item))
        elif args.timestamps:
            print(f"{path}: {text}  [" + " ".join(f"{c}@{t:.2f}s" for c, t in marks) + "]")
        else:
            print(f"{path}: {text}")
    return 0
