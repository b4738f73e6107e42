"""Ctrl-C during training, deferred to the end of the current batch.

The first Ctrl-C sets the model's ``_interrupted`` flag, which the training
loop checks at batch boundaries (the batch's update and its callbacks
complete, then ``KeyboardInterrupt`` is raised); a second one acts at once,
wherever it lands.  Only in the main thread, and only when Python's default
SIGINT handler is in place (a caller's own handler is left alone).
"""
import contextlib
import signal
import threading


@contextlib.contextmanager
def deferred_interrupts(model):
    """Within the block, the first Ctrl-C sets ``model._interrupted`` instead
    of raising; the previous handler is back when the block ends."""
    model._interrupted = False
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    if not main or previous is not signal.default_int_handler:
        yield
        return

    def handler(signum, frame):
        model._interrupted = True
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
