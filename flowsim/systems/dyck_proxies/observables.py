"""Tracked quantities of the dyck-proxies system, recorded at every save point of any run.

Names (scalars): `loss` (training cross-entropy), `accuracy` (training closing-bracket accuracy,
argmax over the close brackets equals the gold close, at every position whose gold next token is a
close), `accuracy_ratio` (the same positions by Hewitt et al.'s rule: p(gold close) / sum of
p(any close) > 0.8). The proxy study reads the final parameters (`verdicts`), not the save points.
The top Hessian eigenvalue is the engine's (`sharpness=1`: `lambda_max`).
"""

from __future__ import annotations

from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PyTree

from ..._problem import Problem
from .proxies import close_argmax

RATIO = 0.8


def close_positions(targets: Int[Array, "*b L"], vocab: int) -> Bool[Array, "*b L"]:
    """Positions whose gold next token is a close bracket (vocabulary 3 + 2k)."""
    k = (vocab - 3) // 2
    return (targets >= 3 + k) & (targets < 3 + 2 * k)


def closing_accuracies(logits: Float[Array, "N L V"], targets: Int[Array, "N L"]) -> tuple[Array, Array]:
    """(argmax rule, ratio rule) closing-bracket accuracy over every close position of the batch."""
    V = logits.shape[-1]
    k = (V - 3) // 2
    mask = close_positions(targets, V)
    dtype = logits.dtype
    n = jnp.maximum(jnp.sum(mask), 1).astype(dtype)
    hit = (close_argmax(logits) == targets.astype(jnp.int32)) & mask
    p = jax.nn.softmax(logits[..., 3 + k :], axis=-1)
    gold = jnp.clip(targets - (3 + k), 0, k - 1)
    share = jnp.take_along_axis(p, gold[..., None], axis=-1)[..., 0]
    ratio = (share > jnp.asarray(RATIO, dtype)) & mask
    return jnp.sum(hit).astype(dtype) / n, jnp.sum(ratio).astype(dtype) / n


@final
class DyckObserver(eqx.Module):
    """Computes the tracked quantities (see the module docstring) on the problem's training rows."""

    def __call__(self, t: float | Array, params: PyTree, problem: Problem) -> dict[str, Array]:
        logits = jax.vmap(problem.model(params))(problem.inputs)
        loss = jnp.mean(jax.vmap(problem.loss_fn)(logits, problem.targets))
        acc, ratio = closing_accuracies(logits, problem.targets)
        return {"loss": loss, "accuracy": acc, "accuracy_ratio": ratio}
