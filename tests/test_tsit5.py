"""`flowsim._tsit5.UnrolledTsit5` against `diffrax.Tsit5`: the same method with its stages unrolled, so
the same accepted and rejected steps and the same states, dense output and event times to round-off
(float64), on a linear ODE with a closed form, a jump in the vector field (the FSAL value is
re-evaluated), a small PyTree gradient flow with an event through `flowsim.integrate`, under jit and
vmap, and in float32."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsim
from flowsim._tsit5 import UnrolledTsit5

SOLVERS = {"diffrax": diffrax.Tsit5(), "unrolled": UnrolledTsit5()}
# A block-diagonal linear ODE on a PyTree: a damped rotation on "a", a non-normal decay on "b".
A = {"a": np.array([[-0.3, 2.0], [-2.0, -0.3]]), "b": np.array([[-1.0, 4.0, 0.0], [0.0, -2.0, 1.0], [0.0, 0.0, -0.5]])}
Y0 = {"a": np.array([1.0, -0.5]), "b": np.array([0.3, -0.2, 0.9])}
TS = np.linspace(0.0, 4.0, 23)  # save times between the steps: dense output
JUMP_T, JUMP_C = 1.3, np.array([0.0, 0.7, -0.4])


def linear(t, y, args):
    return jax.tree.map(lambda m, x: jnp.asarray(m, x.dtype) @ x, A, y)


def linear_jump(t, y, args):
    """`linear` plus a constant forcing on "b" from t = JUMP_T on (a discontinuity in time)."""
    f = linear(t, y, args)
    on = (t >= JUMP_T).astype(f["b"].dtype)
    return {"a": f["a"], "b": f["b"] + on * jnp.asarray(JUMP_C, f["b"].dtype)}


@eqx.filter_jit
def solve(solver, vf, y0, ts, rtol, atol, jump_ts=None):
    """diffeqsolve of `vf` from (ts[0], y0), saving at `ts`; returns (ys, accepted, rejected)."""
    controller = diffrax.PIDController(rtol=rtol, atol=atol)
    if jump_ts is not None:
        controller = diffrax.ClipStepSizeController(controller, jump_ts=jump_ts)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf), solver, ts[0], ts[-1], None, y0,
        saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller, max_steps=4096,
    )  # fmt: skip
    assert sol.ys is not None
    return sol.ys, sol.stats["num_accepted_steps"], sol.stats["num_rejected_steps"]


def rel_err(a, b) -> float:
    """max over leaves of max |a - b| / max |b|."""
    errs = jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y)) / jnp.max(jnp.abs(y))), a, b)
    return max(jax.tree.leaves(errs))


def closed_form(y0, ts):
    """y(t) = expm(A t) y0 for each leaf, stacked over `ts`."""
    expm = lambda m, t: jax.scipy.linalg.expm(jnp.asarray(m) * t)
    return jax.tree.map(lambda m, x: jnp.stack([expm(m, t) @ x for t in ts]), A, y0)


def test_linear_ode_same_steps_and_states_as_diffrax():
    y0, ts = jax.tree.map(jnp.asarray, Y0), jnp.asarray(TS)
    (ys_d, acc_d, rej_d), (ys_u, acc_u, rej_u) = (solve(s, linear, y0, ts, 1e-8, 1e-10) for s in SOLVERS.values())
    assert (int(acc_u), int(rej_u)) == (int(acc_d), int(rej_d))
    assert int(acc_u) > 20 and int(rej_u) >= 1  # enough steps (and a rejection) to compare
    assert rel_err(ys_u, ys_d) < 1e-12
    assert rel_err(ys_u, closed_form(y0, TS)) < 1e-6


@pytest.mark.slow  # flowsim's own solves pass no jump times; this keeps the solver general
def test_jump_re_evaluates_the_first_stage():
    """After a jump the carried f(t0, y0) is stale: both solvers re-evaluate it, or the solve would
    carry the pre-jump vector field into the first post-jump step."""
    y0, ts = jax.tree.map(jnp.asarray, Y0), jnp.asarray(TS)
    jump = jnp.asarray([JUMP_T])
    (ys_d, acc_d, rej_d), (ys_u, acc_u, rej_u) = (
        solve(s, linear_jump, y0, ts, 1e-8, 1e-10, jump) for s in SOLVERS.values()
    )
    assert (int(acc_u), int(rej_u)) == (int(acc_d), int(rej_d))
    assert rel_err(ys_u, ys_d) < 1e-12
    # The exact solution after the jump: y(t) = e^{A(t-T)} (y(T) + A^{-1} c) - A^{-1} c on "b".
    b = np.asarray(A["b"])
    y_jump = np.asarray(closed_form(y0, [JUMP_T])["b"][0])
    shift = np.linalg.solve(b, JUMP_C)
    after = TS[TS >= JUMP_T]
    exact = np.stack(
        [np.asarray(jax.scipy.linalg.expm(jnp.asarray(b * (t - JUMP_T)))) @ (y_jump + shift) for t in after]
    )
    assert np.max(np.abs(np.asarray(ys_u["b"])[TS >= JUMP_T] - (exact - shift))) < 1e-6


@pytest.mark.slow  # the fast suite vmaps the default solver through flowsim.solve_flow (test_engine_core)
def test_vmap_matches_each_solve_and_diffrax():
    y0s = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x) * s for s in (1.0, -2.0, 0.1)]), Y0)
    ts = jnp.asarray(TS)
    batched = {k: jax.vmap(lambda y: solve(s, linear, y, ts, 1e-8, 1e-10))(y0s) for k, s in SOLVERS.items()}
    (ys_d, acc_d, rej_d), (ys_u, acc_u, rej_u) = batched["diffrax"], batched["unrolled"]
    np.testing.assert_array_equal(acc_u, acc_d)
    np.testing.assert_array_equal(rej_u, rej_d)
    assert rel_err(ys_u, ys_d) < 1e-12
    for i in range(3):
        ys_i, acc_i, _ = solve(SOLVERS["unrolled"], linear, jax.tree.map(lambda x: x[i], y0s), ts, 1e-8, 1e-10)
        assert int(acc_i) == int(acc_u[i])
        assert rel_err(jax.tree.map(lambda x: x[i], ys_u), ys_i) < 1e-12


def test_float32():
    y0 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), Y0)
    ts = jnp.asarray(TS, jnp.float32)
    (ys_d, acc_d, rej_d), (ys_u, acc_u, rej_u) = (solve(s, linear, y0, ts, 1e-5, 1e-7) for s in SOLVERS.values())
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(ys_u))
    assert abs(int(acc_u) - int(acc_d)) + abs(int(rej_u) - int(rej_d)) <= 1  # round-off may flip one decision
    assert rel_err(ys_u, ys_d) < 1e-5
    exact = jax.tree.map(lambda x: x.astype(jnp.float32), closed_form(jax.tree.map(jnp.asarray, Y0), TS))
    assert rel_err(ys_u, exact) < 1e-3


@pytest.fixture(scope="module")
def mlp_problem():
    """A one-hidden-layer tanh network (a PyTree of 4 parameter arrays) fitting random targets."""
    kx, ky, km = jax.random.split(jax.random.PRNGKey(3), 3)
    x = jax.random.normal(kx, (12, 3))
    y = jnp.sin(x @ jnp.array([1.0, -0.5, 0.3])) + 0.1 * jax.random.normal(ky, (12,))
    model = eqx.nn.MLP(3, "scalar", 5, 1, activation=jnp.tanh, key=km)
    return flowsim.make_problem(model, x, y, flowsim.squared_loss)


@pytest.mark.slow  # two event solves to compile; the fast tests check the same agreement without an event
def test_gradient_flow_with_event_through_integrate(mlp_problem):
    problem = mlp_problem
    loss0 = float(problem.loss(problem.params0))
    event = flowsim.Event("fitted", flowsim.LossBelow(jnp.asarray(0.5 * loss0)), "up")
    observer = lambda t, params, problem: {"loss": problem.loss(params), "p": jax.tree.leaves(params)[0]}
    ts = jnp.linspace(0.0, 3.0, 13)
    sols = {
        k: flowsim.integrate(
            flowsim.GradientFlow(), problem, ts, observer, event=event, solver=s, rtol=1e-8, atol=1e-10
        )
        for k, s in SOLVERS.items()
    }
    d, u = sols["diffrax"], sols["unrolled"]
    assert u.result == d.result == "successful"
    assert u.num_steps == d.num_steps
    assert u.step_stats is not None and d.step_stats is not None
    assert (u.step_stats.accepted, u.step_stats.rejected) == (d.step_stats.accepted, d.step_stats.rejected)
    t_d, t_u = d.events["fitted"].time, u.events["fitted"].time
    assert 0.0 < t_d < 3.0 and abs(t_u - t_d) <= 1e-12 * t_d
    assert rel_err(u.obs, d.obs) < 1e-12
    assert rel_err(u.params, d.params) < 1e-12
