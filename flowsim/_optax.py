"""Any optax optimizer as a discrete comparator: `optax_descent` runs an `optax.GradientTransformation`
on a `Problem` exactly as `flowsim.gradient_descent` / `flowsim.sgd` run GD and SGD.

The same loss code (`problem.loss_and_grad`), the same save grid (integer steps k recorded at time
t = k * lr_time), the same `lax.scan` over save segments with a `fori_loop` inside (the optimizer
state lives in the carry), the same minibatches (`flowsim.sgd`'s for the same key) and the same
divergence and event reports. Continuous counterparts of sign descent, Adam and RMSProp are in
`flowsim._adaptive_flows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

import equinox as eqx
import jax
import numpy as np
import optax
from jaxtyping import Array, PyTree
from numpy.typing import ArrayLike

from ._checkpoint import Checkpoint
from ._descent_loop import Stop
from ._discrete import DIVERGENCE_FACTOR, DiscreteSolution, _descend, _sgd_keys, check_descent
from ._events import Event
from ._integrate import Observer
from ._problem import Problem


@final
class _OptaxUpdate(eqx.Module):
    """One optax step as the update `_discrete`'s scan runs; `lr` is the flow time of one step.

    optax mixes Python floats with integer step counts (Adam's bias correction), which strict dtype
    promotion refuses, so the optimizer's own code is traced under standard promotion.
    """

    optimizer: optax.GradientTransformation
    lr: Array

    def init(self, params: PyTree) -> PyTree:
        with jax.numpy_dtype_promotion("standard"):
            return self.optimizer.init(params)

    def __call__(self, params: PyTree, state: PyTree, grad: PyTree) -> tuple[PyTree, PyTree]:
        with jax.numpy_dtype_promotion("standard"):
            updates, state = self.optimizer.update(grad, state, params)
        return optax.apply_updates(params, updates), state


def optax_descent(
    problem: Problem,
    optimizer: optax.GradientTransformation,
    lr_time: float,
    steps: ArrayLike,
    observer: Observer,
    *,
    key: Array | None = None,
    batch_size: int | None = None,
    seeds: int = 1,
    sampling: str = "shuffle",
    events: Sequence[Event] = (),
    stop: Stop | Event | Sequence[Event] = (),
    checkpoint_steps: Sequence[int] | np.ndarray = (),
    start: Checkpoint | None = None,
    progress: bool = False,
    divergence_factor: float = DIVERGENCE_FACTOR,
) -> DiscreteSolution:
    """Run `optimizer` from `problem.params0`, recorded at `steps` (flow time t = steps * lr_time).

    **Arguments:** `optimizer` any `optax.GradientTransformation` (e.g. `optax.adam(lr)`); `lr_time`
    the flow time one step stands for (usually the optimizer's learning rate); `steps`, `observer`,
    `events`, `stop`, `checkpoint_steps`, `start`, `progress`, `divergence_factor` as
    [`gradient_descent`][] (with the same checks, `lr_time` a finite number > 0; the
    checkpoints hold the optax state; `start` must be an "optax" checkpoint of the same optimizer).
    With `key` None the gradient is full batch; with a `key`, minibatches of `batch_size` (default:
    the whole dataset, reshuffled) drawn as [`sgd`][] draws them (`sampling`), one run per seed
    (`seeds`, keys split from `key`), vmapped.

    **Returns:** a `DiscreteSolution` (with a leading seed axis when `key` is given).
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    check_descent(problem, lr=lr_time, divergence_factor=divergence_factor, seeds=seeds, lr_name="lr_time")
    update = _OptaxUpdate(optimizer, jax.numpy.asarray(lr_time))
    keys = None
    if key is None and batch_size is not None:
        raise ValueError("batch_size needs a key (the minibatches' PRNG key)")
    if key is not None:
        batch_size = problem.n if batch_size is None else batch_size
        keys = _sgd_keys(problem, key, seeds, batch_size, sampling)
    return _descend(
        problem,
        observer,
        update,
        steps,
        lr_time,
        kind="optax",
        keys=keys,
        batch_size=batch_size or 0,
        sampling=sampling,
        events=events,
        stop=stop,
        checkpoint_steps=checkpoint_steps,
        start=start,
        progress=progress,
        divergence_factor=divergence_factor,
    )
