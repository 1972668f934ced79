"""The diffrax integration (`flowsim.integrate`) on the co-occurrence system: accuracy, the Phase-1
event, failures, custom dynamics, argument checks."""

import jax
import numpy as np
import pytest

from flowsim import AbstractFlow, Event, FlowError, GradientFlow, integrate
from flowsim.systems.cooccurrence import PHASE1_END, PHASE1_EVENT, min_margin

TS = np.concatenate([[0.0], np.geomspace(1e-3, 10.0, 25)])


@pytest.fixture(scope="module")
def tight(small_setup):
    """Dopri8 at rtol 1e-12: the reference solution."""
    return integrate(
        GradientFlow(), small_setup.problem, TS, small_setup.observer, solver="dopri8", rtol=1e-12, atol=1e-14
    )


@pytest.fixture(scope="module")
def default(small_setup):
    """The default solve: Tsit5 + PID at rtol 1e-6, with the system's Phase-1 event and the same
    condition armed downwards (min_margin only ever rises through 0 here: that one never fires)."""
    return integrate(
        GradientFlow(),
        small_setup.problem,
        TS,
        small_setup.observer,
        event=[PHASE1_EVENT, Event("down", min_margin, "down")],
    )


def test_default_tolerance_matches_tight_reference(default, tight):
    assert default.ok and tight.ok
    for k in ("loss", "G1", "G3", "score_12", "score_31", "v_12", "R"):
        scale = np.max(np.abs(tight.obs[k]))
        assert np.max(np.abs(default.obs[k] - tight.obs[k])) <= 1e-4 * scale, k
    rel = np.abs(default.obs["loss"] - tight.obs["loss"]) / tight.obs["loss"]
    assert rel.max() <= 1e-5


def test_system_declares_the_phase1_event(small_setup):
    assert small_setup.events == (PHASE1_EVENT,)
    assert PHASE1_EVENT.name == PHASE1_END == "phase1_end"
    assert PHASE1_EVENT.direction == "up" and PHASE1_EVENT.label == "end of Phase 1"
    assert PHASE1_EVENT.condition is min_margin


def test_event_locates_first_zero_of_min_margin(default, tight):
    assert list(default.events) == [PHASE1_END, "down"]
    hit = default.events[PHASE1_END]
    assert hit.fired and hit.label == "end of Phase 1"
    t1 = hit.time
    assert 0 < t1 < TS[-1]
    # the compat properties read the first declared event
    assert default.event_time == t1 and default.event_obs is hit.obs and default.event_params is hit.params
    assert abs(hit.obs["min_margin"]) <= 1e-8
    before, after = TS <= t1, TS > t1
    assert np.all(tight.obs["min_margin"][before] < 1e-8)
    assert tight.obs["min_margin"][after][0] > 0
    # continuing past the event changes nothing: the merged trajectory equals the plain solve
    np.testing.assert_allclose(default.obs["loss"], tight.obs["loss"], rtol=1e-5)
    assert hit.obs["loss"] == pytest.approx(np.interp(t1, TS, tight.obs["loss"]), rel=1e-2)


def test_an_event_whose_direction_never_occurs_does_not_fire(default):
    down = default.events["down"]
    assert not down.fired and np.isnan(down.time) and down.obs is None and down.params is None


def test_failure_names_diffrax_result_and_keeps_partial_trajectory(small_setup):
    sol = integrate(GradientFlow(), small_setup.problem, TS, small_setup.observer, max_steps=3)
    assert sol.result == "max_steps_reached" and not sol.ok
    assert np.isfinite(sol.obs["loss"][0]) and not np.all(np.isfinite(sol.obs["loss"]))
    assert 0 < sol.t_reached < TS[-1]
    with pytest.raises(FlowError, match="max_steps_reached") as info:
        sol.check()
    assert info.value.solution is sol


class _Rescaled(AbstractFlow):
    """A user-defined dynamics: gradient flow run at speed c (so theta_c(t) = theta_1(c t))."""

    c: float

    def vector_field(self, t, params, problem):
        return jax.tree.map(lambda g: -self.c * g, jax.grad(problem.loss)(params))


def test_custom_dynamics_plug_into_the_same_solver(small_setup, tight):
    sol = integrate(
        _Rescaled(2.0), small_setup.problem, TS / 2, small_setup.observer, solver="dopri8", rtol=1e-12, atol=1e-14
    )
    np.testing.assert_allclose(sol.obs["loss"], tight.obs["loss"], rtol=1e-8)


def test_bad_arguments(small_setup):
    p, o = small_setup.problem, small_setup.observer
    with pytest.raises(ValueError, match="strictly increasing"):
        integrate(GradientFlow(), p, np.array([0.0, 1.0, 0.5]), o)
    with pytest.raises(TypeError, match="floating"):
        integrate(GradientFlow(), p, np.array([0, 1, 2]), o)
    with pytest.raises(ValueError, match="solver must be one of"):
        integrate(GradientFlow(), p, TS, o, solver="rk4")
    with pytest.raises(ValueError, match="dt0"):
        integrate(GradientFlow(), p, TS, o, solver="euler")
    with pytest.raises(ValueError, match="unique"):
        integrate(GradientFlow(), p, TS, o, event=[PHASE1_EVENT, PHASE1_EVENT])
    with pytest.raises(TypeError, match="real scalar"):
        integrate(GradientFlow(), p, TS, o, event=Event("vec", lambda t, q, pr: pr.outputs(q)))
