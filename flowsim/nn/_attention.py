"""Multi-head attention, softmax and linear, on one sequence (L, d_model).

Both share the same parameters: per head h, W_Q[h], W_K[h], W_V[h] (head_dim, d_model), and an output
map W_O (d_model, heads * head_dim). With q_l = W_Q[h] x_l, k_j = W_K[h] x_j, the scores are
s[h, l, j] = q_l . k_j / sqrt(head_dim); the pattern A[h] is softmax over keys j (softmax attention) or
s itself (linear attention); with `causal=True` key j > query l is excluded (weight 0). The output is
out_l = W_O concat_h(sum_j A[h, l, j] W_V[h] x_j). No biases.

**Init:** every weight ~ N(0, 1/fan_in): fan_in = d_model for W_Q, W_K, W_V and heads * head_dim for W_O.
"""

from __future__ import annotations

import abc
import math
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float


def _causal_mask(L: int) -> Bool[Array, "L L"]:
    return jnp.tril(jnp.ones((L, L), dtype=bool))


def _init(key: jax.Array, d_model: int, heads: int, head_dim: int, dtype: Any) -> tuple[jax.Array, ...]:
    kq, kk, kv, ko = jax.random.split(key, 4)
    qkv = [jax.random.normal(k, (heads, head_dim, d_model), dtype) / math.sqrt(d_model) for k in (kq, kk, kv)]
    W_O = jax.random.normal(ko, (d_model, heads * head_dim), dtype) / math.sqrt(heads * head_dim)
    return (*qkv, W_O)


class AbstractAttention(eqx.Module):
    """Self-attention over one sequence with the parameters of the module docstring: a subclass gives
    its `pattern(x)` (heads, L, L); the output (L, d_model) mixes the values by that pattern."""

    W_Q: eqx.AbstractVar[Float[Array, "heads head_dim d_model"]]
    W_K: eqx.AbstractVar[Float[Array, "heads head_dim d_model"]]
    W_V: eqx.AbstractVar[Float[Array, "heads head_dim d_model"]]
    W_O: eqx.AbstractVar[Float[Array, "d_model hd"]]

    @abc.abstractmethod
    def pattern(self, x: Float[Array, "L d"]) -> Float[Array, "heads L L"]:
        """A[h, l, j]: the weight that query position l of head h puts on key position j."""

    def with_pattern(self, x: Float[Array, "L d"]) -> tuple[Float[Array, "L d"], Float[Array, "heads L L"]]:
        """The output and the pattern from one pass."""
        A = self.pattern(x)
        return _combine(self.W_V, self.W_O, A, x), A

    def __call__(self, x: Float[Array, "L d"]) -> Float[Array, "L d"]:
        return self.with_pattern(x)[0]


def _scores(W_Q: Array, W_K: Array, x: Array) -> Array:
    q = jnp.einsum("hed,ld->hle", W_Q, x)
    k = jnp.einsum("hed,ld->hle", W_K, x)
    return jnp.einsum("hle,hje->hlj", q, k) / math.sqrt(W_Q.shape[1])


def _combine(W_V: Array, W_O: Array, A: Array, x: Array) -> Array:
    v = jnp.einsum("hed,ld->hle", W_V, x)
    heads = jnp.einsum("hlj,hje->lhe", A, v)  # (L, heads, head_dim)
    return heads.reshape(x.shape[0], -1) @ W_O.T


@final
class MultiHeadAttention(AbstractAttention):
    """Multi-head softmax attention (Vaswani et al. 2017); see the module docstring for the formula."""

    W_Q: Float[Array, "heads head_dim d_model"]
    W_K: Float[Array, "heads head_dim d_model"]
    W_V: Float[Array, "heads head_dim d_model"]
    W_O: Float[Array, "d_model hd"]
    causal: bool = eqx.field(static=True)

    def __init__(
        self, key: jax.Array, d_model: int, heads: int, head_dim: int, *, causal: bool = False, dtype: Any = float
    ):
        self.W_Q, self.W_K, self.W_V, self.W_O = _init(key, d_model, heads, head_dim, dtype)
        self.causal = causal

    def pattern(self, x: Float[Array, "L d"]) -> Float[Array, "heads L L"]:
        s = _scores(self.W_Q, self.W_K, x)
        if self.causal:
            s = jnp.where(_causal_mask(x.shape[0])[None], s, -jnp.inf)
        return jax.nn.softmax(s, axis=-1)


@final
class LinearAttention(AbstractAttention):
    """Multi-head linear attention: the pattern is the scaled score s itself (no softmax); with
    `causal=True` the entries j > l are zero. See the module docstring."""

    W_Q: Float[Array, "heads head_dim d_model"]
    W_K: Float[Array, "heads head_dim d_model"]
    W_V: Float[Array, "heads head_dim d_model"]
    W_O: Float[Array, "d_model hd"]
    causal: bool = eqx.field(static=True)

    def __init__(
        self, key: jax.Array, d_model: int, heads: int, head_dim: int, *, causal: bool = False, dtype: Any = float
    ):
        self.W_Q, self.W_K, self.W_V, self.W_O = _init(key, d_model, heads, head_dim, dtype)
        self.causal = causal

    def pattern(self, x: Float[Array, "L d"]) -> Float[Array, "heads L L"]:
        s = _scores(self.W_Q, self.W_K, x)
        if self.causal:
            s = jnp.where(_causal_mask(x.shape[0])[None], s, jnp.zeros((), s.dtype))
        return s
