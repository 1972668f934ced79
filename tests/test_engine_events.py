"""The engine on toy problems with closed-form flows (no system imported): events with directions,
`locate_discrete` on GD, argument checks before compiling, vector targets, required PRNG keys.

Toy problem: a linear model F(x) = w . x on four points x in {+-1}^2 with squared loss, so that
(1/n) X^T X = I and the gradient flow from w0 is w(t) = w* + (w0 - w*) e^{-t} componentwise;
GD with step lr is w_k = w* + (w0 - w*) (1 - lr)^k. With w0 = (0, 3), w* = (2, -1):
w1(t) = 2 - 2 e^{-t} rises from 0 to 2 and w2(t) = -1 + 4 e^{-t} falls from 3 to -1.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsim
from flowsim import Event, GradientFlow, integrate, locate_discrete, make_problem, squared_loss
from flowsim._integrate import FLAT_MIN_LEAVES

X = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
W_STAR = np.array([2.0, -1.0])
W0 = np.array([0.0, 3.0])
TIGHT = dict(solver="dopri8", rtol=1e-12, atol=1e-14)


class Linear(eqx.Module):
    """F(x) = W x: a scalar output for W of shape (p,), a vector output for W of shape (k, p)."""

    W: jax.Array

    def __call__(self, x):
        return self.W @ x


def w_flow(t):
    """The closed-form gradient flow w(t), shape (len(t), 2)."""
    return W_STAR + (W0 - W_STAR) * np.exp(-np.atleast_1d(np.asarray(t, float)))[:, None]


def w_gd(k, lr):
    return W_STAR + (W0 - W_STAR) * ((1 - lr) ** np.atleast_1d(np.asarray(k, float)))[:, None]


@pytest.fixture(scope="module")
def toy():
    return make_problem(Linear(jnp.asarray(W0)), jnp.asarray(X), jnp.asarray(X @ W_STAR), squared_loss)


def observe(t, params, problem):
    return {"w": params.W, "loss": problem.loss(params)}


# Conditions on w = params.W, with their crossing times along the flow (nan: never crosses that way).
def w1_minus_1(t, p, pr):
    return p.W[0] - 1.0  # rises through 0 at e^{-t} = 1/2


def w2(t, p, pr):
    return p.W[1]  # falls through 0 at e^{-t} = 1/4


def w2_minus_2(t, p, pr):
    return p.W[1] - 2.0  # falls through 0 at e^{-t} = 3/4


def w1_minus_5(t, p, pr):
    return p.W[0] - 5.0  # never reaches 0 (w1 < 2)


EVENTS = [
    Event("w1_up", w1_minus_1, "up", "w1 reaches 1"),
    Event("w2_down", w2, "down"),
    Event("w2_either", w2_minus_2, "either"),
    Event("w1_down", w1_minus_1, "down"),  # w1 only rises: this direction never occurs
    Event("w2_up", w2, "up"),  # w2 only falls: never occurs
    Event("w1_unreached", w1_minus_5, "either"),
]
EXPECTED = {
    "w1_up": np.log(2.0),
    "w2_down": np.log(4.0),
    "w2_either": np.log(4.0 / 3.0),
    "w1_down": np.nan,
    "w2_up": np.nan,
    "w1_unreached": np.nan,
}
# Save times include the first event time exactly, and times on both sides of every event.
TS = np.unique(np.concatenate([np.linspace(0.0, 3.0, 13), [np.log(2.0)]]))


@pytest.fixture(scope="module")
def plain(toy):
    return integrate(GradientFlow(), toy, TS, observe, **TIGHT)


@pytest.fixture(scope="module")
def with_events(toy):
    return integrate(GradientFlow(), toy, TS, observe, event=EVENTS, **TIGHT)


# ---------------------------------------------------------------------------------------------
# (a) several events with directions on the flow
# ---------------------------------------------------------------------------------------------


def test_plain_flow_matches_closed_form(plain):
    assert plain.ok and plain.t_reached == pytest.approx(3.0)
    np.testing.assert_allclose(plain.obs["w"], w_flow(TS), rtol=0, atol=1e-9)
    np.testing.assert_allclose(plain.params.W, w_flow(3.0)[0], rtol=0, atol=1e-9)
    assert plain.events == {} and np.isnan(plain.event_time) and plain.event_obs is None


def test_each_event_fires_at_its_closed_form_time(with_events):
    sol = with_events
    assert sol.ok and sol.result == "successful" and sol.t_reached == pytest.approx(3.0)
    # every declared event has an entry, in declaration order (they fire as w2_either, w1_up, w2_down)
    assert list(sol.events) == [e.name for e in EVENTS]
    for e in EVENTS:
        hit, want = sol.events[e.name], EXPECTED[e.name]
        assert hit.label == e.label
        if np.isnan(want):
            assert not hit.fired and np.isnan(hit.time) and hit.obs is None and hit.params is None, e.name
            continue
        assert hit.fired and abs(hit.time - want) <= 1e-8, (e.name, hit.time, want)
        # the observables and parameters at the event are the closed form there, and the
        # condition is zero there
        np.testing.assert_allclose(hit.obs["w"], w_flow(want)[0], rtol=0, atol=1e-8)
        np.testing.assert_allclose(hit.params.W, w_flow(want)[0], rtol=0, atol=1e-8)
        assert abs(float(e.condition(hit.time, hit.params, None))) <= 1e-8
    # the compat properties read the first declared event (not the first to fire: w2_either)
    assert sol.event_time == sol.events["w1_up"].time and sol.event_obs is sol.events["w1_up"].obs
    assert sol.event_params is sol.events["w1_up"].params


def test_solution_after_events_equals_event_free_solution(with_events, plain):
    # Restarting the adaptive solve at each event only changes the solver error (~1e-10 here)
    np.testing.assert_allclose(with_events.obs["w"], plain.obs["w"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(with_events.obs["loss"], plain.obs["loss"], rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(with_events.obs["w"], w_flow(TS), rtol=0, atol=1e-8)
    np.testing.assert_allclose(with_events.params.W, plain.params.W, rtol=0, atol=1e-9)
    assert with_events.num_steps > plain.num_steps  # one solve per piece: 3 events, 4 pieces
    np.testing.assert_array_equal(with_events.ts, TS)


def test_bare_condition_is_an_upward_event_named_event(toy):
    sol = integrate(GradientFlow(), toy, TS, observe, event=w1_minus_1, **TIGHT)
    assert list(sol.events) == ["event"]
    assert abs(sol.event_time - np.log(2.0)) <= 1e-8
    # upward only: a bare condition that only falls never fires
    down = integrate(GradientFlow(), toy, TS, observe, event=w2, **TIGHT)
    assert down.ok and not down.events["event"].fired


def test_event_declarations_are_checked(toy):
    with pytest.raises(ValueError, match="direction"):
        Event("bad", w2, "sideways")
    with pytest.raises(ValueError, match="name"):
        Event("", w2)
    with pytest.raises(ValueError, match="unique"):
        integrate(GradientFlow(), toy, TS, observe, event=[Event("a", w2), Event("a", w1_minus_1)])
    with pytest.raises(TypeError, match="Event"):
        integrate(GradientFlow(), toy, TS, observe, event=[Event("a", w2), w1_minus_1])
    with pytest.raises(TypeError, match="real scalar"):
        integrate(GradientFlow(), toy, TS, observe, event=Event("vec", lambda t, p, pr: p.W))


# ---------------------------------------------------------------------------------------------
# (b) locate_discrete on GD of the same problem
# ---------------------------------------------------------------------------------------------


def conditions(t, params, problem):
    return {e.name: e.condition(t, params, problem) for e in EVENTS}


@pytest.mark.parametrize("lr", [0.02, 0.01])
def test_locate_discrete_on_gd_is_within_order_lr_of_the_flow(toy, with_events, lr):
    steps = np.arange(0, int(round(2.0 / lr)) + 1)
    gd = flowsim.gradient_descent(toy, lr, steps, conditions, events=EVENTS)
    np.testing.assert_allclose(gd.ts, steps * lr)
    for e in EVENTS:
        t_gd, idx = locate_discrete(e, gd.ts, gd.obs[e.name])
        # gradient_descent(events=...) records the same crossing (time, first step at or after it)
        t_rec, step_rec = gd.crossings[e.name]
        if np.isnan(EXPECTED[e.name]):
            assert np.isnan(t_gd) and idx == -1, e.name
            assert np.isnan(t_rec) and step_rec == -1, e.name
            continue
        assert t_rec == t_gd and step_rec == steps[idx]
        # the crossing lies between the save points idx - 1 and idx, and is the linear interpolation
        # of the closed-form GD sequence there
        assert gd.ts[idx - 1] < t_gd <= gd.ts[idx], (e.name, t_gd, idx)
        v = np.array([float(e.condition(None, Linear(jnp.asarray(w)), None)) for w in w_gd(steps, lr)])
        assert np.sign(v[idx - 1]) != np.sign(v[idx]) or v[idx] == 0
        want = gd.ts[idx - 1] + lr * v[idx - 1] / (v[idx - 1] - v[idx])
        assert t_gd == pytest.approx(want, abs=1e-12)
        # GD crosses at k with (1 - lr)^k = e^{-t_flow}: k lr = t_flow lr / -log(1 - lr) ~ t_flow (1 - lr/2)
        t_flow = with_events.events[e.name].time
        assert abs(t_gd - t_flow) <= lr * t_flow, (e.name, t_gd, t_flow)
        assert t_gd - t_flow == pytest.approx(-t_flow * lr / 2, rel=0.1, abs=lr**2)


def test_locate_discrete_by_hand():
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    v = np.array([-2.0, -1.0, 1.0, 3.0, -1.0])
    up, down, either = (Event("e", w2, d) for d in ("up", "down", "either"))
    assert locate_discrete(up, t, v) == (1.5, 2)
    assert locate_discrete(down, t, v) == (3.75, 4)
    assert locate_discrete(either, t, v) == (1.5, 2)
    assert locate_discrete(either, t, -v) == (1.5, 2)
    t_none, i_none = locate_discrete(up, t, np.array([1.0, 2.0, 3.0, 4.0, 5.0]))  # already past zero
    assert np.isnan(t_none) and i_none == -1
    assert locate_discrete(up, t, np.array([-1.0, 0.0, 1.0, 1.0, 1.0])) == (1.0, 1)  # lands exactly on 0


# ---------------------------------------------------------------------------------------------
# (c) bad arguments raise one clear error before anything is traced or compiled
# ---------------------------------------------------------------------------------------------


class _Untraceable(flowsim.AbstractFlow):
    """A dynamics that must never be evaluated: proves the checks run before any tracing."""

    def vector_field(self, t, params, problem):
        raise AssertionError("the vector field must not be evaluated")


def _never_observed(t, params, problem):
    raise AssertionError("the observer must not be evaluated")


@pytest.mark.parametrize(
    ("ts", "kw", "error", "match"),
    [
        (np.array([0, 1, 2]), {}, TypeError, "floating"),
        # a list of ints: refused by integrate, or first by the jaxtyping hook (ts: ... | Sequence[float])
        ([0, 1, 2], {}, TypeError, r"floating|typechecking parameter 'ts'"),
        (jnp.arange(3), {}, TypeError, "floating"),
        (np.array([0.0, 1.0, 0.5]), {}, ValueError, "strictly increasing"),
        (np.array([0.0, 1.0, 1.0]), {}, ValueError, "strictly increasing"),
        (np.array([1.0, 0.0]), {}, ValueError, "strictly increasing"),
        (np.array([0.0, np.nan, 1.0]), {}, ValueError, "finite"),
        (np.array([0.0, np.inf]), {}, ValueError, "finite"),
        (np.array([], dtype=float), {}, ValueError, "at least 2"),
        (np.array([0.0]), {}, ValueError, "at least 2"),
        (np.zeros((2, 2)), {}, ValueError, "1-D"),
        (np.array([0.0, 1.0]), {"rtol": -1e-6}, ValueError, "rtol"),
        (np.array([0.0, 1.0]), {"rtol": float("nan")}, ValueError, "rtol"),
        (np.array([0.0, 1.0]), {"rtol": 0.0}, ValueError, "rtol"),
        (np.array([0.0, 1.0]), {"atol": -1e-9}, ValueError, "atol"),
        (np.array([0.0, 1.0]), {"atol": float("nan")}, ValueError, "atol"),
        (np.array([0.0, 1.0]), {"atol": float("inf")}, ValueError, "atol"),
        (np.array([0.0, 1.0]), {"solver": "euler", "dt0": 0.0}, ValueError, "dt0"),
        (np.array([0.0, 1.0]), {"solver": "euler", "dt0": float("nan")}, ValueError, "dt0"),
        (np.array([0.0, 1.0]), {"max_steps": 0}, ValueError, "max_steps"),
    ],
    ids=[
        "int-numpy",
        "int-list",
        "int-jax",
        "decreasing",
        "repeated",
        "reversed",
        "nan",
        "inf",
        "empty",
        "single",
        "2-d",
        "rtol-negative",
        "rtol-nan",
        "rtol-zero",
        "atol-negative",
        "atol-nan",
        "atol-inf",
        "dt0-zero",
        "dt0-nan",
        "max-steps-zero",
    ],
)
def test_integrate_rejects_bad_arguments_before_tracing(toy, ts, kw, error, match):
    with pytest.raises(error, match=match):
        integrate(_Untraceable(), toy, ts, _never_observed, **kw)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_integrate_rejects_non_finite_initial_params(bad):
    problem = make_problem(Linear(jnp.asarray([bad, 0.0])), jnp.asarray(X), jnp.asarray(X @ W_STAR), squared_loss)
    with pytest.raises(ValueError, match="non-finite"):
        integrate(_Untraceable(), problem, np.array([0.0, 1.0]), _never_observed)


def test_integrate_sde_checks_save_times_and_dt(toy):
    sme, key = flowsim.SGDModifiedEquation(0.1, 2), jax.random.PRNGKey(0)
    with pytest.raises(TypeError, match="floating"):
        flowsim.integrate_sde(sme, toy, np.array([0, 1]), _never_observed, dt=0.1, key=key)
    with pytest.raises(ValueError, match="strictly increasing"):
        flowsim.integrate_sde(sme, toy, np.array([1.0, 0.0]), _never_observed, dt=0.1, key=key)
    for dt in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="dt"):
            flowsim.integrate_sde(sme, toy, np.array([0.0, 1.0]), _never_observed, dt=dt, key=key)


# ---------------------------------------------------------------------------------------------
# (d) make_problem: the loss is required; vector targets
# ---------------------------------------------------------------------------------------------


def test_make_problem_requires_a_loss_fn():
    with pytest.raises(TypeError, match="loss_fn"):
        make_problem(Linear(jnp.asarray(W0)), jnp.asarray(X), jnp.asarray(X @ W_STAR))  # type: ignore[call-arg]
    # make_problem's own message, or under the jaxtyping import hook the run-time checker's on `loss_fn`
    with pytest.raises(TypeError, match=r"loss_fn must be a function|typechecking parameter 'loss_fn'"):
        make_problem(Linear(jnp.asarray(W0)), jnp.asarray(X), jnp.asarray(X @ W_STAR), None)  # type: ignore[arg-type]


def _expm_sym(A, t):
    """exp(-t A) for a symmetric positive definite A (eigendecomposition, independent of the solver)."""
    lam, V = np.linalg.eigh(A)
    return (V * np.exp(-t * lam)) @ V.T


def test_vector_targets_linear_regression_flow_matches_matrix_exponential():
    """Least squares with k = 3 outputs, p = 4 features, n = 10: L(W) = (1/n) sum 1/2 ||W x_i - y_i||^2,
    dW/dt = -(W A - B) with A = X^T X / n, B = Y^T X / n, so W(t) = W* + (W0 - W*) exp(-t A),
    W* = B A^{-1} (not an exact fit: the noise leaves a residual)."""
    rng = np.random.default_rng(0)
    n, p, k = 10, 4, 3
    Xr = rng.standard_normal((n, p))
    Y = Xr @ rng.standard_normal((p, k)) + 0.3 * rng.standard_normal((n, k))
    W0_ = rng.standard_normal((k, p))
    problem = make_problem(Linear(jnp.asarray(W0_)), jnp.asarray(Xr), jnp.asarray(Y), squared_loss)
    assert problem.targets.shape == (n, k) and problem.n == n
    out = np.asarray(problem.outputs(problem.params0))
    assert out.shape == (n, k)
    np.testing.assert_allclose(
        float(problem.loss(problem.params0)), np.mean(0.5 * np.sum((Xr @ W0_.T - Y) ** 2, axis=1)), rtol=1e-13
    )
    A, B = Xr.T @ Xr / n, Y.T @ Xr / n
    W_star = B @ np.linalg.inv(A)
    ts = np.linspace(0.0, 2.0, 9)
    sol = integrate(GradientFlow(), problem, ts, observe, **TIGHT).check()
    want = np.stack([W_star + (W0_ - W_star) @ _expm_sym(A, t) for t in ts])
    np.testing.assert_allclose(sol.obs["w"], want, rtol=0, atol=1e-8 * np.max(np.abs(want)))
    want_loss = [np.mean(0.5 * np.sum((Xr @ W.T - Y) ** 2, axis=1)) for W in want]
    np.testing.assert_allclose(sol.obs["loss"], want_loss, rtol=1e-8)
    # GD on the same problem: W_k = W* + (W0 - W*) (I - lr A)^k
    lr, steps = 0.05, np.array([0, 1, 7, 20])
    gd = flowsim.gradient_descent(problem, lr, steps, observe)
    step = np.eye(p) - lr * A
    want_gd = np.stack([W_star + (W0_ - W_star) @ np.linalg.matrix_power(step, int(s)) for s in steps])
    np.testing.assert_allclose(gd.obs["w"], want_gd, rtol=0, atol=1e-12 * np.max(np.abs(want_gd)))


class ColumnLinear(eqx.Module):
    """The map of `Linear` with its weight held as one leaf per column: a state of `p` leaves, which
    `integrate` solves as one flat vector (at least `FLAT_MIN_LEAVES` of them)."""

    cols: tuple[jax.Array, ...]

    def __call__(self, x):
        return sum(c * x[i] for i, c in enumerate(self.cols))


def test_a_many_leaf_state_solved_flat_matches_the_one_leaf_solve_and_the_closed_form():
    rng = np.random.default_rng(1)
    n, p, k = 24, FLAT_MIN_LEAVES, 3
    Xr, W0_ = rng.standard_normal((n, p)), rng.standard_normal((k, p))
    Y = Xr @ rng.standard_normal((p, k)) + 0.3 * rng.standard_normal((n, k))
    one = make_problem(Linear(jnp.asarray(W0_)), jnp.asarray(Xr), jnp.asarray(Y), squared_loss)
    cols = ColumnLinear(tuple(jnp.asarray(W0_[:, i]) for i in range(p)))
    many = make_problem(cols, one.inputs, one.targets, squared_loss)
    ts = np.linspace(0.0, 2.0, 9)
    low = Event("low", lambda t, q, pr: 0.9 * one.loss(one.params0) - pr.loss(q))
    w = lambda t, q, pr: {"w": jnp.stack(q.cols, axis=1), "loss": pr.loss(q)}
    flat = integrate(GradientFlow(), many, ts, w, event=low).check()
    ref = integrate(GradientFlow(), one, ts, observe, event=low).check()
    np.testing.assert_allclose(flat.obs["w"], ref.obs["w"], rtol=1e-12, atol=1e-13)
    assert flat.events["low"].fired and flat.events["low"].time == pytest.approx(ref.events["low"].time, rel=1e-10)
    A, B = Xr.T @ Xr / n, Y.T @ Xr / n
    W_star = B @ np.linalg.inv(A)
    want = np.stack([W_star + (W0_ - W_star) @ _expm_sym(A, t) for t in ts])
    np.testing.assert_allclose(flat.obs["w"], want, rtol=0, atol=1e-5 * np.max(np.abs(want)))
    end = flat.params
    assert isinstance(end, ColumnLinear) and len(end.cols) == p and end.cols[0].shape == (k,)


def test_cross_entropy_with_per_position_labels():
    """Targets (n, P) of class labels with -1 padding, outputs (P, C) logits per sample."""

    class Logits(eqx.Module):
        E: jax.Array  # (V, C): logits of each input token

        def __call__(self, tokens):
            return self.E[tokens]

    rng = np.random.default_rng(1)
    n, P, V, C = 5, 3, 4, 6
    tokens = rng.integers(0, V, (n, P))
    labels = rng.integers(0, C, (n, P))
    labels[0, 2] = labels[3, 0] = -1
    E = rng.standard_normal((V, C))
    problem = make_problem(Logits(jnp.asarray(E)), jnp.asarray(tokens), jnp.asarray(labels), flowsim.cross_entropy_loss)
    logp = E[tokens] - np.log(np.sum(np.exp(E[tokens]), axis=-1, keepdims=True))
    per = [np.mean([-logp[i, j, labels[i, j]] for j in range(P) if labels[i, j] >= 0]) for i in range(n)]
    np.testing.assert_allclose(np.asarray(problem.per_sample_loss(problem.params0)), per, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# (e) randomness needs an explicit key
# ---------------------------------------------------------------------------------------------


def test_sgd_requires_a_key_and_is_reproducible_in_it(toy):
    steps = np.array([0, 2, 4])
    with pytest.raises(TypeError, match="key"):
        flowsim.sgd(toy, 0.1, steps, observe, batch_size=2, seeds=2)  # type: ignore[call-arg]
    a = flowsim.sgd(toy, 0.1, steps, observe, batch_size=2, seeds=2, key=jax.random.PRNGKey(0))
    b = flowsim.sgd(toy, 0.1, steps, observe, batch_size=2, seeds=2, key=jax.random.PRNGKey(0))
    c = flowsim.sgd(toy, 0.1, steps, observe, batch_size=2, seeds=2, key=jax.random.PRNGKey(1))
    np.testing.assert_array_equal(a.obs["w"], b.obs["w"])
    assert not np.allclose(a.obs["w"], c.obs["w"])


def test_integrate_sde_requires_a_key_and_is_reproducible_in_it(toy):
    sme, ts = flowsim.SGDModifiedEquation(0.1, 2), np.array([0.0, 0.5, 1.0])
    with pytest.raises(TypeError, match="key"):
        flowsim.integrate_sde(sme, toy, ts, observe, dt=0.05, paths=2)  # type: ignore[call-arg]
    a = flowsim.integrate_sde(sme, toy, ts, observe, dt=0.05, paths=2, key=jax.random.PRNGKey(0))
    b = flowsim.integrate_sde(sme, toy, ts, observe, dt=0.05, paths=2, key=jax.random.PRNGKey(0))
    c = flowsim.integrate_sde(sme, toy, ts, observe, dt=0.05, paths=2, key=jax.random.PRNGKey(1))
    assert a.ok and a.obs["w"].shape == (2, len(ts), 2)
    np.testing.assert_array_equal(a.obs["w"], b.obs["w"])
    assert not np.allclose(a.obs["w"], c.obs["w"])
    assert not np.allclose(a.obs["w"][0], a.obs["w"][1])  # the paths differ from each other


def test_flow_progress_is_one_labelled_bar_across_pieces(toy, capsys):
    """With `progress=True` the solve shows one bar, labelled with the dynamics, solver and span, that
    the pieces before and after a non-terminal event both advance, ending at 100%."""
    event = Event("w1_up", w1_minus_1, "up")
    sol = integrate(GradientFlow(), toy, np.linspace(0.0, 20.0, 5), observe, event=event, progress=True, **TIGHT)
    assert sol.ok and sol.event_time == pytest.approx(np.log(2.0), rel=1e-8)
    frames = [f for f in capsys.readouterr().err.replace("\r", "\n").splitlines() if f.strip()]
    assert frames and all(f.startswith("flow: GradientFlow, Dopri8, t in [0, 20]") for f in frames)
    assert "100/100" in frames[-1]
