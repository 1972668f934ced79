"""The post-LayerNorm transformer of Hahn & Rofin (ACL 2024), built from `flowsim.nn` parts.

Bits 0/1 go through a learned embedding (2, d) plus a learned positional embedding (n, d) (added;
the paper concatenates two halves of width d/2), `layers` post-LN blocks x <- LN(x + Attn(x)),
x <- LN(x + MLP(x)) (as `torch.nn.TransformerEncoderLayer`), and a linear read-out of the last
position: one real output per input. The loss is the paper's MSE, (f(x) - y)^2 per sample (twice
`flowsim.squared_loss`), so the loss of a constant predictor at the plateau is the variance of y.

`SensitivityTransformer.ln_inputs` returns what enters every LayerNorm (the blow-up's inputs).
"""

from __future__ import annotations

import functools
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree

from ..._losses import squared_loss
from ...nn import LayerNorm, Transformer, make_transformer
from .config import SensitivityConfig


def mse_loss(output: Float[Array, ""], target: Float[Array, ""]) -> Float[Array, ""]:
    """(output - target)^2: the paper's per-sample MSE (`torch.nn.MSELoss`), twice `flowsim.squared_loss`."""
    return 2 * squared_loss(output, target)


@final
class SensitivityTransformer(eqx.Module):
    """A scalar-output post-LN transformer encoder over a bit string.

    **Fields:** `net`, a `flowsim.nn.Transformer` with learned bit and positional embeddings, post-LN
    blocks, no final norm and a one-output read-out at the last position.
    """

    net: Transformer

    def __call__(self, tokens: Int[Array, " L"]) -> Float[Array, ""]:
        return self.net(tokens)[0]

    def ln_inputs(self, tokens: Int[Array, " L"]) -> tuple[Float[Array, ""], tuple[Float[Array, "L d"], ...]]:
        """The output and what enters each LayerNorm, in order (block 1 norm1, block 1 norm2, block 2
        norm1, ...), from `flowsim.nn.Transformer.norm_inputs`."""
        x, seen = self.net.norm_inputs(tokens)
        return self.net.readout(x)[0], seen

    def ln_in_last_layer(self) -> tuple[bool, ...]:
        """For each LayerNorm of `ln_inputs`, whether it belongs to the last block (the paper's
        blow-up reads only the last position there)."""
        flags = []
        for i, block in enumerate(self.net.stack.blocks):
            last = i == len(self.net.stack.blocks) - 1
            flags.extend([last] * (1 + (block.mlp is not None)))
        return tuple(flags)


def _scale_weights(model: Any, scale: float) -> Any:
    """Every inexact array times `scale`, except the LayerNorm gains and biases."""

    def f(x: Any) -> Any:
        if isinstance(x, LayerNorm) or not eqx.is_inexact_array(x):
            return x
        return x * scale

    return jax.tree.map(f, model, is_leaf=lambda x: isinstance(x, LayerNorm))


def init_model(key: Array, task: SensitivityConfig, dtype: Any = jnp.float64) -> SensitivityTransformer:
    """Draw the initial model of `task` from `key` (inits as each `flowsim.nn` part states: embeddings
    N(0, 1), linear maps N(0, 1/fan_in), LayerNorm gain 1 and bias 0), weights times `init_scale`.
    Drawn in float64 and cast to `dtype`: a float32 run starts from the float64 run's model, rounded."""
    from ..._experiment import draw_in_float64

    return draw_in_float64(lambda: _draw_model(key, task), dtype)


@functools.partial(jax.jit, static_argnames=("task",))
def _draw_model(key: Array, task: SensitivityConfig) -> SensitivityTransformer:
    """The float64 draw of `init_model` (run with 64-bit types on)."""
    net = make_transformer(
        key,
        vocab=2,
        d_model=task.d_model,
        n_layers=task.layers,
        heads=task.heads,
        max_len=task.n,
        out=1,
        embedding="learned",
        positional="learned",
        readout="last",
        final_norm=False,
        dtype=jnp.float64,
        mlp_hidden=task.mlp_hidden,
        activation=task.activation,
        norm="post",
    )
    if task.init_scale != 1.0:
        net = _scale_weights(net, task.init_scale)
    return SensitivityTransformer(net)


def positional_mask(params: PyTree) -> PyTree[bool]:
    """A PyTree of bools like `params` (a `SensitivityTransformer` or its trainable part): False on
    the positional embedding, True elsewhere (the paper's sharpness and norm leave positions out)."""
    mask = jax.tree.map(lambda _: True, params)
    return eqx.tree_at(lambda m: m.net.positional, mask, replace_fn=lambda p: jax.tree.map(lambda _: False, p))
