"""Moved to :mod:`rnnkernels.audio.recipes`; this alias goes away in 0.3."""
from ._util.moved import alias
from .audio import recipes

alias(__name__, recipes)
