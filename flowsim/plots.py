"""Figures of a run folder: the paper's Fig. 1a/1b, flow vs GD vs SGD, and the balancing quantities.

Every figure uses a log time axis (the t = 0 save point is dropped), marks the end of Phase 1 on the
flow (`summary["phase1_end_time"]`, when known) with a vertical dotted line, skips observables or
files that are missing, and masks non-finite values, so a run that stopped early still plots.
Figures are drawn on the non-interactive "Agg" backend and closed after saving.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

from .results import RunData, load_run  # noqa: E402

DPI = 120
FILENAMES = ("attention_scores.png", "losses.png", "flow_vs_discrete.png", "balancing.png")
_MAIN_SCORES = ("score_12", "score_21", "score_31", "score_32")
# (RunData field, colour, line style, zorder): the flow is drawn on top
_METHODS = (("flow", "C0", "-", 3.0), ("gd", "C1", "--", 2.5), ("sgd", "C2", "-", 2.0))


def _score_label(key: str) -> str:
    a, b = key[-2], key[-1]
    return rf"$s_{{{a}{b}}}$ (key $\mu_{a}$, query $\mu_{b}$)"


def _t1(run: RunData) -> float | None:
    """End of Phase 1 on the flow, or None when unknown / not finite."""
    try:
        t1 = float(run.summary.get("phase1_end_time"))
    except (TypeError, ValueError):
        return None
    return t1 if np.isfinite(t1) and t1 > 0 else None


def _plot(ax: Axes, data: Mapping[str, np.ndarray], key: str, *, log_y: bool = False,
          **style: Any) -> bool:
    """Plot observable `key` of one method against time, masking t <= 0 and non-finite values (and
    y <= 0 on a log y axis). A (seeds, S) array becomes its mean line with a min-max band over seeds.
    Returns False (drawing nothing) when the key, the times or every valid point is missing."""
    if key not in data or "t" not in data:
        return False
    t = np.asarray(data["t"], dtype=float)
    y = np.asarray(data[key], dtype=float)
    band = y.ndim == 2 and y.shape[1] == t.size
    if band:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # time points where every seed is NaN
            y = np.where(np.isfinite(y), y, np.nan)
            lo, mid, hi = np.nanmin(y, 0), np.nanmean(y, 0), np.nanmax(y, 0)
    elif y.shape == t.shape:
        lo = mid = hi = y
    else:
        return False
    ok = (t > 0) & np.isfinite(lo) & np.isfinite(mid) & np.isfinite(hi)
    if log_y:
        ok &= lo > 0
    if not ok.any():
        return False
    pos = t > 0
    ax.plot(t[pos], np.where(ok, mid, np.nan)[pos], **style)  # NaN breaks the line at gaps
    if band:
        ax.fill_between(t, lo, hi, where=ok, color=style.get("color"), alpha=0.2, lw=0)
    return True


def _time_axis(ax: Axes, t1: float | None, *, ylabel: str, title: str | None = None,
               log_y: bool = False, legend: Sequence[Line2D] = (), legend_loc: str = "best",
               show_legend: bool = True, log_x: bool = True) -> None:
    """Finish a panel: log (or linear) time axis, optional log y, the T1 marker, labels, grid and
    legend (the labelled curves plus the extra `legend` entries)."""
    has_data = bool(ax.lines or ax.collections)
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())  # log minor ticks triple the drawing time
    if log_y:
        ax.set_yscale("log")
    if t1 is not None:
        ax.axvline(t1, color="k", ls=":", lw=1.2, label=r"$T_1$ (end of Phase 1)")
    if not has_data:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")
    ax.set_xlabel("time $t$")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if show_legend and (handles or legend):
        ax.legend(handles=[*handles, *legend], loc=legend_loc, fontsize="small", framealpha=0.8)


def _flow_gd(ax: Axes, run: RunData, keys: Mapping[str, str], *, log_y: bool = False) -> list[Line2D]:
    """Plot each key (-> label) of the flow (solid) and GD (dashed, same colour); return the proxy
    legend entries for the two line styles (none when GD has none of the keys)."""
    gd_drawn = False
    for i, (key, label) in enumerate(keys.items()):
        flow = _plot(ax, run.flow, key, log_y=log_y, color=f"C{i}", lw=1.8, label=label)
        gd_drawn |= _plot(ax, run.gd, key, log_y=log_y, color=f"C{i}", lw=1.4, ls="--",
                          label=None if flow else label)
    if not gd_drawn:
        return []
    return [Line2D([], [], color="k", ls="-", label="gradient flow"),
            Line2D([], [], color="k", ls="--", label="GD")]


@contextlib.contextmanager
def _figure(path: str | os.PathLike, run: RunData, title: str, nrows: int = 1, ncols: int = 1,
            figsize: tuple[float, float] = (7.0, 4.5)) -> Iterator[np.ndarray]:
    """Yield a flat array of axes; on exit save the figure to `path` (with a title naming the run)
    and always close it. Fixed margins (in inches) instead of a layout engine, which doubles the
    drawing time."""
    w, h = figsize
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    fig.subplots_adjust(left=1.0 / w, right=1 - 0.25 / w, bottom=0.55 / h, top=1 - 0.6 / h,
                        wspace=0.35, hspace=0.45)
    try:
        yield axes.ravel()
        fig.suptitle(f"{title} - {run.path.name}")
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


def plot_attention_scores(run: RunData, path: str | os.PathLike) -> pathlib.Path:
    """Draw the paper's Fig. 1a: the attention scores `score_12, score_21, score_31, score_32` of the
    gradient flow (solid) and GD (dashed, same colour), the other 3x3 block scores of the flow as thin
    grey lines, on a log time axis with T1 marked.

    Args:
        run: the loaded run folder.
        path: the image file to write.

    Returns:
        `path` as a `pathlib.Path`.
    """
    with _figure(path, run, "Attention scores (Fig. 1a)") as (ax,):
        others = [f"score_{a}{b}" for a in "123" for b in "123" if f"score_{a}{b}" not in _MAIN_SCORES]
        grey = [_plot(ax, run.flow, k, color="0.6", lw=0.8, zorder=1) for k in others]
        styles = _flow_gd(ax, run, {k: _score_label(k) for k in _MAIN_SCORES})
        if any(grey):
            styles.append(Line2D([], [], color="0.6", lw=0.8, label="other scores (flow)"))
        _time_axis(ax, _t1(run), ylabel=r"score $\mu_a^\top W_K^\top W_Q \mu_b$", legend=styles)
    return pathlib.Path(path)


def plot_losses(run: RunData, path: str | os.PathLike) -> pathlib.Path:
    """Draw the paper's Fig. 1b: the total training loss and the per-type losses `loss_type1..4` of
    the gradient flow on log-log axes, with T1 marked.

    Args:
        run: the loaded run folder.
        path: the image file to write.

    Returns:
        `path` as a `pathlib.Path`.
    """
    with _figure(path, run, "Training loss of the gradient flow (Fig. 1b)") as (ax,):
        _plot(ax, run.flow, "loss", log_y=True, color="k", lw=2.2, label="total loss")
        for k in range(1, 5):
            _plot(ax, run.flow, f"loss_type{k}", log_y=True, color=f"C{k - 1}", lw=1.4,
                  label=f"type-{k} samples")
        _time_axis(ax, _t1(run), ylabel="loss", log_y=True, legend_loc="lower left")
    return pathlib.Path(path)


def plot_comparison(run: RunData, path: str | os.PathLike) -> pathlib.Path:
    """Draw gradient flow (solid) vs GD (dashed) vs SGD (mean over seeds with a min-max band) for the
    loss (log y), `min_margin`, `G1`, `G2`, `G3`, `score_12`, `score_31` and `attn_disp`, one panel
    each, on log time axes with T1 marked.

    Args:
        run: the loaded run folder.
        path: the image file to write.

    Returns:
        `path` as a `pathlib.Path`.
    """
    panels = {"loss": "training loss", "min_margin": "min margin", "G1": r"$G(\mu_1)$",
              "G2": r"$G(\mu_2)$", "G3": r"$G(\mu_3)$", "score_12": _score_label("score_12"),
              "score_31": _score_label("score_31"), "attn_disp": r"max $|p(t) - p(0)|$"}
    t1 = _t1(run)
    nseeds = next((v.shape[0] for k, v in run.sgd.items() if k != "t" and v.ndim >= 2), 0)
    labels = {"flow": "gradient flow", "gd": "GD", "sgd": f"SGD (mean, min-max over {nseeds} seeds)"}
    with _figure(path, run, "Gradient flow vs GD vs SGD", 2, 4, figsize=(17.0, 7.5)) as axes:
        for i, (ax, (key, title)) in enumerate(zip(axes, panels.items())):
            log_y = key == "loss"
            for name, color, ls, z in _METHODS:
                _plot(ax, getattr(run, name), key, log_y=log_y, color=color, ls=ls, lw=1.5, zorder=z,
                      label=labels[name] if i == 0 else None)
            _time_axis(ax, t1, ylabel=key, title=title, log_y=log_y, show_legend=i == 0)
    return pathlib.Path(path)


def plot_balancing(run: RunData, path: str | os.PathLike) -> pathlib.Path:
    """Draw the balancing quantities: `S2_over_S3` with the band [1/2, 2] shaded, `R` with the band
    (1, 2) shaded and `g_ratio_type1..4` (log y), for the gradient flow (solid) and GD (dashed), on
    log time axes with T1 marked.

    Args:
        run: the loaded run folder.
        path: the image file to write.

    Returns:
        `path` as a `pathlib.Path`.
    """
    t1 = _t1(run)
    with _figure(path, run, "Balancing of the per-sample gradients", 1, 3, figsize=(15.0, 4.5)) as axes:
        for ax, key, band, ylabel in ((axes[0], "S2_over_S3", (0.5, 2.0), "$S_2 / S_3$"),
                                      (axes[1], "R", (1.0, 2.0), "$R$")):
            styles = _flow_gd(ax, run, {key: ylabel})
            ax.axhspan(*band, color="C2", alpha=0.15, lw=0, label=f"band [{band[0]:g}, {band[1]:g}]")
            _time_axis(ax, t1, ylabel=ylabel, title=ylabel, legend=styles)
        styles = _flow_gd(ax=axes[2], run=run, log_y=True,
                          keys={f"g_ratio_type{k}": f"type {k}" for k in range(1, 5)})
        _time_axis(axes[2], t1, ylabel=r"$\max g_i / \min g_i$ within a type",
                   title="spread of $g_i$ within each type", log_y=True, legend=styles)
    return pathlib.Path(path)


def plot_run(run_or_path: RunData | str | os.PathLike,
             out_dir: str | os.PathLike | None = None) -> list[pathlib.Path]:
    """Draw all four figures of a run: `attention_scores.png`, `losses.png`,
    `flow_vs_discrete.png` and `balancing.png`.

    Args:
        run_or_path: a loaded `RunData` or the path of a run folder.
        out_dir: where to write the images (created if needed); defaults to the run folder.

    Returns:
        The paths of the written images, in the order above.
    """
    run = run_or_path if isinstance(run_or_path, RunData) else load_run(run_or_path)
    out = pathlib.Path(out_dir) if out_dir is not None else run.path
    fns = (plot_attention_scores, plot_losses, plot_comparison, plot_balancing)
    return [fn(run, out / name) for fn, name in zip(fns, FILENAMES)]


def plot_overlay(curves: Mapping[str, Any], keys: Sequence[str], path: str | os.PathLike,
                 title: str = "continuous models vs discrete training") -> pathlib.Path:
    """Overlay any set of runs on the same observables, on linear time (top row) and log time
    (bottom row), with the end of Phase 1 marked where a curve knows it.

    **Arguments:** `curves`: name -> `flowsim.compare.Curve` (`label`, `t`, `obs`, `ensemble`, `t1`);
    ensembles are drawn as mean with a min-max band; `keys`: observables, one column each (log y for
    keys starting with "loss"); `path`: output PNG.
    **Returns:** the path written.
    """
    t1 = next((c.t1 for c in curves.values() if getattr(c, "t1", None)), None)
    w, h = 3.6 * len(keys) + 0.8, 6.4
    fig, axes = plt.subplots(2, len(keys), figsize=(w, h), squeeze=False)
    fig.subplots_adjust(left=0.8 / w, right=1 - 0.25 / w, bottom=0.55 / h, top=1 - 0.6 / h,
                        wspace=0.35, hspace=0.45)
    try:
        for row, log_x in enumerate((False, True)):
            for col, key in enumerate(keys):
                ax, log_y = axes[row, col], key.startswith("loss")
                for i, (name, c) in enumerate(curves.items()):
                    style = dict(color=f"C{i}", lw=1.6, ls="--" if name == "gd" else "-", label=c.label)
                    _plot(ax, {"t": c.t, key: c.obs[key]} if key in c.obs else {}, key, log_y=log_y, **style)
                _time_axis(ax, t1, ylabel=key, title=f"{key} ({'log' if log_x else 'linear'} time)",
                           log_y=log_y, log_x=log_x, show_legend=(row, col) == (0, 0))
        fig.suptitle(title)
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return pathlib.Path(path)


def plot_distance_vs_lr(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                        key: str = "distance_loss_in_sgd_se") -> pathlib.Path:
    """Distance of each continuous model from SGD (in SGD standard errors) against lr, log-log, with
    the 3-standard-error line below which a model is indistinguishable from the SGD ensemble.

    **Arguments:** `rows` as returned by `flowsim.compare.compare_lrs`; `path`: output PNG.
    """
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    try:
        for i, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
            pts = sorted((r["lr"], r[key]) for r in rows if r["model"] == model)
            ax.plot(*zip(*pts), "o-", color=f"C{i}", label=model)
        ax.axhline(3.0, color="k", ls=":", lw=1, label="3 SGD standard errors")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate lr")
        ax.set_ylabel("max_t |mean - SGD mean| / SE(SGD)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return pathlib.Path(path)
