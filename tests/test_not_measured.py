"""A run that did not produce the data a claim reads is never judged: `flowsim._verdicts.judge_reached`,
applied to every system's verdicts by `RunRecord.verdicts` (and so by `summary.json` and the sweep's
verdict measures). Real solves stopped by `max_steps` and by a tiny `rtol` on the toy system; a
`stop_loss` stop against `horizon` verdicts on synthetic co-occurrence records."""

import dataclasses

import numpy as np
import pytest

import flowsim
from flowsim import DiscreteSolution, EventHit, FlowSolution, RunRecord
from flowsim._measures import measures_of
from flowsim._verdicts import judge_reached, verdict

from . import toy_system

TOY = toy_system.SYSTEM.name


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    flowsim.register(toy_system.SYSTEM, replace=True)
    yield
    from flowsim._registry import unregister

    unregister(TOY)


def _toy(**kw) -> flowsim.Config:
    return flowsim.Config(TOY, **{**toy_system.SYSTEM.smoke, **kw})


def test_a_flow_stopped_early_is_never_judged():
    """`max_steps=5`, and a tight `rtol` (the same budget runs out sooner): the toy's raw verdicts
    judge the partial flow (e.g. the GD gap over the reached times), the engine's are all "not
    measured", in `summary.json` too; the sweep's verdict measures read null. (One compiled flow:
    the tolerances are traced.)"""
    reached = []
    for limit in ({"max_steps": 5}, {"max_steps": 5, "rtol": 1e-15}):
        s = flowsim.setup(_toy(**limit))
        flow, gd = flowsim.run_flow(s), flowsim.run_gd(s)
        result = flowsim.ExperimentResult(s, flow, gd, None, {}, {})
        assert flow is not None and not flow.ok and flow.result == "max_steps_reached"
        reached.append(flow.t_reached)
        record = result.record
        raw = toy_system.SYSTEM.verdicts(record)
        assert {v.status for v in raw} & {"PASS", "FAIL"}  # what the rule must catch
        judged = record.verdicts
        assert set(judged) == {v.name for v in raw}
        for v in judged.values():
            assert v.status == "INFO" and v.figures["measured"] is False, v
            assert v.criterion.startswith("not measured: the flow stopped early (diffrax result 'max_steps_reached'")
        summary = flowsim.summarize(result)
        assert {v["status"] for v in summary["verdicts"]} == {"INFO"}
        table = measures_of(toy_system.SYSTEM)
        assert all(table[name].fn(record) is None for name in judged)
    assert reached[1] < reached[0] < 5.0  # T = 100 steps x lr 0.05


# --- synthetic records: the rule itself, and the co-occurrence system's horizon claims ---------------

S = 12
TS = np.linspace(0.0, 11.0, S)


def _flow(t_reached: float, result: str = "successful", stopped_by: str | None = None, obs=None) -> FlowSolution:
    reached = TS <= t_reached
    base = obs or {"loss": np.exp(-TS)}
    obs = {k: np.where(reached, v, np.inf) for k, v in base.items()}
    return FlowSolution(TS, obs, None, {}, result, 10, t_reached, stopped_by)


def _gd(stop_step: int = -1) -> DiscreteSolution:
    loss = np.exp(-TS)
    if stop_step >= 0:
        loss = np.where(np.arange(S) <= stop_step, loss, np.nan)
    return DiscreteSolution(np.arange(S), TS, {"loss": loss}, None, np.asarray(-1), stop_step=np.asarray(stop_step))


NEEDS = {"a": frozenset({"flow"}), "b": frozenset({"flow", "gd"}), "c": frozenset({"gd"})}
CONFIG = flowsim.Config()


def _verdicts(horizon: bool) -> list[flowsim.Verdict]:
    return [verdict(n, "claim", {"x": 1.0}, "x = 1", True, horizon=horizon) for n in NEEDS]


def _statuses(flow, gd, horizon: bool) -> dict[str, str]:
    return {v.name: v.status for v in judge_reached(_verdicts(horizon), NEEDS, RunRecord(CONFIG, flow, gd, None))}


def test_rule_on_synthetic_runs():
    done = _flow(11.0)
    assert _statuses(done, _gd(), True) == {"a": "PASS", "b": "PASS", "c": "PASS"}
    # max_steps / dt_min: every verdict that needs the flow, horizon or not
    for result in ("max_steps_reached", "dt_min_reached"):
        assert _statuses(_flow(3.0, result), _gd(), False) == {"a": "INFO", "b": "INFO", "c": "PASS"}
    # a non-finite loss at a time the flow reached (e.g. a fixed-step solve that blew up)
    nan_loss = _flow(11.0, obs={"loss": np.where(TS > 5, np.nan, 1.0)})
    assert _statuses(nan_loss, _gd(), False) == {"a": "INFO", "b": "INFO", "c": "PASS"}
    # a terminal stop: only horizon verdicts are not measured, and only for the stopped pieces
    stop = _flow(4.5, "event_occurred", "target_loss")
    assert stop.ok
    assert _statuses(stop, _gd(), False) == {"a": "PASS", "b": "PASS", "c": "PASS"}
    assert _statuses(stop, _gd(), True) == {"a": "INFO", "b": "INFO", "c": "PASS"}
    assert _statuses(done, _gd(stop_step=4), True) == {"a": "PASS", "b": "INFO", "c": "INFO"}
    assert _statuses(done, _gd(stop_step=4), False) == {"a": "PASS", "b": "PASS", "c": "PASS"}
    v = judge_reached(_verdicts(True), NEEDS, RunRecord(CONFIG, stop, _gd(), None))[0]
    assert (
        v.criterion
        == "not measured: the flow was stopped by 'target_loss' at t = 4.5, before T = 11 (criterion: x = 1)"
    )
    assert v.figures == {"x": 1.0, "measured": False} and v.horizon
    assert flowsim.Verdict(**v.to_dict()) == v  # summary.json round trip (the CLI reads verdicts back)


def _cooccurrence_obs() -> dict[str, np.ndarray]:
    """Smooth, finite observables with every key the co-occurrence verdicts read."""
    from flowsim.systems.cooccurrence.verdicts import COMPARED, SCORE_KEYS

    keys = (*COMPARED, *SCORE_KEYS, *(f"g_ratio_type{k}" for k in (1, 2, 3, 4)))
    return {k: 1.0 + 0.1 * np.sin(TS + i) for i, k in enumerate(keys)}


def test_cooccurrence_claims_after_a_terminal_stop_are_not_measured():
    """A co-occurrence flow and GD stopped by stop_loss: the later save times are non-finite (as the
    engine records them), which the system's own verdicts read as failures; the engine's are "not
    measured". Reaching T, the same observables are judged."""
    system = flowsim.get_system("cooccurrence")
    obs = _cooccurrence_obs()
    phase1 = {"phase1_end": EventHit(2.0, {k: np.asarray(v[2]) for k, v in obs.items()}, None, "T1")}
    gd_obs = {k: v.copy() for k, v in obs.items()}
    gd = DiscreteSolution(np.arange(S), TS, gd_obs, None, np.asarray(-1))
    full = dataclasses.replace(_flow(11.0, obs=obs), events=phase1)
    rec_full = RunRecord(CONFIG, full, gd, None)
    assert all(v.horizon for v in system.verdicts(rec_full))
    assert {v.status for v in rec_full.verdicts.values()} <= {"PASS", "FAIL"}
    stopped = dataclasses.replace(_flow(6.0, "event_occurred", "target_loss", obs=obs), events=phase1)
    gd_stopped = dataclasses.replace(gd, stop_step=np.asarray(6))
    rec = RunRecord(CONFIG, stopped, gd_stopped, None)
    raw = system.verdicts(rec)
    assert any(v.status == "FAIL" for v in raw)  # NaN/inf at T judged as a failure without the rule
    judged = rec.verdicts
    assert set(judged) == {v.name for v in raw}
    assert all(v.status == "INFO" and v.criterion.startswith("not measured") for v in judged.values())
