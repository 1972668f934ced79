"""Verdicts on the paper's claims, computed from recorded observables (never from hard-coded values).

Each claim becomes a `Verdict` with the measured figures, the criterion in words and PASS/FAIL.
The criteria are fixed here and documented in README.md ("Verdicts and criteria"); they are read
from the paper's statements (spec section 4), not tuned to the default run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..._verdicts import Verdict, loglog_slope, rel_gap, verdict


def _v(name: str, claim: str, figures: dict[str, Any], criterion: str, passed: bool | None) -> Verdict:
    """A verdict of this system: every claim reads the runs over [0, T] (values at T, windows ending
    at T, gaps over the whole save grid), so each is declared `horizon=True` (a run ended early by a
    terminal stop event leaves it "not measured", see `flowsim._verdicts.judge_reached`)."""
    return verdict(name, claim, figures, criterion, passed, horizon=True)


Obs = Mapping[str, np.ndarray]
# Observables at one time (e.g. at T1): 0-d arrays, numpy scalars or Python numbers.
ObsAt = Mapping[str, np.ndarray | np.floating | float | int]

SCORE_KEYS = tuple(f"score_{a}{b}" for a in (1, 2, 3) for b in (1, 2, 3))
G_KEYS = ("G1", "G2", "G3")
# Thm 3.2 directions over Phase 2: +1 = increases, -1 = decreases.
PHASE2_DIRECTIONS = {"score_12": +1, "score_21": +1, "score_31": -1, "score_32": -1, "v_12": +1, "v_13": -1, "v_23": -1}
# Observables compared between flow and GD (scalar ones; per-sample arrays are summarised by loss).
# R and S2/S3 are compared on Phase 2 only, where the paper defines them: before T1, S1 - S2 can
# cross 0 and R is unbounded.
PHASE2_ONLY = ("S2_over_S3", "R")
COMPARED = (
    "loss",
    "min_margin",
    "G1",
    "G2",
    "G3",
    "N",
    "score_12",
    "score_21",
    "score_31",
    "score_32",
    "v_12",
    "v_13",
    "v_23",
    "S2_over_S3",
    "R",
    "attn_disp",
)


def _nanmax(x: np.ndarray) -> float:
    """Max over the finite-or-inf entries; nan (without numpy's warning) when there are none."""
    x = np.asarray(x, float)
    return float(np.max(x[~np.isnan(x)])) if np.any(~np.isnan(x)) else float("nan")


def _nanmin(x: np.ndarray) -> float:
    """Min over the non-nan entries; nan (without numpy's warning) when there are none."""
    x = np.asarray(x, float)
    return float(np.min(x[~np.isnan(x)])) if np.any(~np.isnan(x)) else float("nan")


# The accuracy to which the engine locates an event in time (flowsim._integrate's bisection tolerance,
# absolute and relative), by the precision of the solve.
EVENT_TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


def margin_tolerance(flow: Obs, t1: float) -> float:
    """How far below 0 the min margin can read at the located T1 and still be a crossing at T1: its
    rate there (the save-grid slope around T1) times the event's location tolerance in the run's
    precision, plus 10 eps for the margin's own rounding; at least 1e-6 (the float64 criterion).
    In float64 this is 1e-6; in float32 the event is located to 1e-5 in t, and a margin rising at
    rate r reads up to r 1e-5 (1 + T1) below 0 at the located time."""
    dtype = np.asarray(flow["min_margin"]).dtype
    t, m = np.asarray(flow["t"], float), np.asarray(flow["min_margin"], float)
    ok = np.isfinite(t) & np.isfinite(m)
    t, m = t[ok], m[ok]
    rate = 0.0
    if t.size >= 2:
        i = int(np.clip(np.searchsorted(t, t1), 1, t.size - 1))
        rate = abs(m[i] - m[i - 1]) / (t[i] - t[i - 1])
    dt = EVENT_TOL.get(dtype, 1e-12) * (1 + abs(t1))
    eps = float(np.finfo(dtype).eps) if dtype.kind == "f" else 0.0
    return float(max(1e-6, rate * dt + 10 * eps))


def phase1_verdicts(flow: Obs, t1: float | None, at_t1: ObsAt | None) -> list[Verdict]:
    """Thm 3.1: at T1 the MLP has aligned (G1, G2 > 0 > G3, moved by Theta(1)), every sample is
    classified correctly, the loss is still Theta(1), and attention has barely moved."""
    claim1 = "Phase 1 ends at a finite T1 (first time every margin y_i F(X_i) > 0)"
    if t1 is None or at_t1 is None:
        return [_v("phase1.end", claim1, {"T1": None}, "the min-margin event fires before T", False)]
    f0 = {k: float(v[0]) for k, v in flow.items() if np.ndim(v) == 1}
    fT = {k: float(v[-1]) for k, v in flow.items() if np.ndim(v) == 1}
    a = {k: float(v) for k, v in at_t1.items() if np.ndim(v) == 0}
    out = [_v("phase1.end", claim1, {"T1": t1}, "the min-margin event fires before T", True)]
    out.append(
        _v(
            "phase1.loss_order_one",
            "the loss at T1 is still Theta(1)",
            {"loss_0": f0["loss"], "loss_T1": a["loss"], "loss_T": fT["loss"]},
            "loss(T1) >= 0.1 loss(0) and loss(T1) >= 10 loss(T)",
            a["loss"] >= 0.1 * f0["loss"] and a["loss"] >= 10 * fT["loss"],
        )
    )
    tol = margin_tolerance(flow, t1)
    out.append(
        _v(
            "phase1.all_correct",
            "every sample is correctly classified at T1",
            {"min_margin_T1": a["min_margin"], "tolerance": tol},
            "min margin at T1 >= -max(1e-6, its change over the T1 event's location tolerance + 10 eps)",
            a["min_margin"] >= -tol,
        )
    )
    dG = {k: a[k] - f0[k] for k in G_KEYS}
    min_dG = min(abs(v) for v in dG.values())
    out.append(
        _v(
            "phase1.mlp_aligned",
            "by T1 the MLP moved by Theta(1) to G1, G2 > 0 > G3",
            {**{f"{k}_T1": a[k] for k in G_KEYS}, **{f"d{k}_T1": dG[k] for k in G_KEYS}},
            "G1(T1) > 0, G2(T1) > 0, G3(T1) < 0 and min |G_k(T1) - G_k(0)| >= 0.5",
            a["G1"] > 0 and a["G2"] > 0 and a["G3"] < 0 and min_dG >= 0.5,
        )
    )
    d_score = max(abs(a[k] - f0[k]) for k in SCORE_KEYS)
    out.append(
        _v(
            "phase1.attention_frozen",
            "attention barely moves in Phase 1",
            {"max_dp_T1": a["attn_disp"], "max_dscore_T1": d_score, "min_dG_T1": min_dG},
            "max |p(T1) - p(0)| <= 0.01 and max |d score(T1)| <= 0.1 min |dG(T1)|",
            a["attn_disp"] <= 0.01 and d_score <= 0.1 * min_dG,
        )
    )

    def frac(keys: tuple[str, ...]) -> float:
        num = np.linalg.norm([a[k] - f0[k] for k in keys])
        den = np.linalg.norm([fT[k] - f0[k] for k in keys])
        return float(num / den) if den > 0 else float("nan")

    fr = {
        "G": frac(G_KEYS),
        "scores": frac(SCORE_KEYS),
        "p": a["attn_disp"] / fT["attn_disp"] if fT["attn_disp"] > 0 else float("nan"),
    }
    out.append(
        _v(
            "phase1.change_by_T1",
            "Phase 1 moves the MLP, Phase 2 moves attention",
            {f"fraction_{k}_by_T1": v for k, v in fr.items()},
            "fraction of the [0, T] change of the attention scores done by T1 < that of G",
            fr["scores"] < fr["G"],
        )
    )
    return out


def phase2_verdicts(flow: Obs, t1: float | None, at_t1: ObsAt | None) -> list[Verdict]:
    """Thm 3.2 directions, Thm F.8's 1/t loss decay and Lemmas 4.4/4.5 (automatic balancing)."""
    if t1 is None or at_t1 is None:
        return [_v("phase2", "Phase 2 claims", {}, "needs the end of Phase 1", False)]
    t = flow["t"]
    ph2 = t > t1
    fT = {k: float(v[-1]) for k, v in flow.items() if np.ndim(v) == 1}
    d = {k: fT[k] - float(at_t1[k]) for k in PHASE2_DIRECTIONS}
    out = [
        _v(
            "phase2.directions",
            "s12, s21 increase; s31, s32 decrease; v12 increases; v13, v23 decrease (over [T1, T])",
            {f"d{k}": v for k, v in d.items()},
            "sign of each change over [T1, T] as stated",
            all(np.sign(d[k]) == s for k, s in PHASE2_DIRECTIONS.items()),
        )
    ]
    out.append(
        _v(
            "phase2.mlp_signs",
            "G1, G2 > 0 > G3 at T",
            {k: fT[k] for k in G_KEYS},
            "G1(T) > 0, G2(T) > 0, G3(T) < 0",
            fT["G1"] > 0 and fT["G2"] > 0 and fT["G3"] < 0,
        )
    )
    T = float(t[-1])
    window = (t >= T / 10) & ph2
    if window.sum() >= 3:
        slope, ci = loglog_slope(t[window] - t1, flow["loss"][window])
    else:
        slope, ci = float("nan"), float("nan")
    out.append(
        _v(
            "phase2.loss_1_over_t",
            "the loss decays like 1/t in Phase 2",
            {"slope": slope, "ci95": ci, "fit_t_from": T / 10, "fit_t_to": T},
            "log-log slope of loss vs t - T1 on [T/10, T] within 1 +- 0.25",
            abs(slope + 1) <= 0.25,
        )
    )
    r23 = flow["S2_over_S3"][ph2]
    worst = _nanmax(np.maximum(r23, 1 / r23))
    out.append(
        _v(
            "balance.S2_S3",
            "|S2 - S3| / min(S2, S3) stays small (Lem. 4.4)",
            {"worst_max_ratio": worst, "S2_over_S3_T": fT["S2_over_S3"]},
            "1/2 <= S2/S3 <= 2 at every Phase-2 save point",
            worst <= 2,
        )
    )
    R = flow["R"][ph2]
    inside = float(np.mean((R > 1) & (R < 2)))
    out.append(
        _v(
            "balance.R",
            "R(t) = (S2+S3+S4-S1)/(S1-S2) stays in [1, 3] and contracts into (1, 2) (Lem. 4.5)",
            {"fraction_in_(1,2)": inside, "R_min": _nanmin(R), "R_max": _nanmax(R), "R_T": fT["R"]},
            "1 <= R(t) <= 3 on Phase 2 and 1 < R(T) < 2",
            bool(_nanmin(R) >= 1 and _nanmax(R) <= 3 and 1 < fT["R"] < 2),
        )
    )
    ratios = {k: _nanmax(flow[f"g_ratio_type{k}"][ph2]) for k in (1, 2, 3, 4)}
    out.append(
        _v(
            "balance.within_type",
            "per-sample losses of a type fall at the same rate: max g_i/g_j = O(1) (Cor. F.2)",
            {f"max_g_ratio_type{k}": v for k, v in ratios.items()},
            "max over Phase 2 and types of g_i/g_j <= 10",
            max(ratios.values()) <= 10,
        )
    )
    return out


def _gd_verdict(gaps: dict[str, float]) -> Verdict:
    worst = max(gaps, key=lambda k: gaps[k])
    loss = gaps.get("loss", float("nan"))
    return _v(
        "compare.flow_gd",
        "full-batch GD tracks the gradient flow (error O(lr))",
        {
            "max_rel_gap_loss": loss,
            "worst_observable": worst,
            "worst_gap": gaps[worst],
            **{f"gap_{k}": v for k, v in gaps.items()},
        },
        "max pointwise relative loss gap <= 0.05 and every observable's gap (relative to its range; "
        "R, S2/S3 on Phase 2) <= 0.05",
        loss <= 0.05 and gaps[worst] <= 0.05,
    )


def comparison_verdicts(flow: Obs, gd: Obs | None, sgd: Obs | None, t1: float | None = None) -> list[Verdict]:
    """The discrete runs against the flow at matching times t = k lr (a missing run is skipped)."""
    gd = gd or {}
    ph2 = flow["t"] > (t1 if t1 is not None else -np.inf)
    gaps = {}
    for k in COMPARED:
        if k in gd and k in flow:
            sel = ph2 if k in PHASE2_ONLY else slice(None)
            gaps[k] = rel_gap(gd[k][sel], flow[k][sel], pointwise=(k == "loss"))
    out = []
    if gaps:
        out.append(_gd_verdict(gaps))
    if sgd:
        lo, hi = np.nanmin(sgd["loss"], 0), np.nanmax(sgd["loss"], 0)
        inside = float(np.mean((flow["loss"] >= lo) & (flow["loss"] <= hi)))
        mean_gap = rel_gap(np.nanmean(sgd["loss"], 0), flow["loss"], pointwise=True)
        out.append(
            _v(
                "compare.flow_sgd",
                "minibatch SGD (same lr, steps) follows the flow within its seed spread",
                {
                    "fraction_inside_sgd_envelope": inside,
                    "max_rel_gap_loss_sgd_mean": mean_gap,
                    "seeds": int(sgd["loss"].shape[0]),
                },
                "flow loss inside the [min, max] SGD envelope at >= 90% of save times",
                inside >= 0.9,
            )
        )
    return out


def evaluate(flow: Obs, gd: Obs | None, sgd: Obs | None, t1: float | None, at_t1: ObsAt | None) -> list[Verdict]:
    """All verdicts of a run, in the order of the README table (comparisons with a run that is
    missing, None or empty, are skipped)."""
    return phase1_verdicts(flow, t1, at_t1) + phase2_verdicts(flow, t1, at_t1) + comparison_verdicts(flow, gd, sgd, t1)


_FLOW, _GD, _SGD = frozenset({"flow"}), frozenset({"flow", "gd"}), frozenset({"flow", "gd", "sgd"})
VERDICT_NEEDS: dict[str, frozenset[str]] = {
    **dict.fromkeys(
        (
            "phase1.end",
            "phase1.loss_order_one",
            "phase1.all_correct",
            "phase1.mlp_aligned",
            "phase1.attention_frozen",
            "phase1.change_by_T1",
            "phase2.directions",
            "phase2.mlp_signs",
            "phase2.loss_1_over_t",
            "balance.S2_S3",
            "balance.R",
            "balance.within_type",
        ),
        _FLOW,
    ),
    "compare.flow_gd": _GD,
    "compare.flow_sgd": _SGD,
}
"""Every verdict name with the runs it is computed from."""
