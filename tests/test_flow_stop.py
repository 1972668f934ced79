"""Terminal events (a flow that stops at a target), the step history of every flow solve, and flow
checkpoints (resume with identical continuation), on toy problems with closed-form flows.

The toy of `tests/test_engine_events.py`: w(t) = w* + (w0 - w*) e^{-t}, so w2 falls through 0 at
t = ln 4 and w1 rises through 1 at t = ln 2. For the step history, a quadratic with Hessian
diag(1, 1000): after the fast mode has decayed, Tsit5's step is set by stability, not accuracy, and
h * lambda_max sits at its real stability bound (about 3.3).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from flowsim import (
    Checkpoint,
    Event,
    GradientFlow,
    HeavyBallFlow,
    StepStats,
    integrate,
    load_checkpoint,
    make_problem,
    save_checkpoint,
    squared_loss,
)

from .test_engine_events import TIGHT, TS, Linear, observe, toy, w1_minus_1, w2, w_flow

__all__ = ["toy"]  # the shared toy problem fixture

STOP = Event("w2_zero", w2, "down", "w2 reaches 0", terminal=True)


@pytest.fixture(scope="module")
def stopped(toy):
    return integrate(GradientFlow(), toy, TS, observe, event=[Event("w1_up", w1_minus_1), STOP], **TIGHT)


def test_terminal_event_stops_the_flow_at_its_closed_form_time(stopped):
    assert stopped.stopped_by == "w2_zero"
    assert stopped.ok and stopped.check() is stopped
    assert stopped.t_reached == pytest.approx(np.log(4.0), abs=1e-9)
    np.testing.assert_allclose(np.asarray(stopped.params.W), w_flow(np.log(4.0))[0], atol=1e-9)
    hit = stopped.events["w2_zero"]
    assert hit.time == pytest.approx(np.log(4.0), abs=1e-9)
    assert hit.obs is not None
    np.testing.assert_allclose(hit.obs["w"], w_flow(np.log(4.0))[0], atol=1e-9)
    # The non-terminal event before it is recorded as usual.
    assert stopped.events["w1_up"].time == pytest.approx(np.log(2.0), abs=1e-9)


def test_terminal_event_firing_with_a_non_terminal_one_still_stops(toy):
    """Two events on one condition (non-terminal declared first): both fire at ln 4 and the solve stops."""
    events = [Event("w2_seen", w2, "down"), Event("w2_stop", w2, "down", terminal=True)]
    sol = integrate(GradientFlow(), toy, TS, observe, event=events, **TIGHT)
    assert sol.stopped_by == "w2_stop" and sol.t_reached == pytest.approx(np.log(4.0), abs=1e-9)
    # Bisection leaves the located point within 1e-12 of the crossing, on either side: the second
    # event is taken at the same instant (already past zero) or found just after it by the next piece.
    assert sol.events["w2_seen"].time == pytest.approx(sol.t_reached, abs=1e-9)
    assert sol.events["w2_stop"].time == sol.t_reached


def test_terminal_event_leaves_later_save_times_unreached(stopped):
    before = TS <= np.log(4.0)
    np.testing.assert_allclose(stopped.obs["w"][before], w_flow(TS[before]), atol=1e-9)
    assert not np.isfinite(stopped.obs["w"][~before]).any()
    assert stopped.step_stats is not None
    assert stopped.step_stats.step_ends[-1] == pytest.approx(np.log(4.0), abs=1e-9)


def test_a_terminal_event_that_never_fires_changes_nothing():
    # The same program as `stopped` (same shapes and events) on data whose w2 falls from 3 to 1 only.
    X = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    w_star = np.array([2.0, 1.0])
    problem = make_problem(Linear(jnp.asarray([0.0, 3.0])), jnp.asarray(X), X @ w_star, squared_loss)
    sol = integrate(GradientFlow(), problem, TS, observe, event=[Event("w1_up", w1_minus_1), STOP], **TIGHT)
    assert sol.stopped_by is None and sol.result == "successful" and sol.t_reached == pytest.approx(TS[-1])
    assert not sol.events["w2_zero"].fired
    expected = w_star + (np.array([0.0, 3.0]) - w_star) * np.exp(-TS)[:, None]
    np.testing.assert_allclose(sol.obs["w"], expected, atol=1e-9)


def test_step_history_adds_up(stopped):
    st = stopped.step_stats
    assert st is not None
    assert st.accepted + st.rejected == stopped.num_steps
    assert st.step_ends.shape == (st.accepted,)
    assert np.all(st.step_sizes > 0)
    assert st.step_sizes.sum() == pytest.approx(stopped.t_reached - TS[0], rel=1e-12)
    assert st.h_min == pytest.approx(st.step_sizes.min())
    d = st.to_dict()
    assert d["accepted"] == st.accepted and d["rejected"] == st.rejected


def test_step_size_at_and_collapses_on_a_known_history():
    st = StepStats(0.0, np.array([0.5, 1.0, 1.001, 2.0]), accepted=4, rejected=1)
    np.testing.assert_allclose(st.step_sizes, [0.5, 0.5, 0.001, 0.999])
    np.testing.assert_allclose(
        st.step_size_at([0.0, 0.25, 0.5, 0.75, 1.0005, 1.5, 2.0]), [0.5] * 4 + [0.001] + [0.999] * 2
    )
    assert np.isnan(st.step_size_at(2.5))
    np.testing.assert_allclose(st.collapses(factor=100.0), [1.0])
    assert st.collapses(factor=1000.0).size == 0
    assert st.t_h_min == pytest.approx(1.0)
    np.testing.assert_allclose(st.h_lambda([0.25, 1.5], [2.0, 3.0]), [1.0, 2.997])


def test_tsit5_on_a_stiff_quadratic_is_held_at_its_stability_bound():
    lam = 1000.0
    X = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) * np.array([1.0, np.sqrt(lam)])
    problem = make_problem(Linear(jnp.asarray([0.0, 3.0])), jnp.asarray(X), X @ np.array([2.0, -1.0]), squared_loss)
    ts = np.linspace(0.0, 5.0, 6)
    sol = integrate(GradientFlow(), problem, ts, observe, rtol=1e-6, atol=1e-9)
    st = sol.step_stats
    assert sol.ok and st is not None
    late = st.step_ends > 2.0  # the fast mode e^{-1000 t} is long gone; accuracy would allow huge steps
    h_lambda = st.step_sizes[late] * lam
    assert 2.5 < np.median(h_lambda) < 4.0, np.median(h_lambda)
    np.testing.assert_allclose(st.h_lambda(ts[3:], np.full(3, lam)), st.step_size_at(ts[3:]) * lam)


# ---------------------------------------------------------------------------------------------
# Checkpoints: a flow split at a checkpoint and resumed from the file continues identically
# ---------------------------------------------------------------------------------------------

CONTINUE = [Event("w1_up", w1_minus_1), Event("w2_down", w2, "down")]  # at ln 2 (before) and ln 4 (after)


@pytest.mark.parametrize(
    "dynamics",
    [GradientFlow(), pytest.param(HeavyBallFlow(0.1, 0.5), marks=pytest.mark.slow)],  # heavy ball: -m slow
    ids=["gradient", "heavy-ball"],
)
def test_flow_resumed_from_a_checkpoint_file_continues_identically(toy, tmp_path, dynamics):
    tc = TS[5]  # 1.0: after the first event, before the second
    one = integrate(dynamics, toy, TS, observe, event=CONTINUE, checkpoint_times=[tc], **TIGHT)
    assert one.ok and set(one.checkpoints) == {tc}
    ck = one.checkpoints[tc]
    assert ck.kind == "flow" and ck.time == tc
    np.testing.assert_array_equal(np.asarray(ck.params.W), one.obs["w"][5])
    path = save_checkpoint(tmp_path / "flow.ckpt", ck, meta={"what": "test"})
    loaded = load_checkpoint(path, ck)
    rest = integrate(dynamics, toy, TS, observe, event=CONTINUE, start=loaded, **TIGHT)
    assert np.isnan(rest.obs["w"][:5]).all()  # before the checkpoint: not part of the resumed solve
    armed = [hit.time > tc for hit in one.events.values()]  # at the checkpoint, not the solver's later mask
    np.testing.assert_array_equal(np.asarray(ck.status["armed"]), armed)
    np.testing.assert_array_equal(rest.obs["w"][5:], one.obs["w"][5:])
    np.testing.assert_array_equal(np.asarray(rest.params.W), np.asarray(one.params.W))
    later = integrate(dynamics, toy, TS[5:], observe, event=CONTINUE, start=loaded, **TIGHT)  # other grid
    np.testing.assert_allclose(later.obs["w"], one.obs["w"][5:], rtol=1e-9)
    for name, hit in one.events.items():  # events before the checkpoint are disarmed in it
        assert hit.fired
        assert rest.events[name].time == hit.time if hit.time > tc else not rest.events[name].fired
    if isinstance(dynamics, GradientFlow):  # the checkpointed solve is the same flow, to tolerance
        np.testing.assert_allclose(one.obs["w"], w_flow(TS), atol=1e-9)


def test_flow_checkpoint_arguments_are_checked(toy, stopped):
    with pytest.raises(ValueError, match="not one of the save times"):
        integrate(GradientFlow(), toy, TS, observe, checkpoint_times=[0.3], **TIGHT)
    gd = Checkpoint(toy.params0, None, 3, 0.1, "gd")
    with pytest.raises(ValueError, match="'flow' checkpoint"):
        integrate(GradientFlow(), toy, TS, observe, start=gd, **TIGHT)
    flow_ck = Checkpoint(toy.params0, toy.params0, -1, 1.0, "flow", {"armed": jnp.ones(2, bool)})
    with pytest.raises(ValueError, match="must be one of the save times"):
        integrate(GradientFlow(), toy, TS + 0.01, observe, start=flow_ck, **TIGHT)
    with pytest.raises(ValueError, match="taken with 2 events"):
        integrate(GradientFlow(), toy, TS[5:], observe, start=flow_ck, **TIGHT)


def test_rkc_through_integrate_steps_past_the_explicit_stability_bound():
    """`solver="rkc"` in `integrate` on the stiff quadratic: steps far past Tsit5's h * lambda_max
    bound, the closed-form flow to the tolerance's order, and a terminal event located on its dense
    output."""
    lam = 1000.0
    X = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) * np.array([1.0, np.sqrt(lam)])
    w_star, w0 = np.array([2.0, -1.0]), np.array([0.0, 3.0])
    problem = make_problem(Linear(jnp.asarray(w0)), jnp.asarray(X), X @ w_star, squared_loss)
    ts = np.linspace(0.0, 5.0, 6)
    stop = Event("w1_up", w1_minus_1, terminal=True)  # w1(t) = 2 - 2 e^{-t} reaches 1 at ln 2
    sol = integrate(GradientFlow(), problem, ts, observe, solver="rkc", rtol=1e-6, atol=1e-9)
    st = sol.step_stats
    assert sol.ok and st is not None
    assert np.median(st.step_sizes[st.step_ends > 2.0] * lam) > 10.0
    exact = w_star + (w0 - w_star) * np.exp(-np.outer(ts, [1.0, lam]))
    np.testing.assert_allclose(sol.obs["w"], exact, atol=1e-4)
    hit = integrate(GradientFlow(), problem, ts, observe, event=stop, solver="rkc", rtol=1e-6, atol=1e-9)
    assert hit.stopped_by == "w1_up" and hit.t_reached == pytest.approx(np.log(2.0), abs=1e-4)
