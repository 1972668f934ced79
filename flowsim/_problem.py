"""A training problem: model + dataset + per-sample loss, with a trainable/frozen split.

Every dynamics (continuous) and every discrete comparator consumes a `Problem` and integrates only
its trainable parameter PyTree, so that GD, SGD and the gradient flow share one loss code path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Int, PyTree


@final
class Problem(eqx.Module):
    """Empirical risk (1/n) sum_i loss_fn(model(x_i), y_i) over a fixed dataset.

    **Fields:** `params0`: the trainable part of the model at t = 0 (frozen leaves are `None`);
    `frozen`: the complementary part; `inputs`: PyTree of arrays with leading axis n; `targets`:
    array with leading axis n (any trailing shape: scalars, vectors, per-position labels);
    `loss_fn(output, target) -> scalar`: the per-sample loss.
    Build one with [`make_problem`][].
    """

    params0: PyTree
    frozen: PyTree
    inputs: PyTree
    targets: Array
    loss_fn: Callable[[Array, Array], Array] = eqx.field(static=True)

    @property
    def n(self) -> int:
        return self.targets.shape[0]

    def model(self, params: PyTree) -> Any:
        """The full model with trainable leaves taken from `params`."""
        return eqx.combine(params, self.frozen)

    def _batch(self, idx: Int[Array, " b"] | None) -> tuple[PyTree, Array]:
        if idx is None:
            return self.inputs, self.targets
        return jax.tree.map(lambda x: x[idx], self.inputs), self.targets[idx]

    def outputs(self, params: PyTree, idx: Int[Array, " b"] | None = None) -> Array:
        """Model outputs on the whole dataset, or on the samples `idx`."""
        x, _ = self._batch(idx)
        return jax.vmap(self.model(params))(x)

    def per_sample_loss(self, params: PyTree, idx: Int[Array, " b"] | None = None) -> Float[Array, " b"]:
        x, y = self._batch(idx)
        return jax.vmap(self.loss_fn)(jax.vmap(self.model(params))(x), y)

    def loss(self, params: PyTree, idx: Int[Array, " b"] | None = None) -> Float[Array, ""]:
        """Mean loss over the dataset (or the minibatch `idx`)."""
        return jnp.mean(self.per_sample_loss(params, idx))

    def loss_and_grad(self, params: PyTree, idx: Int[Array, " b"] | None = None) -> tuple[Array, PyTree]:
        return jax.value_and_grad(self.loss)(params, idx)


def make_problem(
    model: eqx.Module,
    inputs: PyTree,
    targets: ArrayLike | Sequence[Any],
    loss_fn: Callable[[Array, Array], Array],
    trainable: PyTree[bool] | Callable[[Any], bool] | None = None,
) -> Problem:
    """Build a `Problem`.

    **Arguments:** `model`: an equinox Module mapping one input to an output of any shape; `inputs`:
    PyTree of arrays with leading axis n; `targets`: array (jax, numpy or nested lists) with leading axis n
    (any trailing shape);
    `loss_fn(output, target)`: the per-sample loss, a scalar (required: e.g. `flowsim.logistic_loss`,
    `flowsim.squared_loss`, `flowsim.cross_entropy_loss`);
    `trainable`: a filter (PyTree of bools or a predicate on leaves, as in `eqx.partition`) selecting
    the trained leaves; default: every inexact array.

    **Returns:** the `Problem`. Raises `TypeError`/`ValueError` on a model with no trainable array or
    inputs whose leading axis disagrees with `targets`, before anything is compiled.
    """
    targets = jnp.asarray(targets)
    if targets.ndim < 1:
        raise ValueError(f"targets need a leading sample axis, got shape {targets.shape}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a function (output, target) -> scalar, got {loss_fn!r}")
    n = targets.shape[0]
    for leaf in jax.tree.leaves(inputs):
        if jnp.shape(leaf)[:1] != (n,):
            raise ValueError(f"every input leaf needs leading axis n={n}, got shape {jnp.shape(leaf)}")
    params, frozen = eqx.partition(model, eqx.is_inexact_array if trainable is None else trainable)
    if not jax.tree.leaves(params):
        raise TypeError("the model has no trainable floating-point array; is it a PyTree of arrays?")
    problem = Problem(params, frozen, inputs, targets, loss_fn)
    try:
        out = eqx.filter_eval_shape(problem.per_sample_loss, params)
    except Exception as e:
        raise TypeError(f"evaluating loss_fn(model(x_i), y_i) over the dataset failed: {e}") from e
    if out.shape != (n,):
        raise TypeError(
            f"loss_fn(model(x_i), y_i) must return a scalar per sample (per-sample losses of shape "
            f"({n},)), got shape {out.shape[1:]} per sample"
        )
    return problem
