"""Verdicts: the engine's framework (`flowsim.verdict`, `rel_gap`, `loglog_slope`, `format_table`) and the
co-occurrence system's claims (`flowsim.systems.cooccurrence.verdicts`) on synthetic trajectories where
the right answer is known."""

import numpy as np
import pytest

from flowsim import Verdict, format_table, loglog_slope, rel_gap, verdict
from flowsim.systems.cooccurrence import VERDICT_NEEDS
from flowsim.systems.cooccurrence.verdicts import PHASE2_DIRECTIONS, SCORE_KEYS, evaluate

T1 = 0.2


def _trajectory():
    """Observables that satisfy every claim: Phase 1 moves G, Phase 2 decays like 1/t."""
    t = np.concatenate([[0.0], np.geomspace(1e-3, 300, 80)])
    flow = {"t": t, "loss": 0.7 / (1 + 3 * t), "min_margin": np.log1p(t / T1) - np.log(2)}
    ramp = t / (1 + t)
    flow.update(
        G1=0.1 + 3 * np.minimum(t / T1, 1) + ramp,
        G2=-0.2 + 3 * np.minimum(t / T1, 1) + ramp,
        G3=-0.1 - 2 * np.minimum(t / T1, 1) - ramp,
        N=np.full_like(t, 10.0),
    )
    for k in SCORE_KEYS:
        flow[k] = np.full_like(t, 0.05)
    for k, sgn in PHASE2_DIRECTIONS.items():
        flow[k] = 0.05 + sgn * 1e-2 * np.log1p(t)
    flow.update(attn_disp=1e-4 * np.log1p(t), S2_over_S3=np.full_like(t, 1.1), R=1.5 + 0 * t)
    for k in (1, 2, 3, 4):
        flow[f"g_ratio_type{k}"] = np.full_like(t, 2.0)
    at_t1 = {k: np.interp(T1, t, v) for k, v in flow.items() if k != "t"}
    at_t1["min_margin"] = 0.0
    return flow, at_t1


def _status(verdicts):
    return {v.name: v.status for v in verdicts}


def test_all_claims_pass_on_a_conforming_trajectory():
    flow, at_t1 = _trajectory()
    sgd = {k: np.stack([v * 0.98, v * 1.02]) for k, v in flow.items() if k != "t"}
    st = _status(evaluate(flow, dict(flow), sgd, T1, at_t1))
    assert set(st.values()) == {"PASS"}, st


@pytest.mark.parametrize(
    "change, failing",
    [
        (lambda f, a: f.update(score_12=f["score_12"][::-1].copy()), "phase2.directions"),
        (lambda f, a: f.update(S2_over_S3=np.full_like(f["t"], 2.5)), "balance.S2_S3"),
        (lambda f, a: f.update(R=np.full_like(f["t"], 2.5)), "balance.R"),
        (lambda f, a: f.update(g_ratio_type4=np.full_like(f["t"], 50.0)), "balance.within_type"),
        (lambda f, a: f.update(loss=0.7 / (1 + 3 * f["t"]) ** 2), "phase2.loss_1_over_t"),
        (lambda f, a: a.update(attn_disp=0.2), "phase1.attention_frozen"),
        (lambda f, a: a.update(G3=0.5), "phase1.mlp_aligned"),
    ],
)
def test_each_claim_can_fail(change, failing):
    flow, at_t1 = _trajectory()
    change(flow, at_t1)
    st = _status(evaluate(flow, dict(flow), {}, T1, at_t1))
    assert st[failing] == "FAIL", st


def test_gd_far_from_flow_and_flow_outside_sgd_fail():
    flow, at_t1 = _trajectory()
    gd = dict(flow, loss=flow["loss"] * 1.2)
    sgd = {"loss": np.stack([flow["loss"] * 1.5, flow["loss"] * 2.0])}
    st = _status(evaluate(flow, gd, sgd, T1, at_t1))
    assert st["compare.flow_gd"] == "FAIL" and st["compare.flow_sgd"] == "FAIL"


def test_missing_phase1_end_fails_and_table_prints():
    flow, _ = _trajectory()
    vs = evaluate(flow, dict(flow), {}, None, None)
    assert _status(vs)["phase1.end"] == "FAIL"
    assert "phase1.end" in format_table(vs)


def test_loglog_slope_recovers_exponent():
    t = np.geomspace(1, 100, 30)
    slope, ci = loglog_slope(t, 3 * t**-1.0)
    assert slope == pytest.approx(-1.0, abs=1e-12) and ci < 1e-10


def test_loglog_slope_drops_bad_points_and_needs_two_times():
    t = np.array([0.0, 1.0, 10.0, 100.0, np.nan, 1000.0])
    y = np.array([1.0, 2.0, 0.2, 0.02, 5.0, -1.0])  # t = 0, t = nan and y < 0 are left out
    slope, _ = loglog_slope(t, y)
    assert slope == pytest.approx(-1.0, abs=1e-12)
    assert all(np.isnan(loglog_slope([1.0, 1.0, np.nan], [1.0, 2.0, 3.0])))
    assert all(np.isnan(loglog_slope([], [])))


def test_verdict_status_and_json_figures():
    v = verdict("x.claim", "a claim", {"a": np.float64(1.5), "b": np.int64(2), "c": np.arange(2)}, "a > 1", True)
    assert v.status == "PASS" and v.figures == {"a": 1.5, "b": 2, "c": [0, 1]}
    assert type(v.figures["a"]) is float and type(v.figures["b"]) is int
    assert Verdict(**v.to_dict()) == v
    assert verdict("y", "", {}, "", False).status == "FAIL" and verdict("z", "", {}, "", None).status == "INFO"
    table = format_table([v, verdict("longer.name", "", {"g": 1 / 3}, "", None)])
    assert table.splitlines()[0].startswith("x.claim      PASS  a=1.5, b=2") and "g=0.3333" in table


def test_rel_gap_pointwise_and_range_normalised():
    b = np.array([1.0, 10.0, 100.0])
    assert rel_gap(b * 1.1, b, pointwise=True) == pytest.approx(0.1)
    assert rel_gap(b + 1.0, b, pointwise=False) == pytest.approx(0.01)
    assert rel_gap([np.nan, 2.0], [1.0, 1.0], pointwise=True) == pytest.approx(1.0)


def test_every_evaluated_verdict_is_declared_with_its_pieces():
    flow, at_t1 = _trajectory()
    sgd = {k: np.stack([v * 0.98, v * 1.02]) for k, v in flow.items() if k != "t"}
    names = [v.name for v in evaluate(flow, dict(flow), sgd, T1, at_t1)]
    assert names == list(VERDICT_NEEDS)
    flow_only = [v.name for v in evaluate(flow, None, None, T1, at_t1)]
    assert flow_only == [n for n, needs in VERDICT_NEEDS.items() if needs == {"flow"}]
