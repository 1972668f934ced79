"""Figure building blocks every system uses, and the engine's own figures.

Time panels use a log time axis (the t = 0 save point is dropped), mark each event that fired on
the flow with its label, skip observables or files that are missing, and mask non-finite values, so
a run that stopped early still plots. `plot_comparison` draws flow vs GD vs SGD for any observables;
`plot_overlay` any set of continuous and discrete runs; `plot_distance_vs_lr` their distance to SGD.
Figures are drawn on the non-interactive "Agg" backend and closed after saving.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from ._results import RunData

if TYPE_CHECKING:
    from matplotlib.typing import LegendLocType

DPI = 120
# (RunData field, colour, line style, zorder): the flow is drawn on top
_METHODS = (("flow", "C0", "-", 3.0), ("gd", "C1", "--", 2.5), ("sgd", "C2", "-", 2.0))


def plot_series(ax: Axes, data: Mapping[str, np.ndarray], key: str, *, log_y: bool = False, **style: Any) -> bool:
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


def time_axis(
    ax: Axes,
    marks: Sequence[tuple[float, str]],
    *,
    ylabel: str,
    title: str | None = None,
    log_y: bool = False,
    legend: Sequence[Line2D] = (),
    legend_loc: LegendLocType = "best",
    show_legend: bool = True,
    log_x: bool = True,
) -> None:
    """Finish a panel: log (or linear) time axis, optional log y, a dotted vertical line at each
    event (time, label) in `marks`, labels, grid and legend (the labelled curves plus the extra
    `legend` entries)."""
    has_data = bool(ax.lines or ax.collections)
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())  # log minor ticks triple the drawing time
    if log_y:
        ax.set_yscale("log")
    for i, (t, label) in enumerate(marks):
        ax.axvline(t, color="k", ls=(":", "-.", "--")[i % 3], lw=1.2, label=label)
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


def flow_gd(ax: Axes, run: RunData, keys: Mapping[str, str], *, log_y: bool = False) -> list[Line2D]:
    """Plot each key (-> label) of the flow (solid) and GD (dashed, same colour); return the proxy
    legend entries for the two line styles (none when GD has none of the keys)."""
    gd_drawn = False
    for i, (key, label) in enumerate(keys.items()):
        flow = plot_series(ax, run.flow, key, log_y=log_y, color=f"C{i}", lw=1.8, label=label)
        gd_drawn |= plot_series(
            ax, run.gd, key, log_y=log_y, color=f"C{i}", lw=1.4, ls="--", label=None if flow else label
        )
    if not gd_drawn:
        return []
    return [Line2D([], [], color="k", ls="-", label="gradient flow"), Line2D([], [], color="k", ls="--", label="GD")]


@contextlib.contextmanager
def figure(
    path: str | os.PathLike,
    run: RunData,
    title: str,
    nrows: int = 1,
    ncols: int = 1,
    figsize: tuple[float, float] = (7.0, 4.5),
) -> Iterator[np.ndarray]:
    """Yield a flat array of axes; on exit save the figure to `path` (with a title naming the run)
    and always close it. Fixed margins (in inches) instead of a layout engine, which doubles the
    drawing time."""
    w, h = figsize
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    fig.subplots_adjust(left=1.0 / w, right=1 - 0.25 / w, bottom=0.55 / h, top=1 - 0.6 / h, wspace=0.35, hspace=0.45)
    try:
        yield axes.ravel()
        fig.suptitle(f"{title} - {run.path.name}")
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


def plot_comparison(
    run: RunData, panels: Mapping[str, str], path: str | os.PathLike, log_y: Sequence[str] = ("loss",), ncols: int = 4
) -> pathlib.Path:
    """Draw gradient flow (solid) vs GD (dashed) vs SGD (mean over seeds with a min-max band), one
    panel per observable in `panels` (key -> title), on log time axes with the run's events marked.

    Args:
        run: the loaded run folder.
        panels: observable key -> panel title.
        path: the image file to write.
        log_y: keys drawn on a log y axis.
        ncols: panels per row.

    Returns:
        `path` as a `pathlib.Path`.
    """
    nseeds = next((v.shape[0] for k, v in run.sgd.items() if k != "t" and v.ndim >= 2), 0)
    labels = {"flow": "gradient flow", "gd": "GD", "sgd": f"SGD (mean, min-max over {nseeds} seeds)"}
    nrows = -(-len(panels) // ncols)
    with figure(path, run, "Gradient flow vs GD vs SGD", nrows, ncols, figsize=(4.25 * ncols, 3.75 * nrows)) as axes:
        for i, (ax, (key, title)) in enumerate(zip(axes, panels.items(), strict=False)):
            for name, color, ls, z in _METHODS:
                plot_series(
                    ax,
                    getattr(run, name),
                    key,
                    log_y=key in log_y,
                    color=color,
                    ls=ls,
                    lw=1.5,
                    zorder=z,
                    label=labels[name] if i == 0 else None,
                )
            time_axis(ax, run.event_marks(), ylabel=key, title=title, log_y=key in log_y, show_legend=i == 0)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
    return pathlib.Path(path)


def plot_overlay(
    curves: Mapping[str, Any],
    keys: Sequence[str],
    path: str | os.PathLike,
    title: str = "continuous models vs discrete training",
) -> pathlib.Path:
    """Overlay any set of runs on the same observables, on linear time (top row) and log time
    (bottom row), with the end of Phase 1 marked where a curve knows it.

    **Arguments:** `curves`: name -> `flowsim.Curve` (`label`, `t`, `obs`, `ensemble`, `marks`);
    ensembles are drawn as mean with a min-max band; `keys`: observables, one column each (log y for
    keys starting with "loss"); `path`: output PNG.
    **Returns:** the path written.
    """
    marks = next((list(c.marks) for c in curves.values() if getattr(c, "marks", None)), [])
    w, h = 3.6 * len(keys) + 0.8, 6.4
    fig, axes = plt.subplots(2, len(keys), figsize=(w, h), squeeze=False)
    fig.subplots_adjust(left=0.8 / w, right=1 - 0.25 / w, bottom=0.55 / h, top=1 - 0.6 / h, wspace=0.35, hspace=0.45)
    try:
        for row, log_x in enumerate((False, True)):
            for col, key in enumerate(keys):
                ax, log_y = axes[row, col], key.startswith("loss")
                for i, (name, c) in enumerate(curves.items()):
                    style = dict(color=f"C{i}", lw=1.6, ls="--" if name == "gd" else "-", label=c.label)
                    plot_series(ax, {"t": c.t, key: c.obs[key]} if key in c.obs else {}, key, log_y=log_y, **style)
                time_axis(
                    ax,
                    marks,
                    ylabel=key,
                    title=f"{key} ({'log' if log_x else 'linear'} time)",
                    log_y=log_y,
                    log_x=log_x,
                    show_legend=(row, col) == (0, 0),
                )
        fig.suptitle(title)
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return pathlib.Path(path)


def plot_distance_vs_lr(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, key: str = "distance_loss_in_sgd_se"
) -> pathlib.Path:
    """Distance of each continuous model from SGD (in SGD standard errors) against lr, log-log, with
    the 3-standard-error line below which a model is indistinguishable from the SGD ensemble.

    **Arguments:** `rows` as returned by `flowsim.compare_lrs`; `path`: output PNG.
    """
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    try:
        for i, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
            pts = sorted((r["lr"], np.nan if r[key] is None else r[key]) for r in rows if r["model"] == model)
            ax.plot(*zip(*pts), "o-", color=f"C{i}", label=model)  # not measurable (None): a gap
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
