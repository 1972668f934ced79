"""A flow solve as a sequence of pieces, on the host: split at checkpoint times and at events.

`flowsim.integrate` compiles one diffrax solve (`flowsim._integrate._piece`) and calls it piece after
piece: each checkpoint time ends a segment (the state there becomes a
[`Checkpoint`][flowsim.Checkpoint], and the next segment starts from it exactly as a run resumed
from that checkpoint does, so the two continue identically); inside a segment each non-terminal
event ends a piece and the next piece goes on from the event state with that event disarmed; a
terminal event, a failure or the final time ends the solve.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

from ._checkpoint import Checkpoint
from ._dynamics import AbstractDynamics
from ._events import Event
from ._problem import Problem
from ._solution import EventHit, FlowSolution, result_name
from ._step_stats import StepStats


@eqx.filter_jit
def _observe(observer: Callable, t: Array, params: PyTree, problem: Problem) -> PyTree:
    """`observer(t, params, problem)` (an observer or an event condition) as one traced function. On
    the host: one program. Inside one solve, diffrax traces the observer and each event condition five
    times (counted on cooccurrence's: output shapes, the save loop, the t0 == t1 branch, ...); through
    this jit each is traced once per abstract signature (sensitivity smoke: tracing and lowering the
    solve 0.7-1.0 s shorter, cooccurrence's 0.1-0.2 s)."""
    return observer(t, params, problem)


def _where(mask: Array, new: Array, old: Array) -> Array:
    """`new` at the save times in `mask`, else `old` (inexact leaves; integer leaves take `new`)."""
    if not jnp.issubdtype(new.dtype, jnp.inexact):
        return new
    return jnp.where(mask.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)


def _step_stats(t0: Array | float, record: tuple[Array, Array, Array]) -> StepStats:
    ends, accepted, rejected = (np.asarray(x) for x in record)
    return StepStats(float(t0), ends[np.isfinite(ends)].astype(float), int(accepted), int(rejected))


@final
@dataclasses.dataclass
class FlowPieces:
    """The host-side state of a solve run in pieces.

    **Fields:** `piece(t0, t1, y0, save_ts, active)` the compiled solve of one piece (see
    `flowsim._integrate._piece` for what it returns); `dynamics`, `problem`, `observer`, `events`;
    `ts` the save times; `y` the state where the next piece starts (at time `t`); `active` which
    events are armed.
    """

    piece: Callable[..., Any]
    dynamics: AbstractDynamics
    problem: Problem
    observer: Callable
    events: tuple[Event, ...]
    ts: Array
    y: PyTree
    active: np.ndarray
    t: Array | None = None
    obs: PyTree = None
    code: Any = 0
    num_steps: int = 0
    stopped_by: str | None = None
    records: list[StepStats] = dataclasses.field(default_factory=list)
    hits: dict[str, EventHit] = dataclasses.field(default_factory=dict)
    checkpoints: dict[float, Checkpoint] = dataclasses.field(default_factory=dict)

    def _run_piece(self, t1: Array) -> tuple[Array, PyTree]:
        """Solve from (t, y) to t1; save times outside [t, t1] are clipped to it and only those after
        `t` (all of them for the first piece) are kept. Returns the events that fired, and the
        observables of this piece (the first is at `t`)."""
        t0 = self.ts[0] if self.t is None else self.t
        out, t_end, y_end, code, steps, fired, rec = self.piece(
            t0, t1, self.y, jnp.clip(self.ts, t0, t1), jnp.array(self.active.copy(), bool)
        )
        later = self.ts >= t0  # at t0 itself: the state this piece starts from, exactly
        if self.obs is None:  # save times before a resumed solve's start were not part of it: NaN
            self.obs = jax.tree.map(lambda b: _where(later, b, jnp.full_like(b, jnp.nan)), out)
        else:
            self.obs = jax.tree.map(lambda a, b: _where(later, b, a), self.obs, out)
        self.records.append(_step_stats(t0, rec))
        self.t, self.y, self.code, self.num_steps = t_end, y_end, code, self.num_steps + int(steps)
        return fired, out

    def segment(self, t1: Array) -> bool:
        """Solve up to `t1`, piece after piece across non-terminal events; whether it got there."""
        fired, _ = self._run_piece(t1)
        while self.events and result_name(self.code) == "event_occurred":
            armed = np.flatnonzero(np.asarray(fired) & self.active)
            if armed.size == 0:
                break
            assert self.t is not None  # set by the piece just run
            t_ev, p_ev = float(np.asarray(self.t)), self.dynamics.params(self.y)
            now = self._simultaneous(armed, self.t, p_ev)
            if any(self.events[i].terminal for i in now):  # later save times stay non-finite
                obs_ev = jax.tree.map(np.asarray, _observe(self.observer, self.t, p_ev, self.problem))
                for i in now:
                    self.hits[self.events[i].name] = EventHit(t_ev, obs_ev, p_ev, self.events[i].label)
                self.stopped_by = next(self.events[i].name for i in now if self.events[i].terminal)
                return False
            self.active[now] = False
            fired, out = self._run_piece(t1)  # its first save is the observer at the event
            obs_ev = jax.tree.map(lambda x: np.asarray(x[0]), out)
            for i in now:
                self.hits[self.events[i].name] = EventHit(t_ev, obs_ev, p_ev, self.events[i].label)
        return result_name(self.code) == "successful"

    def _simultaneous(self, armed: np.ndarray, t: Array, p_ev: PyTree) -> list[int]:
        """The event located (the first armed one) and the other armed events of the same step whose
        condition is already at or past zero in their direction at that instant: they fired with it
        (e.g. a terminal target and a non-terminal event on the same condition)."""
        now = [int(armed[0])]
        for i in armed[1:]:
            e = self.events[int(i)]
            value = float(np.asarray(_observe(e.condition, t, p_ev, self.problem)))
            if {"up": value >= 0, "down": value <= 0, "either": value == 0}[e.direction]:
                now.append(int(i))
        return now

    def checkpoint(self) -> Checkpoint:
        """The state where the solve now stands: params, the dynamics' full state, the armed events."""
        assert self.t is not None
        # A copy: on CPU, jnp.asarray may share the numpy buffer, which later events then mutate.
        status = {"armed": jnp.array(self.active.copy(), bool)}
        return Checkpoint(self.dynamics.params(self.y), self.y, -1, float(self.t), "flow", status)

    def solution(self) -> FlowSolution:
        # In declaration order (not firing order): `FlowSolution.event_time` reads the first declared event.
        hits = {e.name: self.hits.get(e.name, EventHit(float("nan"), None, None, e.label)) for e in self.events}
        return FlowSolution(
            ts=np.asarray(self.ts),
            obs=jax.tree.map(np.asarray, self.obs),
            params=self.dynamics.params(self.y),
            events=hits,
            result=result_name(self.code),
            num_steps=self.num_steps,
            t_reached=float(np.asarray(self.t)),
            stopped_by=self.stopped_by,
            step_stats=StepStats.merge(self.records),
            checkpoints=self.checkpoints,
        )
