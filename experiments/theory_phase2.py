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


def plot(scans: dict[str, dict], full: dict[str, dict], out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(15, 8.5))
    for j, (regime, res) in enumerate(full.items()):
        c = res["curves"]
        t = np.asarray(c["t"])
        a = ax[0, j]
        a.loglog(t, c["flow_loss"], "k-", label="full flow")
        a.loglog(t, c["paper_loss"], "C0--", label="paper's Phase-2 system")
        a.loglog(t, c["rand_loss"], "C1:", label="Phase-2 system + random tokens")
        a.set(title=f"{regime} regime (m=128): loss after T1", xlabel="t", ylabel="loss")
        a.legend(fontsize=8)
        a = ax[1, j]
        a.semilogx(t, c["flow_R"], "k-", label="R, full flow")
        a.semilogx(t, c["paper_R"], "C0--", label="R, paper's system")
        a.semilogx(t, c["R_star"], "C3-.", label="R* (fixed point)")
        a.axhspan(1, 2, color="0.9", zorder=0)
        a.set(title=f"{regime} regime: balancing ratio R(t)", xlabel="t", ylabel="R")
        a.legend(fontsize=8)
    a = ax[0, 2]
    for key, axis, label in (
        ("err_rand_loss", "m", "with random tokens, vs m (n=24)"),
        ("err_loss", "n", "paper's system, vs n (m=16384)"),
    ):
        rows = scans[axis]["rows"]
        x = np.array([r[axis] for r in rows], float)
        yv = np.array([r[key] for r in rows], float)
        a.loglog(x, yv, "o", label=f"{label}: slope {scans[axis]['slope']:.2f}")
        xs = np.unique(x)
        a.loglog(xs, np.exp(np.mean(np.log(yv))) * np.exp(np.mean(np.log(x))) / xs, "k:", lw=0.8)
    a.set(title="Phase-2 system: max rel. loss error after T1\n(dotted: slope -1)", xlabel="m or n", ylabel="error")
    a.legend(fontsize=8)
    a = ax[1, 2]
    for regime, res in full.items():
        c = res["curves"]
        t, ll, N = (np.asarray(c[k]) for k in ("t", "flow_loss", "flow_N"))
        X = np.concatenate([[0.0], np.cumsum(0.5 * (N[1:] + N[:-1]) * np.diff(t))])
        a.plot(X, 1 / ll - 1 / ll[0], label=f"{regime}: c = {res['loss_law']['c']:.3f}")
        a.plot(X, res["loss_law"]["c"] * X, "k:", lw=0.8)
    a.set(
        xscale="log",
        yscale="log",
        title="loss law: 1/L - 1/L(T1) vs int N dt (dotted: fit)",
        xlabel=r"$\int_{T_1}^t N\,ds$",
        ylabel=r"$1/\hat L - 1/\hat L(T_1)$",
    )
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


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
