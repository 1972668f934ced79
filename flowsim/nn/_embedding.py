"""Token and positional embeddings: a sequence of token ids (L,) becomes an array (L, d)."""

from __future__ import annotations

import abc
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int


class AbstractTokenEmbedding(eqx.Module):
    """Maps token ids (L,) to vectors (L, d)."""

    @abc.abstractmethod
    def __call__(self, tokens: Int[Array, " L"]) -> Float[Array, "L d"]: ...


class AbstractPositionalEmbedding(eqx.Module):
    """Adds position information to embedded tokens: (L, d) -> (L, d)."""

    @abc.abstractmethod
    def __call__(self, x: Float[Array, "L d"]) -> Float[Array, "L d"]: ...


@final
class OneHotEmbedding(AbstractTokenEmbedding):
    """Fixed one-hot embedding: token t becomes the basis vector e_t of R^vocab (so d = vocab). No parameters."""

    vocab: int = eqx.field(static=True)
    dtype: Any = eqx.field(static=True, default=float)

    def __call__(self, tokens: Int[Array, " L"]) -> Float[Array, "L d"]:
        return jax.nn.one_hot(tokens, self.vocab, dtype=self.dtype)


@final
class LearnedEmbedding(AbstractTokenEmbedding):
    """Learned lookup table: token t becomes row t of `weight` (vocab, d).

    **Init:** weight ~ N(0, scale^2) entrywise (scale = 1 by default, as `torch.nn.Embedding`).
    """

    weight: Float[Array, "vocab d"]

    def __init__(self, key: jax.Array, vocab: int, d: int, *, scale: float = 1.0, dtype: Any = float):
        self.weight = scale * jax.random.normal(key, (vocab, d), dtype)

    def __call__(self, tokens: Int[Array, " L"]) -> Float[Array, "L d"]:
        return self.weight[tokens]


@final
class NoPositional(AbstractPositionalEmbedding):
    """No position information: the identity."""

    def __call__(self, x: Float[Array, "L d"]) -> Float[Array, "L d"]:
        return x


@final
class LearnedPositional(AbstractPositionalEmbedding):
    """Adds row p of a learned table `weight` (max_len, d) at position p.

    **Init:** weight ~ N(0, scale^2) entrywise (scale = 1 by default).
    """

    weight: Float[Array, "max_len d"]

    def __init__(self, key: jax.Array, max_len: int, d: int, *, scale: float = 1.0, dtype: Any = float):
        self.weight = scale * jax.random.normal(key, (max_len, d), dtype)

    def __call__(self, x: Float[Array, "L d"]) -> Float[Array, "L d"]:
        return x + self.weight[: x.shape[0]]


def sinusoidal_table(L: int, d: int) -> np.ndarray:
    """Vaswani et al. (2017): PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d))
    (odd d: the last column is a sine). float64 numpy array (L, d)."""
    p = np.arange(L, dtype=np.float64)[:, None]
    j = np.arange(d)
    angle = p / 10000.0 ** (2 * (j // 2) / d)[None, :]
    return np.where(j[None, :] % 2 == 0, np.sin(angle), np.cos(angle))


@final
class SinusoidalPositional(AbstractPositionalEmbedding):
    """Adds the fixed sinusoidal table of `sinusoidal_table` (any length L). No parameters."""

    def __call__(self, x: Float[Array, "L d"]) -> Float[Array, "L d"]:
        L, d = x.shape
        return x + jnp.asarray(sinusoidal_table(L, d), x.dtype)


@final
class FixedPositional(AbstractPositionalEmbedding):
    """Adds row p of a given fixed feature matrix `features` (max_len, d) at position p.

    The matrix is held behind `jax.lax.stop_gradient`, so it receives no gradient even when a
    filter marks it trainable.
    """

    features: Float[Array, "max_len d"]

    def __call__(self, x: Float[Array, "L d"]) -> Float[Array, "L d"]:
        return x + jax.lax.stop_gradient(self.features[: x.shape[0]])
