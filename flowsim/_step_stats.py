"""How an adaptive flow solve went: accepted and rejected steps, the step size over time, where it
collapsed, and the step size against the curvature (h * lambda_max).

Explicit Runge-Kutta methods are stable on a gradient flow only while h * lambda_max stays below a
constant of the method (about 3.3 for Tsit5's real stability interval), so on a stiff flow the step
size is set by stability, not accuracy: h(t) * lambda_max(t) pinned near that constant over a long
stretch is the signature, and the cue to switch to `solver="rkc"`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, final

import numpy as np
from numpy.typing import ArrayLike


@final
@dataclasses.dataclass(frozen=True)
class StepStats:
    """The step history of one flow solve (all its pieces, when events split it).

    **Fields:** `t0` start time; `step_ends` (A,) the end time of each accepted step, increasing;
    `accepted`, `rejected` step counts (diffrax's statistics).
    """

    t0: float
    step_ends: np.ndarray
    accepted: int
    rejected: int

    @property
    def step_sizes(self) -> np.ndarray:
        """(A,) the size h of each accepted step."""
        return np.diff(np.concatenate([[self.t0], self.step_ends]))

    @property
    def h_min(self) -> float:
        """The smallest accepted step (nan without steps)."""
        h = self.step_sizes
        return float(h.min()) if h.size else float("nan")

    @property
    def t_h_min(self) -> float:
        """Where the smallest accepted step started (nan without steps)."""
        h = self.step_sizes
        return float(self.step_ends[np.argmin(h)] - h.min()) if h.size else float("nan")

    def step_size_at(self, t: ArrayLike | float) -> np.ndarray:
        """The accepted step size in force at each time `t`: that of the step whose interval
        (start, end] holds t (the first step for t = t0; nan past the last step)."""
        i = np.searchsorted(self.step_ends, np.asarray(t, float), side="left")
        return np.asarray(np.append(self.step_sizes, np.nan)[i])

    def h_lambda(self, t: ArrayLike | float, lambda_max: ArrayLike | float) -> np.ndarray:
        """h(t) * lambda_max(t) at the times `t` where `lambda_max` was recorded (e.g. the save grid
        with a `flowsim.Sharpness` observer): near 3.3 means Tsit5 is held by stability."""
        return self.step_size_at(t) * np.asarray(lambda_max, float)

    def collapses(self, factor: float = 100.0) -> np.ndarray:
        """Start times of the accepted steps that are more than `factor` times smaller than the
        largest step taken before them (where the step size collapsed)."""
        h = self.step_sizes
        if h.size < 2:
            return np.zeros(0)
        running = np.maximum.accumulate(h)
        hit = np.flatnonzero(h[1:] * factor < running[:-1]) + 1
        return self.step_ends[hit] - h[hit]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: counts, smallest step and where, and the first collapse (if any)."""
        c = self.collapses()
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "h_min": self.h_min,
            "t_h_min": self.t_h_min,
            "h_median": float(np.median(self.step_sizes)) if self.step_ends.size else float("nan"),
            "collapse_times": [float(x) for x in c[:10]],
        }

    @staticmethod
    def merge(pieces: list[StepStats]) -> StepStats:
        """One history from consecutive pieces (each starting where the previous one ended)."""
        return StepStats(
            t0=pieces[0].t0,
            step_ends=np.concatenate([p.step_ends for p in pieces]),
            accepted=sum(p.accepted for p in pieces),
            rejected=sum(p.rejected for p in pieces),
        )
