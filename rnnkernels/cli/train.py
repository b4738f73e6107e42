"""``rnnkernels train``: train a recurrent audio classifier (default: the
embedded spoken digits, official split), with ``--resume`` to continue a saved
run with its optimizer state."""
import argparse
import os
import sys
import zipfile

from .._version import __version__
from .._util.argtypes import fraction, non_negative_int, positive_float, positive_int
from .._util.files import open_regular
from .common import CommandError, apply_threads, check_writable, feature_config, one_line, write_outputs


def add_parser(sub):
    from ..asr import recipes as asr_recipes
    from ..audio import recipes

    d = recipes.DEFAULT_RECIPE
    train = sub.add_parser(
        "train", help="train a recurrent audio classifier (default: embedded spoken digits)",
        description="Train a recurrent classifier on audio. With no options: the embedded Free "
                    "Spoken Digit Dataset, official split (takes 0-4 are test).")
    train.add_argument("--task", choices=("classify", "ctc"), default="classify",
                       help="classify: one label per recording (default); ctc: a speech recogniser "
                            "trained with CTC (with no --data: connected digits made from the embedded "
                            "recordings); see docs/asr.md")
    data = train.add_argument_group("data")
    data.add_argument("--data", metavar="DIR",
                      help="folder of recordings: FSDD-style names {label}_{speaker}_{index}.wav or "
                           "one subfolder per class (default: the embedded spoken digits)")
    data.add_argument("--test-data", metavar="DIR",
                      help="separate test folder; then all of --data trains and --split is unused")
    data.add_argument("--split", choices=("official", "speaker", "random"), default=None,
                      help="official: FSDD takes 0-4 are test; speaker: one speaker never heard in "
                           "training (--test-speaker); random: seeded, stratified (default: official; "
                           "--task ctc --data DIR: speaker)")
    data.add_argument("--test-speaker", metavar="NAME",
                      help="speaker held out by --split speaker (default: chosen by --seed)")
    data.add_argument("--test-fraction", type=positive_float, default=0.1, metavar="F",
                      help="test share of --split random (default: %(default)s)")
    model = train.add_argument_group("model")
    a = asr_recipes.DEFAULT_RECIPE
    model.add_argument("--cell", choices=("lstm", "gru", "rnn"), default=None,
                       help=f"recurrent cell (default: {d['cell']}; --task ctc: {a['cell']})")
    model.add_argument("--hidden", type=positive_int, default=None, metavar="N",
                       help=f"units per recurrent layer and direction (default: {d['hidden']}; "
                            f"--task ctc: {a['hidden']})")
    model.add_argument("--layers", type=positive_int, default=None, metavar="N",
                       help=f"stacked recurrent layers (default: {d['layers']}; --task ctc: {a['layers']})")
    model.add_argument("--stack", type=positive_int, default=a["stack"], metavar="N",
                       help="--task ctc: frames stacked into one recurrent step (subsampling; "
                            "default: %(default)s)")
    model.add_argument("--bidirectional", action=argparse.BooleanOptionalAction,
                       default=d["bidirectional"], help="run each layer both ways (default: %(default)s)")
    model.add_argument("--pooling", choices=recipes.POOLINGS, default=d["pooling"],
                       help="what the head sees: mean = the last recurrent layer's outputs averaged "
                            "over the real frames, last = its final state (default: %(default)s)")
    model.add_argument("--augment", action=argparse.BooleanOptionalAction, default=d["augment"],
                       help="training-time augmentation, new each epoch: the frequency warp "
                            "(--warp) and SpecAugment time/frequency masks (default: %(default)s)")
    model.add_argument("--warp", type=fraction, default=d["warp"], metavar="F",
                       help="VTLP-style frequency warp of each training utterance by a random factor "
                            "in [1-F, 1+F] (a longer or shorter vocal tract); 0 turns it off; only "
                            "with --augment (default: %(default)s)")
    feats = train.add_argument_group("features")
    feats.add_argument("--features", choices=("logmel", "mfcc"), default=d["features"].kind,
                       help="log-mel energies or MFCCs (default: %(default)s)")
    feats.add_argument("--n-mels", type=positive_int, default=d["features"].n_mels, metavar="N",
                       help="mel bands (default: %(default)s)")
    feats.add_argument("--n-mfcc", type=positive_int, default=d["features"].n_mfcc, metavar="N",
                       help="cepstral coefficients with --features mfcc (default: %(default)s)")
    feats.add_argument("--deltas", type=int, choices=(0, 1, 2), default=d["features"].deltas,
                       help="append delta (and delta-delta) features (default: %(default)s)")
    feats.add_argument("--hop-length", type=positive_int, default=None,
                       metavar="N", help=f"samples between frames (default: {d['features'].hop_length}; "
                                         f"--task ctc: {a['features'].hop_length})")
    feats.add_argument("--sample-rate", type=positive_int, default=d["features"].sample_rate,
                       metavar="HZ", help="resample audio to this rate (default: %(default)s)")
    fit = train.add_argument_group("training")
    fit.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                     help="epochs in all (with --resume, counting the ones the model has "
                          f"trained; default: {d['epochs']}; --task ctc: {a['epochs']})")
    fit.add_argument("--batch-size", type=positive_int, default=d["batch_size"], metavar="N",
                     help="(default: %(default)s)")
    fit.add_argument("--lr", type=positive_float, default=d["lr"], metavar="LR",
                     help="Adam learning rate (default: %(default)s)")
    fit.add_argument("--bucket", action=argparse.BooleanOptionalAction, default=d["bucket"],
                     help="batch recordings of similar lengths together (less padding); recordings "
                          "far longer than the rest get batches of their own either way "
                          "(default: %(default)s)")
    fit.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                     help="seed of weights, shuffling, splits and augmentation (default: %(default)s)")
    fit.add_argument("--threads", type=positive_int, metavar="N",
                     help="kernel threads (default: OMP_NUM_THREADS or all usable cores)")
    fit.add_argument("--resume", metavar="MODEL",
                     help="continue training the model in this file (written by --save, or by a "
                          "ModelCheckpoint of rnnkernels.recipes.build_model's model) with its "
                          "optimizer state, up to --epochs epochs in all; give the data, feature "
                          "and model options of the run that saved it (a mismatch is an error). "
                          "--save may name the same file")
    ctc = train.add_argument_group("--task ctc")
    ctc.add_argument("--beam", type=positive_int, default=a["beam"], metavar="N",
                     help="prefix beam search width for the test transcripts; 1: greedy (default: %(default)s)")
    ctc.add_argument("--utterances", type=positive_int, default=a["n_train"], metavar="N",
                     help="connected-digit training utterances to make (default: %(default)s)")
    ctc.add_argument("--test-utterances", type=positive_int, default=a["n_test"], metavar="N",
                     help="connected-digit test utterances to make (default: %(default)s)")
    out = train.add_argument_group("outputs")
    out.add_argument("--save", metavar="MODEL",
                     help="save the model (with its feature settings and labels) here; it is "
                          "rewritten after every epoch, atomically, so Ctrl-C keeps the last one")
    out.add_argument("--report", metavar="REPORT.json", help="write a JSON report of the run")
    out.add_argument("--plot", metavar="PNG", help="write training curves and a confusion matrix "
                                                   "(--task ctc: loss and CER curves and an alignment)")
    out.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(run=run)
    return train


_TASK_DEFAULTS = ("cell", "hidden", "layers", "hop_length", "epochs")


def _fill_defaults(args):
    """The options whose default depends on --task."""
    from ..asr import recipes as asr_recipes
    from ..audio import recipes

    d = recipes.DEFAULT_RECIPE if args.task == "classify" else asr_recipes.DEFAULT_RECIPE
    for name in _TASK_DEFAULTS:
        if getattr(args, name) is None:
            setattr(args, name, d["features"].hop_length if name == "hop_length" else d[name])


def run(args):
    from .. import distributed
    from .._core.threads import get_num_threads
    from ..audio import recipes

    # under mpiexec -n N: N ranks train together; rank 0 alone prints and writes files
    strategy = distributed.active()
    chief = strategy is None or strategy.is_chief
    if strategy is not None:  # a bad launch fails before the data loads
        from ..distributed.partition import check_launch
        check_launch(strategy.size, batch_size=args.batch_size)

    _fill_defaults(args)
    if args.task == "ctc":
        from .train_ctc import run_ctc
        return run_ctc(args, strategy)
    if args.split is None:
        args.split = "official"
    if args.test_data and not args.data:
        raise CommandError("--test-data needs --data (the training folder)")
    for option in ("save", "report", "plot"):
        check_writable(getattr(args, option), f"--{option}")
    apply_threads(args)
    features = feature_config(args, recipes.DEFAULT_FEATURES)
    resume = _load_resume(args.resume) if args.resume else None  # a bad file fails before the data loads
    train_set, test_set, data_desc, split_desc = _train_test_sets(args)
    describe = dict(data=data_desc, split=split_desc)
    done = 0
    if resume is not None:
        _check_resume(resume, args, features, list(train_set.label_names))
        done = resume.model.epochs_trained
        _continue_with_options(resume.model, args)
        describe["resumed_from"] = {"path": args.resume, "epochs_trained": done}
    ranks = "" if strategy is None else f"{strategy.size} MPI ranks x "
    if not args.quiet and chief:
        print(f"rnnkernels {__version__}: {len(train_set)} training and {len(test_set)} test files "
              f"({split_desc}), {ranks}{get_num_threads()} threads"
              + (f"; resuming {args.resume!r} after epoch {done}" if resume is not None else ""))
    result = recipes.train_classifier(
        train_set, test_set, features, cell=args.cell, hidden=args.hidden, layers=args.layers,
        bidirectional=args.bidirectional, augment=args.augment, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, save=args.save, bucket=args.bucket,
        verbose=0 if args.quiet else 1, pooling=args.pooling, warp=args.warp,
        describe=describe, model=None if resume is None else resume.model, initial_epoch=done,
        resumed_from=args.resume)
    result.report["command_options"] = {k: v for k, v in vars(args).items() if k not in ("command", "run")}
    if not chief:
        return 0
    _print_summary(result, sys.stdout)
    from .plots import training_figure
    write_outputs(args, result.report, training_figure)
    return 0



class _Resume:
    """What ``--resume`` read: the model, and the features and class names when the file was
    written by ``--save`` (a ModelCheckpoint file of a bare model has neither)."""

    def __init__(self, path, model, features=None, label_names=None):
        self.path, self.model, self.features, self.label_names = path, model, features, label_names


def _load_resume(path):
    from ..audio import recipes
    from ..models import load_model

    if not os.path.exists(path):
        raise CommandError(f"--resume {path!r}: no such file")
    try:
        with open_regular(path, "--resume") as fh, zipfile.ZipFile(fh) as zf:
            # the audio entry of AudioClassifier.save (recipes._AUDIO_ENTRY)
            is_classifier = "audio.json" in zf.namelist()
    except ValueError as exc:  # a FIFO, a device: open_regular names it
        raise CommandError(one_line(exc)) from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CommandError(f"--resume {path!r}: corrupt or not an rnnkernels model "
                           f"({one_line(exc)})") from None
    try:
        if is_classifier:
            classifier = recipes.AudioClassifier.load(path)
            resume = _Resume(path, classifier.model, classifier.features, list(classifier.label_names))
        else:
            resume = _Resume(path, load_model(path))
    except (ValueError, TypeError, OSError) as exc:
        raise CommandError(f"--resume: {one_line(exc)}") from None
    if resume.model.optimizer is None:
        raise CommandError(f"--resume {path!r}: the file holds no optimizer state (saved with "
                           "include_optimizer=False), so its training cannot be continued")
    return resume


def _flag(option, value):
    if isinstance(value, bool):
        return f"--{'' if value else 'no-'}{option}"
    return f"--{option.replace('_', '-')} {value}"


def _recipe_options(path, model):
    """The train options (cell, hidden, layers, bidirectional, pooling) of a model built by
    ``recipes.build_model``, with its input features and classes."""
    from ..layers import GRU, LSTM, Bidirectional, Dense, GlobalAveragePooling1D, SimpleRNN

    cells = {LSTM: "lstm", GRU: "gru", SimpleRNN: "rnn"}
    recurrent = [l for l in model.layers if isinstance(l, (Bidirectional, LSTM, GRU, SimpleRNN))]
    inner = [l.forward_layer if isinstance(l, Bidirectional) else l for l in recurrent]
    dense = [l for l in model.layers if isinstance(l, Dense)]
    if (not recurrent or recurrent[0] is not model.layers[0] or not dense
            or len({type(l) for l in inner}) > 1 or len({l.units for l in inner}) > 1
            or len({isinstance(l, Bidirectional) for l in recurrent}) > 1):
        raise CommandError(f"--resume {path!r}: not a model of the train recipe (layers: "
                           f"{', '.join(type(l).__name__ for l in model.layers)})")
    return dict(cell=cells[type(inner[0])], hidden=inner[0].units, layers=len(recurrent),
                bidirectional=isinstance(recurrent[0], Bidirectional),
                pooling="mean" if any(isinstance(l, GlobalAveragePooling1D) for l in model.layers)
                else "last", n_features=model.layers[0].input_shape[-1], n_classes=dense[-1].units)


_FEATURE_OPTIONS = {"kind": "features", "n_mels": "n_mels", "n_mfcc": "n_mfcc", "deltas": "deltas",
                    "hop_length": "hop_length", "sample_rate": "sample_rate"}


def _feature_differences(saved, now):
    """``(saved, now)`` texts of the FeatureConfig fields that differ, as options where there are."""
    a, b = saved.to_dict(), now.to_dict()
    if "logmel" in (a.get("kind"), b.get("kind")):
        a.pop("n_mfcc", None)  # unused by log-mel features
        b.pop("n_mfcc", None)
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]

    def text(d):
        return ", ".join(_flag(_FEATURE_OPTIONS[k], d.get(k)) if k in _FEATURE_OPTIONS
                         else f"{k}={d.get(k)!r}" for k in keys)
    return (text(a), text(b)) if keys else None


def _check_resume(resume, args, features, label_names):
    """Refuse a --resume model that does not fit this command's features, classes and options."""
    from ..audio import recipes

    path, model = resume.path, resume.model
    hint = "; give the options of the run that saved it"
    found = _recipe_options(path, model)
    for option in ("cell", "hidden", "layers", "bidirectional", "pooling"):
        if found[option] != getattr(args, option):
            raise CommandError(f"--resume {path!r}: the model was trained with "
                               f"{_flag(option, found[option])}, this command has "
                               f"{_flag(option, getattr(args, option))}{hint}")
    diff = None if resume.features is None else _feature_differences(resume.features, features)
    if diff:
        raise CommandError(f"--resume {path!r}: the model was trained on features with {diff[0]}, "
                           f"this command computes {diff[1]}{hint}")
    if found["n_features"] != features.n_features:
        raise CommandError(f"--resume {path!r}: the model takes {found['n_features']} features per "
                           f"frame, this command's features have {features.n_features} "
                           f"({recipes.describe_features(features)}){hint}")
    if found["n_classes"] != len(label_names):
        raise CommandError(f"--resume {path!r}: the model has {found['n_classes']} classes, the "
                           f"training data has {len(label_names)}")
    if resume.label_names is not None and resume.label_names != label_names:
        raise CommandError(f"--resume {path!r}: the model's classes {resume.label_names} differ from "
                           f"the training data's {label_names}")
    expected = recipes.build_model(found["n_features"], found["n_classes"], args.cell, args.hidden,
                                   args.layers, args.bidirectional, args.lr, seed=args.seed,
                                   pooling=args.pooling)
    shapes = [(type(l).__name__, [tuple(s) for s in l.weight_shapes()]) for l in model.layers]
    want = [(type(l).__name__, [tuple(s) for s in l.weight_shapes()]) for l in expected.layers]
    if shapes != want:
        raise CommandError(f"--resume {path!r}: not a model of the train recipe (layers: "
                           f"{', '.join(n for n, _ in shapes)}; expected {', '.join(n for n, _ in want)})")
    if model.epochs_trained >= args.epochs:
        raise CommandError(f"--resume {path!r}: the model has trained {model.epochs_trained} epochs "
                           f"already and --epochs {args.epochs} asks for {args.epochs} in all; give "
                           f"--epochs above {model.epochs_trained}")


def _continue_with_options(model, args):
    """A resumed run trains with this command's --lr and --seed (each epoch's shuffling and
    dropout draws come from the seed and the epoch number, so they continue where they
    stopped); the optimizer's moments and step count are the file's."""
    model.seed = args.seed
    if not callable(model.optimizer.learning_rate):  # a saved schedule keeps its own rates
        model.optimizer.learning_rate = args.lr


def _train_test_sets(args):
    """(train, test, data description, split description) from --data/--test-data/--split."""
    from ..audio.datasets import load_audio_folder, load_spoken_digits, split_dataset

    if args.data is None:
        full, data_desc = load_spoken_digits(), "embedded spoken digits (FSDD, CC BY-SA 4.0)"
    else:
        full, data_desc = load_audio_folder(args.data), args.data
    if args.test_data:
        test = load_audio_folder(args.test_data, label_names=full.label_names)
        return full, test, f"{data_desc}; test: {args.test_data}", "separate test folder"
    if args.split == "random" and not 0 < args.test_fraction < 1:
        raise CommandError(f"--test-fraction: expected a number in (0, 1), got {args.test_fraction}")
    train_idx, test_idx = split_dataset(full, args.split, seed=args.seed,
                                        test_speakers=args.test_speaker,
                                        test_fraction=args.test_fraction)
    split_desc = args.split
    if args.split == "speaker":
        split_desc += " (test: " + ", ".join(sorted({full.speakers[i] for i in test_idx})) + ")"
    elif args.test_speaker:
        raise CommandError("--test-speaker needs --split speaker")
    return full.subset(train_idx), full.subset(test_idx), data_desc, split_desc



def _epochs_row(report):
    resumed = report.get("resumed_from")
    if not resumed:
        return str(report["epochs"])
    done, n = resumed["epochs_trained"], report["epochs"]
    which = f"epoch {done + 1}" if n == 1 else f"epochs {done + 1}-{done + n}"
    return f"{n} ({which}, resumed from {resumed['path']})"


def _print_summary(result, out):
    r = result.report
    rows = [
        ("data", r["data"]),
        ("split", r["split"]),
        ("model", r["model"]),
        ("features", r["features_summary"]),
        ("train / test files", f"{r['n_train']} / {r['n_test']}"),
        ("epochs", _epochs_row(r)),
        ("threads", str(r["threads"]) if r.get("ranks", 1) == 1
         else f"{r['threads']} per rank, {r['ranks']} MPI ranks (global batch split over them)"),
        ("train time", f"{r['train_seconds']:.1f} s ({r['train_samples_per_second']:.0f} samples/s)"),
        ("final train accuracy", f"{r['history']['accuracy'][-1]:.4f}"),
        ("test loss", f"{r['test_loss']:.4f}"),
        ("test accuracy", f"{r['test_accuracy']:.4f} ({r['test_errors']} of {r['n_test']} wrong)"),
    ]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 3 + max(len(v) for _, v in rows))
    print(line, file=out)
    for k, v in rows:
        print(f"{k:<{width}} | {v}", file=out)
    print(line, file=out)
    out.flush()

