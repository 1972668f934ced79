"""Tracked quantities of the spectra system, recorded at every save point of any run.

Names (all scalars): `loss` (training MSE), `test_loss` (MSE on the held-out matrices), and on the
held-out matrices the summaries of `metrics.summary`: `acc`, `acc_2`, `acc_1`, `failures`, `correct`,
`eig_err_median`, `auroc_gap`, and for the eigenvector task `fail_eig_ok`, `fail_norm_ok`,
`viol_eig`, `viol_norm`, `viol_orth`, `auroc_kappa`, `kappa_correct_p98`, `kappa_failed_p2`. The top
Hessian eigenvalue is the engine's (`sharpness=1`: `lambda_max`).
"""

from __future__ import annotations

from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from ..._problem import Problem
from .data import SpectraData
from .metrics import per_matrix, summary


@final
class SpectraObserver(eqx.Module):
    """Computes every tracked quantity (see the module docstring).

    **Fields:** `test` the held-out matrices and their encoding; `scale` sigma (targets are
    eigenvalues / sigma) and `tol` the tolerance (static).
    """

    test: SpectraData
    scale: float = eqx.field(static=True)
    tol: float = eqx.field(static=True)

    def __call__(self, t: float | Array, params: PyTree, problem: Problem) -> dict[str, Array]:
        """The tracked quantities at `params` (they do not depend on the time `t`)."""
        model = problem.model(params)
        pred = jax.vmap(model)(self.test.x)
        obs: dict[str, Array] = {
            "loss": problem.loss(params),
            "test_loss": jnp.mean(jax.vmap(problem.loss_fn)(pred, self.test.y)),
        }
        obs.update(summary(per_matrix(self.test.m, pred, self.scale), self.tol))
        return obs
