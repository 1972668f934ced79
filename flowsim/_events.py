"""Events: named conditions on the parameters whose zero crossings a solve locates.

An [`Event`][flowsim.Event] is a real function of (t, params, problem) and a direction. The flow
root-finds its crossing on the solver's dense output (`flowsim.integrate`); on a discrete run the
same condition is located between the two recorded steps where it changes sign, by linear
interpolation ([`locate_discrete`][flowsim.locate_discrete]).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, final

import equinox as eqx
import numpy as np
from jaxtyping import Array, PyTree

DIRECTIONS = ("up", "down", "either")
ArrayT = TypeVar("ArrayT", np.ndarray, Array)


@final
class Event(eqx.Module):
    """A named event: `condition(t, params, problem)` crosses zero in `direction`.

    **Fields:** `name` (a key of the solution's `events`); `condition`; `direction` "up" (from
    below to above 0, the default), "down" or "either"; `label` (how figures name the event, e.g.
    "end of Phase 1"); `terminal`: stop the solve where the event fires (e.g. the training loss
    reaching a target) instead of recording it and going on to the final time.
    """

    name: str = eqx.field(static=True)
    condition: Callable[[Array, PyTree, Any], Array]
    direction: str = eqx.field(static=True, default="up")
    label: str = eqx.field(static=True, default="")
    terminal: bool = eqx.field(static=True, default=False)

    def __check_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"invalid direction={self.direction!r}: direction must be one of {DIRECTIONS}")
        if not self.name:
            raise ValueError("an event needs a non-empty name")

    @property
    def diffrax_direction(self) -> bool | None:
        """The `direction` argument of `diffrax.Event`: True (up), False (down), None (either)."""
        return {"up": True, "down": False, "either": None}[self.direction]

    def crosses(self, before: ArrayT, after: ArrayT) -> ArrayT:
        """Whether a condition going from `before` to `after` crosses zero in this direction (numpy
        arrays on the host, or traced jax arrays inside a compiled loop)."""
        up = (before < 0) & (after >= 0)
        down = (before > 0) & (after <= 0)
        return {"up": up, "down": down, "either": up | down}[self.direction]


def locate_discrete(event: Event, t: np.ndarray, values: np.ndarray) -> tuple[float, int]:
    """First crossing of `event` along a recorded discrete run.

    **Arguments:** `event`; `t` (S,) recorded times; `values` (S,) the condition at those times.

    **Returns:** (time, index): the crossing time interpolated linearly between the two save points
    that bracket it, and the index of the first save point at or after it; (nan, -1) when the
    condition never crosses (or is already past zero at the first save point).
    """
    t, v = np.asarray(t, float), np.asarray(values, float)
    hit = np.flatnonzero(event.crosses(v[:-1], v[1:]))
    if hit.size == 0:
        return float("nan"), -1
    i = int(hit[0])
    w = v[i] / (v[i] - v[i + 1]) if v[i] != v[i + 1] else 1.0
    return float(t[i] + w * (t[i + 1] - t[i])), i + 1
