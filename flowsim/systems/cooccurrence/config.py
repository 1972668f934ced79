"""The co-occurrence system's own fields: the task (n, L, d, token sampling) and the model (widths,
init, trained read-out), with the held-out sample count.

The defaults are the paper's experiment (App. A of Yang et al., NeurIPS 2024): n = 60, L = 5,
d = 64, m = 128, m1 = 256, Kaiming init. Run and solver settings (lr, steps, SGD, tolerances) are the
engine's `flowsim.RunConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import final

from ..._fields import check_fields, field, require

INITS = ("kaiming", "theory")


def n_random_slots(n: int, L: int) -> int:
    """Positions filled by random tokens in a training set with exact type counts n/2, n/6, n/6, n/6."""
    return (n // 2) * (L - 3) + 2 * (n // 6) * (L - 2) + (n // 6) * (L - 1)


@final
@dataclasses.dataclass(frozen=True)
class CooccurrenceConfig:
    """Task and model of the co-occurrence system.

    **Task:** `n` samples (divisible by 6: types 1-4 get n/2, n/6, n/6, n/6), sequence length `L`,
    vocabulary/embedding size `d`; `distinct_tokens` draws random tokens without replacement across
    the whole training set (the theory's Assumption 2.3, needs enough vocabulary), else with
    replacement (the paper's experiment).

    **Model:** widths `m` (attention) and `m1` (MLP); `init` "kaiming" (U(+-1/sqrt(fan_in))) or
    "theory" (N(0, 1/(L m)) for W_Q, W_K, W_V and N(0, 1/m1) for W), both times `init_scale`;
    `train_a` also trains the fixed +-1 read-out `a`. `n_test` fresh samples for the generalization loss.
    """

    n: int = field(
        60, "training samples (a multiple of 6: type counts n/2, n/6, n/6, n/6)", low=1, high=60_000, shape=True
    )
    L: int = field(5, "sequence length (>= 3: mu_1, mu_2, mu_3 must fit)", low=1, high=4096, shape=True)
    d: int = field(64, "vocabulary size = embedding dimension (one-hot tokens)", low=1, high=100_000, shape=True)
    m: int = field(128, "attention width (rows of W_Q, W_K, W_V)", low=1, high=65_536, shape=True)
    m1: int = field(256, "MLP width (rows of W)", low=1, high=65_536, shape=True)
    init: str = field(
        "kaiming", "initialisation: kaiming (the experiment) or theory (Condition 1)", choices=INITS, shape=True
    )
    init_scale: float = field(1.0, "factor on every initial weight", low=0.0, low_open=True, high=1e6)
    train_a: bool = field(False, "also train the +-1 read-out a", shape=True)
    distinct_tokens: bool = field(False, "random tokens distinct across the training set (Assumption 2.3)")
    n_test: int = field(3000, "fresh samples for the generalization loss", low=2, high=10**6, shape=True)

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.n % 6 == 0, "n", "a positive multiple of 6 (type counts n/2, n/6, n/6, n/6)", self.n)
        require(self.L >= 3, "L", "an integer >= 3 (mu_1, mu_2 and mu_3 must fit in one sequence)", self.L)
        require(self.d >= 4, "d", "an integer >= 4 (3 special tokens plus at least one random token)", self.d)
        if self.distinct_tokens:
            need = n_random_slots(self.n, self.L) + 3
            require(
                self.d >= need,
                "d",
                f">= {need} for distinct_tokens=True with n={self.n}, L={self.L} "
                "(3 special tokens + one vocabulary entry per random-token slot)",
                self.d,
            )
        params = self.m * (3 * self.d + self.m1) + self.m1
        require(
            params <= 50_000_000,
            "m",
            f"small enough that the model has <= 5e7 parameters "
            f"(m, m1, d = {self.m}, {self.m1}, {self.d} give {params:.3g})",
            self.m,
        )
