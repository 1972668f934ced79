"""The 2-layer 1-head causal transformer of the proxy study, built from `flowsim.nn` parts, and its
forward pass with the layer-2 queries/keys replaced by a proxy.

Tokens go through a learned embedding (no positional embedding: causal attention makes the model
defined at any length), two pre-LN blocks x <- x + Attn(LN(x)), x <- x + MLP(LN(x)), a final
LayerNorm and a vocabulary head: logits (L, V) at every position. The loss is the mean
cross-entropy over the positions whose target is not PAD.

**Proxies** (`QKProxy`, Friedman et al. ICML 2024): with h = LN(x) the input of the layer-2
attention, the scores q_l . k_j / sqrt(head_dim) use q = h A, k = h B (A = W_Q^T, B = W_K^T for the
model itself; A = U_r S_r, B = V_r for the rank-r SVD truncation of W_Q^T W_K), then each of q, k
is replaced by m + (q - m) P (PCA: P the projector on the top-r principal components, m the mean;
identity otherwise) and, with `kmeans` set, by its nearest centroid. One pytree layout for every
proxy, so that one compiled program scores them all.
"""

from __future__ import annotations

import functools
import math
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..._dyck import PAD
from ..._losses import cross_entropy_loss
from ...nn import Transformer, make_transformer
from .config import DyckProxiesConfig


def lm_loss(logits: Float[Array, "L V"], targets: Int[Array, " L"]) -> Float[Array, ""]:
    """Mean cross-entropy over the positions whose target is not PAD."""
    labels = jnp.where(targets == PAD, jnp.asarray(-1, targets.dtype), targets)
    return cross_entropy_loss(logits, labels)


def sq_dists(x: Float[Array, "N e"], C: Float[Array, "c e"], valid: Bool[Array, " c"]) -> Float[Array, "N c"]:
    """Squared distances |x - C|^2 (as |C|^2 - 2 x.C, plus |x|^2), +inf at the invalid centroids."""
    d2 = jnp.sum(jnp.square(C), axis=1)[None, :] - 2 * (x @ C.T) + jnp.sum(jnp.square(x), axis=1)[:, None]
    return jnp.where(valid[None, :], d2, jnp.asarray(jnp.inf, d2.dtype))


@final
class QKProxy(eqx.Module):
    """A replacement of the layer-2 queries and keys (see the module docstring).

    **Fields:** `A`, `B` (d, e) the query/key maps of the normalised input; `mq`, `mk` (e,) PCA
    means; `Pq`, `Pk` (e, e) PCA projectors; `Cq`, `Ck` (c, e) k-means centroids; `valid` (c,) which
    centroid rows are real (the rest pad a fixed layout); `kmeans` () whether to snap to centroids.
    """

    A: Float[Array, "d e"]
    B: Float[Array, "d e"]
    mq: Float[Array, " e"]
    mk: Float[Array, " e"]
    Pq: Float[Array, "e e"]
    Pk: Float[Array, "e e"]
    Cq: Float[Array, "c e"]
    Ck: Float[Array, "c e"]
    valid: Bool[Array, " c"]
    kmeans: Bool[Array, ""]

    def _snap(self, x: Float[Array, "L e"], C: Float[Array, "c e"]) -> Float[Array, "L e"]:
        def near(x: Array) -> Array:
            return C[jnp.argmin(sq_dists(x, C, self.valid), axis=1)]

        return jax.lax.cond(self.kmeans, near, lambda x: x, x)

    def qk(self, h: Float[Array, "L d"]) -> tuple[Float[Array, "L e"], Float[Array, "L e"]]:
        q = self.mq[None, :] + (h @ self.A - self.mq[None, :]) @ self.Pq
        k = self.mk[None, :] + (h @ self.B - self.mk[None, :]) @ self.Pk
        return self._snap(q, self.Cq), self._snap(k, self.Ck)


@final
class DyckLM(eqx.Module):
    """The causal LM (see the module docstring). **Fields:** `net`, a `flowsim.nn.Transformer`."""

    net: Transformer

    def __call__(self, tokens: Int[Array, " L"]) -> Float[Array, "L V"]:
        return self.net(tokens)

    def layer2_input(self, tokens: Int[Array, " L"]) -> Float[Array, "L d"]:
        """h = LN(x), the normalised input of the layer-2 attention."""
        x = self.layer1(tokens)
        norm = self.net.stack.blocks[1].norm1
        assert norm is not None
        return norm(x)

    def identity_proxy(self, n_centroids: int = 1) -> QKProxy:
        """The proxy that reproduces the model (W_Q, W_K, no projection, no snapping)."""
        att = self.net.stack.blocks[1].attention
        e = att.W_Q.shape[1]
        dt = att.W_Q.dtype
        zero, eye = jnp.zeros((e,), dt), jnp.eye(e, dtype=dt)
        C = jnp.zeros((n_centroids, e), dt)
        return QKProxy(
            att.W_Q[0].T, att.W_K[0].T, zero, zero, eye, eye, C, C, jnp.ones((n_centroids,), bool), jnp.asarray(False)
        )

    def layer1(self, tokens: Int[Array, " L"]) -> Float[Array, "L d"]:
        """The residual stream after block 1 (what every proxy shares)."""
        return self.net.stack.blocks[0](self.net.positional(self.net.embedding(tokens)))

    def with_proxy(self, tokens: Int[Array, " L"], proxy: QKProxy) -> Float[Array, "L V"]:
        """The logits with the layer-2 queries/keys given by `proxy` (layer 1, values, MLPs as trained)."""
        return self.head(self.layer1(tokens), proxy)

    def head(self, x: Float[Array, "L d"], proxy: QKProxy) -> Float[Array, "L V"]:
        """Block 2 (queries/keys from `proxy`), the final norm and the read-out on block 1's output."""
        net = self.net
        b2 = net.stack.blocks[1]
        assert b2.norm1 is not None and b2.norm2 is not None and b2.mlp is not None
        h = b2.norm1(x)
        q, k = proxy.qk(h)
        s = (q @ k.T) / math.sqrt(b2.attention.W_Q.shape[1])
        L = x.shape[0]
        s = jnp.where(jnp.tril(jnp.ones((L, L), dtype=bool)), s, jnp.asarray(-jnp.inf, s.dtype))
        A = jax.nn.softmax(s, axis=-1)
        att = b2.attention
        v = h @ att.W_V[0].T
        x = x + (A @ v) @ att.W_O.T
        x = x + b2.mlp(b2.norm2(x))
        if net.final_norm is not None:
            x = net.final_norm(x)
        return net.readout(x)


@functools.partial(jax.jit, static_argnames=("task", "vocab", "dtype"))
def init_model(key: Array, task: DyckProxiesConfig, vocab: int, dtype: Any = jnp.float64) -> DyckLM:
    """Draw the initial model of `task` from `key` (inits as each `flowsim.nn` part states)."""
    net = make_transformer(
        key,
        vocab=vocab,
        d_model=task.d_model,
        n_layers=2,
        heads=1,
        positional="none",
        readout="vocab",
        final_norm=True,
        dtype=dtype,
        mlp_hidden=task.mlp_hidden,
        activation=task.activation,
        causal=True,
        norm="pre",
    )
    return DyckLM(net)
