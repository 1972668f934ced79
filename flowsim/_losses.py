"""Per-sample losses: `loss(output, target) -> scalar`, for `make_problem`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


def logistic_loss(output: Float[Array, ""], target: Float[Array, ""]) -> Float[Array, ""]:
    """l(y F) = log(1 + exp(-y F)) for a label y in {-1, +1}, computed stably."""
    return jax.nn.softplus(-target * output)


def squared_loss(output: Float[Array, "*#shape"], target: Float[Array, "*#shape"]) -> Float[Array, ""]:
    """1/2 ||output - target||^2, summed over any trailing shape (scalar or vector targets; shapes that
    broadcast against each other, e.g. a scalar output and a (1,) target)."""
    return 0.5 * jnp.sum((output - target) ** 2)


def cross_entropy_loss(
    logits: Float[Array, "*positions classes"], labels: Int[Array, "*positions"]
) -> Float[Array, ""]:
    """Mean over positions of -log softmax(logits)[label] (per-position labels; a label < 0 is
    ignored, e.g. padding)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    safe = jnp.maximum(labels, 0)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    mask = (labels >= 0).astype(logp.dtype)
    return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)
