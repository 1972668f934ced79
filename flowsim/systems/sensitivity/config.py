"""The sensitivity system's own fields: the Boolean task (target, n, training subset), the post-LN
transformer (layers, heads, widths, activation, init scale) and the landscape metrics (perturbation
sharpness scale and draws, the loss that counts as fitted).

The defaults are the issue's pilot model (Hahn & Rofin, ACL 2024, scaled down): PARITY of n = 6
bits on the full table, 2 layers, 2 heads, d = 16, GELU (ReLU's kinks collapse the flow's step size).
Run and solver settings (lr, steps, optimizer, stop_loss, sharpness) are the engine's
`flowsim.RunConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import final

from ..._fields import check_fields, field, require

TARGETS = ("parity", "majority", "first", "mean", "random")
ACTIVATIONS = ("gelu", "relu")


@final
@dataclasses.dataclass(frozen=True)
class SensitivityConfig:
    """Task, model and metrics of the sensitivity system.

    **Task:** inputs x in {0,1}^n; `target` PARITY (sum x mod 2), MAJORITY (sum x > n/2; a tie,
    possible for even n only, is 0), FIRST (x_1), MEAN (sum x / n, real) or RANDOM (a uniform random
    table drawn from the run's data key); the training set is the full table (`n_train` = 0) or a
    random subset of `n_train` inputs (data key), the rest held out.

    **Model:** post-LayerNorm encoder of `layers` blocks with `heads` heads, width `d_model`, MLP
    width `mlp_hidden`, `activation`; learned bit and positional embeddings; read-out at the last
    position; every initial weight (not the LayerNorm gains) times `init_scale`.

    **Metrics:** perturbation sharpness with Gaussian noise of scale `sharpness_eps` and
    `sharpness_draws` draws (each paired with its negative when `sharpness_antithetic`: same
    expectation, no gradient-term noise away from a minimum); `fit_loss` the training loss that
    counts as fitted (events, verdicts).
    """

    target: str = field("parity", "target function of the n bits", choices=TARGETS, shape=True)
    n: int = field(6, "input bits (sequence length); the full table has 2^n inputs", low=2, high=12, shape=True)
    n_train: int = field(
        0, "training inputs: 0 = the full table 2^n, else a random subset of this size", low=0, high=4096, shape=True
    )
    layers: int = field(2, "transformer blocks (post-LN attention + MLP)", low=1, high=2, shape=True)
    heads: int = field(2, "attention heads per block (head_dim = d_model // heads)", low=1, high=4, shape=True)
    d_model: int = field(16, "residual-stream width", low=2, high=256, shape=True)
    mlp_hidden: int = field(16, "hidden width of each block's MLP", low=1, high=1024, shape=True)
    activation: str = field("gelu", "MLP activation (relu kinks collapse the flow's step size)", choices=ACTIVATIONS)
    init_scale: float = field(
        1.0, "factor on every initial weight (LayerNorm gains stay 1)", low=0.0, low_open=True, high=100.0
    )
    sharpness_eps: float = field(
        0.02, "std of the Gaussian parameter noise of the perturbation sharpness", low=0.0, low_open=True, high=1.0
    )
    sharpness_draws: int = field(10, "noise draws of the perturbation sharpness", low=1, high=10_000, shape=True)
    sharpness_antithetic: bool = field(
        True, "pair every noise draw D with -D (cancels the gradient term; false: the paper's plain draws)", shape=True
    )
    fit_loss: float = field(
        1e-3,
        "training MSE that counts as fitted (event, verdicts)",
        low=0.0,
        low_open=True,
        high=1.0,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        require(
            self.n_train <= 2**self.n,
            "n_train",
            f"0 (the full table) or at most 2^n = {2**self.n} (n={self.n})",
            self.n_train,
        )
        require(
            self.n_train == 0 or self.n_train >= 2,
            "n_train",
            "0 (the full table) or at least 2 inputs",
            self.n_train,
        )
        require(
            self.d_model % self.heads == 0,
            "d_model",
            f"a multiple of heads={self.heads} (head_dim = d_model // heads)",
            self.d_model,
        )

    @property
    def train_size(self) -> int:
        """Number of training inputs: 2^n, or `n_train`."""
        return self.n_train or 2**self.n
