"""One registry mapping system names to systems.

The built-in systems register themselves in `flowsim/systems/__init__.py` (one line each), which is
imported the first time the registry is read; tests and users can `register` more.
"""

from __future__ import annotations

import importlib
import re

from ._fields import ConfigError
from ._system import AbstractSystem

_SYSTEMS: dict[str, AbstractSystem] = {}
_DEFAULT: list[str] = []
_LOADED: list[bool] = []


def _load_builtin() -> None:
    if not _LOADED:
        _LOADED.append(True)
        importlib.import_module("flowsim.systems")


def register(system: AbstractSystem, *, default: bool = False, replace: bool = False) -> AbstractSystem:
    """Add `system` under `system.name` (a lowercase identifier, unique unless `replace`); `default`
    makes it the system that `Config()` and `flowsim run` use when none is named. Returns it."""
    if not isinstance(system, AbstractSystem):
        raise TypeError(f"register() takes an AbstractSystem instance, got {system!r}")
    name = system.name
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ValueError(f"a system name is a lowercase identifier (letters, digits, _ and -), got {name!r}")
    if name in _SYSTEMS and not replace:
        raise ValueError(f"a system named {name!r} is already registered")
    _SYSTEMS[name] = system
    if default or not _DEFAULT:
        _DEFAULT[:] = [name]
    return system


def unregister(name: str) -> None:
    """Remove the system `name` (used by tests that register a temporary system)."""
    _SYSTEMS.pop(name, None)
    if _DEFAULT and _DEFAULT[0] == name:
        _DEFAULT[:] = list(_SYSTEMS)[:1]


def registered_systems() -> dict[str, AbstractSystem]:
    """Every registered system by name, in registration order."""
    _load_builtin()
    return dict(_SYSTEMS)


def get_system(name: str) -> AbstractSystem:
    """The system called `name`; `ConfigError` (listing the known names) if there is none."""
    _load_builtin()
    if name not in _SYSTEMS:
        raise ConfigError(f"invalid system={name!r}: system must be one of {sorted(_SYSTEMS)}")
    return _SYSTEMS[name]


def default_system() -> str:
    """The name of the default system (the first one registered unless another asked to be)."""
    _load_builtin()
    if not _DEFAULT:
        raise ConfigError("no system is registered")
    return _DEFAULT[0]
