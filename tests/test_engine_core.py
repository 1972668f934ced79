"""The numeric core on a toy problem (no system): jit, vmap over init scale and lr, grad of a final
observable, and traced hyperparameters that never recompile."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsim
from flowsim._timing import timed_call


class _Lin(eqx.Module):
    w: jax.Array

    def __call__(self, x):
        return self.w @ x


def _observe(t, params, problem):
    return {"loss": problem.loss(params), "w": problem.model(params).w}


@pytest.fixture(scope="module")
def problem():
    x = jax.random.normal(jax.random.PRNGKey(0), (20, 3), jnp.float64)
    y = x @ jnp.array([1.0, -2.0, 0.5])
    return flowsim.make_problem(_Lin(jnp.array([0.3, 0.1, -0.2])), x, y, flowsim.squared_loss)


def _scaled(problem, s):
    return eqx.tree_at(lambda p: p.params0, problem, jax.tree.map(lambda a: s * a, problem.params0))


TS = jnp.linspace(0.0, 1.0, 11)


def test_solve_flow_under_jit_matches_integrate(problem):
    traj = jax.jit(lambda p: flowsim.solve_flow(flowsim.GradientFlow(), p, TS, _observe, rtol=1e-10, atol=1e-12))(
        problem
    )
    sol = flowsim.integrate(flowsim.GradientFlow(), problem, TS, _observe, rtol=1e-10, atol=1e-12)
    assert isinstance(traj, flowsim.Trajectory) and int(traj.result) == 0
    np.testing.assert_allclose(traj.obs["loss"], sol.obs["loss"], rtol=1e-13)


def test_vmap_over_init_scale_and_grad_of_final_loss(problem):
    scales = jnp.array([0.5, 1.0, 2.0])

    def final_loss(s):
        traj = flowsim.solve_flow(flowsim.GradientFlow(), _scaled(problem, s), TS, _observe, rtol=1e-10, atol=1e-12)
        return traj.obs["loss"][-1]

    batched = jax.vmap(final_loss)(scales)
    one_by_one = jnp.stack([final_loss(s) for s in scales])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-9)
    # The flow is linear: w(T) = w* + e^{-TA}(s w0 - w*), so d loss(T)/ds has a closed form; check
    # against central differences of the solve itself and against that formula.
    g = jax.grad(final_loss)(1.0)
    h = 1e-5
    fd = (final_loss(1.0 + h) - final_loss(1.0 - h)) / (2 * h)
    assert abs(g - fd) <= 1e-6 * max(1.0, abs(fd))
    x, y = problem.inputs, problem.targets
    A = x.T @ x / x.shape[0]
    w_star = jnp.linalg.solve(A, x.T @ y / x.shape[0])
    E = jax.scipy.linalg.expm(-1.0 * A)
    w0 = problem.params0.w
    wT = w_star + E @ (w0 - w_star)
    resid = x @ wT - y
    exact = jnp.mean(resid * (x @ (E @ w0)))
    assert abs(g - exact) <= 1e-8 * max(1.0, abs(exact))


def test_vmap_over_lr_in_discrete_core(problem):
    steps = jnp.array([0, 5, 10, 20])
    lrs = jnp.array([0.01, 0.05, 0.1])
    batched = jax.vmap(lambda lr: flowsim.solve_discrete(problem, _observe, lr, steps).obs["loss"])(lrs)
    for i, lr in enumerate(np.asarray(lrs)):
        gd = flowsim.gradient_descent(problem, float(lr), np.asarray(steps), _observe)
        np.testing.assert_allclose(batched[i], gd.obs["loss"], rtol=1e-12)


def test_sgd_core_vmaps_over_keys(problem):
    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    traj = flowsim.solve_discrete(problem, _observe, 0.05, jnp.array([0, 4, 8]), keys=keys, batch_size=5)
    sg = flowsim.sgd(problem, 0.05, np.array([0, 4, 8]), _observe, batch_size=5, seeds=3, key=jax.random.PRNGKey(4))
    np.testing.assert_allclose(traj.obs["loss"], sg.obs["loss"], rtol=1e-12)


@pytest.mark.parametrize(
    "make",
    [
        lambda lr: flowsim.ModifiedFlow(lr),
        lambda lr: flowsim.HeavyBallFlow(lr, 0.5),
        lambda lr: flowsim.GradientFlow(weight_decay=lr),
    ],
)
def test_hyperparameters_are_traced_no_recompilation(problem, make):
    flowsim.integrate(make(0.04), problem, TS, _observe)
    _, _, compile_s = timed_call(flowsim.integrate, make(0.02), problem, TS, _observe)
    assert compile_s == 0.0
    flowsim.gradient_descent(problem, 0.1, np.array([0, 3, 6]), _observe, momentum=0.5)
    _, _, compile_s = timed_call(flowsim.gradient_descent, problem, 0.05, np.array([0, 3, 6]), _observe, momentum=0.9)
    assert compile_s == 0.0
