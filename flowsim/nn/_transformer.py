"""A small transformer: token embedding + positional embedding + stack of blocks + (final norm) + read-out."""

from __future__ import annotations

from typing import Any, Literal, final

import equinox as eqx
import jax
from jaxtyping import Array, Float, Int

from ._blocks import TransformerStack, make_stack
from ._embedding import (
    AbstractPositionalEmbedding,
    AbstractTokenEmbedding,
    LearnedEmbedding,
    LearnedPositional,
    NoPositional,
    OneHotEmbedding,
    SinusoidalPositional,
)
from ._norm import LayerNorm
from ._readout import AbstractReadout, MeanPoolReadout, PositionReadout, VocabHead


@final
class Transformer(eqx.Module):
    """F(tokens) = readout(final_norm(stack(positional(embedding(tokens))))) for one sequence (L,).

    Build from parts, or with `make_transformer` from one key.
    """

    embedding: AbstractTokenEmbedding
    positional: AbstractPositionalEmbedding
    stack: TransformerStack
    final_norm: LayerNorm | None
    readout: AbstractReadout

    def features(self, tokens: Int[Array, " L"]) -> Float[Array, "L d"]:
        """The last layer (after the final norm), before the read-out."""
        return self.norm_inputs(tokens)[0]

    def norm_inputs(self, tokens: Int[Array, " L"]) -> tuple[Float[Array, "L d"], tuple[Float[Array, "L d"], ...]]:
        """The features and what enters every LayerNorm, in order (each block's `norm1`, `norm2`,
        then the final norm)."""
        x, seen = self.stack.norm_inputs(self.positional(self.embedding(tokens)))
        if self.final_norm is None:
            return x, seen
        return self.final_norm(x), (*seen, x)

    def patterns(self, tokens: Int[Array, " L"]) -> tuple[Float[Array, "_heads L L"], ...]:
        """Every block's attention pattern (heads, L, L), in order."""
        return self.stack.patterns(self.positional(self.embedding(tokens)))

    def __call__(self, tokens: Int[Array, " L"]) -> Float[Array, "*out"]:
        return self.readout(self.features(tokens))


def make_transformer(
    key: jax.Array,
    *,
    vocab: int,
    d_model: int | None = None,
    n_layers: int = 1,
    heads: int = 1,
    head_dim: int | None = None,
    max_len: int = 64,
    out: int | None = None,
    embedding: Literal["onehot", "learned"] = "learned",
    positional: Literal["none", "learned", "sinusoidal"] = "sinusoidal",
    readout: Literal["last", "first", "mean", "vocab"] = "vocab",
    final_norm: bool = False,
    dtype: Any = float,
    **block_kw: Any,
) -> Transformer:
    """A `Transformer` whose parts are drawn from keys split from `key` (embedding, positional, stack,
    read-out). `embedding="onehot"` forces d_model = vocab; `head_dim` defaults to d_model // heads;
    `out` (for `readout` "last"/"first"/"mean") defaults to vocab. Further keywords go to every
    `TransformerBlock` (mlp_hidden, activation, attention, causal, norm, residual, eps, affine).
    Inits as each part states.
    """
    k_emb, k_pos, k_stack, k_out = jax.random.split(key, 4)
    if embedding == "onehot":
        if d_model is not None and d_model != vocab:
            raise ValueError(f"a one-hot embedding has d_model = vocab = {vocab}, got d_model={d_model}")
        d = vocab
        emb: AbstractTokenEmbedding = OneHotEmbedding(vocab, dtype)
    else:
        if d_model is None:
            raise ValueError("a learned embedding needs d_model")
        d = d_model
        emb = LearnedEmbedding(k_emb, vocab, d, dtype=dtype)
    pos: AbstractPositionalEmbedding
    if positional == "none":
        pos = NoPositional()
    elif positional == "learned":
        pos = LearnedPositional(k_pos, max_len, d, dtype=dtype)
    else:
        pos = SinusoidalPositional()
    hd = head_dim if head_dim is not None else max(d // heads, 1)
    stack = make_stack(k_stack, n_layers, d, heads, hd, dtype=dtype, **block_kw)
    n_out = vocab if out is None else out
    ro: AbstractReadout
    if readout == "vocab":
        ro = VocabHead(k_out, d, vocab, dtype=dtype)
    elif readout == "mean":
        ro = MeanPoolReadout(k_out, d, n_out, dtype=dtype)
    else:
        ro = PositionReadout(k_out, d, n_out, position=0 if readout == "first" else -1, dtype=dtype)
    ln = LayerNorm(d, eps=block_kw.get("eps", 1e-5), dtype=dtype) if final_norm else None
    return Transformer(emb, pos, stack, ln, ro)
