"""GD and SGD (`flowsim.gradient_descent`, `flowsim.sgd`) on the co-occurrence system: the independent
reference, Euler equivalence, O(lr) convergence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowsim import Config, GradientFlow, gradient_descent, integrate, setup, sgd
from flowsim._discrete import _sgd_indices
from flowsim.systems.cooccurrence import CooccurrenceData, CooccurrenceTransformer

KEY = jax.random.PRNGKey(0)


def _reference_setup(reference):
    arrays, _ = reference
    model = CooccurrenceTransformer(*(jnp.asarray(arrays[k]) for k in ("W_Q", "W_K", "W_V", "W", "a")))
    data = CooccurrenceData(jnp.asarray(arrays["tokens"]), jnp.asarray(arrays["y"]), jnp.asarray(arrays["kind"]))
    return setup(Config(), model, data)


def _check_reference(reference, max_step):
    _, records = reference
    records = [r for r in records if r["step"] <= max_step]
    s = _reference_setup(reference)
    gd = gradient_descent(s.problem, 0.01, np.array([r["step"] for r in records]), s.observer)
    for i, rec in enumerate(records):
        assert gd.ts[i] == pytest.approx(rec["t"])
        for key, want in rec.items():
            if key in ("step", "t"):
                continue
            got = gd.obs[key][i]
            assert abs(got - want) <= 1e-8 * abs(want), (rec["step"], key, got, want)


def test_gd_matches_independent_reference_to_1000_steps(reference):
    _check_reference(reference, 1000)


@pytest.mark.slow
def test_gd_matches_independent_reference_to_30000_steps(reference):
    _check_reference(reference, 30000)


def test_gd_equals_euler_flow(small_setup):
    """GD with step lr is forward Euler with step lr on the gradient flow (to round-off)."""
    s, lr = small_setup, 0.05
    steps = np.arange(0, 41, 5)
    gd = gradient_descent(s.problem, lr, steps, s.observer)
    eu = integrate(GradientFlow(), s.problem, steps * lr, s.observer, solver="euler", dt0=lr)
    for k in ("loss", "G1", "score_12", "margin"):
        np.testing.assert_allclose(gd.obs[k], eu.obs[k], rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # the fast suite asserts the same order in test_dynamics (plain flow, slope 0.9-1.1)
def test_gd_converges_to_flow_with_slope_one(small_setup):
    """max |loss_GD(t) - loss_flow(t)| over t = k lr in [0, 2] shrinks like lr (fitted slope ~ 1),
    recording the system's full observer."""
    s, T = small_setup, 2.0
    lrs = np.array([0.04, 0.02, 0.01])
    errs = []
    for lr in lrs:
        k = np.arange(0, int(round(T / lr)) + 1, int(round(0.2 / lr)))
        gd = gradient_descent(s.problem, lr, k, s.observer)
        ref = integrate(GradientFlow(), s.problem, k * lr, s.observer, solver="dopri8", rtol=1e-12, atol=1e-14)
        errs.append(np.max(np.abs(gd.obs["loss"] - ref.obs["loss"])))
    slope = np.polyfit(np.log(lrs), np.log(errs), 1)[0]
    assert 0.9 <= slope <= 1.1, (slope, errs)


def test_sgd_batches_cover_each_epoch_without_replacement():
    key, n, b = jax.random.PRNGKey(3), 12, 4
    for epoch in range(3):
        idx = np.concatenate([np.asarray(_sgd_indices(key, jnp.asarray(epoch * 3 + j), n, b)) for j in range(3)])
        assert sorted(idx.tolist()) == list(range(n))
    e0 = np.asarray(_sgd_indices(key, jnp.asarray(0), n, b))
    e1 = np.asarray(_sgd_indices(key, jnp.asarray(3), n, b))
    assert not np.array_equal(e0, e1)  # a fresh shuffle each epoch


def test_sgd_full_batch_equals_gd_and_seeds_differ(small_setup):
    s = small_setup
    steps = np.arange(0, 31, 10)
    gd = gradient_descent(s.problem, 0.05, steps, s.observer)
    full = sgd(s.problem, 0.05, steps, s.observer, batch_size=s.problem.n, seeds=2, key=KEY)
    assert full.obs["loss"].shape == (2, len(steps))
    np.testing.assert_allclose(full.obs["loss"][0], gd.obs["loss"], rtol=1e-10)
    mini = sgd(s.problem, 0.05, steps, s.observer, batch_size=4, seeds=2, key=KEY)
    assert not np.allclose(mini.obs["loss"][0], mini.obs["loss"][1])
    assert not mini.diverged


def test_divergence_is_reported_with_its_step(small_setup):
    s = small_setup
    gd = gradient_descent(s.problem, 1e6, np.array([0, 5, 50]), s.observer)
    assert gd.diverged and 0 <= int(gd.diverged_step) <= 50
    assert not np.isfinite(gd.obs["loss"][-1])


def test_bad_step_grid_is_rejected(small_setup):
    with pytest.raises(ValueError, match="starting at 0"):
        gradient_descent(small_setup.problem, 0.1, np.array([1, 2]), small_setup.observer)
    with pytest.raises(ValueError, match="batch_size"):
        sgd(small_setup.problem, 0.1, np.array([0, 2]), small_setup.observer, batch_size=99, key=KEY)
    with pytest.raises(TypeError, match="key"):
        sgd(small_setup.problem, 0.1, np.array([0, 2]), small_setup.observer, batch_size=4)


def test_progress_bar_advances_to_the_step_count(small_setup, capsys):
    # With a bar the compiled loop ticks it through a host callback; without one (the default) the
    # program has no callback at all, and both give the same trajectory.
    s = small_setup
    steps = np.array([0, 5, 20])
    with_bar = gradient_descent(s.problem, 0.05, steps, s.observer, progress=True)
    plain = gradient_descent(s.problem, 0.05, steps, s.observer)
    assert "20/20" in capsys.readouterr().err
    np.testing.assert_array_equal(with_bar.obs["loss"], plain.obs["loss"])
