"""Reusable transformer parts (equinox Modules) for building systems: embeddings, attention, LayerNorm,
MLP and residual blocks, read-outs, and a small `Transformer`. Part of the engine: imports no system."""

from ._attention import (
    AbstractAttention as AbstractAttention,
    LinearAttention as LinearAttention,
    MultiHeadAttention as MultiHeadAttention,
)
from ._blocks import (
    MLP as MLP,
    TransformerBlock as TransformerBlock,
    TransformerStack as TransformerStack,
    make_stack as make_stack,
)
from ._embedding import (
    AbstractPositionalEmbedding as AbstractPositionalEmbedding,
    AbstractTokenEmbedding as AbstractTokenEmbedding,
    FixedPositional as FixedPositional,
    LearnedEmbedding as LearnedEmbedding,
    LearnedPositional as LearnedPositional,
    NoPositional as NoPositional,
    OneHotEmbedding as OneHotEmbedding,
    SinusoidalPositional as SinusoidalPositional,
    sinusoidal_table as sinusoidal_table,
)
from ._norm import LayerNorm as LayerNorm
from ._readout import (
    AbstractReadout as AbstractReadout,
    MeanPoolReadout as MeanPoolReadout,
    PositionReadout as PositionReadout,
    VocabHead as VocabHead,
)
from ._transformer import Transformer as Transformer, make_transformer as make_transformer
