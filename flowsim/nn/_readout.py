"""Read-outs from the last layer (L, d): one position, mean pool, or a vocabulary head at every position.

**Init (all):** W ~ N(0, 1/d) entrywise, b = 0.
"""

from __future__ import annotations

import abc
import math
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


class AbstractReadout(eqx.Module):
    """Maps the last layer (L, d) to the model's output."""

    @abc.abstractmethod
    def __call__(self, x: Float[Array, "L d"]) -> Float[Array, "*out"]: ...


def _linear(key: jax.Array, d: int, out: int, dtype: Any) -> tuple[Array, Array]:
    return jax.random.normal(key, (out, d), dtype) / math.sqrt(d), jnp.zeros((out,), dtype)


@final
class PositionReadout(AbstractReadout):
    """y = W x_p + b for one position p (`position=0` the first token, `-1` the last). Output (out,)."""

    W: Float[Array, "out d"]
    b: Float[Array, " out"]
    position: int = eqx.field(static=True)

    def __init__(self, key: jax.Array, d: int, out: int, *, position: int = -1, dtype: Any = float):
        self.W, self.b = _linear(key, d, out, dtype)
        self.position = position

    def __call__(self, x: Float[Array, "L d"]) -> Float[Array, " out"]:
        return self.W @ x[self.position] + self.b


@final
class MeanPoolReadout(AbstractReadout):
    """y = W mean_l(x_l) + b. Output (out,)."""

    W: Float[Array, "out d"]
    b: Float[Array, " out"]

    def __init__(self, key: jax.Array, d: int, out: int, *, dtype: Any = float):
        self.W, self.b = _linear(key, d, out, dtype)

    def __call__(self, x: Float[Array, "L d"]) -> Float[Array, " out"]:
        return self.W @ jnp.mean(x, axis=0) + self.b


@final
class VocabHead(AbstractReadout):
    """Logits at every position: y_l = W x_l + b. Output (L, vocab)."""

    W: Float[Array, "vocab d"]
    b: Float[Array, " vocab"]

    def __init__(self, key: jax.Array, d: int, vocab: int, *, dtype: Any = float):
        self.W, self.b = _linear(key, d, vocab, dtype)

    def __call__(self, x: Float[Array, "L d"]) -> Float[Array, "L vocab"]:
        return x @ self.W.T + self.b[None, :]
