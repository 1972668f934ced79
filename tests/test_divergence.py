"""Divergence of discrete runs means "left every reasonable bound": a loss above `divergence_factor`
times the initial loss (or a non-finite one), checked against a plain numpy GD loop on linear
regression, for GD, SGD and optax runs, with stop events and across a checkpoint."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowsim import Stop, gradient_descent, sgd
from flowsim._optax import optax_descent

from .test_early_stop import X, Y, _below, _observe, problem  # noqa: F401  (module fixture)

N_STEPS = 100
STEPS = np.arange(0, N_STEPS + 1, 10)
# An lr where GD's loss grows about 10x a step, so it reaches ~1e100 in 100 steps and stays finite.
_LAM = float(np.linalg.eigvalsh(X.T @ X / len(Y)).max())
LR_HUGE = (1 + np.sqrt(10.0)) / _LAM


def _numpy_losses(lr: float, n_steps: int) -> np.ndarray:
    """Plain-numpy GD on L(w) = mean((x w - y)^2) / 2 from w = 0: the loss at steps 0..n."""
    w, losses = np.zeros(3), []
    for _ in range(n_steps + 1):
        r = X @ w - Y
        losses.append(0.5 * np.mean(r**2))
        w = w - lr * X.T @ r / len(Y)
    return np.array(losses)


def _first_above(losses: np.ndarray, factor: float) -> int:
    """The first step (< the last, whose loss no step is taken from) where loss > factor * loss(0)."""
    above = np.flatnonzero(losses[:-1] > factor * losses[0])
    return int(above[0]) if above.size else -1


def test_gd_reaching_a_huge_but_finite_loss_is_diverged_at_the_first_step_past_the_bound(problem):  # noqa: F811
    losses = _numpy_losses(LR_HUGE, N_STEPS)
    assert 1e80 < losses[-1] < 1e200  # far beyond any bound, yet finite: the old test saw no divergence
    gd = gradient_descent(problem, LR_HUGE, STEPS, _observe)
    assert np.all(np.isfinite(gd.obs["loss"]))
    assert gd.diverged and int(gd.diverged_step) == _first_above(losses, 1e6) > 0
    np.testing.assert_allclose(gd.obs["loss"], losses[STEPS], rtol=1e-9)
    # Another factor moves the step as the numpy loop says; inf leaves only non-finite losses.
    gd3 = gradient_descent(problem, LR_HUGE, STEPS, _observe, divergence_factor=1e3)
    assert int(gd3.diverged_step) == _first_above(losses, 1e3) < int(gd.diverged_step)
    off = gradient_descent(problem, LR_HUGE, STEPS, _observe, divergence_factor=float("inf"))
    assert not off.diverged and int(off.diverged_step) == -1


def test_a_converging_run_is_not_diverged(problem):  # noqa: F811
    gd = gradient_descent(problem, 0.05, STEPS, _observe)
    assert not gd.diverged and int(gd.diverged_step) == -1


def test_full_batch_sgd_and_optax_sgd_report_the_same_divergence_step(problem):  # noqa: F811
    want = _first_above(_numpy_losses(LR_HUGE, N_STEPS), 1e6)
    key = jax.random.PRNGKey(0)
    mini = sgd(problem, LR_HUGE, STEPS, _observe, batch_size=len(Y), key=key, seeds=2)
    assert mini.diverged_step.tolist() == [want, want]
    opt = optax_descent(problem, optax.sgd(LR_HUGE), LR_HUGE, STEPS, _observe)
    assert int(opt.diverged_step) == want


def test_divergence_with_stop_events_and_across_a_checkpoint(problem):  # noqa: F811
    want = _first_above(_numpy_losses(LR_HUGE, N_STEPS), 1e30)
    never = _below(-1.0)  # the loss never falls below -1: a stop that never fires
    kw: dict[str, Any] = dict(stop=Stop(never, every=3), divergence_factor=1e30)
    stopped = gradient_descent(problem, LR_HUGE, STEPS, _observe, checkpoint_steps=[10], **kw)
    assert int(stopped.diverged_step) == want and not stopped.stopped
    assert want > 10  # the checkpoint is taken before the divergence; the resumed run finds it
    ck = stopped.checkpoints[10]
    resumed = gradient_descent(problem, LR_HUGE, STEPS[1:], _observe, start=ck, **kw)
    assert int(resumed.diverged_step) == want
    np.testing.assert_array_equal(resumed.obs["loss"], stopped.obs["loss"][1:])


def test_divergence_factor_is_checked(problem):  # noqa: F811
    for bad in (1.0, 0.5, -3.0, float("nan")):
        with pytest.raises(ValueError, match="divergence_factor"):
            gradient_descent(problem, 0.05, STEPS, _observe, divergence_factor=bad)


def test_zero_initial_loss_counts_only_non_finite_losses_as_diverged():
    """With L(params0) = 0 no multiple of it is a bound: a run that moves away is not 'diverged'."""
    from flowsim import make_problem, squared_loss

    from .test_early_stop import _Linear

    x = jnp.asarray(X)
    p = make_problem(_Linear(jnp.zeros(3)), x, jnp.zeros(len(Y)), squared_loss)
    gd = gradient_descent(p, 0.05, np.array([0, 5]), _observe)
    assert not gd.diverged
