"""The paper's quantitative predictions, measured on the exact reduced (Gram) flow.

`t1_scaling`: the end of Phase 1, T1 = C_T1 / ((sigma0^2 + sigma1^2) m m1) (spec section 4, Thm 3.1/E.28
and the rate of Lem 4.1; the paper writes C_T1 / (sigma1^2 m m1)), measured along one of the axes m, m1,
sigma1 with the others fixed. `t1_vs_width` is its m axis under the theory init sigma0 = 1/sqrt(L m),
sigma1 = 1/sqrt(m1), where sigma1^2 m m1 = m and T1 is predicted to scale as 1/m.
Derivation: `theory/phase1_time.md`; tests: `tests/test_theory_t1.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from jaxtyping import Array, PyTree

from ...._config import Config
from ...._dynamics import GradientFlow
from ...._experiment import enable_precision, setup
from ...._integrate import integrate
from ...._problem import Problem
from ...._verdicts import loglog_slope
from ..data import CooccurrenceData, make_dataset
from ..model import CooccurrenceTransformer
from ..system import min_margin
from .gram import ReducedGramFlow, gram_problem, reduce_problem, wishart_gram

Axis = Literal["m", "m1", "sigma1"]

T1_EXPONENTS: dict[str, float] = {"m": -1.0, "m1": -1.0, "sigma1": -2.0}
T1_RATE_EXPONENT = -1.0
T1_EXPONENT_TOLERANCE = 0.2


def _observe(t: float | Array, params: PyTree, problem: Problem) -> dict[str, Array]:
    """Observer: the loss and min_i y_i F_i (module-level, so every solve shares one compiled program)."""
    return {"loss": problem.loss(params), "min_margin": min_margin(t, params, problem)}


def theory_init_scales(m: int, m1: int, L: int) -> tuple[float, float]:
    """(sigma0, sigma1) of the theory init: sigma0 = 1/sqrt(L m), sigma1 = 1/sqrt(m1)."""
    return 1.0 / np.sqrt(L * m), 1.0 / np.sqrt(m1)


def theory_gram_problem(
    data: CooccurrenceData, seed: int, d: int, m: int, m1: int, L: int, dtype: DTypeLike = jnp.float64
) -> Problem:
    """The exact reduced problem of `data` under the theory init at widths (m, m1): M(0) drawn from
    its Wishart law (`wishart_gram`, key `PRNGKey(seed)`) with `theory_init_scales(m, m1, L)`."""
    s0, s1 = theory_init_scales(m, m1, L)
    M0 = wishart_gram(jax.random.PRNGKey(seed), d, m, m1, s0, s1, dtype)
    return gram_problem(M0, float(m), float(m1), data.tokens, jnp.asarray(data.y, dtype))


def _point(
    axis: Axis, value: int | float, m: int, m1: int, sigma1: float | None, L: int
) -> tuple[int, int, float, float]:
    """(m, m1, sigma0, sigma1) of one grid point: `value` replaces the quantity named by `axis`.

    sigma0 = 1/sqrt(L m) at the point's m; sigma1 = the given one, or else 1/sqrt(m1) at the keyword m1
    (so on the m1 axis it stays at 1/sqrt(reference m1) instead of following the varying m1).
    """
    s1 = theory_init_scales(m, m1, L)[1] if sigma1 is None else float(sigma1)
    s1 = float(value) if axis == "sigma1" else float(s1)
    m, m1 = (int(value) if axis == "m" else m), (int(value) if axis == "m1" else m1)
    return m, m1, float(theory_init_scales(m, m1, L)[0]), s1


def _fit(x: np.ndarray, t1: np.ndarray, predicted: float) -> dict[str, Any]:
    """Log-log OLS slope of T1 against x (finite, positive T1 only), its 95% interval and the a-priori
    verdict |slope - predicted| <= ci95 + T1_EXPONENT_TOLERANCE."""
    slope, ci = loglog_slope(x, t1)
    return {
        "slope": slope,
        "ci95": ci,
        "interval": [slope - ci, slope + ci],
        "predicted": predicted,
        "holds": bool(abs(slope - predicted) <= ci + T1_EXPONENT_TOLERANCE),
    }


def t1_scaling(
    axis: Axis,
    values: Sequence[int | float],
    seeds: Sequence[int],
    *,
    m: int = 4096,
    m1: int = 256,
    sigma1: float | None = None,
    n: int = 60,
    L: int = 5,
    d: int = 16,
    distinct_tokens: bool = False,
    horizon: float = 20.0,
    rtol: float = 1e-8,
    atol: float = 1e-10,
) -> dict[str, Any]:
    """T1 (first time min_i y_i F_i = 0) along one axis (m, m1 or sigma1) on the exact reduced flow, and
    its log-log slope against the predicted exponent.

    Each grid point replaces the quantity named by `axis` with one of `values`; the other two stay at
    the keywords. sigma0 = 1/sqrt(L m) throughout; sigma1 is the keyword, or 1/sqrt(m1) when None.
    Lem 4.1's rate (sigma0^2 + sigma1^2) m m1 then predicts (where the sigma1 term dominates):

    - `"m"`: T1 ~ m^-1 (with sigma1 = 1/sqrt(m1): rate = m + m1/L, so -1 needs m >> m1/L).
    - `"m1"`: T1 ~ m1^-1 with sigma1 HELD FIXED (None means 1/sqrt(keyword m1), default 1/16).
      With sigma1 = 1/sqrt(m1) tied to the axis, sigma1^2 m m1 = m is constant and the prediction is
      exponent 0 (only the sigma0 term m1/L would move T1), which is why it is not done that way.
    - `"sigma1"`: T1 ~ sigma1^-2 where sigma1^2 >> sigma0^2 = 1/(L m) (m, m1 fixed); where sigma0
      dominates T1 flattens to sigma1^0. `sigma1` must be None here.

    The initial outputs scale as G(0) ~ sigma0 sigma1 sqrt(m m1) = sigma1 sqrt(m1/L): constant on the
    m axis, but growing as sqrt(m1) and sigma1 on the other two, while the theory takes them O(1). Each
    row records that scale (`G0_scale`) and the initial min margin (`margin0`) so this can be checked.

    For each seed: the training set `make_dataset(n, L, d, seed, distinct_tokens)` (shared by the
    grid) and M(0) = `wishart_gram(PRNGKey(seed), d, m, m1, sigma0, sigma1)`. `ReducedGramFlow` is
    integrated on [0, horizon] with the `min_margin` event. m and m1 are arrays of the problem and all
    shapes are shared, so one compiled solve serves every point and seed.

    **Returns** a dict: `rows` (list of {axis value `value`, m, m1, sigma0, sigma1, seed, rate, G0_scale,
    margin0, T1, loss_T1, result}; T1 is nan where the event did not fire before `horizon`); `slope`,
    `ci95` (half-width), `interval` of log T1 vs log value (`flowsim.loglog_slope`, finite
    points); `predicted` (`T1_EXPONENTS[axis]`), `tolerance` (0.2, fixed a priori for the unstated log
    factors) and `holds`: |slope - predicted| <= ci95 + tolerance. Also `slope_vs_rate`, `ci95_vs_rate`,
    `interval_vs_rate`, `holds_vs_rate`: the same fit against the rate, predicted -1 on every axis.
    """
    if axis not in T1_EXPONENTS:
        raise ValueError(f"axis must be one of {sorted(T1_EXPONENTS)}, got {axis!r}")
    if axis == "sigma1" and sigma1 is not None:
        raise ValueError("on the sigma1 axis sigma1 is the varied quantity: leave the keyword None")
    dtype = enable_precision("float64")
    ts = jnp.asarray([0.0, horizon], dtype)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        data = make_dataset(n, L, d, seed, distinct_tokens)
        y = jnp.asarray(data.y, dtype)
        key = jax.random.PRNGKey(seed)
        for value in values:
            m_p, m1_p, s0, s1 = _point(axis, value, m, m1, sigma1, L)
            M0 = wishart_gram(key, d, m_p, m1_p, s0, s1, dtype)
            problem = gram_problem(M0, float(m_p), float(m1_p), data.tokens, y)
            sol = integrate(ReducedGramFlow(), problem, ts, _observe, event=min_margin, rtol=rtol, atol=atol)
            event_obs = sol.event_obs
            fired = event_obs is not None
            rows.append(
                {
                    "value": float(value),
                    "m": m_p,
                    "m1": m1_p,
                    "sigma0": s0,
                    "sigma1": s1,
                    "seed": int(seed),
                    "rate": (s0**2 + s1**2) * m_p * m1_p,
                    "G0_scale": s0 * s1 * float(np.sqrt(m_p * m1_p)),
                    "margin0": float(sol.obs["min_margin"][0]),
                    "T1": float(sol.event_time),
                    "loss_T1": float(event_obs["loss"]) if fired else float("nan"),
                    "result": sol.result,
                }
            )
    t1 = np.array([r["T1"] for r in rows], float)
    fit = _fit(np.array([r["value"] for r in rows], float), t1, T1_EXPONENTS[axis])
    vs_rate = _fit(np.array([r["rate"] for r in rows], float), t1, T1_RATE_EXPONENT)
    fixed = {k: v for k, v in {"m": m, "m1": m1, "sigma1": sigma1}.items() if k != axis}
    return {
        "axis": axis,
        "rows": rows,
        **fit,
        "tolerance": T1_EXPONENT_TOLERANCE,
        **{f"{k}_vs_rate": vs_rate[k] for k in ("slope", "ci95", "interval", "holds")},
        "n_finite": int(np.isfinite(t1).sum()),
        "n_points": len(rows),
        "config": {
            "axis": axis,
            "values": [float(v) for v in values],
            "seeds": [int(s) for s in seeds],
            **fixed,
            "n": n,
            "L": L,
            "d": d,
            "distinct_tokens": distinct_tokens,
            "horizon": horizon,
            "init": "sigma0 = 1/sqrt(L m); sigma1 = the given one, or 1/sqrt(m1) "
            "(1/sqrt(reference m1) on the m1 axis) when None",
            "rtol": rtol,
            "atol": atol,
        },
    }


def t1_vs_width(
    widths: Sequence[int],
    seeds: Sequence[int],
    *,
    n: int = 60,
    L: int = 5,
    d: int = 16,
    m1: int = 256,
    distinct_tokens: bool = False,
    horizon: float = 20.0,
    rtol: float = 1e-8,
    atol: float = 1e-10,
) -> dict[str, Any]:
    """T1 vs the width m under the theory init (sigma0 = 1/sqrt(L m), sigma1 = 1/sqrt(m1)): the m axis
    of [`t1_scaling`][], predicted exponent -1 (against the rate m + m1/L: -1 at every width; the two
    differ below m ~ m1/L, where the sigma0 term dominates). Same dict as `t1_scaling`."""
    return t1_scaling(
        "m", widths, seeds, m1=m1, n=n, L=L, d=d, distinct_tokens=distinct_tokens, horizon=horizon, rtol=rtol, atol=atol
    )


def initial_rate(model: CooccurrenceTransformer) -> float:
    """Lem 4.1's initial speed of G at t = 0, N(0) + m1 mean_k ||W_V mu_k||^2 (k = 1, 2, 3), from the
    realised weights: dG/dt = -(N + m1 W_V^T W_V) dL/dG (`theory/phase1_time.md`). Under the theory init
    it is ~ (sigma0^2 + sigma1^2) m m1; it also covers inits (kaiming) that have no sigma0, sigma1."""
    u = model.u()
    v = jnp.sum(model.W_V[:, :3] ** 2, axis=0)
    return float(u @ u + (model.a @ model.a) * jnp.mean(v))


def t1_full_model(
    config: Config,
    widths: Sequence[int],
    seeds: Sequence[int],
    *,
    horizon: float = 1.0,
    rtol: float = 1e-8,
    atol: float = 1e-10,
) -> dict[str, Any]:
    """T1 vs width with the FULL model in any regime (e.g. the paper's experiment: kaiming init, tokens
    with replacement), against Lem 4.1's rate measured at init (`initial_rate`), predicted exponent -1.

    For each seed and width: `setup(config.replace(m=width, seed=seed))`, the gradient flow with the
    `min_margin` event on [0, horizon], and the exact reduced flow from the same initial state
    (`reduce_problem`) as a cross-check (`T1_reduced`; equal up to solver tolerance). Under kaiming,
    N(0) ~ m1/3 does not grow with m while m1 ||W_V mu||^2 ~ m m1/(3d) does, so T1 has no single power
    law in m; the rate absorbs that.

    **Returns** `rows` ({m, seed, rate, T1, T1_reduced, loss_T1}), `slope`/`ci95`/`interval`/`holds` of
    T1 vs rate (predicted -1, |slope + 1| <= ci95 + 0.2), `slope_vs_m`, `ci95_vs_m`,
    `max_rel_diff_reduced` and `config`.
    """
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for m in widths:
            s = setup(config.replace(m=int(m), seed=int(seed)))
            dtype = jax.tree.leaves(s.problem.params0)[0].dtype
            ts = jnp.asarray([0.0, horizon], dtype)
            full = integrate(GradientFlow(), s.problem, ts, _observe, event=min_margin, rtol=rtol, atol=atol)
            red = integrate(
                ReducedGramFlow(), reduce_problem(s.problem), ts, _observe, event=min_margin, rtol=rtol, atol=atol
            )
            rows.append(
                {
                    "m": int(m),
                    "seed": int(seed),
                    "rate": initial_rate(s.model),
                    "T1": float(full.event_time),
                    "T1_reduced": float(red.event_time),
                    "loss_T1": float(full.event_obs["loss"]) if full.event_obs is not None else float("nan"),
                    "result": full.result,
                }
            )
    t1 = np.array([r["T1"] for r in rows], float)
    t1r = np.array([r["T1_reduced"] for r in rows], float)
    fit = _fit(np.array([r["rate"] for r in rows], float), t1, T1_RATE_EXPONENT)
    vs_m = _fit(np.array([r["m"] for r in rows], float), t1, T1_EXPONENTS["m"])
    return {
        "rows": rows,
        **fit,
        "tolerance": T1_EXPONENT_TOLERANCE,
        "slope_vs_m": vs_m["slope"],
        "ci95_vs_m": vs_m["ci95"],
        "max_rel_diff_reduced": float(np.nanmax(np.abs(t1r / t1 - 1))),
        "config": {
            **config.to_dict(),
            "widths": [int(w) for w in widths],
            "seeds": [int(s) for s in seeds],
            "horizon": horizon,
            "rtol": rtol,
            "atol": atol,
        },
    }
