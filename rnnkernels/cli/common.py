"""What every command shares: one-line errors and exit statuses, the parser
class, output-path checks, the thread option."""
import argparse
import os

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130   # 128 + SIGINT, as a shell reports a Ctrl-C
EXIT_TERMINATED = 143    # 128 + SIGTERM


class CommandError(Exception):
    """A failure to report as one line (no traceback)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (no usage block) and exit status 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def one_line(exc):
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename!r}: {exc.strerror or text}"
    return " ".join(text.split())



def check_writable(path, option):
    """Fail before training, not after, when an output cannot be written."""
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandError(f"{option} {path!r}: folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise CommandError(f"{option} {path!r}: is a directory, expected a file name")
    if not os.access(folder, os.W_OK):
        raise CommandError(f"{option} {path!r}: folder {folder!r} is not writable")



def apply_threads(args):
    """``--threads N``: the kernels' thread count for this command."""
    if getattr(args, "threads", None):
        from .._core.threads import set_num_threads
        try:
            set_num_threads(args.threads)
        except ValueError as exc:  # above the limit: say which option
            raise CommandError(f"--threads {args.threads}: {one_line(exc).removeprefix('num_threads: ')}") from None


def write_outputs(args, report, figure):
    """After a training command's summary: ``--report`` (JSON), ``--plot`` (``figure(report,
    path)``) and the ``--save`` line, each said on stdout."""
    from .._util.atomic import write_json

    if args.report:
        write_json(args.report, report, indent=2)
        print(f"report: {args.report}")
    if args.plot:
        figure(report, args.plot)
        print(f"plot:   {args.plot}")
    if args.save:
        print(f"model:  {args.save}")


def feature_config(args, base):
    """The features the command-line options ask for, the rest from the recipe's ``base``."""
    from ..audio.features import FeatureConfig

    return FeatureConfig(kind=args.features, sample_rate=args.sample_rate, n_mels=args.n_mels,
                         n_mfcc=args.n_mfcc, n_fft=base.n_fft, hop_length=args.hop_length,
                         fmin=base.fmin, deltas=args.deltas, normalize=base.normalize)
