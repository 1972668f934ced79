"""Adam on fresh samples: every step draws a new minibatch of matrices from the generator (the paper's
training regime), as opposed to the engine's minibatch comparator, which samples a fixed training
set.

`fresh_adam` runs `steps` Adam steps (cosine-decayed step size by default) of `batch` matrices of
the distribution `dist` from one key (a step's key is `fold_in(key, step)`), recording every `every`
steps the held-out summaries of `metrics.summary` on `test`. The loop is a `lax.scan` over records
with a `fori_loop` inside; optax runs under standard dtype promotion (as `flowsim.optax_descent`).
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PyTree

from .config import SpectraConfig
from .data import SpectraData, encode, sample_matrices, sigma
from .metrics import per_matrix, summary
from .model import SpectraModel, mse_loss


def batch_loss(params: PyTree, static: PyTree, x: Array, y: Array) -> Array:
    """Mean MSE of the model `combine(params, static)` on features `x` and targets `y`."""
    model = eqx.combine(params, static)
    return jnp.mean(jax.vmap(mse_loss)(jax.vmap(model)(x), y))


def evaluate_model(model: SpectraModel, test: SpectraData, task: SpectraConfig) -> dict[str, Array]:
    """`test_loss` and the held-out summaries of `model` on `test`."""
    pred = jax.vmap(model)(test.x)
    out = {"test_loss": jnp.mean(jax.vmap(mse_loss)(pred, test.y))}
    out.update(summary(per_matrix(test.m, pred, sigma(task.n, task.scale_a)), task.tol))
    return out


@functools.partial(jax.jit, static_argnames=("task", "dist", "lr", "steps", "batch", "every", "decay"))
def _run(
    model: SpectraModel, test: SpectraData, key: Array, task: SpectraConfig, dist: str, lr: float, steps: int,
    batch: int, every: int, decay: bool,
) -> tuple[SpectraModel, dict[str, Array]]:  # fmt: skip
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps) if decay else lr)
    dtype = jax.tree.leaves(params)[0].dtype
    with jax.numpy_dtype_promotion("standard"):
        state = opt.init(params)

    def step(i: Array, carry: tuple[PyTree, PyTree]) -> tuple[PyTree, PyTree]:
        p, s = carry
        d = encode(sample_matrices(jax.random.fold_in(key, i), batch, task.n, dist, task.scale_a, dtype), task)
        g = jax.grad(batch_loss)(p, static, d.x, d.y)
        with jax.numpy_dtype_promotion("standard"):
            upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s

    def segment(carry: tuple[PyTree, PyTree], k: Array) -> tuple[tuple[PyTree, PyTree], dict[str, Array]]:
        carry = jax.lax.fori_loop(k * every, (k + 1) * every, step, carry)
        return carry, evaluate_model(eqx.combine(carry[0], static), test, task)

    (params, _), rec = jax.lax.scan(segment, (params, state), jnp.arange(steps // every))
    return eqx.combine(params, static), rec


def fresh_adam(
    model: SpectraModel,
    task: SpectraConfig,
    key: Array,
    test: SpectraData,
    *,
    lr: float,
    steps: int,
    batch: int,
    every: int,
    dist: str | None = None,
    decay: bool = True,
) -> tuple[SpectraModel, dict[str, np.ndarray]]:
    """Train `model` by Adam at `lr` (with `decay`, cosine-decayed to 0 over the run) for `steps`
    steps of `batch` fresh matrices of `dist` (default: the task's); return the final model and the
    record (`step` and every summary, one entry per `every` steps; `steps` must be a multiple of
    `every`)."""
    if steps % every:
        raise ValueError(f"steps={steps} must be a multiple of every={every}")
    final, rec = _run(model, test, key, task, dist or task.dist, lr, steps, batch, every, decay)
    out: dict[str, Any] = {k: np.asarray(v) for k, v in rec.items()}
    out["step"] = np.arange(1, steps // every + 1) * every
    return final, out
