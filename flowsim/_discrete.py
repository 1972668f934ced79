"""Discrete comparators: full-batch GD and minibatch SGD, as `lax.scan` loops over a `Problem`.

Both record the same observer as the flow, at integer steps k on a save grid, i.e. at flow time
t = k * lr. The scan runs over save segments and a loop does the steps inside each segment
(`flowsim._descent_loop`), so there is no Python loop over steps and a run compiles once per shape.
Divergence (a loss that left every reasonable bound: above `divergence_factor` times the initial
loss, or non-finite) is tracked in the carry and reported as the first diverged step. Arguments are
checked on the host before anything compiles (`check_descent`).

Stop events end a run early: checked after every step k on (t = k lr, params after step k), the
first step where one crosses zero in its direction is the run's stop step; the run (each seed on
its own) does not update after it. Checkpoints (`checkpoint_steps`) hold the parameters and update
state at recorded steps; `start` resumes a run from one, continuing exactly as the run in one piece.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree
from numpy.typing import ArrayLike

from . import _progress
from ._checkpoint import Checkpoint, describe, mismatch
from ._descent_checks import DIVERGENCE_FACTOR, check_count, check_descent, check_steps
from ._descent_loop import (
    SAMPLINGS,
    Stop,
    _Carry,
    _initial_carry,
    _run,
    _sgd_indices as _sgd_indices,  # re-exported
    _update,
)
from ._events import Event, locate_discrete
from ._integrate import Observer
from ._problem import Problem

_STATUS = {"diverged_step": "bad", "stop_step": "stop", "stop_event": "which"}  # Checkpoint.status -> _Carry


@final
@dataclasses.dataclass(frozen=True)
class DiscreteSolution:
    """Output of [`gradient_descent`][], [`sgd`][] and `optax_descent`.

    **Fields:** `steps` (S,) recorded step indices; `ts` = steps * lr; `obs` observables with leading
    axis S (SGD: (seeds, S, ...)), NaN (inexact leaves) at the save points after a run's stop step;
    `params` final parameters, those at the stop step for a stopped run (SGD: leading seed axis);
    `diverged_step` first step whose (minibatch) loss left every reasonable bound: above
    `divergence_factor` times the initial loss |L(params0)|, or non-finite; -1 if none (SGD: one per
    seed);
    `crossings` event name -> (time, first recorded step at or after it) where the event's condition
    crosses zero in its direction, interpolated between save points (numpy scalars; nan, -1 if it never
    does; SGD: arrays over seeds); `stop_step` the step where a stop event fired, -1 if none (exact:
    checked at every step; SGD: one per seed); `stop_time` = stop_step * lr (nan if none);
    `stop_event` the name of the stop event that fired ("" if none; the first listed when several
    fire at the same step); `stop_obs` the observables at the stop step (NaN where none; empty
    without stop events); `checkpoints` step -> [`Checkpoint`][flowsim.Checkpoint] at the requested
    `checkpoint_steps`.
    """

    steps: np.ndarray
    ts: np.ndarray
    obs: dict[str, np.ndarray]
    params: PyTree
    diverged_step: np.ndarray
    crossings: dict[str, tuple[np.ndarray | np.floating, np.ndarray | np.integer]] = dataclasses.field(
        default_factory=dict
    )
    stop_step: np.ndarray = dataclasses.field(default_factory=lambda: np.asarray(-1))
    stop_time: np.ndarray = dataclasses.field(default_factory=lambda: np.asarray(np.nan))
    stop_event: np.ndarray = dataclasses.field(default_factory=lambda: np.asarray(""))
    stop_obs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    checkpoints: dict[int, Checkpoint] = dataclasses.field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        """Whether the run diverged (`diverged_step` >= 0; SGD: any seed)."""
        return bool(np.any(self.diverged_step >= 0))

    @property
    def stopped(self) -> bool:
        """Whether a stop event ended the run (SGD: any seed)."""
        return bool(np.any(self.stop_step >= 0))


def _bar_arg(bar: int) -> Array | None:
    """The bar id as a traced argument (one program for every bar), or None (static) without a bar."""
    return jnp.asarray(bar) if bar else None


def _spread(keys: Array) -> Array:
    """Shard the seed axis over all local devices when it divides evenly (e.g. one per CPU core
    with XLA_FLAGS=--xla_force_host_platform_device_count); the vmapped scan then runs in parallel."""
    devices = jax.local_devices()
    if len(devices) < 2 or keys.shape[0] % len(devices):
        return keys
    mesh = jax.sharding.Mesh(np.array(devices), ("seed",))
    return jax.device_put(keys, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seed")))


@final
class _WithEvents(eqx.Module):
    """An observer that also records each event's condition (under `events`)."""

    observer: Observer
    events: tuple[Event, ...]

    def __call__(self, t: Array, params: PyTree, problem: Problem) -> dict[str, PyTree]:
        conds = {e.name: jnp.asarray(e.condition(t, params, problem)) for e in self.events}
        return {"obs": self.observer(t, params, problem), "events": conds}


def _observer(observer: Observer, events: Sequence[Event]) -> Observer:
    return _WithEvents(observer, tuple(events)) if events else observer


def _crossings(steps, lr, conds, events: Sequence[Event]) -> dict[str, tuple]:
    crossings: dict[str, tuple] = {}
    ts = steps * lr
    for e in events:
        v = np.atleast_2d(conds[e.name])  # (seeds, S); GD has one row
        found = [locate_discrete(e, ts, row) for row in v]
        time, idx = np.array([f[0] for f in found]), np.array([steps[f[1]] if f[1] >= 0 else -1 for f in found])
        crossings[e.name] = (time, idx) if np.ndim(conds[e.name]) == 2 else (time[0], idx[0])
    return crossings


def _checkpoint(carry: _Carry, step: int, time: float, kind: str) -> Checkpoint:
    status = {name: getattr(carry, field) for name, field in _STATUS.items()}
    return Checkpoint(carry.params, carry.state, step, time, kind, status)


def _finish(
    steps, lr, out, events: Sequence[Event], stop: tuple[Event, ...], saved: dict, kind: str
) -> DiscreteSolution:
    """The host-side solution from `_run`'s output; `saved`: checkpointed step -> its buffer row
    (or its carry, for the first save point)."""
    obs, carry, stop_obs, buf = out
    obs = jax.tree.map(np.asarray, obs)
    crossings = {}
    if events:
        crossings = _crossings(steps, lr, obs["events"], events)
        obs = obs["obs"]
        stop_obs = None if stop_obs is None else stop_obs["obs"]
    ts = steps * lr
    checkpoints = {}
    for k, row in saved.items():
        at = row if isinstance(row, _Carry) else jax.tree.map(lambda b: b[row], buf)
        checkpoints[k] = _checkpoint(at, k, float(ts[int(np.searchsorted(steps, k))]), kind)
    halt, which = np.asarray(carry.stop), np.asarray(carry.which)
    names = np.asarray(np.asarray([""] + [e.name for e in stop])[which + 1])
    stop_time = np.where(halt >= 0, halt * lr, np.nan)
    stop_obs = {} if stop_obs is None else jax.tree.map(np.asarray, stop_obs)
    fields = (halt, stop_time, names, stop_obs, checkpoints)
    return DiscreteSolution(steps, ts, obs, carry.params, np.asarray(carry.bad), crossings, *fields)


def _sgd_keys(problem: Problem, key: Array, seeds: int, batch_size: int, sampling: str) -> Array:
    """Check the minibatch settings; one key per seed, split from `key` (spread over the devices)."""
    check_count("seeds", seeds)
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or not 1 <= batch_size <= problem.n
    ):
        raise ValueError(f"batch_size must be in [1, n={problem.n}], got {batch_size}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    return _spread(jax.random.split(key, seeds))


def _stop_events(stop: Stop | Event | Sequence[Event]) -> Stop:
    return stop if isinstance(stop, Stop) else Stop(tuple(stop) if not isinstance(stop, Event) else stop)


def _slots(steps: np.ndarray, checkpoint_steps: Sequence[int] | np.ndarray) -> tuple[Array | None, dict, bool]:
    """Where the checkpoints go: for each save point after the first, the checkpoint buffer row it
    writes (len(rows) for none; None if no row), the rows (step -> row), and whether the first save
    point is checkpointed too (its carry is the run's starting carry)."""
    wanted = sorted({int(k) for k in np.asarray(checkpoint_steps, dtype=np.int64).ravel()})
    for k in wanted:
        if k not in steps:
            raise ValueError(f"checkpoint step {k} is not one of the recorded steps")
    rows = {k: i for i, k in enumerate(k for k in wanted if k != steps[0])}
    at_start = bool(wanted) and wanted[0] == int(steps[0])
    if not rows:
        return None, rows, at_start
    return jnp.asarray([rows.get(int(k), len(rows)) for k in steps[1:]]), rows, at_start


def _resume(start: Checkpoint, fresh: _Carry, kind: str, stop: tuple[Event, ...]) -> _Carry:
    """The carry `start` holds, checked against a fresh run's carry."""
    if start.kind != kind:
        raise ValueError(f"start is a {start.kind!r} checkpoint, but this is a {kind!r} run")
    status = [jnp.asarray(start.status.get(name, getattr(fresh, f))) for name, f in _STATUS.items()]
    carry = _Carry(start.params, start.state, *status)
    problem = mismatch(describe(carry), describe(fresh), ("start", "this run"))
    if problem is not None:
        raise ValueError(f"start does not fit this run: {problem}")
    if not stop and np.any(np.asarray(carry.stop) >= 0):
        raise ValueError("start is a checkpoint of a stopped run; resume it with its stop events (stop=...)")
    return carry


def _descend(
    problem: Problem,
    observer: Observer,
    update: eqx.Module,
    steps: ArrayLike,
    lr: float | Array,
    *,
    kind: str,
    keys: Array | None = None,
    batch_size: int = 0,
    sampling: str = "shuffle",
    events: Sequence[Event] = (),
    stop: Stop | Event | Sequence[Event] = (),
    checkpoint_steps: Sequence[int] | np.ndarray = (),
    start: Checkpoint | None = None,
    progress: bool = False,
    divergence_factor: float = DIVERGENCE_FACTOR,
) -> DiscreteSolution:
    """Run `update` (`init(params) -> state`, `(params, state, grad) -> (params, state)`, `lr` the
    time of one step) from `problem.params0` or `start`: full batch when `keys` is None, else one
    run per key. `kind` names the run in its checkpoints. The caller has run `check_descent`."""
    stop = _stop_events(stop)
    steps = check_steps(steps, 0 if start is None else start.step)
    fresh = _initial_carry(update, problem.params0, None if keys is None else keys.shape[0])
    carry0 = fresh if start is None else _resume(start, fresh, kind, stop.events)
    slots, rows, at_start = _slots(steps, checkpoint_steps)
    saved: dict[int, int | _Carry] = {int(steps[0]): carry0, **rows} if at_start else dict(rows)
    label = "GD" if keys is None else f"SGD x{keys.shape[0]}"
    with _progress.progress_bar(int(steps[-1] - steps[0]), label, progress) as bar:
        args = (jnp.asarray(steps), keys, batch_size, _bar_arg(bar), sampling, stop.events, slots, len(rows))
        factor = jnp.asarray(float(divergence_factor))
        out = _run(problem, _observer(observer, events), update, carry0, *args, stop.every, factor)
    return _finish(steps, lr, out, events, stop.events, saved, kind)


def gradient_descent(
    problem: Problem,
    lr: float,
    steps: ArrayLike,
    observer: Observer,
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    events: Sequence[Event] = (),
    stop: Stop | Event | Sequence[Event] = (),
    checkpoint_steps: Sequence[int] | np.ndarray = (),
    start: Checkpoint | None = None,
    progress: bool = False,
    divergence_factor: float = DIVERGENCE_FACTOR,
) -> DiscreteSolution:
    """Full-batch GD theta <- theta - lr grad L(theta) from `problem.params0`, recorded at `steps`.

    **Arguments:** `lr` step size; `steps` increasing integer step indices starting at 0 (the last
    is the number of steps run); `observer(t, params, problem)` as for the flow; `momentum` β:
    heavy ball v <- βv - lr g, theta <- theta + v (v starts at 0); `weight_decay` λ: g = ∇L + λθ;
    `events`: `flowsim.Event`s located on the recorded steps (`crossings`); `stop`: events checked
    after every step (a scalar condition, a forward pass per step; a [`Stop`][flowsim.Stop] sets a
    check interval) that end the run at the first (checked) step where one crosses zero in its
    direction (`stop_step`, `stop_obs`; the save points after it are NaN); `checkpoint_steps`:
    recorded steps whose parameters and update state are returned as `checkpoints`; `start`: a
    `Checkpoint` of a GD run to resume from (then `steps` are absolute step indices starting at
    `start.step`, and the run continues as the run in one piece would);
    `progress` shows a tqdm bar; `divergence_factor`: a loss above this many times the initial
    loss (or a non-finite one) marks the run diverged (`diverged_step`; inf: only non-finite).

    Checked before compiling (`ValueError`): lr a finite number > 0, momentum in [0, 1), weight
    decay >= 0, divergence_factor > 1, integer step indices, finite initial parameters.
    """
    check_descent(problem, lr=lr, momentum=momentum, weight_decay=weight_decay, divergence_factor=divergence_factor)
    update = _update(lr, momentum, weight_decay)
    return _descend(
        problem,
        observer,
        update,
        steps,
        lr,
        kind="gd",
        events=events,
        stop=stop,
        checkpoint_steps=checkpoint_steps,
        start=start,
        progress=progress,
        divergence_factor=divergence_factor,
    )


def sgd(
    problem: Problem,
    lr: float,
    steps: ArrayLike,
    observer: Observer,
    *,
    batch_size: int,
    key: Array,
    seeds: int = 8,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    sampling: str = "shuffle",
    events: Sequence[Event] = (),
    stop: Stop | Event | Sequence[Event] = (),
    checkpoint_steps: Sequence[int] | np.ndarray = (),
    start: Checkpoint | None = None,
    progress: bool = False,
    divergence_factor: float = DIVERGENCE_FACTOR,
) -> DiscreteSolution:
    """Minibatch SGD (batches drawn without replacement within each epoch), one run per seed, vmapped.

    **Arguments:** as [`gradient_descent`][] (including `momentum`, `weight_decay`, `stop`,
    `checkpoint_steps`, `start`, `divergence_factor`, and the same checks), plus `batch_size`,
    `sampling` ("shuffle": each epoch uses n // batch_size batches of a fresh shuffle; "iid": an
    independent batch of distinct samples at every step), `seeds` (count) and `key` (the PRNG key of
    the minibatches, required: each seed's stream is split from it). The minibatch of step k depends
    on the seed's key and k only, so a run resumed from a checkpoint with the same `key` and `seeds`
    draws the batches the run in one piece draws. Each seed stops on its own.

    **Returns:** a `DiscreteSolution` whose arrays have a leading seed axis.
    """
    check_descent(
        problem, lr=lr, momentum=momentum, weight_decay=weight_decay, divergence_factor=divergence_factor, seeds=seeds
    )
    keys = _sgd_keys(problem, key, seeds, batch_size, sampling)
    update = _update(lr, momentum, weight_decay)
    return _descend(
        problem,
        observer,
        update,
        steps,
        lr,
        kind="sgd",
        keys=keys,
        batch_size=batch_size,
        sampling=sampling,
        events=events,
        stop=stop,
        checkpoint_steps=checkpoint_steps,
        start=start,
        progress=progress,
        divergence_factor=divergence_factor,
    )
