"""Continuous models of training side by side with SGD: run, measure the distance, tabulate over lr.

`compare(config, ...)` runs, for any system, the chosen continuous dynamics (gradient flow, the IGR modified flow, the
heavy-ball ODE, the SGD modified equation as an ensemble of Brownian paths) and the discrete runs
(GD, SGD over seeds) from the same initial point on the same save grid, and returns `Curve`s that
`flowsim.plot_overlay` draws. `distance_to_sgd` measures how far each curve's mean is from the
SGD mean in units of the SGD ensemble's standard error; `compare_lrs` repeats this over step sizes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import final

import numpy as np

from ._config import Config
from ._discrete import gradient_descent, sgd
from ._dynamics import GradientFlow, HeavyBallFlow, ModifiedFlow, SGDModifiedEquation
from ._experiment import setup, step_grid
from ._integrate import integrate
from ._sde import integrate_sde
from ._system import Setup

DYNAMICS = ("gf", "igr", "heavy_ball", "sme")
LABELS = {
    "gf": "gradient flow",
    "igr": "IGR modified flow",
    "heavy_ball": "heavy-ball ODE",
    "sme": "SGD modified equation (SDE)",
    "gd": "GD",
    "sgd": "SGD",
}


@final
@dataclasses.dataclass(frozen=True)
class Curve:
    """One run on a save grid: `label`, times `t` (S,), observables `obs` with leading axis S, or
    (members, S) for an ensemble (`ensemble=True`), and `marks`: (time, label) of the events located
    on it."""

    label: str
    t: np.ndarray
    obs: dict[str, np.ndarray]
    ensemble: bool = False
    marks: tuple[tuple[float, str], ...] = ()

    def mean(self, key: str) -> np.ndarray:
        x = np.asarray(self.obs[key], float)
        return np.nanmean(x, 0) if self.ensemble else x


def compare(
    config: Config,
    dynamics: Sequence[str] = ("gf", "igr", "sme"),
    *,
    paths: int = 32,
    momentum: float = 0.0,
    sampling: str = "iid",
    s: Setup | None = None,
) -> dict[str, Curve]:
    """Run `dynamics` (names in `DYNAMICS`) and GD/SGD for `config`; SGD uses `config.sgd_seeds` seeds
    (`sampling` "iid" matches the SDE's independent noise, "shuffle" is epoch-wise reshuffling), the SDE
    `paths` Brownian paths with Euler-Maruyama step lr/2; `momentum` > 0 runs the discrete methods
    with heavy-ball momentum (compare with "heavy_ball")."""
    unknown = sorted(set(dynamics) - set(DYNAMICS))
    if unknown:
        raise ValueError(f"unknown dynamics {unknown}; choose from {DYNAMICS}")
    if "heavy_ball" in dynamics and momentum <= 0:
        raise ValueError("heavy_ball needs momentum > 0 (the discrete runs use the same momentum)")
    s = setup(config) if s is None else s
    c = s.config
    steps = step_grid(c)
    ts = steps * c.lr
    curves: dict[str, Curve] = {}
    makers = {
        "gf": lambda: GradientFlow(),
        "igr": lambda: ModifiedFlow(c.lr),
        "heavy_ball": lambda: HeavyBallFlow(c.lr, momentum),
    }
    for name in dynamics:
        if name == "sme":
            ens = integrate_sde(
                SGDModifiedEquation(c.lr, c.batch_size),
                s.problem,
                ts,
                s.observer,
                dt=c.lr / 2,
                paths=paths,
                key=s.keys.sde,
            )
            curves[name] = Curve(LABELS[name], ts, ens.obs, ensemble=True)
            continue
        sol = integrate(
            makers[name](),
            s.problem,
            ts,
            s.observer,
            solver=c.solver,
            rtol=c.rtol,
            atol=c.atol,
            max_steps=c.max_steps,
            event=(s.events or None) if name != "heavy_ball" else None,
        )
        marks = tuple((h.time, h.label or k) for k, h in sol.events.items() if h.fired)
        curves[name] = Curve(LABELS[name], ts, sol.obs, marks=marks)
    gd = gradient_descent(s.problem, c.lr, steps, s.observer, momentum=momentum)
    curves["gd"] = Curve(LABELS["gd"], ts, gd.obs)
    sg = sgd(
        s.problem,
        c.lr,
        steps,
        s.observer,
        batch_size=c.batch_size,
        seeds=c.sgd_seeds,
        momentum=momentum,
        sampling=sampling,
        key=s.keys.sgd,
    )
    curves["sgd"] = Curve(f"{LABELS['sgd']} ({sampling})", ts, sg.obs, ensemble=True)
    return curves


def distance_to_sgd(curves: dict[str, Curve], key: str = "loss") -> dict[str, float | None]:
    """max over save times t > 0 of |mean_model(t) - mean_SGD(t)| / SE_SGD(t), where SE is the
    standard error of the SGD ensemble mean; values below ~3 mean "indistinguishable from SGD".

    Save times where the SGD seeds do not spread (SE below 1e-12 of the mean's scale, e.g. a batch
    of the whole training set, or one seed) are left out; with no spread at any time the distance
    is None (not measurable), never a ratio to a round-off "standard error". A model whose run did
    not reach every save time (a flow stopped early: non-finite values there) is None too, never an
    infinite distance."""
    ref = curves["sgd"]
    x = np.asarray(ref.obs[key], float)[:, 1:]
    with np.errstate(all="ignore"):
        mean = np.nanmean(x, 0)
        se = np.nanstd(x, 0, ddof=1) / np.sqrt(x.shape[0]) if x.shape[0] > 1 else np.full(mean.shape, np.nan)
        spread = np.isfinite(se) & (se > 1e-12 * np.maximum(np.abs(mean), 1e-300))
        out: dict[str, float | None] = {}
        for name, cur in curves.items():
            if name == "sgd":
                continue
            model = cur.mean(key)[1:]
            ratio = np.abs(model - mean) / np.where(spread, se, np.nan)
            reached = bool(np.all(np.isfinite(model)))
            out[name] = float(np.nanmax(ratio)) if reached and np.isfinite(ratio).any() else None
    return out


def describe_distance(label: str, distance: float | None) -> str:
    """One line of `flowsim compare`'s table."""
    if distance is None:
        return (
            f"{label:<32} not measurable: the SGD seeds do not spread (batch = training set, or one seed),"
            " or the run did not reach every save time"
        )
    return f"{label:<32} max |mean loss - SGD mean| = {distance:8.2f} SGD standard errors"


def compare_lrs(
    config: Config,
    lrs: Sequence[int | float],
    dynamics: Sequence[str] = ("gf", "igr", "sme"),
    *,
    horizon: float | None = None,
    key: str = "loss",
    **kwargs,
) -> list[dict]:
    """`distance_to_sgd` for each lr at a fixed flow-time horizon (default `config.t_final`):
    one row per (lr, model) with the distance in SGD standard errors."""
    horizon = config.t_final if horizon is None else horizon
    rows = []
    for lr in lrs:
        c = config.replace(lr=float(lr), steps=max(1, int(round(horizon / lr))))
        for name, dist in distance_to_sgd(compare(c, dynamics, **kwargs), key).items():
            rows.append({"lr": float(lr), "model": name, f"distance_{key}_in_sgd_se": dist})
    return rows
