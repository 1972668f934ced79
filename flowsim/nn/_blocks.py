"""The position-wise MLP, the residual transformer block and a stack of blocks."""

from __future__ import annotations

import math
from typing import Any, Literal, final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._attention import AbstractAttention, LinearAttention, MultiHeadAttention
from ._norm import LayerNorm


@final
class MLP(eqx.Module):
    """Position-wise two-layer MLP: y_l = W2 act(W1 x_l + b1) + b2, act = ReLU or GELU.

    GELU is `jax.nn.gelu`'s default, the tanh approximation
    0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))).

    **Init:** W1 ~ N(0, 1/d), W2 ~ N(0, 1/hidden) entrywise; b1 = b2 = 0.
    """

    W1: Float[Array, "hidden d"]
    b1: Float[Array, " hidden"]
    W2: Float[Array, "d hidden"]
    b2: Float[Array, " d"]
    activation: Literal["relu", "gelu"] = eqx.field(static=True)

    def __init__(
        self, key: jax.Array, d: int, hidden: int, *, activation: Literal["relu", "gelu"] = "relu", dtype: Any = float
    ):
        k1, k2 = jax.random.split(key)
        self.W1 = jax.random.normal(k1, (hidden, d), dtype) / math.sqrt(d)
        self.b1 = jnp.zeros((hidden,), dtype)
        self.W2 = jax.random.normal(k2, (d, hidden), dtype) / math.sqrt(hidden)
        self.b2 = jnp.zeros((d,), dtype)
        self.activation = activation

    def __call__(self, x: Float[Array, "L d"]) -> Float[Array, "L d"]:
        h = x @ self.W1.T + self.b1[None, :]
        h = jax.nn.relu(h) if self.activation == "relu" else jax.nn.gelu(h)
        return h @ self.W2.T + self.b2[None, :]


@final
class TransformerBlock(eqx.Module):
    """Attention then (optionally) an MLP, each as a sublayer f with the chosen norm placement:

    - `norm="pre"`:  x <- x + f(LN(x))
    - `norm="post"`: x <- LN(x + f(x))
    - `norm=None`:   x <- x + f(x)

    with `residual=False` the "x +" is dropped (pre: f(LN(x)); post: LN(f(x)); None: f(x)). Each
    sublayer has its own LayerNorm (`norm1` before/after attention, `norm2` for the MLP).
    """

    attention: AbstractAttention
    mlp: MLP | None
    norm1: LayerNorm | None
    norm2: LayerNorm | None
    norm: Literal["pre", "post"] | None = eqx.field(static=True)
    residual: bool = eqx.field(static=True)

    def __init__(
        self,
        key: jax.Array,
        d_model: int,
        heads: int,
        head_dim: int,
        *,
        mlp_hidden: int | None = None,
        activation: Literal["relu", "gelu"] = "relu",
        attention: Literal["softmax", "linear"] = "softmax",
        causal: bool = False,
        norm: Literal["pre", "post"] | None = "pre",
        residual: bool = True,
        eps: float = 1e-5,
        affine: bool = True,
        dtype: Any = float,
    ):
        ka, km = jax.random.split(key)
        cls = MultiHeadAttention if attention == "softmax" else LinearAttention
        self.attention = cls(ka, d_model, heads, head_dim, causal=causal, dtype=dtype)
        self.mlp = None if mlp_hidden is None else MLP(km, d_model, mlp_hidden, activation=activation, dtype=dtype)
        make_norm = lambda: None if norm is None else LayerNorm(d_model, eps=eps, affine=affine, dtype=dtype)
        self.norm1 = make_norm()
        self.norm2 = None if self.mlp is None else make_norm()
        self.norm = norm
        self.residual = residual

    def _sublayer(self, f, ln: LayerNorm | None, x: Float[Array, "L d"]) -> tuple[Array, tuple[Array, ...]]:
        """The sublayer's output and what enters its LayerNorm (empty without one)."""
        if self.norm == "pre" and ln is not None:
            y = f(ln(x))
            return (x + y if self.residual else y), (x,)
        y = x + f(x) if self.residual else f(x)
        return (ln(y), (y,)) if self.norm == "post" and ln is not None else (y, ())

    def pattern(self, x: Float[Array, "L d"]) -> Float[Array, "heads L L"]:
        """The attention pattern of this block on input x (after the pre-norm when `norm="pre"`)."""
        if self.norm == "pre" and self.norm1 is not None:
            x = self.norm1(x)
        return self.attention.pattern(x)

    def norm_inputs(self, x: Float[Array, "L d"]) -> tuple[Float[Array, "L d"], tuple[Float[Array, "L d"], ...]]:
        """The block's output and what enters each of its LayerNorms, in order (`norm1`, `norm2`):
        the inputs whose inverse standard deviation is the LayerNorm "blow-up" of Hahn & Rofin."""
        x, seen = self._sublayer(self.attention, self.norm1, x)
        if self.mlp is not None:
            x, more = self._sublayer(self.mlp, self.norm2, x)
            seen += more
        return x, seen

    def __call__(self, x: Float[Array, "L d"]) -> Float[Array, "L d"]:
        return self.norm_inputs(x)[0]


@final
class TransformerStack(eqx.Module):
    """L blocks applied in order."""

    blocks: tuple[TransformerBlock, ...]

    def __call__(self, x: Float[Array, "L d"]) -> Float[Array, "L d"]:
        for block in self.blocks:
            x = block(x)
        return x

    def norm_inputs(self, x: Float[Array, "L d"]) -> tuple[Float[Array, "L d"], tuple[Float[Array, "L d"], ...]]:
        """The output and what enters every LayerNorm of every block, in order."""
        seen: tuple[Array, ...] = ()
        for block in self.blocks:
            x, more = block.norm_inputs(x)
            seen += more
        return x, seen

    def patterns(self, x: Float[Array, "L d"]) -> tuple[Float[Array, "_heads L L"], ...]:
        """Every block's attention pattern on its own input, in one forward pass."""
        out = []
        for block in self.blocks:
            out.append(block.pattern(x))
            x = block(x)
        return tuple(out)


def make_stack(key: jax.Array, n_layers: int, d_model: int, heads: int, head_dim: int, **block_kw) -> TransformerStack:
    """A stack of `n_layers` identically configured `TransformerBlock`s, one key each split from `key`
    (keyword arguments as `TransformerBlock`)."""
    keys = jax.random.split(key, n_layers)
    return TransformerStack(tuple(TransformerBlock(k, d_model, heads, head_dim, **block_kw) for k in keys))
