"""The verdict framework: a checked claim with its measured figures, criterion and status.

Systems compute their verdicts from recorded observables (never from hard-coded values) with
[`verdict`][flowsim.verdict]; `rel_gap` and `loglog_slope` are the measurements most claims need.

A claim is never judged on data a run did not produce: `judge_reached` (the engine's one place for
this rule, applied to every system's verdicts by `RunRecord.verdicts`) makes a verdict "not measured"
(INFO, `figures["measured"] = False`) when it needs the flow and the flow stopped early (a diffrax
failure such as max_steps or dt_min, or a non-finite loss), or, for a verdict declared with
`horizon=True` (it reads the runs up to the config's T), when a run it needs was ended early by a
terminal stop event (`stop_loss`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, final

import numpy as np
from jax.typing import ArrayLike

if TYPE_CHECKING:
    from ._system import RunRecord

STATUSES = ("PASS", "FAIL", "INFO")
# What the measurements read (through `np.asarray(x, float)`): arrays, scalars or lists of numbers.
Series = ArrayLike | Sequence[Any]


@final
@dataclasses.dataclass(frozen=True)
class Verdict:
    """One checked claim: `name`, `claim` (the paper's statement), `figures` (measured values),
    `criterion` (what PASS means) and `status` ("PASS", "FAIL" or "INFO" for reported-only figures);
    `horizon`: whether the claim reads the runs up to the config's final time T (not only up to
    where a terminal stop event ended them)."""

    name: str
    claim: str
    figures: dict[str, Any]
    criterion: str
    status: str
    horizon: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def verdict(
    name: str, claim: str, figures: dict[str, Any], criterion: str, passed: bool | None, *, horizon: bool = False
) -> Verdict:
    """A `Verdict` with status PASS/FAIL from `passed`, or INFO when `passed` is None (figures only).
    `horizon=True` declares that the claim reads the runs up to the config's T: a run its pieces
    need that a terminal stop event ended early makes it "not measured" (see `judge_reached`)."""
    status = "INFO" if passed is None else ("PASS" if passed else "FAIL")
    return Verdict(name, claim, {k: _num(v) for k, v in figures.items()}, criterion, status, horizon)


def not_measured(v: Verdict, why: str) -> Verdict:
    """`v` as INFO "not measured: `why`" (its figures kept, with `measured` False; its criterion kept
    in the text), never PASS or FAIL."""
    figures = {**v.figures, "measured": False}
    return dataclasses.replace(
        v, figures=figures, criterion=f"not measured: {why} (criterion: {v.criterion})", status="INFO"
    )


def _flow_missing(flow: Any, horizon: bool) -> str | None:
    """Why the flow's data are missing at times a verdict reads, or None when they are all there."""
    T = float(np.asarray(flow.ts)[-1])
    if not flow.ok:
        return f"the flow stopped early (diffrax result '{flow.result}' at t = {flow.t_reached:.6g} of T = {T:.6g})"
    loss = flow.obs.get("loss")
    if loss is not None:
        reached = np.asarray(flow.ts) <= flow.t_reached
        bad = reached & ~np.isfinite(np.asarray(loss, float).reshape(len(reached), -1)).all(axis=1)
        if bad.any():
            return f"the flow's loss is not finite from t = {float(np.asarray(flow.ts)[bad][0]):.6g} on"
    if horizon and flow.stopped_by is not None and flow.t_reached < T:
        return f"the flow was stopped by '{flow.stopped_by}' at t = {flow.t_reached:.6g}, before T = {T:.6g}"
    return None


def _discrete_missing(piece: str, sol: Any) -> str | None:
    """Why a stopped discrete run's data are missing up to its last step (a `horizon` verdict), or None."""
    if not sol.stopped:
        return None
    first = int(
        np.min(np.where(np.atleast_1d(sol.stop_step) >= 0, np.atleast_1d(sol.stop_step), np.iinfo(np.int64).max))
    )
    return f"{piece} was stopped by a stop event at step {first}, before its last step {int(np.asarray(sol.steps)[-1])}"


def judge_reached(verdicts: Sequence[Verdict], needs: Mapping[str, frozenset[str]], run: RunRecord) -> list[Verdict]:
    """`verdicts` of `run`, each one that reads data its runs did not produce made "not measured".

    A verdict needs the pieces `needs[name]` (all of them for a name not listed). It is not measured
    when it needs the flow and the flow is not `ok` (stopped by max_steps, dt_min or another diffrax
    failure) or has a non-finite loss at a time it reached; and, for a `horizon` verdict, when a
    piece it needs was ended by a terminal stop event before the last save time. A diverged GD or
    SGD run is a measured outcome and is judged."""
    out = []
    for v in verdicts:
        why = None
        for piece in sorted(needs.get(v.name, frozenset({"flow", "gd", "sgd"}))):
            sol = getattr(run, piece, None)
            if sol is None:
                continue
            why = (
                _flow_missing(sol, v.horizon)
                if piece == "flow"
                else (_discrete_missing(piece, sol) if v.horizon else None)
            )
            if why is not None:
                break
        out.append(v if why is None else not_measured(v, why))
    return out


def _num(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def rel_gap(a: Series, b: Series, pointwise: bool) -> float:
    """max |a - b| / |b| (pointwise, for quantities spanning decades) or / max |b| (range-normalised)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if pointwise:
        return float(np.nanmax(np.abs(a - b) / np.abs(b)))
    return float(np.nanmax(np.abs(a - b)) / max(np.nanmax(np.abs(b)), 1e-300))


def loglog_slope(t: Series, y: Series) -> tuple[float, float]:
    """OLS slope of log y against log t and the half-width of its 95% confidence interval.

    Points where t or y is not finite and positive are left out; (nan, nan) if fewer than two
    distinct t remain (e.g. a run whose event never fired, recorded as nan).
    """
    t, y = np.asarray(t, float), np.asarray(y, float)
    ok = np.isfinite(t) & np.isfinite(y) & (t > 0) & (y > 0)
    if np.unique(t[ok]).size < 2:
        return float("nan"), float("nan")
    x, z = np.log(t[ok]), np.log(y[ok])
    X = np.stack([np.ones_like(x), x], 1)
    coef, *_ = np.linalg.lstsq(X, z, rcond=None)
    dof = max(len(x) - 2, 1)
    s2 = float(np.sum((z - X @ coef) ** 2) / dof)
    se = math.sqrt(s2 / float(np.sum((x - x.mean()) ** 2)))
    return float(coef[1]), 1.96 * se


def format_table(verdicts: list[Verdict]) -> str:
    """A plain-text table: claim name, status and the headline figures."""
    rows = []
    for v in verdicts:
        figs = ", ".join(f"{k}={_fmt(x)}" for k, x in list(v.figures.items())[:4])
        rows.append((v.name, v.status, figs))
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{n:<{w}}  {s:<4}  {f}" for n, s, f in rows)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)
