"""Phase-2 attention predictions on the exact reduced flow: attention displacement vs L (Cor F.17)
and the projections C_{i1,i2} of the score change (Thm 3.3).

    python experiments/theory_attention.py

1. `attention_displacement_vs_L`: L = 3..10, seeds 0, 1, theory init, n = 12, m = 1024, m1 = 256,
   distinct random tokens (d = 3 + number of random slots), ended when the loss first reaches 0.01.
2. `score_change_projections`, at the same loss target, 3 seeds:
   - theory regime: theory init, n = 24, L = 5, distinct tokens (d = 67), widths 256..16384;
   - the paper's experiment regime: Kaiming init, n = 60, L = 5, d = 64, m1 = 256, tokens with
     replacement, widths 128 (the paper's m) .. 8192, horizon lr * steps = 300.
3. The separation ratio min |C_12, C_21, C_31, C_32| / max |C_rand| vs n in {12, 24, 48} (theory regime,
   L = 5, m = 4096, 3 seeds): predicted to grow like n (slope 1) while n << sqrt(m)-ish.
Writes experiments/results/theory_attention.json and theory_attention.png, prints the tables,
fitted exponents with 95% intervals, verdicts and the total wall time.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import numpy as np
from matplotlib.ticker import NullFormatter

HERE = pathlib.Path(__file__).parent
LS = list(range(3, 11))
L_SEEDS = [0, 1]
SEEDS = [0, 1, 2]
THEORY_WIDTHS = [256, 512, 1024, 4096, 16384]
KAIMING_WIDTHS = [128, 256, 512, 2048, 8192]
RATIO_NS = [12, 24, 48]  # separation vs n (random-token entries "1/n times slower"), at m = RATIO_M, L = 5
RATIO_M = 4096
FOUR = ("C_12", "C_21", "C_31", "C_32")
INIT_NAMES = {"theory": "theory", "kaiming": "Kaiming"}


def _spread(ax: Any, x: np.ndarray, y: np.ndarray, color: str, ls: str = "-", label: str | None = None) -> None:
    """The geometric mean over seeds at each x (line) and the seeds' min-max band."""
    xs = np.unique(x)
    lo, hi = (np.array([f(y[x == v]) for v in xs]) for f in (np.min, np.max))
    ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)
    ax.plot(xs, [np.exp(np.mean(np.log(y[x == v]))) for v in xs], color=color, ls=ls, lw=1.2, label=label)


def _displacement_panel(ax: Any, disp: dict) -> None:
    """attn_disp vs L per seed, their band, the fit and the bound's 1/L^2 slope."""
    rows = [r for r in disp["rows"] if np.isfinite(r["attn_disp"])]
    L = np.array([r["L"] for r in rows], float)
    y = np.array([r["attn_disp"] for r in rows], float)
    _spread(ax, L, y, "0.4", label="geometric mean and min-max over seeds")
    for i, s in enumerate(sorted({r["seed"] for r in rows})):
        sel = np.array([r["seed"] == s for r in rows])
        ax.plot(L[sel], y[sel], "os"[i % 2], color=f"C{i}", ms=4, ls="none", alpha=0.8, label=f"seed {s}")
    grid = np.linspace(L.min(), L.max(), 50)
    logc = np.mean(np.log(y) - disp["slope"] * np.log(L))
    ax.plot(grid, np.exp(logc) * grid ** disp["slope"], "C3-", label="fitted power law")
    anchor = np.exp(np.mean(np.log(y[L == L.min()])))
    ax.plot(grid, anchor * (grid / L.min()) ** -2.0, "k--", lw=1.2, label=r"Cor F.17's bound slope $L^{-2}$")
    ax.set(xscale="log", yscale="log", xlabel="sequence length $L$")
    ax.set_xticks(np.unique(L), [f"{v:g}" for v in np.unique(L)])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel(r"attention displacement $\max |p(T) - p(0)|$")
    ax.set_title(f"(a) displacement vs $L$ (theory init): slope {disp['slope']:.2f} ± {disp['ci95']:.2f}")


def _projections_panel(ax: Any, regimes: dict[str, dict]) -> None:
    """|C| vs m: the four separated entries and the largest random one, seed mean and band per regime,
    with the paper's slope."""
    for res, ls in zip(regimes.values(), ("-", "--")):
        m = np.array([r["m"] for r in res["rows"]], float)
        for k, c in zip((*FOUR, "rand_max"), ("C0", "C1", "C2", "C3", "0.45")):
            y = np.abs([r[k] for r in res["rows"]])
            ok = np.isfinite(y) & (y > 0)
            _spread(ax, m[ok], y[ok], c, ls)
        w = np.array(sorted(set(m)))
        ref = np.exp(np.mean(np.log(np.abs([r["C_21"] for r in res["rows"] if r["m"] == w[0]]))))
        ax.plot(w, ref * (w / w[0]) ** res["predicted_slope"], ls, color="m", lw=2.2, alpha=0.6)
    ax.set(xscale="log", yscale="log", xlabel="attention width $m$", ylabel=r"$|C_{i_1 i_2}|$ at loss 0.01")
    ax.set_title("(b) score-change projections vs $m$ (band: min-max over seeds)")


def _projection_handles(regimes: dict[str, dict]) -> list:
    from matplotlib.lines import Line2D

    names = {"C_12": "$C_{12}$", "C_21": "$C_{21}$", "C_31": "$C_{31}$", "C_32": "$C_{32}$", "rand_max": "max random"}
    out = [Line2D([], [], color=c, label=names[k]) for k, c in zip(names, ("C0", "C1", "C2", "C3", "0.45"))]
    for (name, res), ls in zip(regimes.items(), ("-", "--")):
        slopes = ", ".join(f"{res['fits'][k]['slope']:.2f}" for k in names if k in res["fits"])
        init = INIT_NAMES.get(name, name)
        out.append(Line2D([], [], color="k", ls=ls, label=f"{init} init (fitted slopes {slopes})"))
        label = f"{init} init: paper's slope {res['predicted_slope']:.2f}"
        out.append(Line2D([], [], color="m", ls=ls, lw=2.2, alpha=0.6, label=label))
    return out


def _block_panels(fig: Any, axes: Any, regimes: dict[str, dict]) -> None:
    """Seed-mean 3x3 blocks of C, each divided by its largest |entry|, on one shared colour scale."""
    im = None
    for ax, (name, res), m, tag in zip(axes, regimes.items(), (1024, 128), "cd"):
        blocks = {int(k): v for k, v in res["C3_mean"].items()}  # JSON keys are strings
        C = np.array(blocks[m])
        im = ax.imshow(C / np.abs(C).max(), cmap="RdBu_r", vmin=-1, vmax=1)
        for i in range(3):
            for j in range(3):
                white = abs(C[i, j]) > 0.6 * np.abs(C).max()  # readable on the dark cells
                ax.text(j, i, f"{C[i, j]:.2g}", ha="center", va="center", fontsize="small", color="w" if white else "k")
        ax.set_xticks(range(3), [r"$q\,\mu_1$", r"$q\,\mu_2$", r"$q\,\mu_3$"])
        ax.set_yticks(range(3), [r"$k\,\mu_1$", r"$k\,\mu_2$", r"$k\,\mu_3$"])
        ratio = np.median([r["ratio"] for r in res["rows"] if r["m"] == m])
        init = INIT_NAMES.get(name, name)
        ax.set_title(
            f"({tag}) $C$ block, {init} init, $m = {m}$\nseparation min $|C_4|$ / max $|C_{{rand}}|$ = {ratio:.1f}"
        )
    if im is not None:
        fig.colorbar(im, ax=list(axes), label=r"$C_{i_1 i_2} / \max |C|$ (entries: $C$)", shrink=0.9)


def plot(disp: dict, regimes: dict[str, dict], out: pathlib.Path) -> None:
    """(a) attn_disp vs L with the bound's 1/L^2 slope; (b) |C| vs m; (c, d) seed-mean 3x3 blocks of C."""
    from flowsim._figure_style import legend_outside, new_figure, save_figure

    fig, axes = new_figure(2, 2, figsize=(12.5, 10.5))
    _displacement_panel(axes[0, 0], disp)
    _projections_panel(axes[0, 1], regimes)
    _block_panels(fig, axes[1], regimes)
    for ax in axes[0]:
        ax.grid(True, alpha=0.3)
    handles = axes[0, 0].get_legend_handles_labels()[0] + _projection_handles(regimes)
    legend_outside(fig, handles, own=True, ncols=3)
    save_figure(fig, out)


def _print_C(name: str, res: dict) -> None:
    print(f"\n== C projections, {name} regime ({res['config']}) ==")
    print(
        f"{'m':>6} {'seed':>4} {'t_end':>10} {'C_12':>10} {'C_21':>10} {'C_31':>10} {'C_32':>10} {'rand_max':>10} "
        f"{'ratio':>6} signs  h_loss   h_C_12     h_ratio"
    )
    for r in res["rows"]:
        print(
            f"{r['m']:>6} {r['seed']:>4} {r['t_end']:>10.4g} {r['C_12']:>10.3e} {r['C_21']:>10.3e} "
            f"{r['C_31']:>10.3e} {r['C_32']:>10.3e} {r['rand_max']:>10.3e} {r['ratio']:>6.2f} "
            f"{r['signs_ok']!s:>5} {r['h_loss']:.2e} {r['h_C_12']:>10.3e} {r['h_ratio']:>6.2f}"
        )
    for k, f in res["fits"].items():
        print(f"  slope |{k}| vs m: {f['slope']:.3f}, 95% CI [{f['interval'][0]:.3f}, {f['interval'][1]:.3f}]")
    print(
        f"  paper's formula slope {res['predicted_slope']:.3f} "
        f"(with Lem 4.1 rate {res['predicted_slope_rate']:.3f}); tolerance {res['tolerance']}"
    )
    print(
        f"  signs_hold={res['signs_hold']} ratio_holds={res['ratio_holds']} (min ratio {res['min_ratio']:.2f} > "
        f"{res['ratio_min']}) scaling_holds={res['scaling_holds']} scaling_holds_rate={res['scaling_holds_rate']} "
        f"-> holds={res['holds']}"
    )


def separation_vs_n() -> dict:
    """The ratio of `score_change_projections` at one width for several n (one compile per n)."""
    from flowsim import loglog_slope
    from flowsim.systems.cooccurrence.theory.attention import score_change_projections

    rows = []
    for n in RATIO_NS:
        res = score_change_projections([RATIO_M], SEEDS, init="theory", n=n, L=5)
        rows += [{"n": n, "seed": r["seed"], "ratio": r["ratio"], "signs_ok": r["signs_ok"]} for r in res["rows"]]
    slope, ci = loglog_slope(np.array([r["n"] for r in rows], float), np.array([r["ratio"] for r in rows], float))
    return {
        "rows": rows,
        "slope": slope,
        "ci95": ci,
        "interval": [slope - ci, slope + ci],
        "predicted": 1.0,
        "m": RATIO_M,
        "L": 5,
    }


def main() -> None:
    from flowsim._results import package_versions, write_json
    from flowsim.systems.cooccurrence.theory.attention import (
        attention_displacement_vs_L,
        score_change_projections,
    )

    t0 = time.perf_counter()
    disp = attention_displacement_vs_L(LS, L_SEEDS)
    t_disp = time.perf_counter() - t0
    print(f"== attention displacement vs L ({disp['config']}) ==")
    print(f"{'L':>3} {'seed':>4} {'d':>4} {'T m':>9} {'attn_disp':>11} {'L^2 disp':>11}  result")
    for r in disp["rows"]:
        print(
            f"{r['L']:>3} {r['seed']:>4} {r['d']:>4} {r['t_end_m']:>9.2f} {r['attn_disp']:>11.4e} "
            f"{r['L2_disp']:>11.4e}  {r['result']}"
        )
    print(
        f"slope {disp['slope']:.3f}, 95% CI [{disp['interval'][0]:.3f}, {disp['interval'][1]:.3f}]; "
        f"bound slope <= -2 (L^2 disp slope {disp['l2_slope']:.3f}); holds = {disp['holds']} "
        f"(consistent = {disp['consistent']}); "
        f"max L^2 disp = {disp['max_L2_disp']:.3e}; {t_disp:.1f} s"
    )
    regimes = {}
    t1 = time.perf_counter()
    regimes["theory"] = score_change_projections(THEORY_WIDTHS, SEEDS, init="theory", n=24, L=5)
    _print_C("theory", regimes["theory"])
    print(f"  {time.perf_counter() - t1:.1f} s")
    t1 = time.perf_counter()
    regimes["kaiming"] = score_change_projections(
        KAIMING_WIDTHS, SEEDS, init="kaiming", n=60, L=5, d=64, distinct_tokens=False
    )
    _print_C("kaiming (paper's experiment)", regimes["kaiming"])
    print(f"  {time.perf_counter() - t1:.1f} s")
    t1 = time.perf_counter()
    sep = separation_vs_n()
    print(f"\n== separation ratio vs n (theory init, L=5, m={RATIO_M}) ==")
    for r in sep["rows"]:
        print(f"  n={r['n']:>3} seed={r['seed']} ratio={r['ratio']:.2f} signs_ok={r['signs_ok']}")
    print(
        f"  slope of ratio vs n: {sep['slope']:.3f}, 95% CI [{sep['interval'][0]:.3f}, {sep['interval'][1]:.3f}] "
        f"(predicted 1); {time.perf_counter() - t1:.1f} s"
    )
    wall = time.perf_counter() - t0
    out = HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "theory_attention.json",
        {
            "displacement_vs_L": disp,
            "C_projections": regimes,
            "separation_vs_n": sep,
            "wall_s": wall,
            "versions": package_versions(),
        },
    )
    plot(disp, regimes, out / "theory_attention.png")
    print(f"wrote {out / 'theory_attention.json'} and .png; total wall time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
