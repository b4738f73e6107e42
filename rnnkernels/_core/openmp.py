"""Loading the compiled modules, and with the first of them OpenMP's runtime.

Every compiled module that links libgomp is imported through :func:`load`.
libgomp reads its settings from the environment once, when it is loaded, and
its default makes an idle thread spin for 300,000 rounds (``GOMP_SPINCOUNT``)
before it sleeps: measured here, 8-10 ms of a core burnt after every kernel
call, taken from whatever runs next on that core (PyTorch's or TensorFlow's
own threads between our layers, the second direction of a Bidirectional layer
running beside the first, a data loader).  Two directions run side by side
took 0.96-0.98x the time of running them one after the other with that spin
(1.28x on a quiet machine), and 0.78-0.83x with a tenth of it.  So when the user chose neither
``OMP_WAIT_POLICY`` nor ``GOMP_SPINCOUNT``, the first load sets
``GOMP_SPINCOUNT=30000`` (about 1 ms: a barrier inside a time step still spins
rather than sleeps) for the libgomp it loads, then puts the environment back,
so that child processes and other libraries' OpenMP runtimes see the user's.
Where libgomp was already loaded (another package imported it first), it
keeps that package's settings: :func:`wait_setting` says which applies.

One runtime with PyTorch.  PyTorch ships its own libgomp (``torch/lib``).
Two OpenMP runtimes in one process keep two thread pools, and each pool's
idle threads spin on the cores the other's threads need: in a PyTorch
training step, torch's threads spun after its ops while our kernel ran (a
bidirectional LSTM layer's step took 35.7 ms against 27.5 ms with both spins
cut).  So where a libgomp is already loaded when our first module loads (PyTorch
imported first, as ``rnnkernels.torch`` does), and it defines every OpenMP
entry point our modules call (:data:`ENTRY_POINTS`), its symbols are made
global before our module loads, and our modules bind to it: one runtime, one
pool, whose idle threads take our regions' work instead of competing with it.
That runtime keeps its own settings.  Linux only (``/proc/self/maps``).

Nothing is loaded at ``import rnnkernels``: the command line sets its own
policy (passive) before the first kernel loads.
"""
import ctypes
import importlib
import os
import re
import threading

#: idle spin rounds of our libgomp when the user set no policy (see the module notes)
SPIN_COUNT = 30000

#: the OpenMP functions our compiled modules import (tests/kernels/test_threads.py reads the
#: modules' symbol tables to keep this complete); a loaded runtime is shared only if it has them all
ENTRY_POINTS = ("GOMP_barrier", "GOMP_parallel", "GOMP_loop_end_nowait", "GOMP_loop_nonmonotonic_dynamic_start",
                "GOMP_loop_nonmonotonic_dynamic_next", "omp_get_max_threads", "omp_get_num_threads",
                "omp_get_thread_num", "omp_get_thread_limit")

_lock = threading.Lock()
_setting = None  # what the first load applied: see wait_setting()
_shared = None   # the path of the runtime our modules share, or None


def loaded_runtimes():
    """Paths of the libgomp copies mapped into this process (empty where /proc is missing)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = [line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6]
    except OSError:
        return []
    seen = []
    for path in paths:
        if re.search(r"/libgomp[^/]*\.so", path) and path not in seen:
            seen.append(path)
    return seen


def _share(path):
    """Make an already loaded runtime's symbols global (RTLD_NOLOAD: never loads a new
    one); True if it defines every entry point."""
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL)
    except OSError:
        return False
    return all(hasattr(lib, name) for name in ENTRY_POINTS)


def _user_choice():
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        if name in os.environ:
            return f"{name}={os.environ[name]} (environment)"
    return None


def _first_load(module_name):
    global _setting, _shared
    for path in loaded_runtimes():
        if _share(path):
            mod = importlib.import_module(module_name)
            _shared = path
            _setting = f"those of the OpenMP runtime loaded before rnnkernels, shared: {path}"
            return mod
    chosen = _user_choice()
    if chosen is not None:
        mod = importlib.import_module(module_name)
        _setting = chosen
        return mod
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    try:
        mod = importlib.import_module(module_name)
    finally:
        os.environ.pop("GOMP_SPINCOUNT", None)
    _setting = f"GOMP_SPINCOUNT={SPIN_COUNT} (rnnkernels' default, unless libgomp was loaded before)"
    return mod


def load(name):
    """The compiled module ``rnnkernels._core.<name>`` (ImportError in an unbuilt checkout)."""
    module_name = f"{__package__}.{name}"
    if _setting is None:
        with _lock:
            if _setting is None:
                return _first_load(module_name)
    return importlib.import_module(module_name)


def shared_runtime():
    """The path of the already loaded OpenMP runtime our modules run on, or None (their own)."""
    return _shared


def wait_setting():
    """How idle OpenMP threads wait, as the first compiled load found or set it
    (None before any compiled module was loaded)."""
    return _setting
