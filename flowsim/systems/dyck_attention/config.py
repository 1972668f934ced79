"""The dyck-attention system's own fields: the language and its splits, the model (the paper's 1-layer
depth-given model or the 2-layer residual model), and what counts as fitted.

Defaults are the issue's pilot (Wen et al. 2023, scaled down): Dyck-(2, 4), 1,000 training strings of
length <= 28, the 1-layer 1-head model with the depth-given one-hot embedding, LayerNorm and no
residual, width 24. Run and solver settings (lr, steps, optimizer, opt_lr, stop_loss, sharpness) are
the engine's `flowsim.RunConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import final

from ..._fields import check_fields, field, require

ARCHS = ("one_layer", "two_layer")


@final
@dataclasses.dataclass(frozen=True)
class DyckAttentionConfig:
    """Task, model and thresholds of the dyck-attention system.

    **Task:** Dyck-(`k`, `depth`) strings from the automaton of Hewitt et al. (2020), conditioned on
    a length in [`min_len`, `max_len`]: `n_train` training strings, `n_test` held-out strings of the
    same law, `n_long` strings of length [`long_min`, `long_max`] (length generalisation).

    **Model:** `arch` "one_layer" (Wen et al.'s balance_acc model: depth-given one-hot embedding
    token x depth, one causal head, LayerNorm, no residual, no MLP) or "two_layer" (one-hot tokens,
    two pre-LN residual blocks with MLP of width `mlp_hidden`, final LayerNorm); width `d_model`;
    `uniform_first` freezes the first layer's attention to uniform (W_Q = 0, not trained).

    **Thresholds:** `fit_acc` the held-out closing-bracket accuracy that counts as fitted.
    """

    k: int = field(2, "bracket types", low=1, high=16, shape=True)
    depth: int = field(4, "maximum nesting depth D", low=1, high=16, shape=True)
    n_train: int = field(1000, "training strings (fixed set)", low=2, high=200_000, shape=True)
    min_len: int = field(2, "shortest training/held-out string", low=2, high=10_000, shape=True)
    max_len: int = field(28, "longest training/held-out string", low=2, high=10_000, shape=True)
    n_test: int = field(200, "held-out strings of the training law", low=1, high=100_000, shape=True)
    n_long: int = field(20, "length-generalisation strings", low=1, high=10_000, shape=True)
    long_min: int = field(100, "shortest length-generalisation string", low=2, high=10_000, shape=True)
    long_max: int = field(200, "longest length-generalisation string", low=2, high=10_000, shape=True)
    arch: str = field(
        "one_layer", "model: Wen et al.'s 1-layer depth-given model, or 2-layer residual", choices=ARCHS, shape=True
    )
    d_model: int = field(24, "width of the attention (and residual stream)", low=2, high=512, shape=True)
    mlp_hidden: int = field(48, "MLP width of the two-layer model", low=1, high=2048, shape=True)
    uniform_first: bool = field(False, "freeze the first layer's attention to uniform (W_Q = 0, untrained)", shape=True)
    fit_acc: float = field(0.99, "held-out closing-bracket accuracy that counts as fitted", low=0.0, high=1.0)

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.max_len >= self.min_len, "max_len", f">= min_len={self.min_len}", self.max_len)
        require(self.long_max >= self.long_min, "long_max", f">= long_min={self.long_min}", self.long_max)
        emb = 3 + 2 * self.k * self.depth if self.arch == "one_layer" else 3 + 2 * self.k
        require(
            self.d_model >= emb, "d_model", f">= the one-hot embedding width {emb} (arch={self.arch})", self.d_model
        )

    @property
    def train_size(self) -> int:
        return self.n_train
