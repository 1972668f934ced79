"""The models of Wen et al. (NeurIPS 2023), built from `flowsim.nn` parts; causal, no positional encoding.

- "one_layer" (the code's balance_acc): the depth-given one-hot embedding (`sub_state_large`): a
  bracket of type-and-side j (0..2k-1) at pair depth d (the depth after an open, before a close;
  1..D) is the basis vector 3 + j D + (d - 1); PAD, START, END their own basis vectors; zero-padded
  to `d_model`. Then one causal head with LayerNorm and no residual, x <- LN(Attn(x)), and a linear
  vocabulary head.
- "two_layer": one-hot tokens zero-padded to `d_model`, two pre-LN residual blocks with MLP
  (x <- x + Attn(LN(x)), x <- x + MLP(LN(x))), a final LayerNorm and the vocabulary head.

`uniform_first` sets the first block's W_Q to zero and leaves it out of training: the first layer's
causal attention is uniform over the prefix (the code's `freeze_uniform_attention`).
"""

from __future__ import annotations

import functools
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree

from ..._losses import cross_entropy_loss
from ...nn import LayerNorm, TransformerStack, VocabHead, make_stack
from .config import DyckAttentionConfig


def pair_depth(tokens: Int[Array, " L"], k: int) -> Int[Array, " L"]:
    """Per position, the depth of the bracket's pair (after an open, before a close); 0 elsewhere."""
    is_open = (tokens >= 3) & (tokens < 3 + k)
    is_close = (tokens >= 3 + k) & (tokens < 3 + 2 * k)
    after = jnp.cumsum(is_open.astype(tokens.dtype) - is_close.astype(tokens.dtype))
    return jnp.where(is_open | is_close, after + is_close.astype(tokens.dtype), 0)


@final
class DyckModel(eqx.Module):
    """Causal LM over Dyck tokens: embed (fixed), `stack`, optional `final_norm`, `head` (see the module docstring)."""

    stack: TransformerStack
    final_norm: LayerNorm | None
    head: VocabHead
    k: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    d_model: int = eqx.field(static=True)
    depth_given: bool = eqx.field(static=True)

    def embed(self, tokens: Int[Array, " L"]) -> Float[Array, "L d"]:
        dtype = self.head.W.dtype
        if self.depth_given:
            j = tokens - 3
            d = jnp.maximum(pair_depth(tokens, self.k) - 1, 0)
            idx = jnp.where(tokens >= 3, 3 + j * self.depth + d, tokens)
        else:
            idx = tokens
        return jax.nn.one_hot(idx, self.d_model, dtype=dtype)

    def patterns(self, tokens: Int[Array, " L"]) -> tuple[Float[Array, "heads L L"], ...]:
        """Each layer's attention pattern on `tokens`."""
        return self.stack.patterns(self.embed(tokens))

    def __call__(self, tokens: Int[Array, " L"]) -> Float[Array, "L V"]:
        x = self.stack(self.embed(tokens))
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.head(x)


@functools.partial(jax.jit, static_argnames=("task", "dtype"))
def init_model(key: Array, task: DyckAttentionConfig, dtype: Any = jnp.float64) -> DyckModel:
    """The initial model of `task` from `key` (inits as each `flowsim.nn` part states); with
    `uniform_first`, the first W_Q is zero."""
    k_stack, k_head = jax.random.split(key)
    d, vocab = task.d_model, 3 + 2 * task.k
    if task.arch == "one_layer":
        stack = make_stack(k_stack, 1, d, 1, d, causal=True, norm="post", residual=False, dtype=dtype)
        final = None
    else:
        stack = make_stack(
            k_stack, 2, d, 1, d, causal=True, norm="pre", residual=True, mlp_hidden=task.mlp_hidden, dtype=dtype
        )
        final = LayerNorm(d, dtype=dtype)
    model = DyckModel(
        stack, final, VocabHead(k_head, d, vocab, dtype=dtype), task.k, task.depth, d, task.arch == "one_layer"
    )
    if task.uniform_first:
        model = eqx.tree_at(lambda m: m.stack.blocks[0].attention.W_Q, model, replace_fn=jnp.zeros_like)
    return model


def trainable(model: DyckModel, uniform_first: bool) -> PyTree[bool]:
    """The trained leaves: every inexact array, except the first W_Q under `uniform_first`."""
    mask = jax.tree.map(eqx.is_inexact_array, model)
    if uniform_first:
        mask = eqx.tree_at(lambda m: m.stack.blocks[0].attention.W_Q, mask, False)
    return mask


def lm_loss(logits: Float[Array, "L V"], targets: Int[Array, " L"]) -> Float[Array, ""]:
    """Mean cross-entropy over the row's positions with a target (target -1: none)."""
    return cross_entropy_loss(logits, targets)
