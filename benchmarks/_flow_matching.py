"""Accuracy of flow and GD runs against a Dopri8 reference, their cost in gradient evaluations,
and the accuracy-matched comparison of `bench_flow.py` (see its docstring for the method).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from itertools import pairwise
from typing import Any, final

import jax
import jax.numpy as jnp
import numpy as np
from _bench_timing import Timing, ratios

from flowsim import (
    DiscreteSolution,
    FlowSolution,
    GradientFlow,
    Setup,
    gradient_descent,
    integrate,
    run_flow,
    save_steps,
)
from flowsim._integrate import SOLVERS

OBSERVABLES = ("G1", "G2", "G3", "score_12", "score_31")
GD_LADDER = (0.08, 0.04, 0.02, 0.01, 0.005, 0.0025)  # GD step sizes whose errors are measured
FIT_MAX_LR = 0.01  # the power law is fitted on the regular ladder points up to this lr
MATCH_RTOLS = (1e-6, 1e-4)  # Tsit5 + event runs whose final-loss error GD is matched to
RTOL_SCAN = tuple(10.0 ** (-6 + k / 4) for k in range(17))  # 1e-6 ... 1e-2, quarter decades
REF_POINTS = 200  # save times of every reference solve (padded)
STEP_CAP = 5  # GD runs of at most STEP_CAP x config.steps steps are computed, longer ones extrapolated
MATCH_ERRORS = (("final-loss rel err", 2), ("loss rel err, max over grid", 0))  # (name, index in `errors`)


# ----------------------------------------------------------------------------- cost


def evals_per_step(solver: str) -> tuple[int, bool]:
    """(new vector-field evaluations per attempted step, FSAL?) for a solver name in `SOLVERS`."""
    tableau = getattr(SOLVERS[solver](), "tableau", None)
    if tableau is None:  # Euler: one evaluation per step
        return 1, False
    return len(tableau.c) + 1 - int(tableau.fsal), bool(tableau.fsal)


def flow_grad_evals(sol: FlowSolution, solver: str = "tsit5") -> int:
    """Gradient evaluations of a flow solve from diffrax's step count (a lower bound, exact up to
    rejected first steps; see the docstring of bench_flow.py)."""
    per_step, fsal = evals_per_step(solver)
    pieces = 1 if np.isnan(sol.event_time) else 2
    return per_step * sol.num_steps + int(fsal) * pieces


def flow_key(rtol: float, event: bool = True, solver: str = "tsit5") -> str:
    name = "Tsit5" if solver == "tsit5" else f'solver="{solver}"'
    return f"flow {name} rtol {rtol:g}" + (" + Phase-1 event" if event else ", no event")


def start_flow(s: Setup, rtol: float, event: bool = True, solver: str = "tsit5") -> Timing:
    """Compile and run the flow as `flowsim run` does (the system's event unless `event` is False)
    with `solver` at `rtol` (atol = rtol / 1000)."""
    print(f"  {flow_key(rtol, event, solver)} ...", flush=True)
    kw: dict[str, Any] = dict(solver=solver, rtol=rtol, atol=rtol * 1e-3, **({} if event else {"event": None}))
    t = Timing.start(run_flow, s, **kw)
    t.result.check()
    return t


# ----------------------------------------------------------------------------- accuracy


def errors(obs: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> tuple[float, float, float]:
    """(max relative loss error over save times, max normalized error over `OBSERVABLES`,
    relative error of the final loss)."""
    rel = np.abs(obs["loss"] - ref["loss"]) / np.abs(ref["loss"])
    observable = max(float(np.max(np.abs(obs[k] - ref[k])) / np.max(np.abs(ref[k]))) for k in OBSERVABLES)
    return float(np.max(rel)), observable, float(rel[-1])


def pad_times(times: np.ndarray, size: int) -> np.ndarray:
    """`times` plus midpoints of the largest gaps until there are `size` (sorted, strictly increasing)."""
    out = np.unique(times)
    while len(out) < size:
        i = int(np.argmax(np.diff(out)))
        out = np.insert(out, i + 1, 0.5 * (out[i] + out[i + 1]))
    return out


def reference(s: Setup, times: np.ndarray) -> tuple[Timing, dict[str, np.ndarray]]:
    """Dopri8 rtol 1e-12 from the setup's start, no event; (its timing, observables at `times`)."""
    dtype = jax.tree.leaves(s.problem.params0)[0].dtype
    padded = pad_times(times, max(REF_POINTS, len(times)))
    kw: dict[str, Any] = dict(solver="dopri8", rtol=1e-12, atol=1e-14, max_steps=s.config.max_steps)
    t = Timing.start(integrate, GradientFlow(), s.problem, jnp.asarray(padded, dtype), s.observer, **kw)
    at = np.searchsorted(padded, times)
    return t, {k: np.asarray(v)[at] for k, v in t.result.check().obs.items()}


# ----------------------------------------------------------------------------- accuracy-matched GD


@final
@dataclasses.dataclass(frozen=True)
class GDPoint:
    """GD over the horizon at step size `lr` (= T / steps): errors (loss, observable, final loss)."""

    lr: float
    steps: int
    errs: tuple[float, float, float]
    diverged: bool
    timing: Timing


def gd_point(s: Setup, lr: float) -> GDPoint:
    """Run (compile + one call) GD at about `lr` over the config's horizon and compare it with the reference."""
    c = s.config
    steps = max(1, round(c.t_final / lr))
    lr = c.t_final / steps
    grid = save_steps(steps, c.n_save_log, c.n_save_lin)
    print(f"  GD lr {lr:.4g} ({steps} steps) ...", flush=True)
    t = Timing.start(gradient_descent, s.problem, lr, grid, s.observer)
    sol: DiscreteSolution = t.result
    _, ref = reference(s, grid * lr)
    return GDPoint(lr, steps, errors(sol.obs, ref), bool(np.any(sol.diverged_step >= 0)), t)


def regular(points: Sequence[GDPoint]) -> list[GDPoint]:
    """The points from the smallest lr up while the final-loss error grows with lr and none diverged."""
    pts = sorted(points, key=lambda p: p.lr)
    out = [pts[0]]
    for p in pts[1:]:
        if p.diverged or p.errs[2] <= out[-1].errs[2]:
            break
        out.append(p)
    return out


def fit_power(points: Sequence[GDPoint]) -> tuple[float, float, list[GDPoint]]:
    """(C, p, the points fitted) of final-loss error ~ C lr^p, least squares in log-log over the
    regular points up to `FIT_MAX_LR` (at least the two smallest)."""
    reg = regular(points)
    pts = [q for q in reg if q.lr <= FIT_MAX_LR * (1 + 1e-9)]
    pts = pts if len(pts) >= 2 else reg[:2]
    p, log_c = np.polyfit(np.log([q.lr for q in pts]), np.log([q.errs[2] for q in pts]), 1)
    return float(np.exp(log_c)), float(p), pts


def lr_for(target: float, points: Sequence[GDPoint]) -> float | None:
    """The lr whose final-loss error is `target`, interpolated log-log between the regular points
    around it, or extrapolated below them with the fit; None if above every regular point."""
    reg = regular(points)
    for a, b in pairwise(reg):
        if a.errs[2] <= target <= b.errs[2]:
            w = np.log(target / a.errs[2]) / np.log(b.errs[2] / a.errs[2])
            return float(np.exp(np.log(a.lr) + w * np.log(b.lr / a.lr)))
    if target >= reg[-1].errs[2]:
        return None
    c, p, _ = fit_power(reg)
    return (target / c) ** (1 / p)


def match_gd(s: Setup, target: float, points: list[GDPoint]) -> tuple[float | None, GDPoint | None]:
    """(lr with final-loss error `target`, its computed GD run or None when beyond `STEP_CAP`);
    computed runs are appended to `points`. (None, None): no regular lr reaches `target`."""
    for _ in range(2):
        lr = lr_for(target, points)
        if lr is None or s.config.t_final / lr > STEP_CAP * s.config.steps:
            return lr, None
        points.append(gd_point(s, lr))
        if abs(np.log(points[-1].errs[2] / target)) < np.log(1.1):
            break
    best = min(points, key=lambda p: abs(np.log(p.errs[2] / target)))
    return best.lr, best


def first_rtol(scan: Sequence[tuple[float, tuple[float, float, float]]], target: float, which: int) -> float | None:
    """The largest scanned rtol below which every error `which` is at most `target` (None if none)."""
    best = None
    for rtol, errs in scan:
        if errs[which] > target:
            break
        best = rtol
    return best


# ----------------------------------------------------------------------------- the comparison


@final
@dataclasses.dataclass(frozen=True)
class Matched:
    """The accuracy-matched comparison: `ladder` every computed GD run; `gd` the one at the config's
    lr; `gd_for` flow rtol -> (lr with that flow's final-loss error or None, its GD run or None when
    only extrapolated); `flow_for` error name in `MATCH_ERRORS` -> (largest scanned rtol whose
    error is at most GD's or None, that flow's timing)."""

    ladder: list[GDPoint]
    gd: GDPoint
    gd_for: dict[float, tuple[float | None, GDPoint | None]]
    flow_for: dict[str, tuple[float | None, Timing | None]]

    def gd_timings(self) -> list[Timing]:
        """The GD runs to time: at the config's lr and every matched one (each once)."""
        pts = [self.gd, *(p for _, p in self.gd_for.values() if p is not None)]
        return list({id(p): p.timing for p in pts}.values())

    def flow_timings(self) -> list[Timing]:
        return [t for _, t in self.flow_for.values() if t is not None]


def accuracy_matched(s: Setup, flows: dict[str, Timing], ref_obs: dict[str, np.ndarray]) -> Matched:
    """Run the GD ladder, match GD to the flows in `MATCH_RTOLS` and the flow to GD at the config's lr."""
    print("GD ladder and accuracy-matched GD ...", flush=True)
    ladder = [gd_point(s, lr) for lr in GD_LADDER]
    gd = next(p for p in ladder if p.steps == s.config.steps)
    gd_for = {r: match_gd(s, errors(flows[flow_key(r)].result.obs, ref_obs)[2], ladder) for r in MATCH_RTOLS}
    print("flow rtol scan ...", flush=True)
    scan = [(r, errors(run_flow(s, rtol=r, atol=r * 1e-3).check().obs, ref_obs)) for r in RTOL_SCAN]
    flow_for: dict[str, tuple[float | None, Timing | None]] = {}
    for name, which in MATCH_ERRORS:
        rtol = first_rtol(scan, gd.errs[which], which)
        flow_for[name] = (rtol, None if rtol is None else start_flow(s, rtol))
    return Matched(ladder, gd, gd_for, flow_for)


def fmt(x: float | None, spec: str = ".2e") -> str:
    return "—" if x is None or not np.isfinite(x) else format(x, spec)


def ladder_table(m: Matched) -> str:
    """Every computed GD run of the accuracy-matched search, with the fit of its regular part."""
    lines = [
        "| GD lr | steps | final-loss rel err | loss rel err (max over grid) | observable err | diverged |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for p in sorted(m.ladder, key=lambda q: q.lr):
        e = p.errs
        lines.append(
            f"| {p.lr:.4g} | {p.steps} | {e[2]:.2e} | {e[0]:.2e} | {e[1]:.2e} | {'yes' if p.diverged else 'no'} |"
        )
    reg = regular(m.ladder)
    c, p, fitted = fit_power(m.ladder)
    return "\n".join(lines) + (
        f"\n\nRegular part (final-loss error growing with lr, no divergence): lr {reg[0].lr:.4g} to "
        f"{reg[-1].lr:.4g}. Fit on lr {fitted[0].lr:.4g} to {fitted[-1].lr:.4g}: final-loss rel err ≈ {c:.3g} · "
        f"lr^{p:.2f}. GD's measured cost per step (lr {m.gd.lr:g} run): {m.gd.timing.run_s / m.gd.steps * 1e3:.3f} ms."
    )


def gd_for_table(m: Matched, flows: dict[str, Timing], ref_obs: dict[str, np.ndarray]) -> str:
    """GD's lr at each flow's final-loss error, with its measured error and the wall-time ratio."""
    step_s = m.gd.timing.run_s / m.gd.steps
    lines = [
        "| flow | flow final-loss err | flow wall s | GD lr with that error | GD steps | GD final-loss err "
        "(measured) | GD loss err max over grid | GD wall s | GD wall / flow wall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rtol, (lr, pt) in m.gd_for.items():
        f = flows[flow_key(rtol)]
        head = f"| {flow_key(rtol)} | {errors(f.result.obs, ref_obs)[2]:.2e} | {f.run_s:.3f} "
        if lr is None:
            lines.append(head + "| none: GD's error stops growing with lr below it | — | — | — | — | — |")
        elif pt is None:
            steps = m.gd.steps * m.gd.lr / lr
            lines.append(
                head + f"| ≈ {lr:.2g} (extrapolated, not run) | ≈ {steps:.2g} | — | — "
                f"| ≈ {steps * step_s:.3g} (est.) | ≈ {steps * step_s / f.run_s:.3g}x (est.) |"
            )
        else:
            e, t = pt.errs, pt.timing
            lines.append(
                head + f"| {pt.lr:.4g} | {pt.steps} | {e[2]:.2e} | {e[0]:.2e} | {t.run_s:.3f} | {ratios(t, f)} |"
            )
    return "\n".join(lines)


def flow_for_table(m: Matched, ref_obs: dict[str, np.ndarray]) -> str:
    """The flow's rtol at GD's errors (config lr), with its measured error and the wall-time ratio."""
    lines = [
        f"| GD lr {m.gd.lr:g} error matched | GD error | flow rtol (largest with error ≤ GD's) | flow error "
        "| flow grad evals | flow wall s | GD wall / flow wall |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, which in MATCH_ERRORS:
        rtol, t = m.flow_for[name]
        if rtol is None or t is None:
            lines.append(f"| {name} | {m.gd.errs[which]:.2e} | none in the scan | — | — | — | — |")
            continue
        fe = errors(t.result.obs, ref_obs)[which]
        lines.append(
            f"| {name} | {m.gd.errs[which]:.2e} | {rtol:.3g} | {fe:.2e} | {flow_grad_evals(t.result)} "
            f"| {t.run_s:.3f} | {ratios(m.gd.timing, t)} |"
        )
    return "\n".join(lines)
