"""Scans of the Phase-2 predictions on the exact reduced flow (across m or n, with seeds) and the
attention ablation on the full flow: the experiments behind `theory/phase2_system.md`,
`theory/loss_law.md` and `theory/balancing.md`, built on `phase2.py`'s system and fits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ...._config import Config
from ...._experiment import enable_precision, run_flow, setup
from ...._integrate import integrate
from ...._losses import logistic_loss
from ...._problem import make_problem
from ...._verdicts import loglog_slope, rel_gap
from ..config import n_random_slots
from ..data import make_dataset
from ..observables import random_token_overlap
from ..system import min_margin
from .gram import GramObserver, ReducedGramFlow
from .phase2 import balancing_summary, compare_phase2, loss_law_fit
from .t1 import theory_gram_problem

PHASE2_ERROR_PREDICTED = -1.0
PHASE2_ERROR_TOLERANCE = 0.3


def phase2_scan(
    axis: Literal["m", "n"],
    values: Sequence[int],
    seeds: Sequence[int],
    *,
    n: int = 24,
    m: int = 16384,
    L: int = 5,
    m1: int = 256,
    horizon_m: float = 300.0 * 128,
    n_save: int = 60,
    rtol: float = 1e-8,
    atol: float = 1e-10,
) -> dict[str, Any]:
    """Phase-2 predictions on the exact reduced flow in the theory's regime, across widths m or
    sample counts n (the other fixed), with seeds.

    Regime: theory init (sigma0 = 1/sqrt(L m), sigma1 = 1/sqrt(m1), M(0) by `wishart_gram`) and
    distinct random tokens (d = 3 + `n_random_slots(n, L)`, the smallest vocabulary that allows it).
    Each run: the exact reduced flow (`ReducedGramFlow`) with the `min_margin` event on
    [0, horizon_m / m] (time scales as 1/m under this init; the default is the paper's T = 300 at
    m = 128), then on its save times after T1: the paper's Phase-2 system vs the flow and the same
    system with the random tokens kept (`compare_phase2`), the loss-law fit (`loss_law_fit`) and the
    balancing figures (`balancing_summary`).

    The Phase-2 system drops two terms (`theory/phase2_system.md`): the value term, relative size
    m1/(L m), and the random tokens' own G, relative size ~ L/n. So the predicted log-log slopes are
    -1 for the error of the system with random tokens vs m, and -1 for the paper's system vs n
    (at m large enough that the value term is negligible); `holds` uses |slope + 1| <= ci95 + 0.3.

    One compiled solve serves every width and seed (m, m1 are arrays of the reduced problem); each
    n compiles its own (the shapes change).

    **Returns** a dict: `rows` (one per run: n, m, seed, T1, value_term_ratio, errors `err_<name>` of
    the paper's system and `err_rand_<name>` of the one with random tokens, loss-law and balancing
    figures), `error_key` (the error the axis predicts: err_rand_loss for m, err_loss for n),
    `slope`, `ci95`, `predicted`, `holds` and `config`.
    """
    if axis not in ("m", "n"):
        raise ValueError(f"axis must be 'm' or 'n', got {axis!r}")
    dtype = enable_precision("float64")
    rows: list[dict[str, Any]] = []
    for value in values:
        nn, mm = (n, int(value)) if axis == "m" else (int(value), m)
        d = 3 + n_random_slots(nn, L)
        for seed in seeds:
            data = make_dataset(nn, L, d, seed, True)
            problem = theory_gram_problem(data, seed, d, mm, m1, L, dtype)
            T = horizon_m / mm
            ts = jnp.asarray(np.concatenate([[0.0], np.geomspace(T * 1e-3, T, n_save)]), dtype)
            sol = integrate(
                ReducedGramFlow(),
                problem,
                ts,
                GramObserver.at_init(problem, data.kind),
                event=min_margin,
                rtol=rtol,
                atol=atol,
            )
            row: dict[str, Any] = {
                "n": nn,
                "m": mm,
                "d": d,
                "seed": int(seed),
                "T1": sol.event_time,
                "result": sol.result,
            }
            if sol.event_obs is not None and sol.ok:
                paper = compare_phase2(sol, problem, data.kind, rtol=rtol, atol=atol)
                rand = compare_phase2(sol, problem, data.kind, random_tokens=True, rtol=rtol, atol=atol)
                e = sol.event_obs
                row.update(
                    value_term_ratio=paper["value_term_ratio"],
                    **{f"err_{k}": v for k, v in paper["max_rel_error"].items()},
                    **{f"err_rand_{k}": v for k, v in rand["max_rel_error"].items()},
                    R_T_paper_system=float(paper["approx"]["R"][-1]),
                    **loss_law_fit(
                        sol.ts,
                        sol.obs,
                        sol.event_time,
                        e,
                        data.kind,
                        random_token_overlap(problem.inputs, problem.targets),
                    ),
                    **balancing_summary(sol.ts, sol.obs, sol.event_time),
                )
            rows.append(row)
    key = "err_rand_loss" if axis == "m" else "err_loss"
    ok = [r for r in rows if key in r]
    x = np.array([r[axis] for r in ok], float)
    err = np.array([r[key] for r in ok], float)
    slope, ci = loglog_slope(x, err)
    holds = bool(abs(slope - PHASE2_ERROR_PREDICTED) <= ci + PHASE2_ERROR_TOLERANCE)
    return {
        "rows": rows,
        "axis": axis,
        "error_key": key,
        "slope": float(slope),
        "ci95": float(ci),
        "predicted": PHASE2_ERROR_PREDICTED,
        "tolerance": PHASE2_ERROR_TOLERANCE,
        "holds": holds,
        "config": {
            "axis": axis,
            "values": [int(v) for v in values],
            "seeds": [int(s) for s in seeds],
            "n": n,
            "m": m,
            "L": L,
            "m1": m1,
            "distinct_tokens": True,
            "horizon": f"{horizon_m} / m",
            "init": "theory: sigma0 = 1/sqrt(L m), sigma1 = 1/sqrt(m1)",
            "rtol": rtol,
            "atol": atol,
        },
    }


def attention_ablation(config: Config) -> dict[str, Any]:
    """How much of the loss decrease needs attention to learn: the gradient flow of `config` with all
    weights trained vs with W_Q, W_K frozen at init (same data, init, solver and save grid).

    The paper's Phase-2 system assumes uniform, frozen attention (`theory/phase2_system.md`, A1), and
    Thm 3.2 says attention and MLP evolve jointly in Phase 2. Here the question is answered on the
    flow itself. Reported: T1 of both runs, `max_rel_gap_loss` (pointwise relative loss gap on the
    save times after both T1's), the final losses and their ratio `loss_T_ratio` (frozen / trained).
    """
    s = setup(config)
    trained = run_flow(s).check()
    trainable = eqx.tree_at(lambda t: (t.W_Q, t.W_K), s.model.trainable(config.train_a), replace=(False, False))
    frozen_problem = make_problem(s.model, s.data.tokens, s.data.y, logistic_loss, trainable)
    frozen = run_flow(dataclasses.replace(s, problem=frozen_problem)).check()
    t1 = max(trained.event_time, frozen.event_time)
    sel = trained.ts > t1
    a, b = trained.obs["loss"][sel], frozen.obs["loss"][sel]
    return {
        "T1": trained.event_time,
        "T1_frozen": frozen.event_time,
        "max_rel_gap_loss": rel_gap(b, a, pointwise=True),
        "loss_T": float(a[-1]),
        "loss_T_frozen": float(b[-1]),
        "loss_T_ratio": float(b[-1] / a[-1]),
        "attn_disp_T": float(trained.obs["attn_disp"][-1]),
        "config": config.to_dict(),
    }
