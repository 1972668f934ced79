"""The built-in systems: one folder each, registered here with one line each."""

from .._registry import register
from .cooccurrence import SYSTEM as _COOCCURRENCE
from .sensitivity import SYSTEM as _SENSITIVITY
from .spectra import SYSTEM as _SPECTRA

register(_COOCCURRENCE, default=True, replace=True)
register(_SENSITIVITY, replace=True)
register(_SPECTRA, replace=True)
