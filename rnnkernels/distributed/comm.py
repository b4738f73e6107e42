"""The MPI communicator the training loop talks through (mpi4py underneath).

Every collective is started nonblocking and finished by :meth:`Comm.wait`.
With a core per rank it is MPI's blocking wait, which keeps the transfer
moving (a nonblocking collective progresses only while a rank is inside MPI;
polling with sleeps in between stretched the step's 168 KB all-reduce from
0.1 ms to several), and the watchdog thread enforces the deadline.  On an
oversubscribed node (more ranks than cores, as the 8-rank tests on 2 cores),
where a spinning wait would starve the rank it waits for, it polls: busily
for 200 us (``RNNKERNELS_MPI_SPIN_US``), then sleeping between polls from
20 us doubling to 250 us, checking the deadline itself.  The wait has a deadline (``RNNKERNELS_MPI_TIMEOUT`` seconds,
default 600: longer than any step or checkpoint of a sane run) and asks the
watchdog (watchdog.py) whether a peer died, so no rank blocks for ever.

Reductions are MPI's ``SUM`` over the ranks.  For a fixed number of ranks
MPICH's algorithms are deterministic, and every rank receives the same bits:
recursive doubling combines the same two partial sums on both partners (IEEE
addition is commutative), reduce-scatter + allgather gives each chunk one
owner.  fit also checks it: the weights' fingerprints are compared across the
ranks after every epoch (strategy.py).
"""
import os
import time

import numpy as np

from .launch import launched_size

__all__ = ["Comm", "DistributedError", "import_mpi"]

DEFAULT_TIMEOUT = 600.0


class DistributedError(RuntimeError):
    """A failure of the parallel run (a peer died, a collective timed out, ranks diverged)."""


def import_mpi():
    """mpi4py's MPI module, or a one-line ImportError saying how to get it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"this process was launched as one of {launched_size()} MPI ranks, but "
                          f"mpi4py cannot be imported ({exc}); install the MPI extra: "
                          "pip install 'rnnkernels[mpi]'") from None
    return MPI


def _seconds(name, default):
    text = os.environ.get(name, "")
    try:
        value = float(text) if text else default
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {text!r}") from None
    if not value >= 0:
        raise ValueError(f"{name}: expected a number >= 0, got {text!r}")
    return value


def _timeout():
    text = os.environ.get("RNNKERNELS_MPI_TIMEOUT", "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        raise ValueError(f"RNNKERNELS_MPI_TIMEOUT: expected seconds, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"RNNKERNELS_MPI_TIMEOUT: expected a positive number of seconds, got {text!r}")
    return value


class Comm:
    """COMM_WORLD's ranks, on a private duplicate (our messages never meet the user's)."""

    def __init__(self, mpi=None):
        MPI = mpi or import_mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.comm.Set_errhandler(MPI.ERRORS_RETURN)
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.timeout = _timeout()
        from .launch import usable_cores
        self.oversubscribed = self.local_size > usable_cores()
        self.spin = _seconds("RNNKERNELS_MPI_SPIN_US", 200.0) * 1e-6  # busy polling before sleeps
        self.watchdog = None  # set by the strategy: .check() raises if a peer is gone
        self.waited = 0.0     # seconds spent waiting on collectives (benchmarks read it)
        self.waited_cpu = 0.0  # CPU seconds of this process while waiting (polling)
        self.waiting = None    # (what, since) while the main thread blocks in MPI's wait

    # waiting ---------------------------------------------------------------
    def wait(self, requests, what="a collective"):
        """Finish ``requests`` (a list); a dead peer or the deadline raises (or, in a blocking
        wait, the watchdog stops the process)."""
        MPI = self.MPI
        started, cpu = time.perf_counter(), time.process_time()
        try:
            if MPI.Request.Testall(requests):
                return
            if not self.oversubscribed:
                # a core each: MPI's own blocking wait, which keeps progressing the transfer
                # (a nonblocking collective moves only while some rank tests it, so sleeping
                # between tests stretched a 168 KB all-reduce from 0.1 ms to several); the
                # watchdog thread enforces the deadline meanwhile (the GIL is released)
                self.waiting = (what, time.monotonic())
                try:
                    MPI.Request.Waitall(requests)
                finally:
                    self.waiting = None
                return
            nap, checked = 20e-6, started
            spin_until = started + (0.0 if self.oversubscribed else self.spin)
            while not MPI.Request.Testall(requests):
                now = time.perf_counter()
                if now >= spin_until:
                    time.sleep(nap)
                    nap = min(nap * 2, 250e-6)
                if now - checked > 0.2:
                    checked = now
                    if self.watchdog is not None:
                        self.watchdog.check()
                    if now - started > self.timeout:
                        raise DistributedError(
                            f"rank {self.rank} of {self.size}: no progress in {what} for "
                            f"{self.timeout:g} s (a rank is stuck or gone; RNNKERNELS_MPI_TIMEOUT "
                            "sets the limit)")
        except MPI.Exception as exc:
            raise DistributedError(f"rank {self.rank} of {self.size}: MPI failed in {what}: "
                                   f"{' '.join(str(exc).split())}") from None
        finally:
            self.waited += time.perf_counter() - started
            self.waited_cpu += time.process_time() - cpu

    # collectives -------------------------------------------------------------
    def iallreduce(self, buf):
        """Start a sum over the ranks of ``buf`` (contiguous), in place; returns the request."""
        return self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def allreduce(self, buf, op="sum", what="a reduction"):
        """``buf`` (contiguous) summed (or max'd) over the ranks, in place; returns it."""
        mop = self.MPI.SUM if op == "sum" else self.MPI.MAX
        self.wait([self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=mop)], what)
        return buf

    def bcast(self, buf, root=0, what="a broadcast"):
        self.wait([self.comm.Ibcast(buf, root=root)], what)
        return buf

    def bcast_object(self, obj, root=0, what="a broadcast"):
        """A small JSON-able object from ``root`` (length, then bytes)."""
        import json
        data = np.frombuffer(json.dumps(obj).encode(), np.uint8) if self.rank == root else None
        n = np.array([0 if data is None else data.size], np.int64)
        self.bcast(n, root, what)
        buf = data.copy() if data is not None else np.empty(int(n[0]), np.uint8)
        self.bcast(buf, root, what)
        return json.loads(buf.tobytes().decode())

    def allgather(self, value, what="a gather"):
        """``(size,) + value.shape`` array of every rank's ``value``."""
        value = np.ascontiguousarray(value)
        out = np.empty((self.size,) + value.shape, value.dtype)
        self.wait([self.comm.Iallgather(value, out)], what)
        return out

    def barrier(self, what="a barrier"):
        self.wait([self.comm.Ibarrier()], what)
