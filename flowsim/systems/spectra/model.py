"""The encoder of the spectra system, built from `flowsim.nn` parts plus one of its own.

Each token's real features (value, row and column one-hots; see `data`) go through a linear
`FeatureEmbedding` (this system's part: `flowsim.nn`'s embeddings take integer tokens), then
`layers` pre-LN blocks x <- x + Attn(LN(x)), x <- x + MLP(LN(x)) (`flowsim.nn.make_stack`, softmax
attention, GELU), a final `flowsim.nn.LayerNorm` and a `flowsim.nn.MeanPoolReadout` to the targets.
Positions need no embedding: the row and column one-hots are features. The loss is the mean squared
error over the outputs of a sample.
"""

from __future__ import annotations

import functools
import math
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ...nn import LayerNorm, MeanPoolReadout, TransformerStack, make_stack
from .config import SpectraConfig


def mse_loss(output: Float[Array, " out"], target: Float[Array, " out"]) -> Float[Array, ""]:
    """Mean over the outputs of (output - target)^2."""
    return jnp.mean((output - target) ** 2)


@final
class FeatureEmbedding(eqx.Module):
    """e_l = W f_l + b for real token features f_l (L, F) -> (L, d).

    **Init:** W ~ N(0, 1/F) entrywise, b = 0 (as `flowsim.nn`'s linear maps).
    """

    W: Float[Array, "d F"]
    b: Float[Array, " d"]

    def __init__(self, key: Array, n_features: int, d: int, *, dtype: Any = float):
        self.W = jax.random.normal(key, (d, n_features), dtype) / math.sqrt(n_features)
        self.b = jnp.zeros((d,), dtype)

    def __call__(self, f: Float[Array, "L F"]) -> Float[Array, "L d"]:
        return f @ self.W.T + self.b[None, :]


@final
class SpectraModel(eqx.Module):
    """F(features) = readout(LN(stack(embedding(features)))) for one matrix (L tokens).

    **Fields:** `embedding` a `FeatureEmbedding`; `stack` a `flowsim.nn.TransformerStack`; `norm` the
    final LayerNorm; `readout` a `flowsim.nn.MeanPoolReadout`.
    """

    embedding: FeatureEmbedding
    stack: TransformerStack
    norm: LayerNorm
    readout: MeanPoolReadout

    def __call__(self, f: Float[Array, "L F"]) -> Float[Array, " out"]:
        return self.readout(self.norm(self.stack(self.embedding(f))))


@functools.partial(jax.jit, static_argnames=("task", "dtype"))
def init_model(key: Array, task: SpectraConfig, dtype: Any = jnp.float64) -> SpectraModel:
    """Draw the initial model of `task` from `key` (inits as each part states)."""
    k_emb, k_stack, k_out = jax.random.split(key, 3)
    d = task.d_model
    stack = make_stack(
        k_stack,
        task.layers,
        d,
        task.heads,
        d // task.heads,
        mlp_hidden=task.mlp_hidden,
        activation="gelu",
        norm="pre",
        dtype=dtype,
    )
    return SpectraModel(
        FeatureEmbedding(k_emb, 1 + 2 * task.n, d, dtype=dtype),
        stack,
        LayerNorm(d, dtype=dtype),
        MeanPoolReadout(k_out, d, task.out_dim, dtype=dtype),
    )
