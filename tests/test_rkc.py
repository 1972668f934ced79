"""The Runge–Kutta–Chebyshev solver (`flowsim._rkc.RKC`): second order, stable far beyond explicit RK
on stiff symmetric problems, its spectral-radius estimate, PyTree/float32/jit use, events and dense
output. Every solve is compiled once and each test reuses it where it can (the machine is small)."""

from __future__ import annotations

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest

from flowsim._rkc import RKC, RKCState


def _counter():
    """A vector-field wrapper counting every evaluation (JVPs included) on the host, under jit."""
    count = [0]

    def bump():
        count[0] += 1

    def wrap(f):
        def g(t, y, args):
            jax.debug.callback(bump)
            return f(t, y, args)

        return g

    return count, wrap


# --- (1) order -----------------------------------------------------------------------------------

_LAM = -np.linspace(1.0, 10.0, 6)
_NONNORMAL = np.array([[-1.0, 10.0], [0.0, -2.0]])
_T = 1.0


def _mixed_field(t, y, args):
    """A PyTree of three decoupled problems: symmetric linear, non-normal linear, nonlinear (logistic)."""
    del t, args
    return {
        "diag": _LAM * y["diag"],
        "nonnormal": _NONNORMAL @ y["nonnormal"],
        "logistic": y["logistic"] * (1 - y["logistic"]),
    }


_Y0 = {"diag": np.ones(6), "nonnormal": np.array([1.0, 1.0]), "logistic": np.array([0.1])}


def _mixed_exact() -> dict[str, np.ndarray]:
    (a, b), (_, c) = _NONNORMAL * _T  # expm of an upper-triangular 2×2 matrix in closed form
    expm = np.array([[np.exp(a), b * (np.exp(a) - np.exp(c)) / (a - c)], [0.0, np.exp(c)]])
    return {
        "diag": np.exp(_LAM * _T),
        "nonnormal": expm @ _Y0["nonnormal"],
        "logistic": 1 / (1 + (1 / 0.1 - 1) * np.exp(-np.array([_T]))),
    }


# s_min = 2 (~3 s) is marked slow to keep the file near 15 s: the stiff solve below also takes s = 2 steps.
@pytest.mark.parametrize("s_min", [pytest.param(2, marks=pytest.mark.slow), 9])
def test_fixed_steps_converge_at_second_order(s_min):
    """Constant steps h = T/N, N = 10..80: every component's error vs the exact solution falls with
    a fitted log-log slope in [1.8, 2.3], with s = 2 (the default path on a non-stiff problem) and
    with s forced to 9 (the full Chebyshev recursion); no step is rejected, so the solver state's
    count equals the exact count of vector-field calls."""
    count, wrap = _counter()

    @eqx.filter_jit
    def solve(dt):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(wrap(_mixed_field)),
            RKC(s_min=s_min),
            0.0,
            _T,
            dt,
            _Y0,
            stepsize_controller=diffrax.ConstantStepSize(),
            saveat=diffrax.SaveAt(t1=True, solver_state=True),
            max_steps=100,
        )

    ns = np.array([10, 20, 40, 80])
    errors = {k: [] for k in _Y0}
    exact = _mixed_exact()
    for n in ns:
        count[0] = 0
        sol = solve(jnp.asarray(_T / n))
        jax.block_until_ready(sol.ys)
        state = sol.solver_state
        assert isinstance(state, RKCState)
        assert int(state.stages) == s_min
        assert count[0] == int(state.total_evals)  # init's f0 + s per step + the power iterations' JVPs
        assert int(state.num_evals) == 1 + s_min * n
        assert sol.ys is not None
        for k in _Y0:
            errors[k].append(float(np.max(np.abs(np.asarray(sol.ys[k][-1]) - exact[k]))))
    for k, errs in errors.items():
        slope = np.polyfit(np.log(_T / ns), np.log(errs), 1)[0]
        assert 1.8 <= slope <= 2.3, (k, errs, slope)


# --- (2), (3) stability and the spectral radius ----------------------------------------------------

_N_STIFF = 30
_RHO_TRUE = 1e4


def _orthogonal(seed: int) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(_N_STIFF, _N_STIFF)))[0]


@pytest.fixture(scope="module")
def stiff():
    """y' = A y, A = Q diag(λ) Qᵀ symmetric with λ log-spaced in [-1e4, -1], y(0) = 1, t in [0, 1],
    solved by RKC and by Tsit5 with the same PID controller (rtol 1e-5, atol 1e-8), counting every
    vector-field call. Tsit5 is held to h ≤ 3.3/1e4 by stability."""
    lam = -np.logspace(0.0, 4.0, _N_STIFF)
    q = _orthogonal(1)
    a = jnp.asarray((q * lam) @ q.T)
    y0 = np.ones(_N_STIFF)
    rtol = 1e-5
    count, wrap = _counter()
    out = {}
    for name, solver in (("rkc", RKC()), ("tsit5", diffrax.Tsit5())):
        count[0] = 0
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(wrap(lambda t, y, args: a @ y)),
            solver,
            0.0,
            1.0,
            1e-4,
            y0,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=1e-8),
            saveat=diffrax.SaveAt(t1=True, solver_state=True),
            max_steps=20_000,
        )
        jax.block_until_ready(sol.ys)
        out[name] = (sol, count[0])
    return dict(exact=q @ (np.exp(lam) * (q.T @ y0)), rtol=rtol, **out)


def test_stiff_solve_is_accurate_and_cheaper_than_tsit5(stiff):
    """RKC with the PID controller matches expm(A)·y0 to a small multiple of rtol, steps at a mean
    h·λmax over 5× Tsit5's stability limit (3.3), and makes at least 4× fewer vector-field
    evaluations (JVPs included) than Tsit5, counted exactly in both solves."""
    sol, n_rkc = stiff["rkc"]
    sol_tsit5, n_tsit5 = stiff["tsit5"]
    assert sol.result == diffrax.RESULTS.successful and sol_tsit5.result == diffrax.RESULTS.successful
    assert sol.ys is not None
    exact = stiff["exact"]
    err = float(np.linalg.norm(np.asarray(sol.ys[-1]) - exact) / np.linalg.norm(exact))
    assert err < 10 * stiff["rtol"], err
    mean_h = 1.0 / int(sol.stats["num_accepted_steps"])
    assert mean_h * _RHO_TRUE > 5 * 3.3, mean_h
    assert n_rkc * 4 < n_tsit5, (n_rkc, n_tsit5)
    # The state counts the accepted steps' work; rejected steps add the rest.
    state = sol.solver_state
    assert int(state.total_evals) <= n_rkc
    assert int(state.total_evals) == n_rkc or int(sol.stats["num_rejected_steps"]) > 0


@pytest.mark.parametrize("jvp", ["difference", "autodiff"])
def test_spectral_radius_estimate_within_safety_factor(stiff, jvp):
    """The power iteration's ρ (before the 1.2 safety factor) is a lower bound of |λ|max for the
    symmetric A, and within the safety factor: |λ|max ≤ 1.2 ρ, at the end of the stiff solve
    (difference quotients, the default) and after one cold-start step on a spectrum whose top
    eigenvalues are close (linear spacing, gap 3.4%), with difference quotients and with `jax.jvp`."""
    rho = float(stiff["rkc"][0].solver_state.rho)
    assert _RHO_TRUE / 1.2 <= rho <= _RHO_TRUE * (1 + 1e-6), rho

    lam = -np.linspace(1.0, _RHO_TRUE, _N_STIFF)
    q = _orthogonal(2)
    a = jnp.asarray((q * lam) @ q.T)
    term = diffrax.ODETerm(lambda t, y, args: a @ y)
    solver = RKC(jvp=jvp)
    y0 = jnp.ones(_N_STIFF)

    @eqx.filter_jit
    def first_step(y0):
        return solver.step(term, 0.0, 1e-3, y0, None, solver.init(term, 0.0, 1e-3, y0, None), False)[3]

    state = first_step(y0)
    rho = float(state.rho)
    assert _RHO_TRUE / 1.2 <= rho <= _RHO_TRUE * (1 + 1e-6), rho
    assert 1 <= int(state.num_jvps) <= solver.power_iters
    # h ρ = 1.2e4 needs s = 1 + ⌊√(1 + 1.54 · 1.2 ρ h)⌋ stages.
    assert int(state.stages) == 1 + math.floor(math.sqrt(1 + 1.54 * 1.2 * rho * 1e-3))


def test_step_needing_more_than_s_max_stages_is_rejected():
    """With s_max = 3 (stability interval ~5.9), a step with h ρ = 10 returns an infinite error
    estimate (so any adaptive controller rejects it and shrinks h), one with h ρ = 1 a finite one."""
    lam = jnp.array([-1.0, -1e4])
    term = diffrax.ODETerm(lambda t, y, args: lam * y)
    solver = RKC(s_max=3)

    @eqx.filter_jit
    def error(h):
        y0 = jnp.ones(2)
        return solver.step(term, 0.0, h, y0, None, solver.init(term, 0.0, h, y0, None), False)[1]

    assert bool(jnp.all(jnp.isinf(error(jnp.asarray(1e-3)))))
    assert bool(jnp.all(jnp.isfinite(error(jnp.asarray(1e-4)))))


# --- (4) jit, PyTree state, float32 ---------------------------------------------------------------


def test_jit_pytree_float32():
    """Under `jax.jit`, a dict state of float32 arrays (a stiff diagonal problem, λ down to -2000)
    keeps its structure and dtype and matches the exact solution to rtol 1e-4 (error < 1e-3)."""
    lam = {"a": -jnp.array([1.0, 30.0, 2000.0], jnp.float32), "b": -jnp.array([[0.5, 5.0], [50.0, 500.0]], jnp.float32)}
    y0 = jax.tree.map(jnp.ones_like, lam)
    f32 = lambda x: jnp.asarray(x, jnp.float32)

    @jax.jit
    def solve(y0):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: jax.tree.map(lambda l, x: l * x, args, y)),
            RKC(),
            f32(0.0),
            f32(1.0),
            f32(1e-3),
            y0,
            args=lam,
            stepsize_controller=diffrax.PIDController(rtol=1e-4, atol=1e-6),
            saveat=diffrax.SaveAt(t1=True, solver_state=True),
        )

    sol = solve(y0)
    assert sol.ys is not None and sol.result == diffrax.RESULTS.successful
    for k in lam:
        assert sol.ys[k].dtype == jnp.float32 and sol.ys[k].shape == (1, *lam[k].shape)
        np.testing.assert_allclose(sol.ys[k][0], np.exp(np.asarray(lam[k], np.float64)), atol=1e-3)
    assert int(sol.solver_state.stages) > 2  # the stiff component sets s
    assert sol.solver_state.direction["b"].dtype == jnp.float32


# --- (5) events and dense output ------------------------------------------------------------------


def test_event_and_dense_output():
    """y' = diag(-1, -1000) y, rtol 1e-7: the event y_slow = 0.5 is root-found on RKC's dense output
    (the interpolated state there is 0.5 to 1e-10) at ln 2 up to the solve's global error (< 100 rtol:
    RKC controls the error per step, at second order), and the dense output at save times between
    steps matches e^{-t} to the same accuracy."""
    lam = jnp.array([-1.0, -1000.0])
    rtol = 1e-7
    ts = jnp.linspace(0.05, 0.65, 13)
    event = diffrax.Event(lambda t, y, args, **kwargs: y[0] - 0.5, root_finder=optx.Newton(rtol=1e-12, atol=1e-12))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: lam * y),
        RKC(),
        0.0,
        10.0,
        1e-3,
        jnp.ones(2),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=1e-3 * rtol),
        saveat=diffrax.SaveAt(ts=ts, t1=True),
        event=event,
        max_steps=10_000,
    )
    assert sol.result == diffrax.RESULTS.event_occurred
    assert sol.ts is not None and sol.ys is not None
    t_event, y_event = float(sol.ts[-1]), float(sol.ys[-1, 0])
    assert abs(y_event - 0.5) < 1e-10, y_event
    assert abs(t_event - math.log(2)) < 100 * rtol, t_event
    np.testing.assert_allclose(sol.ts[:-1], ts)
    np.testing.assert_allclose(sol.ys[:-1, 0], np.exp(-np.asarray(ts)), atol=100 * rtol)
