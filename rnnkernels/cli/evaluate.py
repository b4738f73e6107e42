"""``rnnkernels evaluate MODEL --data DIR``: accuracy and loss of a saved
classifier on a folder of labelled recordings, or CER and WER of a saved speech
recogniser (``train --task ctc``) on a transcribed folder (``transcripts.tsv``, or a
Common Voice release: its test.tsv)."""
import os

import numpy as np

from .._version import __version__
from .._util.argtypes import positive_int
from .._util.atomic import write_json
from .common import apply_threads, check_writable


def add_parser(sub):
    ev = sub.add_parser("evaluate", help="accuracy and loss of a saved model on a data folder",
                        description="Evaluate a model saved by `rnnkernels train --save`.")
    ev.add_argument("model", metavar="MODEL")
    ev.add_argument("--data", metavar="DIR", required=True,
                    help="folder of labelled recordings (same layouts as train)")
    ev.add_argument("--batch-size", type=positive_int, default=256, metavar="N")
    ev.add_argument("--beam", type=positive_int, default=8, metavar="N",
                    help="speech recognisers: prefix beam search width, 1 greedy (default: %(default)s)")
    ev.add_argument("--threads", type=positive_int, metavar="N")
    ev.add_argument("--report", metavar="REPORT.json", help="write the results as JSON")
    ev.add_argument("--plot", metavar="PNG", help="write a confusion matrix")
    ev.set_defaults(run=run)
    return ev


def run(args):
    from ..audio import recipes
    from ..audio.datasets import load_audio_folder

    apply_threads(args)
    for option in ("report", "plot"):
        check_writable(getattr(args, option), f"--{option}")
    from ..asr.recipes import SpeechRecognizer
    if SpeechRecognizer.is_recognizer_file(args.model):
        return _run_ctc(args)
    classifier = recipes.AudioClassifier.load(args.model)
    dataset = load_audio_folder(args.data, label_names=classifier.label_names)
    result = classifier.evaluate(dataset, batch_size=args.batch_size)
    print(f"{args.model} on {args.data}: {len(dataset)} files, "
          f"accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}")
    if args.report:
        write_json(args.report, dict(result, model=args.model, data=args.data, version=__version__),
                   indent=2)
        print(f"report: {args.report}")
    if args.plot:
        from .plots import confusion_figure
        confusion_figure(np.array(result["confusion"]), classifier.label_names, args.plot,
                               title=f"{os.path.basename(args.model)} on {args.data}: "
                                     f"accuracy {result['accuracy']:.1%}")
        print(f"plot:   {args.plot}")
    return 0



def _run_ctc(args):
    from ..asr import corpus
    from ..asr.recipes import SpeechRecognizer
    from .common import CommandError

    if args.plot:
        raise CommandError("--plot: a confusion matrix is for classifiers; a speech recogniser has none")
    recognizer = SpeechRecognizer.load(args.model)
    if corpus.is_common_voice(args.data) and not os.path.isfile(os.path.join(args.data, "transcripts.tsv")):
        dataset = corpus.load_common_voice(args.data, splits=("test",)).get("test")
        if dataset is None:
            raise CommandError(f"--data {args.data!r}: the Common Voice test.tsv gave no clips")
    else:
        dataset = corpus.load_transcribed_folder(args.data)
    result = recognizer.evaluate(dataset, beam=args.beam)
    result.pop("hypotheses")
    print(f"{args.model} on {args.data}: {result['n_test']} utterances, CER {result['cer']:.2%}, "
          f"WER {result['wer']:.2%} ({result['note']})")
    if args.report:
        write_json(args.report, dict(result, model=args.model, data=args.data, version=__version__,
                                     decoder=f"prefix beam search, width {args.beam}" if args.beam > 1
                                     else "greedy"), indent=2)
        print(f"report: {args.report}")
    return 0
