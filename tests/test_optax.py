"""`flowsim.optax_descent` (any optax optimizer on a `Problem`) and the adaptive flows
(`SignGradientFlow`, `AdamFlow`, `RMSPropFlow`) against their optax counterparts, on toy least squares.

Orders are slopes of log(max |loss_discrete - loss_flow|) over the save grid in t ∈ [0, 1] against
log(lr); continuous references are Dopri8 at rtol 1e-12.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowsim import Event, gradient_descent, integrate, make_problem, sgd, squared_loss
from flowsim._adaptive_flows import AdamFlow, RMSPropFlow, SignGradientFlow
from flowsim._optax import optax_descent

KEY = jax.random.PRNGKey(0)


class _Linear(eqx.Module):
    w: jax.Array

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.w


def _loss(t, params, problem):
    return {"loss": problem.loss(params)}


@pytest.fixture(scope="module")
def problem():
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.1
    return make_problem(_Linear(jnp.zeros(3)), x, y, squared_loss)


def test_optax_sgd_equals_gradient_descent_full_batch_and_minibatch(problem):
    k = np.arange(0, 61, 10)
    low = Event("low", lambda t, p, pr: pr.loss(p) - 0.5, direction="down")
    a = optax_descent(problem, optax.sgd(0.05), 0.05, k, _loss, events=[low])
    b = gradient_descent(problem, 0.05, k, _loss, events=[low])
    np.testing.assert_allclose(a.obs["loss"], b.obs["loss"], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(a.ts, b.ts)
    assert a.crossings["low"][1] == b.crossings["low"][1] > 0
    assert a.crossings["low"][0] == pytest.approx(b.crossings["low"][0], rel=1e-12)
    kw = dict(key=KEY, batch_size=2, seeds=3)
    a = optax_descent(problem, optax.sgd(0.05), 0.05, k, _loss, **kw)
    b = sgd(problem, 0.05, k, _loss, **kw)
    assert a.obs["loss"].shape == (3, k.size)
    np.testing.assert_allclose(a.obs["loss"], b.obs["loss"], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(a.params.w, b.params.w, rtol=1e-13, atol=1e-15)


def test_optax_seeds_are_vmapped_and_differ(problem):
    k = np.arange(0, 41, 10)
    a = optax_descent(problem, optax.adam(0.05), 0.05, k, _loss, key=KEY, batch_size=2, seeds=4)
    assert a.obs["loss"].shape == (4, k.size) and a.params.w.shape == (4, 3)
    assert np.all(a.obs["loss"][:, 0] == a.obs["loss"][0, 0])  # one init
    assert len(np.unique(np.round(a.obs["loss"][:, -1], 12))) == 4
    assert not a.diverged and np.all(a.diverged_step == -1)


def test_optax_divergence_reports_first_bad_step(problem):
    k = np.arange(0, 601, 100)
    a = optax_descent(problem, optax.sgd(20.0), 20.0, k, _loss)
    b = gradient_descent(problem, 20.0, k, _loss)
    assert a.diverged and 0 < int(a.diverged_step) <= 600
    assert int(a.diverged_step) == int(b.diverged_step)
    with pytest.raises(ValueError, match="batch_size"):
        optax_descent(problem, optax.sgd(0.1), 0.1, k, _loss, key=KEY, batch_size=100)


def _order(problem, lrs, make, t_save=0.25):
    errs = []
    for lr in lrs:
        k = np.arange(0, int(round(1.0 / lr)) + 1, int(round(t_save / lr)))
        optimizer, flow = make(lr)
        disc = optax_descent(problem, optimizer, lr, k, _loss)
        cont = integrate(flow, problem, k * lr, _loss, solver="dopri8", rtol=1e-12, atol=1e-14)
        errs.append(np.max(np.abs(disc.obs["loss"] - cont.obs["loss"])))
    return np.polyfit(np.log(lrs), np.log(errs), 1)[0], errs


LRS = np.array([0.04, 0.02, 0.01])
A, B = 5.0, 1.0  # (1 - b1)/lr and (1 - b2)/lr, held fixed as lr shrinks


def test_adam_tracks_adam_flow_to_first_order(problem):
    def make(lr):
        b1, b2 = 1 - A * lr, 1 - B * lr
        return optax.adam(lr, b1, b2, 1e-8), AdamFlow(lr, b1, b2, 1e-8)

    slope, errs = _order(problem, LRS, make)
    assert 0.8 <= slope <= 1.2, (slope, errs)


def test_rmsprop_tracks_rmsprop_flow_to_first_order(problem):
    def make(lr):
        opt = optax.rmsprop(lr, 1 - B * lr, 1e-8, eps_in_sqrt=False, bias_correction=True)
        return opt, RMSPropFlow(lr, 1 - B * lr, 1e-8)

    slope, errs = _order(problem, LRS, make)
    assert 0.8 <= slope <= 1.2, (slope, errs)


def test_sign_gd_tracks_sign_flow_to_first_order():
    """L = θᵀHθ/2 with H = [[1, 2], [2, 5]] from θ0 where ∇L = (0.675, 10): under the sign flow
    ∇L₁ falls through 0 once, transversally, at t* = 0.225 (it keeps falling after the switch) and
    ∇L₂ stays positive on [0, 1], so nothing chatters. signGD is exact on the grid before t* and
    switches late by frac(t*/lr) lr = lr/2 for lr = 0.09, 0.03, 0.01 (ratio 3 keeps the phase)."""
    x = jnp.sqrt(2.0) * jnp.array([[1.0, 2.0], [0.0, 1.0]])
    p = make_problem(_Linear(jnp.array([-16.625, 8.65])), x, jnp.zeros(2), squared_loss)
    np.testing.assert_allclose(jax.grad(p.loss)(p.params0).w, [0.675, 10.0], rtol=1e-12)

    def make(lr):
        return optax.chain(optax.scale_by_sign(), optax.scale(-lr)), SignGradientFlow()

    lrs = np.array([0.09, 0.03, 0.01])
    slope, errs = _order(p, lrs, make, t_save=0.09)
    assert 0.8 <= slope <= 1.2, (slope, errs)
