"""Discrete comparators: full-batch GD and minibatch SGD, as `lax.scan` loops over a `Problem`.

Both record the same observer as the flow, at integer steps k on a save grid, i.e. at flow time
t = k * lr. The scan runs over save segments and a `fori_loop` does the steps inside each segment,
so there is no Python loop over steps and a run compiles once per shape. Divergence (a non-finite
loss) is tracked in the carry and reported as the first bad step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree
from numpy.typing import ArrayLike

from . import _progress
from ._events import Event, locate_discrete
from ._integrate import Observer
from ._problem import Problem


@final
@dataclasses.dataclass(frozen=True)
class DiscreteSolution:
    """Output of [`gradient_descent`][] and [`sgd`][].

    **Fields:** `steps` (S,) recorded step indices; `ts` = steps * lr; `obs` observables with leading
    axis S (SGD: (seeds, S, ...)); `params` final parameters (SGD: leading seed axis);
    `diverged_step` first step whose loss was non-finite, -1 if none (SGD: one per seed);
    `crossings` event name -> (time, first recorded step at or after it) where the event's condition
    crosses zero in its direction, interpolated between save points (numpy scalars; nan, -1 if it never
    does; SGD: arrays over seeds).
    """

    steps: np.ndarray
    ts: np.ndarray
    obs: dict[str, np.ndarray]
    params: PyTree
    diverged_step: np.ndarray
    crossings: dict[str, tuple[np.ndarray | np.floating, np.ndarray | np.integer]] = dataclasses.field(
        default_factory=dict
    )

    @property
    def diverged(self) -> bool:
        return bool(np.any(self.diverged_step >= 0))


SAMPLINGS = ("shuffle", "iid")


def _sgd_indices(key: Array, k: Array, n: int, batch_size: int, sampling: str = "shuffle") -> Array:
    """Minibatch of step k. "shuffle": epoch k // nb shuffles the data and batch k % nb is a slice of
    that shuffle (each sample once per epoch). "iid": B distinct samples drawn afresh at every step,
    independently across steps (the sampling the SGD modified equation models)."""
    if sampling == "iid":
        return jax.random.choice(jax.random.fold_in(key, k), n, (batch_size,), replace=False)
    nb = n // batch_size
    perm = jax.random.permutation(jax.random.fold_in(key, k // nb), n)
    return jax.lax.dynamic_slice(perm, ((k % nb) * batch_size,), (batch_size,))


@final
class _Update(eqx.Module):
    """theta <- theta + v, v <- momentum v - lr (grad + weight_decay theta); plain GD when both are None.

    lr, momentum and weight decay are traced arrays (a sweep over them never recompiles); None
    removes the term from the program (and the velocity from the carry).
    """

    lr: Array
    momentum: Array | None
    weight_decay: Array | None

    def init(self, params: PyTree) -> PyTree | None:
        return None if self.momentum is None else jax.tree.map(jnp.zeros_like, params)

    def __call__(self, params: PyTree, vel: PyTree | None, grad: PyTree) -> tuple[PyTree, PyTree | None]:
        if self.weight_decay is not None:
            grad = jax.tree.map(lambda g, p: g + self.weight_decay * p, grad, params)
        if self.momentum is None:
            return jax.tree.map(lambda p, g: p - self.lr * g, params, grad), None
        vel = jax.tree.map(lambda v, g: self.momentum * v - self.lr * g, vel, grad)
        return jax.tree.map(jnp.add, params, vel), vel


def _step(
    problem: Problem, update: Callable[..., tuple[PyTree, PyTree]], params, vel, bad, k, key, batch_size, sampling
):
    idx = None if key is None else _sgd_indices(key, k, problem.n, batch_size, sampling)
    loss, grad = problem.loss_and_grad(params, idx)
    params, vel = update(params, vel, grad)
    bad = jnp.where((bad < 0) & ~jnp.isfinite(loss), k, bad)
    return params, vel, bad


@eqx.filter_jit
def _run(problem, observer, update, steps, keys, batch_size, bar, sampling="shuffle"):
    """Shared scan over save segments. `keys is None`: full-batch GD; else SGD vmapped over keys."""
    lengths = jnp.diff(steps)
    batched = keys is not None

    def advance(params, vel, bad, k0, length, key):
        def body(j, carry):
            params, vel, bad = carry
            return _step(problem, update, params, vel, bad, k0 + j, key, batch_size, sampling)

        return jax.lax.fori_loop(0, length, body, (params, vel, bad))

    def observe(k, params):
        return observer(k.astype(update.lr.dtype) * update.lr, params, problem)

    params0, vel0 = problem.params0, update.init(problem.params0)  # the update's state (any PyTree)
    if batched:
        advance = jax.vmap(advance, in_axes=(0, 0, 0, None, None, 0))
        observe = jax.vmap(observe, in_axes=(None, 0))
        params0, vel0 = jax.tree.map(lambda x: jnp.broadcast_to(x, (keys.shape[0], *jnp.shape(x))), (params0, vel0))
        bad0 = jnp.full(keys.shape[0], -1)
    else:
        bad0 = jnp.asarray(-1)

    def segment(carry, xs):
        k0, length = xs
        carry = advance(*carry, k0, length, keys)
        if bar is not None:  # static: without a bar the program has no host callback (so it is cacheable)
            _progress.tick(bar, length)
        return carry, observe(k0 + length, carry[0])

    (params, _, bad), obs = jax.lax.scan(segment, (params0, vel0, bad0), (steps[:-1], lengths))
    obs0 = observe(steps[0], params0)
    axis = 1 if batched else 0
    obs = jax.tree.map(
        lambda a, b: jnp.concatenate([jnp.expand_dims(a, axis), b.swapaxes(0, axis) if batched else b], axis=axis),
        obs0,
        obs,
    )
    return obs, params, bad


def _bar_arg(bar: int) -> Array | None:
    """The bar id as a traced argument (one program for every bar), or None (static) without a bar."""
    return jnp.asarray(bar) if bar else None


def _update(lr: float | Array, momentum: float, weight_decay: float) -> _Update:
    opt = lambda x: None if x == 0 else jnp.asarray(x)
    return _Update(jnp.asarray(lr), opt(momentum), opt(weight_decay))


def _spread(keys: Array) -> Array:
    """Shard the seed axis over all local devices when it divides evenly (e.g. one per CPU core
    with XLA_FLAGS=--xla_force_host_platform_device_count); the vmapped scan then runs in parallel."""
    devices = jax.local_devices()
    if len(devices) < 2 or keys.shape[0] % len(devices):
        return keys
    mesh = jax.sharding.Mesh(np.array(devices), ("seed",))
    return jax.device_put(keys, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seed")))


def _check_steps(steps: ArrayLike) -> np.ndarray:
    steps = np.asarray(steps, dtype=np.int64)
    if steps.ndim != 1 or steps.size < 2 or steps[0] != 0 or np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be a strictly increasing 1-D integer array starting at 0")
    return steps


@final
class _WithEvents(eqx.Module):
    """An observer that also records each event's condition (under `events`)."""

    observer: Observer
    events: tuple[Event, ...]

    def __call__(self, t: Array, params: PyTree, problem: Problem) -> dict[str, PyTree]:
        conds = {e.name: jnp.asarray(e.condition(t, params, problem)) for e in self.events}
        return {"obs": self.observer(t, params, problem), "events": conds}


def _finish(steps, lr, out, events: Sequence[Event] = ()) -> DiscreteSolution:
    obs, params, bad = out
    obs = jax.tree.map(np.asarray, obs)
    crossings: dict[str, tuple[np.ndarray | np.floating, np.ndarray | np.integer]] = {}
    if events:
        conds, obs = obs["events"], obs["obs"]
        ts = steps * lr
        for e in events:
            v = np.atleast_2d(conds[e.name])  # (seeds, S); GD has one row
            found = [locate_discrete(e, ts, row) for row in v]
            time, idx = np.array([f[0] for f in found]), np.array([steps[f[1]] if f[1] >= 0 else -1 for f in found])
            crossings[e.name] = (time, idx) if np.ndim(conds[e.name]) == 2 else (time[0], idx[0])
    return DiscreteSolution(steps, steps * lr, obs, params, np.asarray(bad), crossings)


def _observer(observer: Observer, events: Sequence[Event]) -> Observer:
    return _WithEvents(observer, tuple(events)) if events else observer


def _sgd_keys(problem: Problem, key: Array, seeds: int, batch_size: int, sampling: str) -> Array:
    """Check the minibatch settings; one key per seed, split from `key` (spread over the devices)."""
    if not 1 <= batch_size <= problem.n:
        raise ValueError(f"batch_size must be in [1, n={problem.n}], got {batch_size}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    return _spread(jax.random.split(key, seeds))


def _descend(
    problem: Problem,
    observer: Observer,
    update: eqx.Module,
    steps: ArrayLike,
    lr: float | Array,
    keys: Array | None = None,
    batch_size: int = 0,
    sampling: str = "shuffle",
    events: Sequence[Event] = (),
    progress: bool = False,
) -> DiscreteSolution:
    """Run `update` (`init(params) -> state`, `(params, state, grad) -> (params, state)`, `lr` the
    time of one step) from `problem.params0`: full batch when `keys` is None, else one run per key."""
    steps = _check_steps(steps)
    label = "GD" if keys is None else f"SGD x{keys.shape[0]}"
    with _progress.progress_bar(int(steps[-1]), label, progress) as bar:
        args = (jnp.asarray(steps), keys, batch_size, _bar_arg(bar), sampling)
        out = _run(problem, _observer(observer, events), update, *args)
    return _finish(steps, lr, out, events)


def gradient_descent(
    problem: Problem,
    lr: float,
    steps: ArrayLike,
    observer: Observer,
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    events: Sequence[Event] = (),
    progress: bool = False,
) -> DiscreteSolution:
    """Full-batch GD theta <- theta - lr grad L(theta) from `problem.params0`, recorded at `steps`.

    **Arguments:** `lr` step size; `steps` increasing integer step indices starting at 0 (the last
    is the number of steps run); `observer(t, params, problem)` as for the flow; `momentum` β:
    heavy ball v <- βv - lr g, theta <- theta + v (v starts at 0); `weight_decay` λ: g = ∇L + λθ;
    `events`: `flowsim.Event`s located on the recorded steps (`crossings`); `progress` shows a tqdm bar.
    """
    return _descend(problem, observer, _update(lr, momentum, weight_decay), steps, lr, events=events, progress=progress)


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
    progress: bool = False,
) -> DiscreteSolution:
    """Minibatch SGD (batches drawn without replacement within each epoch), one run per seed, vmapped.

    **Arguments:** as [`gradient_descent`][] (including `momentum`, `weight_decay`), plus
    `batch_size`, `sampling` ("shuffle": each epoch uses n // batch_size batches of a fresh shuffle;
    "iid": an independent batch of distinct samples at every step), `seeds` (count) and `key` (the PRNG
    key of the minibatches, required: each seed's stream is split from it).

    **Returns:** a `DiscreteSolution` whose arrays have a leading seed axis.
    """
    keys = _sgd_keys(problem, key, seeds, batch_size, sampling)
    update = _update(lr, momentum, weight_decay)
    return _descend(problem, observer, update, steps, lr, keys, batch_size, sampling, events, progress)
