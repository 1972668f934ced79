"""Figures and tables of the sensitivity verdict run (`experiments/sensitivity.py`): sharpness vs n
per target with seed bands, flow vs Adam over time, runs.csv, verdicts.json and report.md with the
plateau-escape table."""

from __future__ import annotations

import csv
import math
import pathlib
from typing import Any

import numpy as np


def slope_ci(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """OLS slope of y on x and the half-width of its 95% interval (normal quantile); nan if < 3 points."""
    if x.size < 3 or np.unique(x).size < 2:
        return float("nan"), float("nan")
    X = np.stack([np.ones_like(x), x], 1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    s2 = float(np.sum((y - X @ coef) ** 2) / (x.size - 2))
    return float(coef[1]), 1.96 * math.sqrt(s2 / float(np.sum((x - x.mean()) ** 2)))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (ranks with ties averaged); nan for fewer than 3 points."""
    if x.size < 3:
        return float("nan")

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(v.size)
        r[order] = np.arange(v.size, dtype=float)
        for u in np.unique(v):
            r[v == u] = r[v == u].mean()
        return r

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def targets_of(rows: list[dict[str, Any]]) -> list[str]:
    """parity and first (judged), then the other targets of the Adam part (reported)."""
    seen = {r["target"] for r in rows if r["part"] == "adam"}
    return ["parity", "first", *sorted(seen - {"parity", "first"})]


def fitted_rows(rows: list[dict[str, Any]], part: str, target: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["part"] == part and r["target"] == target and r["fitted"]]


def plot(rows: list[dict[str, Any]], out: pathlib.Path) -> list[pathlib.Path]:
    """sharpness_vs_n.png (per target: seeds as points, median line and seed band; flow as crosses) and
    flow_vs_adam.png (loss and perturbation sharpness over time, PARITY seed 0, the largest flow n)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, key, label in zip(
        axes,
        ("pert_sharpness", "lambda_max", "tradeoff"),
        ("perturbation sharpness", r"$\lambda_{max}$", "blow-up x |θ|²"),
    ):
        for i, t in enumerate(targets_of(rows)):
            for part, marker in (("adam", "o"), ("flow", "x")):
                fit = [r for r in fitted_rows(rows, part, t) if (r.get(key) or 0) > 0]
                if not fit:
                    continue
                n = np.array([r["n"] for r in fit])
                v = np.array([r[key] for r in fit], float)
                ax.scatter(n, v, color=f"C{i}", marker=marker, alpha=0.6, label=f"{t} ({part})")
                if part == "adam":  # median line, band from the lowest to the highest seed
                    ns = np.unique(n)
                    ax.plot(ns, [np.median(v[n == k]) for k in ns], color=f"C{i}", lw=1.5)
                    lo, hi = ([f(v[n == k]) for k in ns] for f in (np.min, np.max))
                    ax.fill_between(ns, lo, hi, color=f"C{i}", alpha=0.15, lw=0)
        ax.set_yscale("log")
        ax.set_xlabel("n (bits)")
        ax.set_title(f"{label} of fitted models")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    paths = [out / "sharpness_vs_n.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    flows = [r for r in rows if r["part"] == "flow" and "curves" in r]
    if flows:
        f = max(flows, key=lambda r: r["n"])
        a = next((r for r in rows if r["part"] == "adam" and r["n"] == f["n"] and "curves" in r), None)
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
        for ax, key in zip(axes, ("loss", "pert_sharpness", "lambda_max")):
            for r, name in ((f, "gradient flow"), (a, "Adam (t = step x lr)")):
                if r is not None:
                    t, v = np.array(r["curves"]["t"], float), np.array(r["curves"][key], float)
                    ok = (t > 0) & np.isfinite(v) & (v > 0)
                    ax.plot(t[ok], v[ok], label=name)
            ax.set(xscale="log", yscale="log", xlabel="time t", title=f"{key}: parity, n = {f['n']}, seed 0")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
        paths.append(out / "flow_vs_adam.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_tables(rows: list[dict[str, Any]], vs: list[dict[str, Any]], out: pathlib.Path, args: Any) -> None:
    """runs.csv, verdicts.json and report.md."""
    cols = [k for k in rows[0] if k != "curves"] if rows else []
    for r in rows:
        cols += [k for k in r if k not in cols and k != "curves"]
    with (out / "runs.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    from flowsim._results import package_versions, write_json

    settings = {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()}
    write_json(out / "verdicts.json", {"args": settings, "verdicts": vs, "versions": package_versions()})
    lines = ["# Sensitivity verdict run", "", "| verdict | status | criterion |", "|---|---|---|"]
    lines += [f"| {v['name']} | {v['status']} | {v['criterion']} |" for v in vs]
    lines += ["", "| part | target | n | seeds | fitted | median S | median λmax | median steps / t_fit |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    groups = sorted({(r["part"], r["target"], r["n"]) for r in rows})
    for part, t, n in groups:
        g = [r for r in rows if (r["part"], r["target"], r["n"]) == (part, t, n)]
        fit = [r for r in g if r["fitted"]]
        med = lambda k: f"{np.median([r[k] for r in fit if r.get(k) is not None]):.3g}" if fit else "-"
        speed = med("t_fit") if part == "flow" else med("fit_steps")
        lines.append(
            f"| {part} | {t} | {n} | {len(g)} | {len(fit)} | {med('pert_sharpness')} | {med('lambda_max')} | {speed} |"
        )
    (out / "report.md").write_text("\n".join(lines + escape_table(rows, args.adam_lr)) + "\n")


def escape_table(rows: list[dict[str, Any]], adam_lr: float) -> list[str]:
    """Plateau escape (loss below half the constant predictor's) against n: the flow's time and its
    cost, next to Adam's step, per target; a run that did not escape counts in `seeds`, not in the medians."""
    lines = ["", "## Plateau escape vs n", "", "| target | n | flow: seeds / escaped / fitted | flow t_escape "]
    lines[-1] += "(median, range) | flow solver steps (median) | flow λmax at end (max) | Adam escape step (median) |"
    lines.append("|---|---|---|---|---|---|---|")
    for t, n in sorted({(r["target"], r["n"]) for r in rows if r["part"] == "flow"}):
        f = [r for r in rows if (r["part"], r["target"], r["n"]) == ("flow", t, n)]
        esc = [r["t_escape"] for r in f if r.get("t_escape") is not None]
        a = [
            r["t_escape"] / adam_lr
            for r in rows
            if (r["part"], r["target"], r["n"]) == ("adam", t, n) and r.get("t_escape")
        ]
        rng = f"{np.median(esc):.3g} ({min(esc):.3g}–{max(esc):.3g})" if esc else "not escaped"
        lam = [r["lambda_max"] for r in f if r.get("lambda_max") is not None]
        lines.append(
            f"| {t} | {n} | {len(f)} / {len(esc)} / {sum(bool(r['fitted']) for r in f)} | {rng} "
            f"| {np.median([r['solver_steps'] for r in f]):.0f} | {max(lam) if lam else float('nan'):.3g} "
            f"| {np.median(a) if a else float('nan'):.0f} |"
        )
    for t in sorted({r["target"] for r in rows if r["part"] == "flow"}):
        esc = [r for r in rows if r["part"] == "flow" and r["target"] == t and r.get("t_escape")]
        n, te = np.array([r["n"] for r in esc], float), np.array([r["t_escape"] for r in esc], float)
        slope, ci = slope_ci(n, np.log(te))
        lines.append(
            f"\n{t}: log t_escape vs n slope {slope:.3f} ± {ci:.3f} (95%), a factor {math.exp(slope):.2f} per bit"
            f" ({len(esc)} escaped flows; flows that had not escaped by the horizon are left out, so at the"
            " largest n the slope is a lower bound)"
        )
    return lines
