"""T1 vs width m on the exact reduced flow, against the theory's T1 ~ 1/m (issue 3, item 3, first bullet).

    python experiments/theory_t1_scaling.py

Widths 64..65536 (7 widths), seeds 0, 1, 2, the paper's n=60, L=5 with d=16 (random tokens with
replacement), m1=256, theory init. Writes experiments/results/theory_t1_scaling.json and .png and
prints the table, the fitted exponent with its 95% interval, the prediction and the total wall time.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

HERE = pathlib.Path(__file__).parent
WIDTHS = [64, 256, 1024, 4096, 16384, 32768, 65536]
SEEDS = [0, 1, 2]


def plot(res: dict, out: pathlib.Path) -> None:
    """Log-log T1 vs m: points per seed, the fitted line and a line of the predicted slope."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in res["rows"] if np.isfinite(r["T1"])]
    m = np.array([r["m"] for r in rows], float)
    t1 = np.array([r["T1"] for r in rows], float)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for s in sorted({r["seed"] for r in rows}):
        sel = np.array([r["seed"] == s for r in rows])
        ax.loglog(m[sel], t1[sel], "o", alpha=0.7, label=f"seed {s}")
    grid = np.geomspace(m.min(), m.max(), 50)
    logc = np.mean(np.log(t1) - res["slope"] * np.log(m))
    ax.loglog(grid, np.exp(logc) * grid ** res["slope"], "-",
              label=f"fit: slope {res['slope']:.3f} ± {res['ci95']:.3f}")
    anchor = np.exp(np.mean(np.log(t1[m == m.max()])))
    ax.loglog(grid, anchor * (grid / m.max()) ** res["predicted"], "--", label=f"predicted slope {res['predicted']:g}")
    ax.set_xlabel("width m")
    ax.set_ylabel("T1 (first time min_i y_i F_i = 0)")
    ax.set_title("End of Phase 1 vs width (reduced flow, theory init)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    from flowsim.results import package_versions, write_json
    from flowsim.theory.predictions import t1_vs_width

    t0 = time.perf_counter()
    res = t1_vs_width(WIDTHS, SEEDS)
    wall = time.perf_counter() - t0
    print(f"{'m':>7} {'seed':>4} {'T1':>12} {'loss(T1)':>9}  result")
    for r in res["rows"]:
        print(f"{r['m']:>7} {r['seed']:>4} {r['T1']:>12.5g} {r['loss_T1']:>9.4f}  {r['result']}")
    print(f"fitted exponent {res['slope']:.4f}, 95% CI [{res['interval'][0]:.4f}, {res['interval'][1]:.4f}]; "
          f"predicted {res['predicted']:g} (tolerance {res['tolerance']}): holds = {res['holds']}")
    print(f"exponent vs Lem 4.1 rate (sigma0^2+sigma1^2) m m1: {res['slope_vs_rate']:.4f} ± {res['ci95_vs_rate']:.4f}")
    out = HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "theory_t1_scaling.json", {**res, "wall_s": wall, "versions": package_versions()})
    plot(res, out / "theory_t1_scaling.png")
    print(f"wrote {out / 'theory_t1_scaling.json'} and .png; total wall time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
