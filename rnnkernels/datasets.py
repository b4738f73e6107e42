"""Moved to :mod:`rnnkernels.audio.datasets`; this alias goes away in 0.3."""
from ._util.moved import alias
from .audio import datasets

alias(__name__, datasets)
