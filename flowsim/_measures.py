"""Sweep measures: named scalars of one point, read off its `RunRecord`.

Every system gets the engine's generic measures (solver steps, divergence), its own
(`AbstractSystem.measures`) and one true/false measure per verdict (true = PASS; null when the
verdict was not evaluated, e.g. a claim that needs an event that never fired).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._system import PIECES, AbstractSystem, Measure, RunRecord


def _diverged(piece: str):
    def get(r: RunRecord) -> bool:
        sol = getattr(r, piece)
        return bool(sol.diverged)

    return get


GENERIC: tuple[Measure, ...] = (
    Measure(
        "flow_steps",
        frozenset({"flow"}),
        lambda r: r.flow.num_steps if r.flow else None,
        "adaptive steps of the flow solve",
    ),
    Measure(
        "gd_diverged",
        frozenset({"gd"}),
        _diverged("gd"),
        "GD diverged (loss above divergence_factor x the initial loss, or non-finite)",
    ),
    Measure(
        "sgd_diverged",
        frozenset({"sgd"}),
        _diverged("sgd"),
        "some SGD seed diverged (loss above divergence_factor x the initial, or non-finite)",
    ),
)


def _status(name: str):
    def get(r: RunRecord) -> bool | None:
        v = r.verdicts.get(name)
        if v is None or v.status == "INFO":
            return None
        return v.status == "PASS"

    return get


def measures_of(system: AbstractSystem) -> dict[str, Measure]:
    """Every measure available for `system`, by name (generic, the system's own, one per verdict).

    Raises `ValueError` if two measures share a name or a measure needs an unknown piece.
    """
    out: dict[str, Measure] = {}
    verdicts = [
        Measure(name, frozenset(needs), _status(name), f"verdict {name} (true = PASS)")
        for name, needs in system.verdict_needs.items()
    ]
    for m in (*GENERIC, *system.measures(), *verdicts):
        if m.name in out:
            raise ValueError(f"system {system.name!r}: measure name {m.name!r} is defined twice")
        if not m.needs or not m.needs <= set(PIECES):
            raise ValueError(f"measure {m.name!r} needs {sorted(m.needs)}; each must be one of {PIECES}")
        out[m.name] = m
    return out


def needed_pieces(system: AbstractSystem, measures: Sequence[str]) -> frozenset[str]:
    """The runs (flow / gd / sgd) that `measures` need."""
    table = measures_of(system)
    return frozenset().union(*(table[m].needs for m in measures))


def value(x: Any) -> Any:
    """A JSON-able scalar: bools stay bools, numbers become floats, arrays lists."""
    import numpy as np

    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if x is None:
        return None
    return float(x) if np.ndim(x) == 0 else np.asarray(x).tolist()
