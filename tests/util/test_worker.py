"""rnnkernels._core.worker: the thread of our own that kernel calls are handed to."""
import os
import threading

import pytest

from rnnkernels._core import memory
from rnnkernels._core.worker import Worker


def test_calls_run_in_order_on_one_thread_and_reentrant_calls_run_directly():
    w = Worker("rnnkernels-test")
    names = [w.call(lambda: threading.current_thread().name) for _ in range(5)]
    assert len(set(names)) == 1 and names[0].startswith("rnnkernels-test")
    assert not w.on_it()
    # a call made on the worker itself runs there at once (waiting on itself would hang)
    assert w.call(lambda: w.call(lambda: threading.current_thread().name)) == names[0]


def test_errors_reach_the_caller():
    w = Worker("rnnkernels-test")
    with pytest.raises(ZeroDivisionError):
        w.call(lambda: 1 / 0)
    assert w.call(lambda: 2) == 2


def test_release_memory_drops_the_workers_scratch():
    w = Worker("rnnkernels-test")
    w.call(memory.scratch, (64, 1024), "float32")
    assert w.call(lambda: dict(memory._scratch.__dict__))
    memory.release()
    assert not w.call(lambda: dict(memory._scratch.__dict__))
    Worker("rnnkernels-never-started").release_scratch()  # never started: nothing to do


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_a_forked_child_starts_its_own_thread():
    w = Worker("rnnkernels-test")
    w.call(threading.get_ident)  # started in the parent
    pid = os.fork()
    if pid == 0:  # the child has the object, not the thread: a call must not wait forever
        try:
            w.submit(threading.get_ident).result(timeout=20)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
