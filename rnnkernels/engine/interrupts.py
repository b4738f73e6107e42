"""Ctrl-C and SIGTERM during training, deferred to the end of the current batch.

The first Ctrl-C sets the model's ``_interrupted`` flag, which the training
loop checks at batch boundaries (the batch's update and its callbacks
complete, then ``KeyboardInterrupt`` is raised); a second one acts at once,
wherever it lands.  Only in the main thread, and only when Python's default
SIGINT handler is in place (a caller's own handler is left alone).

SIGTERM (what a job scheduler, ``kill`` or ``docker stop`` sends) kills a
Python process at once by default, leaving a half-written temporary file
beside a checkpoint being saved.  :func:`terminate_gracefully` (the command
line runs every command inside it) makes SIGTERM raise :class:`Terminated`, a
``KeyboardInterrupt``, so ``finally`` blocks and the atomic writes' clean-up
run; inside ``fit`` it is deferred to the end of the current batch exactly as
the first Ctrl-C (a second SIGTERM acts at once).  A library user who keeps
SIGTERM's default keeps the default: ``fit`` only defers the handler it knows.
"""
import contextlib
import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: raised where ``KeyboardInterrupt`` would be for Ctrl-C."""
    signum = signal.SIGTERM


def raise_terminated(signum, frame):
    """The SIGTERM handler of :func:`terminate_gracefully`."""
    raise Terminated("terminated (SIGTERM)")


@contextlib.contextmanager
def terminate_gracefully():
    """Within the block, SIGTERM raises :class:`Terminated` (when SIGTERM's handler is the
    default and this is the main thread; otherwise nothing changes)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    if not main or previous is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred_interrupts(model):
    """Within the block, the first Ctrl-C (or SIGTERM, under :func:`terminate_gracefully`)
    sets ``model._interrupted`` instead of raising; the previous handlers are back when
    the block ends.  The ``KeyboardInterrupt`` the training loop then raises comes out as
    :class:`Terminated` when SIGTERM was the cause."""
    model._interrupted = False
    main = threading.current_thread() is threading.main_thread()
    if not main:
        yield
        return
    replaced = {}
    cause = []

    def handler(signum, frame):
        model._interrupted = True
        cause.append(signum)
        signal.signal(signum, replaced[signum])  # the next one acts at once

    for signum, known in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, raise_terminated)):
        previous = signal.getsignal(signum)
        if previous is known:
            replaced[signum] = previous
            signal.signal(signum, handler)
    try:
        yield
    except KeyboardInterrupt as exc:
        if cause and cause[0] == signal.SIGTERM and not isinstance(exc, Terminated):
            raise Terminated("terminated (SIGTERM)") from None
        raise
    finally:
        for signum, previous in replaced.items():
            signal.signal(signum, previous)
