"""What a continuous solve returns: the trajectory's observables, its events and how it ended."""

from __future__ import annotations

import dataclasses
from typing import Any, final

import diffrax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

from ._checkpoint import Checkpoint
from ._step_stats import StepStats

# diffrax's result names, looked up through its public enumeration (index 0 = successful).
RESULT_NAMES = (
    "successful",
    "max_steps_reached",
    "event_occurred",
    "dt_min_reached",
    "singular",
    "breakdown",
    "nonlinear_divergence",
    "nonlinear_max_steps_reached",
    "max_steps_rejected",
    "internal_error",
)


def result_index(result: Any) -> Array:
    """Index into `RESULT_NAMES` of a diffrax result (traceable; len(RESULT_NAMES) when unknown)."""
    codes = [jnp.asarray(result == getattr(diffrax.RESULTS, name)) for name in RESULT_NAMES]
    return jnp.select(codes, [jnp.asarray(i) for i in range(len(RESULT_NAMES))], len(RESULT_NAMES))


def result_name(index: Any) -> str:
    """The name of a result index from `result_index` ("unknown" if out of range)."""
    i = int(np.asarray(index))
    return RESULT_NAMES[i] if 0 <= i < len(RESULT_NAMES) else "unknown"


@final
@dataclasses.dataclass(frozen=True)
class EventHit:
    """Where an event fired: `time` (nan if it never did), the observables `obs` and trainable
    `params` there (None if it never fired), and the event's `label`."""

    time: float
    obs: dict[str, np.ndarray] | None
    params: PyTree | None
    label: str = ""

    @property
    def fired(self) -> bool:
        return bool(np.isfinite(self.time))


class FlowError(RuntimeError):
    """A solve stopped before its final time; `.solution` holds the partial trajectory."""

    def __init__(self, message: str, solution: FlowSolution):
        super().__init__(message)
        self.solution = solution


@final
@dataclasses.dataclass(frozen=True)
class FlowSolution:
    """Output of [`integrate`][flowsim.integrate].

    **Fields:** `ts` save times; `obs` dict of observables, each with leading axis len(ts)
    (non-finite where the solve never got); `params` final trainable parameters; `events` event name
    -> [`EventHit`][flowsim.EventHit]; `result` the diffrax result name ("successful" on success,
    "event_occurred" when a terminal event stopped it); `num_steps` accepted + rejected steps of all
    pieces; `t_reached` the time the solve got to; `stopped_by` the name of the terminal event that
    ended the solve (None if none did); `step_stats` the step history
    ([`StepStats`][flowsim.StepStats]: accepted/rejected steps, h(t), smallest step, collapses);
    `checkpoints` time -> [`Checkpoint`][flowsim.Checkpoint] at the requested checkpoint times.
    """

    ts: np.ndarray
    obs: dict[str, np.ndarray]
    params: PyTree
    events: dict[str, EventHit]
    result: str
    num_steps: int
    t_reached: float
    stopped_by: str | None = None
    step_stats: StepStats | None = None
    checkpoints: dict[float, Checkpoint] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the solve did what was asked: reached the final time, or a terminal event."""
        return self.result == "successful" or (self.result == "event_occurred" and self.stopped_by is not None)

    def _first(self) -> EventHit | None:
        return next(iter(self.events.values()), None)

    @property
    def event_time(self) -> float:
        """Time of the first declared event (nan if none fired or none was declared)."""
        hit = self._first()
        return float("nan") if hit is None else hit.time

    @property
    def event_obs(self) -> dict[str, np.ndarray] | None:
        """Observables at the first declared event (None if it did not fire)."""
        hit = self._first()
        return None if hit is None else hit.obs

    @property
    def event_params(self) -> PyTree | None:
        """Trainable parameters at the first declared event (None if it did not fire)."""
        hit = self._first()
        return None if hit is None else hit.params

    def check(self) -> FlowSolution:
        """Return self, or raise `FlowError` naming the diffrax result and the time reached (a solve
        ended by a terminal event is fine)."""
        if not self.ok:
            raise FlowError(
                f"flow solve stopped with diffrax result '{self.result}' at t = {self.t_reached:.6g} "
                f"(target t = {self.ts[-1]:.6g}); the trajectory up to there is kept in .solution",
                self,
            )
        return self
