"""Stop events on discrete runs (`stop=`): the exact stop step against a plain numpy GD loop, per-seed
stops of vmapped SGD against each seed run alone, optax, NaN after the stop, and no change at all to
a run that cannot stop."""

from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowsim import Event, Stop, gradient_descent, make_problem, sgd, squared_loss
from flowsim._discrete import _descend, _update
from flowsim._optax import optax_descent

KEY = jax.random.PRNGKey(0)
LR = 0.05
STEPS = np.arange(0, 101, 10)
_RNG = np.random.default_rng(0)
X = _RNG.normal(size=(8, 3))
Y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * _RNG.normal(size=8)


class _Linear(eqx.Module):
    w: jax.Array

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.w


def _observe(t, params, problem):
    return {"loss": problem.loss(params), "w": params.w}


@pytest.fixture(scope="module")
def problem():
    return make_problem(_Linear(jnp.zeros(3)), jnp.asarray(X), jnp.asarray(Y), squared_loss)


def _numpy_gd_losses(n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent plain-numpy GD on L(w) = mean((x w - y)^2) / 2: losses and iterates, steps 0..n."""
    w, losses, ws = np.zeros(3), [], []
    for _ in range(n_steps + 1):
        r = X @ w - Y
        losses.append(0.5 * np.mean(r**2))
        ws.append(w)
        w = w - LR * X.T @ r / len(Y)
    return np.array(losses), np.array(ws)


@final
class _Below(eqx.Module):
    """loss - target, a Module so that runs with other targets reuse one compiled program."""

    target: jax.Array

    def __call__(self, t, params, problem):
        return problem.loss(params) - self.target


def _below(target: float, name: str = "low") -> Event:
    return Event(name, _Below(jnp.asarray(target)), direction="down")


NEVER = Event("never", lambda t, p, pr: jnp.asarray(-1.0), direction="up")


@pytest.fixture(scope="module")
def every_step(problem):
    """The unstopped GD run recorded at every step."""
    return gradient_descent(problem, LR, np.arange(0, 101), _observe)


@pytest.mark.parametrize("k_star", [37, 30])  # inside a save segment, and on a save point
def test_gd_stop_step_is_the_first_step_below_target(problem, every_step, k_star):
    losses, ws = _numpy_gd_losses(100)
    target = float(0.5 * (losses[k_star - 1] + losses[k_star]))  # midway: the numpy loop's answer is robust
    first = int(np.flatnonzero(losses <= target)[0])
    assert first == k_star and losses[0] > target
    sol = gradient_descent(problem, LR, STEPS, _observe, stop=[NEVER, _below(target)])
    assert sol.stop_step.dtype.kind == "i" and int(sol.stop_step) == first and sol.stopped
    assert sol.stop_time == pytest.approx(first * LR, rel=1e-15) and str(sol.stop_event) == "low"
    np.testing.assert_allclose(sol.stop_obs["loss"], losses[first], rtol=1e-12)
    np.testing.assert_allclose(sol.params.w, ws[first], rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(sol.stop_obs["w"], sol.params.w)
    # Up to the stop the run is the unstopped one; after it, NaN (the run never got there).
    done = STEPS <= first
    np.testing.assert_allclose(sol.obs["loss"][done], every_step.obs["loss"][STEPS[done]], rtol=1e-14, atol=0)
    assert np.all(np.isnan(sol.obs["loss"][~done])) and np.all(np.isnan(sol.obs["w"][~done]))
    # The params at the stop are the unstopped run's params at that step.
    np.testing.assert_allclose(sol.params.w, every_step.obs["w"][first], rtol=1e-14, atol=0)


@pytest.mark.parametrize("every", [4, 7])  # stops at 38 (the check after), at 37 (a check)
def test_stop_every_k_steps_stops_at_the_first_check_after_the_crossing(problem, every_step, every):
    """Checks at k0 + every, k0 + 2 every, ... within each save segment [k0, k0 + 10] and at its end."""
    losses, ws = _numpy_gd_losses(100)
    target = float(0.5 * (losses[36] + losses[37]))  # first below at step 37
    checks = sorted({min(k0 + j, k0 + 10) for k0 in STEPS[:-1] for j in range(every, 10 + every, every)})
    first = next(k for k in checks if k >= 37)
    sol = gradient_descent(problem, LR, STEPS, _observe, stop=Stop(_below(target), every=every))
    assert int(sol.stop_step) == first == {4: 38, 7: 37}[every]
    np.testing.assert_allclose(sol.params.w, ws[first], rtol=1e-12, atol=1e-14)
    done = STEPS <= first
    np.testing.assert_allclose(sol.obs["loss"][done], every_step.obs["loss"][STEPS[done]], rtol=1e-14, atol=0)
    assert np.all(np.isnan(sol.obs["loss"][~done]))
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        Stop(_below(target), every=0)


def test_never_firing_stop_leaves_the_run_unchanged(problem, every_step):
    losses, _ = _numpy_gd_losses(100)
    plain = every_step  # stop=(): the program of a run that cannot stop
    assert int(plain.stop_step) == -1 and np.isnan(plain.stop_time) and plain.stop_obs == {} and not plain.stopped
    np.testing.assert_allclose(plain.obs["loss"], losses, rtol=1e-12)
    never = gradient_descent(problem, LR, STEPS, _observe, stop=NEVER)
    assert int(never.stop_step) == -1 and np.isnan(never.stop_time) and str(never.stop_event) == ""
    assert np.all(np.isnan(never.stop_obs["loss"]))
    np.testing.assert_array_equal(never.obs["loss"], plain.obs["loss"][STEPS])
    np.testing.assert_array_equal(never.obs["w"], plain.obs["w"][STEPS])
    np.testing.assert_array_equal(never.params.w, plain.params.w)


def test_sgd_seeds_stop_on_their_own_as_each_seed_alone(problem):
    steps = np.arange(0, 61, 20)
    stop = (_below(0.5),)
    sol = sgd(problem, LR, steps, _observe, key=KEY, seeds=3, stop=stop, batch_size=2, momentum=0.3)
    assert sol.stop_step.shape == (3,) and np.all(sol.stop_step > 0)
    assert len(set(sol.stop_step.tolist())) > 1  # the seeds stop at different steps
    assert list(sol.stop_event) == ["low"] * 3
    np.testing.assert_allclose(sol.stop_time, sol.stop_step * LR, rtol=1e-15)
    keys = jax.random.split(KEY, 3)
    update = _update(LR, 0.3, 0.0)
    for i in range(3):
        one = _descend(problem, _observe, update, steps, LR, kind="sgd", keys=keys[i : i + 1], stop=stop, batch_size=2)
        assert int(one.stop_step[0]) == int(sol.stop_step[i])
        np.testing.assert_allclose(one.params.w[0], sol.params.w[i], rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(one.obs["loss"][0], sol.obs["loss"][i], rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(sol.stop_obs["loss"][i], one.stop_obs["loss"][0], rtol=1e-14)
        assert np.all(np.isnan(sol.obs["loss"][i][steps > sol.stop_step[i]]))
    assert np.all(sol.stop_obs["loss"] <= 0.5) and np.all(sol.obs["loss"][steps < sol.stop_step[:, None]] > 0.5)


def test_optax_adam_stops_at_the_first_step_below_target(problem):
    fine = optax_descent(problem, optax.adam(LR), LR, np.arange(0, 61), _observe)
    first = int(np.flatnonzero(fine.obs["loss"] <= 0.4)[0])
    sol = optax_descent(problem, optax.adam(LR), LR, np.arange(0, 61, 20), _observe, stop=_below(0.4))
    assert int(sol.stop_step) == first and str(sol.stop_event) == "low"
    np.testing.assert_allclose(sol.params.w, fine.obs["w"][first], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(sol.stop_obs["loss"], fine.obs["loss"][first], rtol=1e-14)


def test_stop_condition_must_be_scalar_and_an_event(problem):
    vec = Event("vec", lambda t, p, pr: p.w, direction="up")
    with pytest.raises(ValueError, match=r"'vec'.*scalar"):
        gradient_descent(problem, LR, np.array([0, 2]), _observe, stop=vec)
    with pytest.raises(TypeError, match="stop"):
        gradient_descent(problem, LR, np.array([0, 2]), _observe, stop=["low"])  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("stop", [(), (NEVER,), Stop(NEVER, every=3)])
def test_sgd_batches_follow_sgd_indices_across_segments(problem, stop):
    """The loop carries each epoch's shuffle instead of redrawing it at every step: the run must still
    take `_sgd_indices(key, k)` at every step k, also where save segments start inside an epoch, in
    the stop-checking loops too. Against a numpy SGD loop over those indices (n = 8, batch 3: two
    batches per epoch, two samples left out)."""
    from flowsim._discrete import _sgd_indices

    steps = np.array([0, 3, 10, 17])
    sol = sgd(problem, LR, steps, _observe, key=KEY, seeds=2, batch_size=3, stop=stop)
    for i, key in enumerate(jax.random.split(KEY, 2)):
        w = np.zeros(3)
        for k in range(int(steps[-1])):
            idx = np.asarray(_sgd_indices(key, jnp.asarray(k), len(Y), 3))
            w = w - LR * X[idx].T @ (X[idx] @ w - Y[idx]) / 3
        np.testing.assert_allclose(sol.params.w[i], w, rtol=1e-12, atol=1e-14)
