"""The spectra system's own fields: the matrices (size, eigenvalue distribution, entry scale, set
sizes), the encoder (layers, heads, widths) and the task (eigenvalues, or eigenvalues and
eigenvectors) with its tolerance.

The defaults are the issue's pilot (Charton 2022, scaled down to 3x3): Wigner matrices with entries
U[-10, 10], eigenvalues and sign-canonical eigenvectors, one pre-LN block of width 32. Run and solver
settings (lr, steps, optimizer, stop_loss, sharpness) are the engine's `flowsim.RunConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import final

from ..._fields import check_fields, field, require

DISTS = ("wigner", "uniform", "gaussian", "laplace", "positive", "positive2", "marcenko")
TASKS = ("eigenvalues", "eigenvectors")


@final
@dataclasses.dataclass(frozen=True)
class SpectraConfig:
    """Matrices, encoder and task of the spectra system.

    **Matrices:** symmetric n x n, Wigner (entries U[-A, A], A = `scale_a`) or with the eigenvalues
    replaced by draws from `dist` (the paper's generators, see `data`); `n_train` training matrices
    (data key), `n_test` held-out matrices (test key) for the accuracy metrics.

    **Model:** the n(n+1)/2 upper-triangle entries as tokens with features [value / A, onehot(i),
    onehot(j)], a linear embedding to `d_model`, `layers` pre-LN blocks (`heads` heads, GELU MLP of
    width `mlp_hidden`), a final LayerNorm and a mean-pooled linear read-out.

    **Task:** `eigenvalues` (n sorted eigenvalues / sigma) or `eigenvectors` (those and the n
    sign-canonical unit eigenvectors); a prediction is correct when its relative L1 error (its
    self-consistency error for eigenvectors) is below `tol`; `fit_loss` the training MSE that counts as
    fitted.
    """

    task: str = field("eigenvectors", "eigenvalues only, or eigenvalues and eigenvectors", choices=TASKS, shape=True)
    n: int = field(3, "matrix size (n(n+1)/2 tokens)", low=2, high=5, shape=True)
    dist: str = field("wigner", "eigenvalue distribution of the training (and test) matrices", choices=DISTS)
    scale_a: float = field(
        10.0, "entries of a Wigner matrix are U[-A, A] (A = scale_a)", low=0.0, low_open=True, high=1e3
    )
    n_train: int = field(1000, "training matrices (a fixed set, data key)", low=2, high=10**6, shape=True)
    n_test: int = field(1000, "held-out matrices for the accuracy metrics (test key)", low=10, high=10**6, shape=True)
    layers: int = field(1, "pre-LN transformer blocks", low=1, high=4, shape=True)
    heads: int = field(2, "attention heads per block (head_dim = d_model // heads)", low=1, high=8, shape=True)
    d_model: int = field(32, "residual-stream width", low=2, high=512, shape=True)
    mlp_hidden: int = field(64, "hidden width of each block's MLP", low=1, high=2048, shape=True)
    tol: float = field(0.05, "tolerance tau of a correct prediction (relative L1)", low=0.0, low_open=True, high=1.0)
    fit_loss: float = field(1e-3, "training MSE that counts as fitted", low=0.0, low_open=True, high=10.0)

    def __post_init__(self) -> None:
        check_fields(self)
        require(
            self.d_model % self.heads == 0,
            "d_model",
            f"a multiple of heads={self.heads} (head_dim = d_model // heads)",
            self.d_model,
        )

    @property
    def tokens(self) -> int:
        """Number of tokens: the n(n+1)/2 upper-triangle entries."""
        return self.n * (self.n + 1) // 2

    @property
    def out_dim(self) -> int:
        """Outputs: n eigenvalues, plus n^2 eigenvector entries for the eigenvector task."""
        return self.n + (self.n * self.n if self.task == "eigenvectors" else 0)
