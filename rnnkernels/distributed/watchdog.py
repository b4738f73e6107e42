"""No rank waits for ever on one that is gone, and a signal to one rank stops all.

While fit runs in parallel, a daemon thread on every rank watches its peers:

- ranks on the same node by their process ids (``/proc``): a rank that died,
  was killed or crashed is seen within ``interval`` (0.05 s);
- ranks on other nodes by heartbeats: each rank sends a one-byte message to
  its two neighbours in rank order every second, and one silent for
  ``silence`` seconds (8) counts as gone;
- notices: the rank that sees a failure first tells every other rank, so
  they all stop at once rather than one neighbour after another;
- the deadline: a main thread blocked in MPI's wait for longer than
  ``RNNKERNELS_MPI_TIMEOUT`` seconds (a peer alive but stuck) is a failure too.

- the launcher's word: with ``-disable-auto-cleanup`` MPICH's ``mpiexec`` sends
  SIGUSR1 to the survivors of a failed rank (whose default action would kill
  them without a word); the watchdog takes it as a failure notice.

The rank that sees a failure prints one line, ``rnnkernels: error: ...``,
and exits with status 1 (MPI's launcher may then print its own banner).
MPICH's ``mpiexec`` kills the remaining ranks itself as soon as one exits
abnormally (its "BAD TERMINATION" cleanup); the watchdog is what stops them
where the launcher does not (``mpiexec -disable-auto-cleanup``, other
launchers, a rank hung rather than dead).  Checkpoints are written
atomically, so the last complete one stays loadable whatever is killed.

Signals: SIGINT (Ctrl-C) and SIGTERM to any rank ask every rank to stop: the
handler only sets a flag, the ranks agree on it at the next batch boundary
(it travels with the batch's metric reduction), and all of them stop after
the same batch, as one process would (engine/interrupts.py).  A second
signal to the same rank stops it at once (the others then follow, as above).
"""
import os
import select
import signal
import socket
import sys
import threading
import time

__all__ = ["Watchdog", "SignalFlags"]

_HEARTBEAT, _NOTICE = 101, 102
EXIT_PEER_LOST = 1


def _alive(pid):
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


class Watchdog:
    """Watches the peers of ``comm``'s rank from a daemon thread (see the module docstring)."""

    def __init__(self, comm, interval=0.05, heartbeat=1.0, silence=8.0):
        self.comm, self.interval, self.heartbeat, self.silence = comm, interval, heartbeat, silence
        self.rank, self.size = comm.rank, comm.size
        self.hb = comm.comm.Dup()
        info = self.hb.allgather((os.getpid(), socket.gethostname()))
        host = info[self.rank][1]
        self.local = {r: pid for r, (pid, h) in enumerate(info) if h == host and r != self.rank}
        neighbours = {(self.rank - 1) % self.size, (self.rank + 1) % self.size} - {self.rank}
        self.remote = sorted(r for r in neighbours if r not in self.local)
        self.failure = None
        self._stop = threading.Event()
        self._thread = None
        self._notice = False   # the launcher said a rank failed (SIGUSR1)
        self._previous_usr1 = None

    def start(self):
        self._wake = None
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
            self._previous_usr1 = signal.signal(signal.SIGUSR1, self._on_usr1)
            # the C-level handler writes each signal's number here at once, whichever thread
            # it lands on: the watchdog hears SIGUSR1 while the main thread is in a kernel
            r, w = os.pipe()
            os.set_blocking(w, False)
            os.set_blocking(r, False)
            try:
                self._previous_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
                self._wake = (r, w)
            except (ValueError, OSError):
                os.close(r)
                os.close(w)
        self._thread = threading.Thread(target=self._run, name="rnnkernels-mpi-watchdog", daemon=True)
        self._thread.start()
        return self

    def _on_usr1(self, signum, frame):
        self._notice = True

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if not self._thread.is_alive():
                self.hb.Free()
            self._thread = None
        if self._previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_usr1)
            self._previous_usr1 = None
        if self._wake is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            for fd in self._wake:
                os.close(fd)
            self._wake = None

    def check(self):
        """Raise when a failure was seen (the main thread's waits call this)."""
        if self.failure is not None:
            from .comm import DistributedError
            raise DistributedError(self.failure)

    # the thread --------------------------------------------------------------
    def _run(self):
        MPI = self.comm.MPI
        now = time.monotonic()
        seen = {r: now for r in self.remote}
        sends, last_beat = [], 0.0
        status = MPI.Status()
        try:
            while not self._stop.is_set():
                if self._wake is not None:
                    readable = select.select([self._wake[0]], [], [], self.interval)[0]
                    if readable:
                        try:
                            got = os.read(self._wake[0], 64)
                        except (BlockingIOError, OSError):
                            got = b""
                        if bytes([signal.SIGUSR1]) in got:
                            self._notice = True
                else:
                    self._stop.wait(self.interval)
                if self._stop.is_set():
                    break
                now = time.monotonic()
                for r, pid in self.local.items():
                    if not _alive(pid) and not self._stop.is_set():
                        return self._fail(f"rank {r} of {self.size} (pid {pid}) is gone: it died or "
                                          f"was killed; rank {self.rank} stops too")
                waiting = self.comm.waiting  # the main thread blocked in MPI's wait
                if waiting is not None and time.monotonic() - waiting[1] > self.comm.timeout \
                        and not self._stop.is_set():
                    return self._fail(f"rank {self.rank} of {self.size}: no progress in {waiting[0]} "
                                      f"for {self.comm.timeout:g} s (a rank is stuck or gone; "
                                      "RNNKERNELS_MPI_TIMEOUT sets the limit)")
                if self._notice and not self._stop.is_set():  # at once: mpiexec kills soon
                    return self._fail(f"the MPI launcher reports that a rank of {self.size} failed; "
                                      f"rank {self.rank} stops too")
                if self.remote and now - last_beat >= self.heartbeat:
                    last_beat = now
                    sends = [s for s in sends if not s.Test()]
                    sends += [self.hb.isend("h", dest=r, tag=_HEARTBEAT) for r in self.remote]
                while self.hb.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
                    src, tag = status.Get_source(), status.Get_tag()
                    msg = self.hb.recv(source=src, tag=tag)
                    if tag == _NOTICE:
                        return self._fail(f"rank {src} of {self.size} reported: {msg}; rank "
                                          f"{self.rank} stops too", notify=False)
                    seen[src] = now
                for r in self.remote:
                    if now - seen[r] > self.silence and not self._stop.is_set():
                        return self._fail(f"rank {r} of {self.size} sent no heartbeat for "
                                          f"{self.silence:g} s: it died, hung or lost its network; "
                                          f"rank {self.rank} stops too")
        except Exception as exc:  # MPI broke under us: that is a failure too
            if not self._stop.is_set():
                self._fail(f"rank {self.rank} of {self.size}: the MPI watchdog failed "
                           f"({' '.join(str(exc).split())})")

    def _fail(self, message, notify=True):
        self.failure = message
        try:
            sys.stderr.write(f"rnnkernels: error: {message}\n")
            sys.stderr.flush()
        finally:
            if notify:
                try:
                    short = message.split(";")[0]
                    for r in range(self.size):
                        if r != self.rank:
                            self.hb.isend(short, dest=r, tag=_NOTICE)
                except Exception:
                    pass
            time.sleep(0.3)  # let the notices leave and the launcher forward the line
            os._exit(EXIT_PEER_LOST)


class SignalFlags:
    """SIGINT and SIGTERM handlers that only note the signal (the ranks agree on it at
    the next batch end); a second one raises KeyboardInterrupt at once."""

    def __init__(self):
        self.requested = 0
        self._previous = {}

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signum

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
