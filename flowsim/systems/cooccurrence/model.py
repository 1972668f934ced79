"""The paper's shallow transformer (Eq. 1 of Yang et al., NeurIPS 2024) as an equinox Module.

F(X) = sum_l sum_j a_j w_j^T W_V X softmax(X^T W_K^T W_Q x_l / sqrt(m)), with one-hot embeddings, so
X is given by its token indices and W_V X is the column gather W_V[:, tokens].
"""

from __future__ import annotations

import functools
from typing import Any, Literal, final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree


@final
class CooccurrenceTransformer(eqx.Module):
    """Single-head softmax attention with a linear MLP read-out, summed over query positions.

    **Fields:** `W_Q`, `W_K`, `W_V` (m, d); `W` (m1, m) with rows w_j; `a` (m1,) read-out signs
    (fixed unless the problem marks it trainable).
    """

    W_Q: Float[Array, "m d"]
    W_K: Float[Array, "m d"]
    W_V: Float[Array, "m d"]
    W: Float[Array, "m1 m"]
    a: Float[Array, " m1"]

    @property
    def m(self) -> int:
        return self.W_Q.shape[0]

    def trainable(self, train_a: bool = False) -> PyTree[bool]:
        """Filter spec for `flowsim.make_problem`: W_Q, W_K, W_V and W are trained, the read-out `a`
        only if `train_a`."""
        return eqx.tree_at(lambda t: t.a, jax.tree.map(lambda _: True, self), replace=train_a)

    def u(self) -> Float[Array, " m"]:
        """u = W^T a, the MLP read-out direction."""
        return self.a @ self.W

    def G(self) -> Float[Array, " d"]:
        """The linear MLP function G(mu) = u^T W_V mu for every vocabulary entry."""
        return self.u() @ self.W_V

    def scores(self) -> Float[Array, "d d"]:
        """Attention score matrix S[a, b] = mu_a^T W_K^T W_Q mu_b (key a, query b), without 1/sqrt(m)."""
        return self.W_K.T @ self.W_Q

    def attention(self, tokens: Int[Array, " L"]) -> Float[Array, "L L"]:
        """Softmax weights p[l, h]: weight that the query at position l puts on the key at position h."""
        # With one-hot embeddings the per-sequence scores are a gather from the d x d score matrix;
        # under vmap over sequences the matrix product is computed once, not once per sample.
        S = self.scores() / jnp.sqrt(jnp.asarray(self.m, self.W_Q.dtype))
        return jax.nn.softmax(S[tokens[None, :], tokens[:, None]], axis=-1)

    def __call__(self, tokens: Int[Array, " L"]) -> Float[Array, ""]:
        p = self.attention(tokens)
        return jnp.sum(p @ self.G()[tokens])


@functools.partial(jax.jit, static_argnames=("d", "m", "m1", "init", "L", "dtype"))
def init_transformer(
    key: jax.Array,
    d: int,
    m: int,
    m1: int,
    *,
    init: Literal["kaiming", "theory"] = "kaiming",
    scale: float | jax.Array = 1.0,
    L: int = 5,
    dtype: Any = jnp.float64,
) -> CooccurrenceTransformer:
    """Draw initial weights.

    **Arguments:** `init="kaiming"`: U(+-1/sqrt(fan_in)) (fan_in = d for W_Q, W_K, W_V and m for W; the
    PyTorch `nn.Linear` default used by the paper's experiment); `init="theory"`: N(0, sigma0^2) with
    sigma0 = 1/sqrt(L m) and N(0, sigma1^2) with sigma1 = 1/sqrt(m1) (Condition 1). Both are multiplied
    by `scale`. `a` is uniform on {-1, +1}.
    """
    kq, kk, kv, kw, ka = jax.random.split(key, 5)
    if init == "kaiming":

        def draw(k, shape, fan_in):
            b = 1.0 / jnp.sqrt(fan_in)
            return jax.random.uniform(k, shape, dtype, -b, b)

        qkv = [draw(k, (m, d), d) for k in (kq, kk, kv)]
        W = draw(kw, (m1, m), m)
    elif init == "theory":
        s0, s1 = 1.0 / jnp.sqrt(L * m), 1.0 / jnp.sqrt(m1)
        qkv = [s0 * jax.random.normal(k, (m, d), dtype) for k in (kq, kk, kv)]
        W = s1 * jax.random.normal(kw, (m1, m), dtype)
    else:  # validated by Config; checked here for direct callers
        raise ValueError(f"init must be 'kaiming' or 'theory', got {init!r}")
    a = jnp.where(jax.random.bernoulli(ka, 0.5, (m1,)), 1.0, -1.0).astype(dtype)
    W_Q, W_K, W_V = (scale * w for w in qkv)
    return CooccurrenceTransformer(W_Q, W_K, W_V, scale * W, a)
