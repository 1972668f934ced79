"""Phase 2 against the theory: the paper's approximate system (Def F.1 / Lem F.6) laid over the flow
after T1, the loss law of Thm F.8 and automatic balancing (Lem 4.4/4.5, Cor F.2).

    python experiments/theory_phase2.py

1. Exact reduced flow in the theory's regime (theory init, distinct random tokens), seeds 0, 1, 2:
   - widths m = 256..65536 at n = 24, L = 5 (error of the Phase-2 system with random tokens, predicted
     ~ 1/m: the value term it drops is m1/(L m) of the kept one);
   - n = 12, 24, 48, 96 at m = 16384 (error of the paper's system, predicted ~ 1/n: it also drops
     the random tokens' own G).
2. The full model at the paper's sizes (n=60, L=5, m=128, m1=256), flow to T = 300, in the paper's
   experiment (kaiming, tokens with replacement, d=64) and in the theory regime (theory init,
   distinct tokens, d=163): the same comparisons, loss law and balancing, and the same flow with
   W_Q, W_K frozen at init (`attention_ablation`: how much of the loss decrease needs attention).

Writes experiments/results/theory_phase2.json and theory_phase2.png; prints tables and the wall time.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).parent
OUT = HERE / "results"
SEEDS = [0, 1, 2]
WIDTHS = [256, 1024, 4096, 16384, 65536]
NS = [12, 24, 48, 96]
REGIMES = {"experiment": {}, "theory": {"init": "theory", "distinct_tokens": True, "d": 163}}
ROW_KEYS = (
    "n",
    "m",
    "seed",
    "value_term_ratio",
    "err_loss",
    "err_rand_loss",
    "c",
    "c_first_half",
    "c_second_half",
    "c_paper_T",
    "c_random_T",
    "max_rel_error",
    "slope",
    "S2_over_S3_worst",
    "R_min",
    "R_max",
    "R_T",
    "R_star_T",
    "R_star_random_T",
    "R_T_paper_system",
    "g_ratio_max",
)


def full_model(regime: str) -> dict[str, Any]:
    """Flow of the full model at the paper's sizes in one regime, with the Phase-2 comparisons."""
    from flowsim import Config, random_token_overlap, run_flow, setup
    from flowsim.systems.cooccurrence.theory import (
        attention_ablation,
        balancing_summary,
        compare_phase2,
        loss_law_fit,
    )

    config = Config(**REGIMES[regime])
    s = setup(config)
    sol = run_flow(s).check()
    paper = compare_phase2(sol, s.problem, s.data.kind)
    rand = compare_phase2(sol, s.problem, s.data.kind, random_tokens=True)
    e = sol.event_obs
    sel = sol.ts > sol.event_time
    return {
        "config": config.to_dict(),
        "T1": sol.event_time,
        "value_term_ratio": paper["value_term_ratio"],
        "err": paper["max_rel_error"],
        "err_rand": rand["max_rel_error"],
        "loss_law": loss_law_fit(
            sol.ts, sol.obs, sol.event_time, e, s.data.kind, random_token_overlap(s.problem.inputs, s.problem.targets)
        ),
        "balancing": balancing_summary(sol.ts, sol.obs, sol.event_time),
        "R_T_paper_system": float(paper["approx"]["R"][-1]),
        "attention_ablation": {k: v for k, v in attention_ablation(config).items() if k != "config"},
        "curves": {
            "t": paper["ts"],
            "flow_loss": paper["flow"]["loss"],
            "paper_loss": paper["approx"]["loss"],
            "rand_loss": rand["approx"]["loss"],
            "flow_R": paper["flow"]["R"],
            "paper_R": paper["approx"]["R"],
            "R_star": np.concatenate([[e["R_star"]], sol.obs["R_star"][sel]]),
            "flow_N": paper["flow"]["N"],
        },
    }


def _table(rows: list[dict[str, Any]]) -> str:
    head = " ".join(f"{k:>10.10}" for k in ROW_KEYS)
    lines = [head]
    for r in rows:
        lines.append(" ".join(f"{r.get(k, float('nan')):>10.4g}" for k in ROW_KEYS))
    return "\n".join(lines)


REGIME_TITLES = {
    "experiment": "paper's experiment (Kaiming init, $m = 128$)",
    "theory": "theory regime (theory init, distinct tokens, $m = 128$)",
}


def _curves_panels(ax_loss: Any, ax_r: Any, regime: str, res: dict) -> None:
    """The flow's loss and balancing ratio after T1 against the Phase-2 systems', on a log time axis."""
    from flowsim._figure_style import log_time_axis

    c = res["curves"]
    t = np.asarray(c["t"], float)
    ax_loss.plot(t, c["flow_loss"], "k-", label="full model's gradient flow")
    ax_loss.plot(t, c["paper_loss"], "C0--", label="paper's Phase-2 system (Def F.1)")
    ax_loss.plot(t, c["rand_loss"], "C1:", label="Phase-2 system + random tokens")
    ax_loss.set(yscale="log", ylabel=r"training loss $\hat L(t)$", title=REGIME_TITLES.get(regime, regime))
    ax_r.axhspan(1, 2, color="0.9", zorder=0, label=r"Cor F.2's band $1 \leq R \leq 2$")
    ax_r.plot(t, c["flow_R"], "k-")
    ax_r.plot(t, c["paper_R"], "C0--")
    ax_r.plot(t, c["R_star"], "C3-.", label=r"fixed point $R^*(t)$")
    ax_r.set(ylabel=r"balancing ratio $R(t)$")
    for ax in (ax_loss, ax_r):
        log_time_axis(ax, label=r"flow time $t \geq T_1$")
        ax.grid(True, alpha=0.3)


def _error_panel(ax: Any, scans: dict[str, dict]) -> None:
    """The Phase-2 systems' largest relative loss error against m and n: seeds, their band, slope -1."""
    for (key, axis, label), color in zip(
        (
            ("err_rand_loss", "m", r"+ random tokens, vs width $m$ ($n = 24$)"),
            ("err_loss", "n", r"paper's system, vs samples $n$ ($m = 16384$)"),
        ),
        ("C1", "C0"),
    ):
        rows = scans[axis]["rows"]
        x = np.array([r[axis] for r in rows], float)
        y = np.array([r[key] for r in rows], float)
        ok = np.isfinite(y) & (y > 0)
        x, y = x[ok], y[ok]
        xs = np.unique(x)
        lo, hi = (np.array([f(y[x == v]) for v in xs]) for f in (np.min, np.max))
        ax.fill_between(xs, lo, hi, color=color, alpha=0.2, lw=0)
        ax.plot(x, y, "o", color=color, ms=4, label=f"{label}: slope {scans[axis]['slope']:.2f}")
        ax.plot(xs, np.exp(np.mean(np.log(y))) * np.exp(np.mean(np.log(x))) / xs, "k:", lw=1.0, label="slope $-1$")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel=r"width $m$ or sample count $n$",
        ylabel=r"largest relative loss error $|\hat L_{\rm system} - \hat L| / \hat L$ after $T_1$",
        title="Phase-2 systems against the flow",
    )
    ax.grid(True, alpha=0.3)


def _loss_law_panel(ax: Any, full: dict[str, dict]) -> None:
    """Thm F.8's loss law: 1/L - 1/L(T1) against the integral of N after T1, with the fitted c."""
    for (regime, res), color in zip(full.items(), ("C4", "C2")):
        c = res["curves"]
        t, ll, N = (np.asarray(c[k], float) for k in ("t", "flow_loss", "flow_N"))
        X = np.concatenate([[0.0], np.cumsum(0.5 * (N[1:] + N[:-1]) * np.diff(t))])
        ok = X > 0  # X = 0 at T1 has no place on a log axis
        ax.plot(
            X[ok], (1 / ll - 1 / ll[0])[ok], color=color, label=f"{regime}: fitted $c$ = {res['loss_law']['c']:.3f}"
        )
        ax.plot(X[ok], res["loss_law"]["c"] * X[ok], ":", color=color, lw=1.2)
    ax.set(
        xscale="log",
        yscale="log",
        title=r"loss law (Thm F.8): $1/\hat L - 1/\hat L(T_1) = c \int_{T_1}^t N\,ds$",
        xlabel=r"$\int_{T_1}^t N\,ds$",
        ylabel=r"$1/\hat L - 1/\hat L(T_1)$",
    )
    ax.grid(True, alpha=0.3)


def plot(scans: dict[str, dict], full: dict[str, dict], out: pathlib.Path) -> None:
    """Top: loss after T1 in both regimes (shared scale) and the systems' error vs m and n; bottom:
    the balancing ratio (shared scale) and the loss law."""
    from flowsim._figure_style import legend_outside, new_figure, save_figure

    fig, ax = new_figure(2, 3, figsize=(15.5, 9.5))
    for j, (regime, res) in enumerate(full.items()):
        _curves_panels(ax[0, j], ax[1, j], regime, res)
    ax[0, 0].sharey(ax[0, 1])
    ax[1, 0].sharey(ax[1, 1])
    _error_panel(ax[0, 2], scans)
    _loss_law_panel(ax[1, 2], full)
    handles = [h for a in ax.flat for h in a.get_legend_handles_labels()[0]]
    legend_outside(fig, handles, own=True, ncols=3)
    save_figure(fig, out)


def main() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    from flowsim._results import package_versions, write_json
    from flowsim.systems.cooccurrence.theory import phase2_scan

    start = time.perf_counter()
    scans = {"m": phase2_scan("m", WIDTHS, SEEDS, n=24), "n": phase2_scan("n", NS, SEEDS, m=16384)}
    for axis, res in scans.items():
        print(
            f"\n== scan over {axis} ({res['error_key']}: slope {res['slope']:.3f} +- {res['ci95']:.3f}, "
            f"predicted {res['predicted']}, holds: {res['holds']})"
        )
        print(_table(res["rows"]))
    full = {regime: full_model(regime) for regime in REGIMES}
    for regime, res in full.items():
        print(f"\n== full model, {regime} regime: T1 = {res['T1']:.4g}, value term ratio {res['value_term_ratio']:.3g}")
        print("  paper's system errors:", {k: round(v, 3) for k, v in res["err"].items()})
        print("  + random tokens errors:", {k: round(v, 3) for k, v in res["err_rand"].items()})
        print("  loss law:", {k: round(v, 4) for k, v in res["loss_law"].items()})
        print("  W_Q, W_K frozen vs trained:", {k: round(v, 6) for k, v in res["attention_ablation"].items()})
        print(
            "  balancing:",
            {k: round(v, 4) for k, v in res["balancing"].items()},
            "R(T) of the paper's system:",
            round(res["R_T_paper_system"], 4),
        )
    wall = time.perf_counter() - start
    OUT.mkdir(exist_ok=True)
    write_json(
        OUT / "theory_phase2.json", {"scans": scans, "full_model": full, "wall_s": wall, "versions": package_versions()}
    )
    plot(scans, full, OUT / "theory_phase2.png")
    print(f"\nwrote {OUT / 'theory_phase2.json'} and theory_phase2.png; total wall time {wall:.1f} s")


if __name__ == "__main__":
    main()
