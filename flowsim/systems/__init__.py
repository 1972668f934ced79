"""The built-in systems: one folder each, registered here with one line each."""

from .._registry import register
from .cooccurrence import SYSTEM as _COOCCURRENCE
from .dyck_attention import SYSTEM as _DYCK_ATTENTION
from .dyck_proxies import SYSTEM as _DYCK_PROXIES
from .sensitivity import SYSTEM as _SENSITIVITY
from .spectra import SYSTEM as _SPECTRA

register(_COOCCURRENCE, default=True, replace=True)
register(_SENSITIVITY, replace=True)
register(_DYCK_PROXIES, replace=True)
register(_DYCK_ATTENTION, replace=True)
register(_SPECTRA, replace=True)
