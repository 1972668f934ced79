"""The dyck-proxies system's own fields: the bounded Dyck task, its test splits, the 2-layer causal
transformer and the proxy grids.

The defaults are the research notes' sizing of Friedman et al. (ICML 2024) for a simulator:
Dyck-(8, 6), strings of length <= 60, a 2-layer 1-head causal model of width 32 without positional
embedding. Run and solver settings (lr, steps, optimizer, stop_loss, sharpness) are the engine's
`flowsim.RunConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import final

from ..._fields import check_fields, field, require

ACTIVATIONS = ("gelu", "relu")


@final
@dataclasses.dataclass(frozen=True)
class DyckProxiesConfig:
    """Task, splits, model and proxies of the dyck-proxies system.

    **Task:** Dyck-(`k`, `max_depth`) strings from the probabilistic automaton of Hewitt et al.
    (2020), lengths in [`min_len`, `max_len`]; `n_train` training strings (data key); next-token
    prediction with cross-entropy over every position of START + string + END.

    **Splits** (test key, `n_test` strings each, after Murty et al. 2023): `iid` (every top-level
    constituent's depth sequence seen in training, string unseen), `unseen` (at least one unseen
    structure), `deep` (strings of Dyck-(k, max_depth + `deep_extra`) that exceed `max_depth`; scored
    at the closes deeper than `max_depth`), `long` (lengths in (max_len, `long_factor` max_len],
    depth <= max_depth).

    **Model:** 2 pre-LN blocks (attention with `heads` = 1, MLP of width `mlp_hidden`), width
    `d_model`, causal, no positional embedding, final LayerNorm, a vocabulary head.

    **Proxies:** layer-2 queries/keys replaced (PCA rank r, k-means with c centroids, SVD rank r of
    W_Q^T W_K); `agree_target` the in-distribution agreement that picks each family's r (c).
    """

    k: int = field(8, "bracket types", low=1, high=32, shape=True)
    max_depth: int = field(6, "maximum nesting depth D of the training language", low=1, high=32, shape=True)
    min_len: int = field(2, "shortest training/test string (brackets)", low=2, high=1000, shape=True)
    max_len: int = field(60, "longest training/test string (brackets)", low=2, high=1000, shape=True)
    n_train: int = field(2000, "training strings", low=4, high=10**6, shape=True)
    n_test: int = field(200, "test strings per split", low=2, high=10**5, shape=True)
    deep_extra: int = field(4, "extra depth of the deep split's language", low=1, high=16, shape=True)
    long_factor: float = field(2.0, "longest string of the long split / max_len", low=1.0, low_open=True, high=8.0)
    d_model: int = field(32, "residual-stream width (= head_dim: one head)", low=2, high=256, shape=True)
    mlp_hidden: int = field(64, "hidden width of each block's MLP", low=1, high=1024, shape=True)
    activation: str = field("gelu", "MLP activation (relu kinks collapse the flow's step size)", choices=ACTIVATIONS)
    agree_target: float = field(
        0.99, "in-distribution agreement that picks each proxy family's smallest r (c)", low=0.5, high=1.0
    )
    fit_accuracy: float = field(
        0.99, "training closing-bracket accuracy (argmax) that counts as fitted", low=0.0, high=1.0
    )

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.min_len <= self.max_len, "min_len", f"at most max_len={self.max_len}", self.min_len)
        require(self.min_len % 2 == 0, "min_len", "even (Dyck strings have even length)", self.min_len)

    @property
    def row_len(self) -> int:
        """Tokens per training row: START + the longest string (the END is a target only)."""
        return self.max_len + 1

    @property
    def long_max(self) -> int:
        """Longest string of the long split."""
        return int(self.long_factor * self.max_len)
