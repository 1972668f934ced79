"""Tracked quantities of the sensitivity system, recorded at every save point of any run.

Names (all scalars): `loss` (training MSE), `accuracy` (training inputs, output and target
thresholded at 1/2), `full_accuracy` (the same on the whole table: the completion's accuracy when
training on a subset), `as_learned` (exact average sensitivity of the thresholded learned function on
the whole table), `as_real` (the real-valued sensitivity of 2 f - 1, f the raw output), `as_target`
and `as_target_real` (the same of the target), `as_completion` (the mean sensitivity of random
completions of the training rows; = `as_target` on the full table), `pert_sharpness` (perturbation
sharpness of the training loss, the run's fixed draws), `theta_sq` (||theta||^2 without positional
embeddings), `blowup`, `blowup_max`, `blowup_sum` (LayerNorm blow-up over the training inputs),
`tradeoff` = blowup * theta_sq. Definitions in `metrics`. The top Hessian eigenvalue is the engine's
(`sharpness=1`: `lambda_max`).
"""

from __future__ import annotations

from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree

from ..._problem import Problem
from .data import SensitivityData
from .metrics import (
    average_sensitivity,
    completion_sensitivity,
    ln_blowup,
    masked_sq_norm,
    perturbation_sharpness,
    real_sensitivity,
)
from .model import positional_mask


def _half(dtype: Any) -> Array:
    return jnp.asarray(0.5, dtype)


@final
class SensitivityObserver(eqx.Module):
    """Computes every tracked quantity (see the module docstring).

    **Fields:** `bits` (N, n) the whole table; `y` (N,) the target on it; `key` the PRNG key of the
    perturbation draws (the same draws at every save point and in every run of a seed); `eps` the
    noise scale; `as_target`, `as_target_real`, `as_completion` constants of the task; `draws` the
    number of draws, `antithetic` whether each is paired with its negative, and `full` whether the
    training set is the whole table in table order (static).
    Build with [`SensitivityObserver.build`][].
    """

    bits: Int[Array, "N n"]
    y: Float[Array, " N"]
    key: Array
    eps: Float[Array, ""]
    as_target: Float[Array, ""]
    as_target_real: Float[Array, ""]
    as_completion: Float[Array, ""]
    draws: int = eqx.field(static=True)
    antithetic: bool = eqx.field(static=True)
    full: bool = eqx.field(static=True)

    @classmethod
    def build(
        cls, data: SensitivityData, key: Array, eps: float, draws: int, antithetic: bool = True
    ) -> SensitivityObserver:
        """The observer of a task's `data`, with perturbation key `key`, scale `eps`, `draws` and
        `antithetic` (as `metrics.perturbation_sharpness`)."""
        dtype = data.y.dtype
        target = data.y > _half(dtype)
        known = jnp.zeros(data.y.shape, bool).at[data.train_idx].set(True)
        return cls(
            data.bits,
            data.y,
            key,
            jnp.asarray(eps, dtype),
            average_sensitivity(target, dtype),
            real_sensitivity(2 * data.y - 1),
            completion_sensitivity(known, target, dtype),
            draws,
            antithetic,
            data.full,
        )

    def __call__(self, t: float | Array, params: PyTree, problem: Problem) -> dict[str, Array]:
        """The tracked quantities at `params` (they do not depend on the time `t`)."""
        model = problem.model(params)
        out, ln = jax.vmap(model.ln_inputs)(problem.inputs)
        dtype = out.dtype
        half = _half(dtype)
        obs: dict[str, Array] = {
            "loss": jnp.mean(jax.vmap(problem.loss_fn)(out, problem.targets)),
            "accuracy": jnp.mean(((out > half) == (problem.targets > half)).astype(dtype)),
        }
        out_all = out if self.full else jax.vmap(model)(self.bits)
        learned = out_all > half
        obs["full_accuracy"] = jnp.mean((learned == (self.y > half)).astype(dtype))
        obs["as_learned"] = average_sensitivity(learned, dtype)
        obs["as_real"] = real_sensitivity(2 * out_all - 1)
        obs.update(as_target=self.as_target, as_target_real=self.as_target_real, as_completion=self.as_completion)
        mask = positional_mask(params)
        obs["pert_sharpness"] = perturbation_sharpness(
            problem.loss, params, mask, self.key, self.eps, self.draws, antithetic=self.antithetic
        )
        obs["theta_sq"] = masked_sq_norm(params, mask)
        obs.update(ln_blowup(ln, model.ln_in_last_layer()))
        obs["tradeoff"] = obs["blowup"] * obs["theta_sq"]
        return obs
