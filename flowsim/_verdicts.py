"""The verdict framework: a checked claim with its measured figures, criterion and status.

Systems compute their verdicts from recorded observables (never from hard-coded values) with
[`verdict`][flowsim.verdict]; `rel_gap` and `loglog_slope` are the measurements most claims need.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, final

import numpy as np
from jax.typing import ArrayLike

STATUSES = ("PASS", "FAIL", "INFO")
# What the measurements read (through `np.asarray(x, float)`): arrays, scalars or lists of numbers.
Series = ArrayLike | Sequence[Any]


@final
@dataclasses.dataclass(frozen=True)
class Verdict:
    """One checked claim: `name`, `claim` (the paper's statement), `figures` (measured values),
    `criterion` (what PASS means) and `status` ("PASS", "FAIL" or "INFO" for reported-only figures)."""

    name: str
    claim: str
    figures: dict[str, Any]
    criterion: str
    status: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def verdict(name: str, claim: str, figures: dict[str, Any], criterion: str, passed: bool | None) -> Verdict:
    """A `Verdict` with status PASS/FAIL from `passed`, or INFO when `passed` is None (figures only)."""
    status = "INFO" if passed is None else ("PASS" if passed else "FAIL")
    return Verdict(name, claim, {k: _num(v) for k, v in figures.items()}, criterion, status)


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
