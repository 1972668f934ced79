"""Layer normalisation over the last axis."""

from __future__ import annotations

from typing import Any, final

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float


@final
class LayerNorm(eqx.Module):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias over the last axis (biased variance, as
    Ba et al. 2016 and `torch.nn.LayerNorm`). With `affine=False` there is no weight nor bias.

    **Init:** weight = 1, bias = 0.
    """

    weight: Float[Array, " d"] | None
    bias: Float[Array, " d"] | None
    eps: float = eqx.field(static=True)

    def __init__(self, d: int, *, eps: float = 1e-5, affine: bool = True, dtype: Any = float):
        self.weight = jnp.ones((d,), dtype) if affine else None
        self.bias = jnp.zeros((d,), dtype) if affine else None
        self.eps = eps

    def __call__(self, x: Float[Array, "*batch d"]) -> Float[Array, "*batch d"]:
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        y = (x - mean) / jnp.sqrt(var + self.eps)
        if self.weight is not None and self.bias is not None:
            shape = (1,) * (x.ndim - 1) + (x.shape[-1],)
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y
