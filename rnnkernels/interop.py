"""Moved to :mod:`rnnkernels.engine.interop`; this alias goes away in 0.3."""
from ._util.moved import alias
from .engine import interop

alias(__name__, interop)
