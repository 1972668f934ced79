"""The compiled loop shared by GD, SGD and optax runs: a `lax.scan` over save segments, the steps of
each segment inside.

The carry of one run is a `_Carry`: parameters, update state, first diverged step, and the step and
event index where a stop event fired. Without stop events a segment is a `fori_loop` (the program of
a run that cannot stop); with them it is a `while_loop` that also ends when the run stops, so a
full-batch run does no gradient work after its stop step (vmapped seeds run until every seed has
stopped, the stopped ones masked). Checkpointed save points copy the carry into a buffer held in the
scan's carry, so a run with checkpoints is still one program, with no Python loop over steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from . import _progress
from ._events import Event
from ._problem import Problem

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
class Stop(eqx.Module):
    """Stop events of a discrete run (`stop=` of [`gradient_descent`][flowsim.gradient_descent],
    [`sgd`][flowsim.sgd], [`optax_descent`][flowsim.optax_descent]) checked every `every` steps.

    A bare event (or sequence of them) is checked after every step, a forward pass over the training
    set per step; for a minibatch run that can cost more than the step itself. `Stop(events, every=k)`
    checks after every k steps within each save interval and at every save point, so the stop step is
    the first such check at which an event has crossed (at most k - 1 steps late).

    **Arguments:** `events` a `flowsim.Event` or a sequence of them; `every` the check interval (≥ 1).
    """

    events: tuple[Event, ...]
    every: int = eqx.field(static=True)

    def __init__(self, events: Event | tuple[Event, ...] | list[Event], every: int = 1):
        self.events = (events,) if isinstance(events, Event) else tuple(events)
        for e in self.events:
            if not isinstance(e, Event):
                raise TypeError(f"stop must be a flowsim.Event or a sequence of them, got {e!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Stop: every must be an integer >= 1, got {every!r}")
        self.every = every


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


def _update(lr: float | Array, momentum: float, weight_decay: float) -> _Update:
    opt = lambda x: None if x == 0 else jnp.asarray(x)
    return _Update(jnp.asarray(lr), opt(momentum), opt(weight_decay))


@final
class _Carry(eqx.Module):
    """One run's loop state: `bad` first diverged step, `stop` stop step, `which` index of the stop
    event that fired (each -1 when not; SGD: a leading seed axis on every leaf)."""

    params: PyTree
    state: PyTree
    bad: Array
    stop: Array
    which: Array


@eqx.filter_jit
def _initial_carry(update: eqx.Module, params: PyTree, seeds: int | None) -> _Carry:
    """The carry at the start of a fresh run (`seeds` None: full batch, one run), as one compiled
    program (the optimiser's `init` run eagerly would compile one small program per operation)."""
    none = jnp.asarray(-1)
    carry = _Carry(params, update.init(params), none, none, none)  # pyright: ignore[reportAttributeAccessIssue]
    if seeds is None:
        return carry
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (seeds, *jnp.shape(x))), carry)


def divergence_limit(problem: Problem, factor: Array) -> Array:
    """The loss beyond which a run has diverged: `factor` times |L(params0)| (infinite when the
    initial loss is 0, where no multiple of it is a bound: then only a non-finite loss counts)."""
    loss0 = jnp.abs(problem.loss(problem.params0))
    factor = factor.astype(loss0.dtype)
    return jnp.where(loss0 > 0, factor * loss0, jnp.asarray(jnp.inf, loss0.dtype))


@final
class _Batches(eqx.Module):
    """Minibatch indices of SGD steps (`_sgd_indices` of the run's key); `key` None: full batch.

    The epoch's shuffle is drawn again at every step: carrying it from step to step was measured no
    faster (`python benchmarks/bench_sgd_step.py`: at n = 60 a bare gradient on 12 samples costs 0.90
    of a full-batch one, and drawing the shuffle adds about 0.08 of it)."""

    key: Array | None
    n: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    sampling: str = eqx.field(static=True)

    def take(self, k: Array) -> Array | None:
        if self.key is None:
            return None
        return _sgd_indices(self.key, k, self.n, self.batch_size, self.sampling)


def _step(problem: Problem, update: Callable[..., tuple[PyTree, PyTree]], c: tuple, k: Array, batches, limit):
    """Step k from `c` = (params, update state, first diverged step)."""
    params, vel, bad = c
    idx = batches.take(k)
    loss, grad = problem.loss_and_grad(params, idx)
    params, vel = update(params, vel, grad)
    # Diverged: the loss left every reasonable bound (|loss| above `limit`) or is not finite (NaN
    # fails the comparison too).
    bad = jnp.where((bad < 0) & ~(jnp.abs(loss) <= limit), k, bad)
    return params, vel, bad


def _conditions(stop: tuple[Event, ...], t: Array, params: PyTree, problem: Problem) -> tuple[Array, ...]:
    out = tuple(jnp.asarray(e.condition(t, params, problem)) for e in stop)
    for e, v in zip(stop, out):
        if v.shape != ():
            raise ValueError(f"stop event {e.name!r}: its condition must return a scalar, got shape {v.shape}")
    return out


def _advance(problem, update, stop, batch_size, sampling, carry: _Carry, prev, k0, length, key, limit, every=1):
    """Steps k0 + 1 .. k0 + length of one run (fewer if it stops); `prev` the stop conditions at k0,
    checked after every `every` steps of the segment and at its end; `limit` the divergence bound."""
    batches = _Batches(key, problem.n, batch_size, sampling)
    c0 = (carry.params, carry.state, carry.bad)

    def steps(j0, n, c):
        return jax.lax.fori_loop(0, n, lambda i, c: _step(problem, update, c, k0 + j0 + i, batches, limit), c)

    if not stop:
        params, state, bad = steps(0, length, c0)
        return _Carry(params, state, bad, carry.stop, carry.which), prev

    def go_on(wc):
        j, _, halt, _, _ = wc
        return (j < length) & (halt < 0)

    def stepped(wc):
        j, c, halt, which, prev = wc
        if every == 1:  # static: the one-step program
            n, c = 1, _step(problem, update, c, k0 + j, batches, limit)
        else:
            n = jnp.minimum(every, length - j)
            c = steps(j, n, c)
        k = k0 + j + n
        now = _conditions(stop, k.astype(update.lr.dtype) * update.lr, c[0], problem)
        hit = jnp.stack([e.crosses(a, b) for e, a, b in zip(stop, prev, now)])
        fired = jnp.any(hit)
        halt = jnp.where(fired, k.astype(halt.dtype), halt)
        which = jnp.where(fired, jnp.argmax(hit).astype(which.dtype), which)
        return j + n, c, halt, which, now

    init = (jnp.zeros((), length.dtype), c0, carry.stop, carry.which, prev)
    _, (params, state, bad), halt, which, prev = jax.lax.while_loop(go_on, stepped, init)
    return _Carry(params, state, bad, halt, which), prev


def _nan_where(tree: PyTree, gone: Array) -> PyTree:
    """NaN in the inexact leaves of `tree` for the runs where `gone` (one bool per run, leading axes)."""

    def mask(x):
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            return x
        return jnp.where(gone.reshape(gone.shape + (1,) * (x.ndim - gone.ndim)), jnp.nan, x)

    return jax.tree.map(mask, tree)


@eqx.filter_jit
def _run(
    problem,
    observer,
    update,
    carry0,
    steps,
    keys,
    batch_size,
    bar,
    sampling="shuffle",
    stop=(),
    slots=None,
    rows=0,
    every=1,
    divergence_factor=None,
):
    """Shared scan over save segments from `carry0`. `keys is None`: full-batch GD; else SGD vmapped
    over keys. `stop`: stop events (static; () gives the program of a run that never stops), checked
    every `every` steps (static) within each save segment and at its end.
    `slots` (S - 1,): the row of the checkpoint buffer (`rows` rows, static) each save point after
    the first writes its carry to (`rows` or more: none), or None for no checkpoints.
    `divergence_factor` (traced): a step whose loss exceeds it times |L(params0)| has diverged.

    **Returns:** (obs, final carry, obs at the stop step (None without stop events), buffer)."""
    batched = keys is not None
    lr = update.lr

    factor = jnp.asarray(jnp.inf) if divergence_factor is None else jnp.asarray(divergence_factor)
    limit = divergence_limit(problem, factor)

    def advance(carry, prev, k0, length, key):
        return _advance(problem, update, stop, batch_size, sampling, carry, prev, k0, length, key, limit, every)

    def observe(k, params):
        return observer(k.astype(lr.dtype) * lr, params, problem)

    def conditions(k, params):
        return _conditions(stop, k.astype(lr.dtype) * lr, params, problem)

    observe_at = observe
    if batched:
        advance = jax.vmap(advance, in_axes=(0, 0, None, None, 0))
        observe, conditions = (jax.vmap(f, in_axes=(None, 0)) for f in (observe, conditions))
        observe_at = jax.vmap(observe_at)
    mask = (lambda tree, c, k: _nan_where(tree, (c.stop >= 0) & (c.stop < k))) if stop else (lambda tree, c, k: tree)
    buf0 = None if slots is None else jax.tree.map(lambda x: jnp.zeros((rows, *x.shape), x.dtype), carry0)

    def segment(sc, xs):
        carry, prev, buf = sc
        k0, length, slot = xs
        carry, prev = advance(carry, prev, k0, length, keys)
        if bar is not None:  # static: without a bar the program has no host callback (so it is cacheable)
            _progress.tick(bar, length)
        if buf is not None:
            buf = jax.tree.map(lambda b, x: b.at[slot].set(x, mode="drop"), buf, carry)
        return (carry, prev, buf), mask(observe(k0 + length, carry.params), carry, k0 + length)

    # The save point steps[0] is a segment of no steps, so the observer is compiled once, in the scan
    # (its program is most of a run's compile time), not once more outside it.
    k0s = jnp.concatenate([steps[:1], steps[:-1]])
    lengths = jnp.concatenate([jnp.zeros((1,), steps.dtype), jnp.diff(steps)])
    slots = None if slots is None else jnp.concatenate([jnp.full((1,), rows, slots.dtype), slots])  # drop
    (carry, _, buf), obs = jax.lax.scan(
        segment, (carry0, conditions(steps[0], carry0.params), buf0), (k0s, lengths, slots)
    )
    if batched:  # (save points, seeds, ...) -> (seeds, save points, ...)
        obs = jax.tree.map(lambda x: x.swapaxes(0, 1), obs)
    stop_obs = None
    if stop:
        stop_obs = _nan_where(observe_at(jnp.maximum(carry.stop, 0), carry.params), carry.stop < 0)
    return obs, carry, stop_obs, buf
