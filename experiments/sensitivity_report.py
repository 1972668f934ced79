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


PANELS = {
    "loss": "training loss (MSE)",
    "pert_sharpness": "perturbation sharpness",
    "lambda_max": r"top Hessian eigenvalue $\lambda_{\max}$",
    "tradeoff": r"LayerNorm blow-up $\times\ \|\theta\|^2$",
}


def _sharpness_figure(rows: list[dict[str, Any]]) -> Any:
    """Per quantity, fitted models against n: Adam seeds as points with their median and min-max band,
    flows as crosses; one colour per target."""
    from flowsim._figure_style import legend_outside, new_figure

    fig, axes = new_figure(1, 3, figsize=(15, 4.8))
    for ax, key in zip(axes[0], ("pert_sharpness", "lambda_max", "tradeoff")):
        for i, t in enumerate(targets_of(rows)):
            for part, marker in (("adam", "o"), ("flow", "x")):
                fit = [r for r in fitted_rows(rows, part, t) if (r.get(key) or 0) > 0]
                if not fit:
                    continue
                n = np.array([r["n"] for r in fit])
                v = np.array([r[key] for r in fit], float)
                name = "gradient flow" if part == "flow" else "Adam"
                ax.scatter(n, v, color=f"C{i}", marker=marker, s=22, alpha=0.6, label=f"{t.upper()}: {name}")
                if part == "adam":
                    ns = np.unique(n)
                    ax.plot(ns, [np.median(v[n == k]) for k in ns], color=f"C{i}", lw=1.5)
                    lo, hi = ([f(v[n == k]) for k in ns] for f in (np.min, np.max))
                    ax.fill_between(ns, lo, hi, color=f"C{i}", alpha=0.15, lw=0)
        ax.set(yscale="log", xlabel="input bits $n$", ylabel=PANELS[key])
        ax.grid(True, alpha=0.3)
    fig.suptitle("Fitted models against $n$ (Adam: median line, min-max band over seeds)")
    legend_outside(fig, axes[0, 0].get_legend_handles_labels()[0], own=True, ncols=6)
    return fig


def _flow_vs_adam_figure(f: dict[str, Any], a: dict[str, Any] | None) -> Any:
    """Loss and sharpness of one flow and the Adam run of the same (target, n, seed) over time."""
    from flowsim._figure_style import legend_outside, log_time_axis, new_figure

    fig, axes = new_figure(1, 3, figsize=(15, 4.6))
    for ax, key in zip(axes[0], ("loss", "pert_sharpness", "lambda_max")):
        for r, name, color in ((f, "gradient flow", "C0"), (a, r"Adam (time $t$ = step $\times$ step size)", "C1")):
            if r is not None:
                t, v = np.array(r["curves"]["t"], float), np.array(r["curves"][key], float)
                ok = (t >= 0) & np.isfinite(v) & (v > 0)  # log y: non-positive values are gaps
                ax.plot(t, np.where(ok, v, np.nan), color=color, label=name)
        ax.set(yscale="log", ylabel=PANELS[key])
        log_time_axis(ax, label="time $t$")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{f['target'].upper()}, $n = {f['n']}$, seed {f['seed']}: gradient flow against Adam")
    legend_outside(fig, axes[0, 0].get_legend_handles_labels()[0], own=True)
    return fig


def plot(rows: list[dict[str, Any]], out: pathlib.Path) -> list[pathlib.Path]:
    """sharpness_vs_n.png (per target: seeds as points, median line and seed band; flow as crosses) and
    flow_vs_adam.png (loss and perturbation sharpness over time, PARITY seed 0, the largest flow n)."""
    from flowsim._figure_style import save_figure

    paths = [save_figure(_sharpness_figure(rows), out / "sharpness_vs_n.png")]
    flows = [r for r in rows if r["part"] == "flow" and "curves" in r]
    if flows:
        f = max(flows, key=lambda r: r["n"])
        a = next((r for r in rows if r["part"] == "adam" and r["n"] == f["n"] and "curves" in r), None)
        paths.append(save_figure(_flow_vs_adam_figure(f, a), out / "flow_vs_adam.png"))
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


if __name__ == "__main__":  # redraw the figures from a finished run's runs.jsonl
    import argparse
    import json

    p = argparse.ArgumentParser(description="Redraw the sensitivity figures from runs.jsonl (no rerun).")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results" / "sensitivity")
    folder = p.parse_args().out
    runs = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines() if line.strip()]
    verdicts_file = folder / "verdicts.json"
    if verdicts_file.is_file():  # the run's own fit rule, as experiments/sensitivity.py applies it
        from flowsim.systems.sensitivity import is_fitted

        fit_loss = json.loads(verdicts_file.read_text())["args"]["fit_loss"]
        for r in runs:
            r["fitted"] = is_fitted(r["loss"], fit_loss)
    for path in plot(runs, folder):
        print(path)
