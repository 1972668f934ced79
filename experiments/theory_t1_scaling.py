"""T1 vs m, m1 and sigma1 on the exact reduced flow, against Lem 4.1's T1 ~ 1/((sigma0^2+sigma1^2) m m1)
(issue: "T1 vs m (and m1, sigma1) on a grid of at least 5 values, 3 seeds each").

    python experiments/theory_t1_scaling.py

The paper's n=60, L=5 with d=16 (random tokens with replacement), seeds 0, 1, 2, sigma0 = 1/sqrt(L m):
- m: widths 64..65536 (7), theory init sigma1 = 1/sqrt(m1), m1 = 256; predicted exponent -1.
- m1: 16..4096 (5) at m = 4096 and sigma1 = 1/16 held fixed (sigma1 sqrt(m1) = 0.25..4); predicted -1.
- sigma1: 1/64..1/4 (5) at m = 4096, m1 = 256 (sigma1 sqrt(m1) = 0.25..4, sigma1^2/sigma0^2 = 5..1280);
  predicted -2.
The grids were fixed before the runs. A control added afterwards (`CONTROL`, JSON key "controls", not in
the figure) repeats the sigma1 axis at small initial outputs (m1 = 16, m = 65536). Writes
experiments/results/theory_t1_scaling.json (the three tables) and .png (three panels) and prints
the tables, the fitted exponents with their 95% intervals, the predictions and the total wall time.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).parent
SEEDS = [0, 1, 2]
AXES: dict[str, tuple[list[float], dict[str, Any]]] = {
    "m": ([64, 256, 1024, 4096, 16384, 32768, 65536], {"m1": 256}),
    "m1": ([16, 64, 256, 1024, 4096], {"m": 4096, "sigma1": 1 / 16}),
    "sigma1": ([1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4], {"m": 4096, "m1": 256}),
}
# A-posteriori control (added after the sigma1 grid gave a shallow slope, not a replacement for it): the
# same axis where the initial outputs are small, G0 = sigma1 sqrt(m1/L) = 0.014..0.22 (m1 = 16), with
# sigma1^2/sigma0^2 >= 20 (m = 65536). Lem 4.1 alone predicts -2 here too.
CONTROL: dict[str, tuple[list[float], dict[str, Any]]] = {
    "sigma1_small_G0": ([1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8], {"m": 65536, "m1": 16}),
}


def offset_fit(res: dict) -> tuple[float, float]:
    """A-posteriori diagnostic: OLS of T1 * rate on the initial output scale G0_scale, T1 rate = c0 + c1 G0.

    Lem 4.1 alone predicts T1 * rate constant (c1 = 0); c1 > 0 means T1 also grows with the size of the
    initial outputs, which the theory takes O(1).
    """
    rows = [r for r in res["rows"] if np.isfinite(r["T1"])]
    g0 = np.array([r["G0_scale"] for r in rows])
    z = np.array([r["T1"] * r["rate"] for r in rows])
    if np.ptp(g0) <= 1e-9 * g0.max():
        return float(z.mean()), 0.0
    c1, c0 = np.polyfit(g0, z, 1)
    return float(c0), float(c1)


LABELS = {
    "m": "attention width $m$ ($m_1 = 256$, $\\sigma_1 = 1/\\sqrt{m_1}$)",
    "m1": "MLP width $m_1$ ($m = 4096$, $\\sigma_1 = 1/16$)",
    "sigma1": "MLP init scale $\\sigma_1$ ($m = 4096$, $m_1 = 256$)",
}


def seed_spread(ax: Any, x: np.ndarray, y: np.ndarray, color: str = "0.4") -> None:
    """The geometric mean over seeds at each x (line) and the seeds' min-max band."""
    xs = np.unique(x)
    lo, hi = (np.array([f(y[x == v]) for v in xs]) for f in (np.min, np.max))
    mid = np.array([np.exp(np.mean(np.log(y[x == v]))) for v in xs])
    ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0, label="min-max over seeds")
    ax.plot(xs, mid, color=color, lw=1.0, label="geometric mean over seeds")


def plot(results: dict[str, dict], out: pathlib.Path) -> None:
    """One log-log panel per axis, sharing the T1 scale: T1 per seed, their mean and min-max band, the
    fitted line, and the predicted slope through the centroid of the points."""
    from matplotlib.ticker import NullFormatter

    from flowsim._figure_style import legend_outside, new_figure, save_figure

    fig, axs = new_figure(1, len(results), figsize=(4.6 * len(results), 4.6), sharey=True)
    for ax, (name, res) in zip(axs[0], results.items()):
        rows = [r for r in res["rows"] if np.isfinite(r["T1"])]
        x = np.array([r["value"] for r in rows], float)
        t1 = np.array([r["T1"] for r in rows], float)
        seed_spread(ax, x, t1)
        for i, s in enumerate(sorted({r["seed"] for r in rows})):
            sel = np.array([r["seed"] == s for r in rows])
            ax.plot(x[sel], t1[sel], "osD^v"[i % 5], color=f"C{i}", ms=5, alpha=0.8, ls="none", label=f"seed {s}")
        grid = np.geomspace(x.min(), x.max(), 50)
        lx, lt = np.log(x).mean(), np.log(t1).mean()
        ax.plot(grid, np.exp(lt + res["slope"] * (np.log(grid) - lx)), "C3-", label="fitted power law")
        ax.plot(grid, np.exp(lt + res["predicted"] * (np.log(grid) - lx)), "k--", lw=1.2, label="Lem 4.1's slope")
        ax.set(xscale="log", yscale="log", xlabel=LABELS.get(name, name))
        ax.xaxis.set_minor_formatter(NullFormatter())
        if x.max() < 100 * x.min():  # under two decades: a tick at each grid value
            xs = np.unique(x)
            ax.set_xticks(xs, [f"1/{1 / v:g}" if v < 1 and (1 / v).is_integer() else f"{v:g}" for v in xs])
        verdict = "holds" if res["holds"] else "fails"
        ax.set_title(
            f"slope {res['slope']:.2f} ± {res['ci95']:.2f} (95%), predicted {res['predicted']:g}: {verdict}",
            fontsize="medium",
        )
        ax.grid(True, which="major", alpha=0.3)
    axs[0, 0].set_ylabel(r"end of Phase 1 $T_1$ (first $t$ with $\min_i y_i F_i = 0$)")
    fig.suptitle(r"End of Phase 1 on the exact reduced flow ($n = 60$, $L = 5$, $d = 16$, $\sigma_0 = 1/\sqrt{L m}$)")
    legend_outside(fig, axs[0, 0].get_legend_handles_labels()[0], own=True, ncols=7)
    save_figure(fig, out)


def report(name: str, res: dict) -> None:
    """Print one axis: the table, the fits against the axis and against the rate, and the diagnostic."""
    print(f"\n== axis {name} ==")
    print(
        f"{'value':>10} {'m':>6} {'m1':>5} {'sigma1':>8} {'seed':>4} {'G0':>6} {'margin0':>8} {'T1':>11} "
        f"{'T1*rate':>8} {'loss(T1)':>8}  result"
    )
    for r in res["rows"]:
        print(
            f"{r['value']:>10.5g} {r['m']:>6} {r['m1']:>5} {r['sigma1']:>8.5f} {r['seed']:>4} {r['G0_scale']:>6.3f} "
            f"{r['margin0']:>8.3f} {r['T1']:>11.5g} {r['T1'] * r['rate']:>8.3f} {r['loss_T1']:>8.4f}  {r['result']}"
        )
    print(
        f"fitted exponent {res['slope']:.4f}, 95% CI [{res['interval'][0]:.4f}, {res['interval'][1]:.4f}]; "
        f"predicted {res['predicted']:g} (tolerance {res['tolerance']}): holds = {res['holds']}"
    )
    print(
        f"exponent vs Lem 4.1 rate (sigma0^2+sigma1^2) m m1: {res['slope_vs_rate']:.4f} ± {res['ci95_vs_rate']:.4f}"
        f" (predicted -1): holds = {res['holds_vs_rate']}"
    )
    c0, c1 = offset_fit(res)
    print(f"diagnostic (a posteriori): T1 * rate ~ {c0:.2f} + {c1:.2f} G0_scale")


def main() -> None:
    from flowsim._results import package_versions, write_json
    from flowsim.systems.cooccurrence.theory.t1 import t1_scaling

    t0 = time.perf_counter()
    results = {name: t1_scaling(name, values, SEEDS, **kw) for name, (values, kw) in AXES.items()}  # type: ignore[arg-type]
    controls = {name: t1_scaling("sigma1", values, SEEDS, **kw) for name, (values, kw) in CONTROL.items()}
    wall = time.perf_counter() - t0
    for name, res in {**results, **controls}.items():
        report(name, res)
        res["offset_fit"] = dict(zip(("c0", "c1"), offset_fit(res)))
    out = HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "theory_t1_scaling.json",
        {"axes": results, "controls": controls, "wall_s": wall, "versions": package_versions()},
    )
    plot(results, out / "theory_t1_scaling.png")
    print(f"\nwrote {out / 'theory_t1_scaling.json'} and .png; total wall time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
