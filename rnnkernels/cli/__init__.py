"""The ``rnnkernels`` command line: train, evaluate and predict audio classifiers, train
and use speech recognisers (``train --task ctc``, ``transcribe``); bench; tune.

One module per command (``train``, ``evaluate``, ``predict``, ``transcribe``, ``bench``,
``tune``; ``train_ctc`` is the CTC half of ``train``), each
with ``add_parser(sub)`` and ``run(args)``; ``common`` holds what they share
and ``plots`` the figures.

``rnnkernels train`` with no arguments trains the default recipe on the embedded
spoken digits (official FSDD split); ``--resume MODEL`` continues a saved run with
its optimizer state. Every failure a user can cause (bad path,
unreadable audio, corrupt model, bad option) ends with one line on stderr and a
non-zero exit status, never a traceback; Ctrl-C exits with status 130, SIGTERM
with 143 (both stop training after the current batch and keep the last
complete checkpoint).
"""
import os
import signal
import sys
import warnings

from .._version import __version__
from . import bench, evaluate, predict, train, transcribe, tune
from ..engine.interrupts import terminate_gracefully
from .common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED, CommandError, Parser, one_line

COMMANDS = (train, evaluate, predict, transcribe, bench, tune)


def build_parser():
    parser = Parser(prog="rnnkernels",
                    description="Fast CPU recurrent networks: train and use audio classifiers and speech "
                                "recognisers (train --task ctc, transcribe).")
    parser.add_argument("--version", action="version", version=f"rnnkernels {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _passive_openmp_waits():
    """Make idle OpenMP threads sleep at once instead of spinning (unless the
    user chose a policy).  The command line's models are small, so a kernel's
    parallel regions are short; on a machine where other processes hold the
    cores, a spinning thread waiting for a descheduled one made training 5x
    slower (3 epochs of the default recipe: 15.2 s spinning, 3.0 s passive, at
    load 3.3 on 2 cores).  libgomp reads this when it is first loaded, which
    is when the first kernel is imported, after this point.  The benchmark
    keeps OpenMP's defaults, like the peers it is compared with."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "passive"


def main(argv=None):
    """Entry point of the ``rnnkernels`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] not in ("bench", "tune"):
            _passive_openmp_waits()
        args = build_parser().parse_args(argv)
        # SIGTERM (a scheduler, docker stop) raises like Ctrl-C: clean-up runs, training
        # stops after the current batch, the last complete checkpoint stays.
        with warnings.catch_warnings(), terminate_gracefully():
            warnings.showwarning = _one_line_warning
            return args.run(args) or 0
    except KeyboardInterrupt as exc:
        # TrainingInterrupted says which checkpoint was kept; a bare Ctrl-C says nothing more.
        # Under mpiexec every rank stops after the same batch: rank 0 says so.
        if _rank() == 0:
            print(f"rnnkernels: {one_line(exc) if str(exc) else 'interrupted'}", file=sys.stderr)
        return EXIT_TERMINATED if getattr(exc, "signum", None) == signal.SIGTERM else EXIT_INTERRUPTED
    except SystemExit as exc:  # argparse --help / errors
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    except (CommandError, ValueError, TypeError, OSError, ImportError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and not _is_distributed_error(exc):
            raise
        rank = _rank()
        if _is_launch_error(exc):  # every rank raised it alike: one line, from rank 0
            if rank == 0:
                print(f"rnnkernels: error: {one_line(exc)}", file=sys.stderr)
        else:
            where = f"rank {rank}: " if _size() > 1 and not _is_distributed_error(exc) else ""
            print(f"rnnkernels: error: {where}{one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _rank():
    from ..distributed.launch import launched_rank
    return launched_rank()


def _size():
    from ..distributed.launch import launched_size
    return launched_size()


def _is_launch_error(exc):
    from ..distributed import LaunchError
    return isinstance(exc, LaunchError)


def _is_distributed_error(exc):
    from ..distributed import DistributedError
    return isinstance(exc, DistributedError)



def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"rnnkernels: warning: {one_line(message)}", file=sys.stderr)

