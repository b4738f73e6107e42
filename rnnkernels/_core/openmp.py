"""Loading the compiled modules, and with the first of them OpenMP's runtime.

Every compiled module that links libgomp is imported through :func:`load`.
libgomp reads its settings from the environment once, when it is loaded, and
its default makes an idle thread spin for 300,000 rounds (``GOMP_SPINCOUNT``)
before it sleeps: measured here, 8-10 ms of a core burnt after every kernel
call, taken from whatever runs next on that core (PyTorch's or TensorFlow's
own threads between our layers, the second direction of a Bidirectional layer
running beside the first, a data loader).  Two directions run side by side
took 1.28x the time of running them one after the other with that spin, and
0.84-0.96x with a tenth of it.  So when the user chose neither
``OMP_WAIT_POLICY`` nor ``GOMP_SPINCOUNT``, the first load sets
``GOMP_SPINCOUNT=30000`` (about 1 ms: a barrier inside a time step still spins
rather than sleeps) for the libgomp it loads, then puts the environment back,
so that child processes and other libraries' OpenMP runtimes see the user's.
Where libgomp was already loaded (another package imported it first), it
keeps that package's settings: :func:`wait_setting` says which applies.

Nothing is loaded at ``import rnnkernels``: the command line sets its own
policy (passive) before the first kernel loads.
"""
import importlib
import os
import threading

#: idle spin rounds of our libgomp when the user set no policy (see the module notes)
SPIN_COUNT = 30000

_lock = threading.Lock()
_setting = None  # what the first load applied: see wait_setting()


def _user_choice():
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        if name in os.environ:
            return f"{name}={os.environ[name]} (environment)"
    return None


def _first_load(module_name):
    global _setting
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


def wait_setting():
    """How idle OpenMP threads wait, as the first compiled load found or set it
    (None before any compiled module was loaded)."""
    return _setting
