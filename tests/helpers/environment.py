"""Where the tests run: CI or a user's machine, and the data beside the checkout."""
import os

# CI sets CI=true (.ci/run too): checks that a user's own build may
# legitimately skip, such as OpenMP being compiled in, fail there instead.
IN_CI = os.environ.get("CI", "").lower() == "true"

# The Free Spoken Digit Dataset's recordings beside the checkout (not shipped
# in the repository); RNNKERNELS_FSDD overrides.
FSDD = os.environ.get("RNNKERNELS_FSDD") or os.path.normpath(os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared", "data", "fsdd", "recordings"))


def package_env(**extra):
    """The environment for a child Python process that must import the same
    rnnkernels as the tests (the installed one, or the checkout's build)."""
    import rnnkernels
    parent = os.path.dirname(os.path.dirname(rnnkernels.__file__))
    path = os.pathsep.join([parent] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    # PYTHONSAFEPATH (Python 3.11+): `python -c` and `python -m` must not put the working
    # directory first, where a source checkout's unbuilt rnnkernels/ would shadow the installed one
    return dict(os.environ, PYTHONPATH=path, PYTHONSAFEPATH="1", **extra)
