"""``rnnkernels predict MODEL FILE...``: the label and class probabilities of
each audio file."""
import json

import numpy as np

from .._util.argtypes import positive_int
from .common import apply_threads


def add_parser(sub):
    pr = sub.add_parser("predict", help="label and class probabilities of audio files",
                        description="Predict the class of each audio file with a saved model.")
    pr.add_argument("model", metavar="MODEL")
    pr.add_argument("files", metavar="FILE", nargs="+")
    pr.add_argument("--threads", type=positive_int, metavar="N")
    pr.add_argument("--json", action="store_true", help="one JSON object per file instead of a table")
    pr.set_defaults(run=run)
    return pr


def run(args):
    from ..audio import recipes

    apply_threads(args)
    classifier = recipes.AudioClassifier.load(args.model)
    probs = classifier.predict_files(args.files)
    names = classifier.label_names
    for path, p in zip(args.files, probs):
        best = int(np.argmax(p))
        if args.json:
            print(json.dumps({"file": path, "label": names[best],
                              "probabilities": {n: round(float(v), 6) for n, v in zip(names, p)}}))
        else:
            top = np.argsort(p)[::-1][:3]
            others = ", ".join(f"{names[i]} {p[i]:.3f}" for i in top[1:])
            print(f"{path}: {names[best]} ({p[best]:.3f}; next: {others})")
    return 0

