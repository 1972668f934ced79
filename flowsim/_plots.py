"""Figure building blocks every system uses, and the engine's own figures.

Time panels use a log time axis that keeps t = 0, with the GD step on top (`flowsim._figure_style`),
mark each event that fired on the flow with its label, skip observables or files that are missing,
and mask non-finite values, so a run that stopped early still plots. `comparison_figure` draws flow
vs GD vs SGD for any observables, each with a panel of the discrete runs' relative gap to the flow on
a log axis (the quantity the comparison verdicts measure); `overlay_figure` any set of continuous and
discrete runs; `distance_vs_lr_figure` their distance to SGD. Each takes `ax=` / `axes=` and returns
the Figure; `plot_comparison`, `plot_overlay` and `plot_distance_vs_lr` write it to a file.
"""

from __future__ import annotations

import os
import pathlib
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._figure_style import (
    figure_of,
    legend_line,
    legend_outside,
    log_time_axis,
    mark_events,
    method_handles,
    new_figure,
    no_data,
    root_figure,
    save_figure,
)
from ._results import RunData

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

# (RunData field, colour, line style, zorder): the flow is drawn on top
METHODS = (("flow", "C0", "-", 3.0), ("gd", "C1", "--", 2.5), ("sgd", "C2", "-", 2.0))
GAP_LABEL = {
    True: r"$|x - x_{\rm flow}| \,/\, |x_{\rm flow}|$",
    False: r"$|x - x_{\rm flow}| \,/\, \max|x_{\rm flow}|$",
}


def _band(ax: Axes, t: np.ndarray, lo: np.ndarray, mid: np.ndarray, hi: np.ndarray, log_y: bool, **style) -> bool:
    """Draw `mid` against `t` with a [lo, hi] band where they differ; non-finite (and, on a log y
    axis, non-positive) points are gaps. Returns False when no point is valid."""
    ok = np.isfinite(t) & np.isfinite(lo) & np.isfinite(mid) & np.isfinite(hi) & (t >= 0)
    if log_y:
        ok &= (lo > 0) & (mid > 0)
    if not ok.any():
        return False
    ax.plot(t, np.where(ok, mid, np.nan), **style)  # NaN breaks the line at gaps
    if not np.array_equal(lo[ok], hi[ok]):
        ax.fill_between(t, lo, hi, where=ok, color=style.get("color"), alpha=0.25, lw=0)
    return True


def _spread(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(min, mean, max) over the leading (seed) axis, ignoring non-finite seeds."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # time points where every seed is NaN
        y = np.where(np.isfinite(y), y, np.nan)
        return np.nanmin(y, 0), np.nanmean(y, 0), np.nanmax(y, 0)


def plot_series(ax: Axes, data: Mapping[str, np.ndarray], key: str, *, log_y: bool = False, **style: Any) -> bool:
    """Plot observable `key` of one method against time (t = 0 included), masking non-finite values
    (and y <= 0 on a log y axis). A (seeds, S) array becomes its mean line with a min-max band over
    seeds. Returns False (drawing nothing) when the key, the times or every valid point is missing."""
    if key not in data or "t" not in data:
        return False
    t = np.asarray(data["t"], dtype=float)
    y = np.asarray(data[key], dtype=float)
    if y.ndim == 2 and y.shape[1] == t.size:
        lo, mid, hi = _spread(y)
    elif y.shape == t.shape:
        lo = mid = hi = y
    else:
        return False
    return _band(ax, t, lo, mid, hi, log_y, **style)


def time_axis(
    ax: Axes,
    marks: Sequence[tuple[float, str]],
    *,
    ylabel: str,
    title: str | None = None,
    log_y: bool = False,
    lr: float | None = None,
    log_x: bool = True,
) -> None:
    """Finish a time panel: log time keeping t = 0 (or linear time), the GD step on top when `lr` is
    given, optional log y, a vertical line at each event (time, label) in `marks`, labels and grid."""
    no_data(ax)
    mark_events(ax, marks)
    if log_y and ax.lines:
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        if hi > 10 * lo:  # a decade or more: label the decades only
            from matplotlib.ticker import NullFormatter

            ax.yaxis.set_minor_formatter(NullFormatter())
    if log_x:
        log_time_axis(ax, lr=lr)
    else:
        ax.set_xlabel("flow time $t$")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize="medium")
    ax.grid(True, which="major", alpha=0.3)


def flow_gd(ax: Axes, run: RunData, keys: Mapping[str, str], *, log_y: bool = False, styles=None) -> list[Line2D]:
    """Plot each key (-> label) of the flow (solid) and GD (dashed, same colour); return the legend
    entries: one per key, then the two line styles (when GD drew any key). `styles` gives each key's
    line style on the flow (default solid) as a sequence."""
    gd_drawn, handles = False, []
    for i, (key, label) in enumerate(keys.items()):
        ls = styles[i] if styles else "-"
        if plot_series(ax, run.flow, key, log_y=log_y, color=f"C{i}", lw=1.8, ls=ls, zorder=3):
            handles.append(legend_line(color=f"C{i}", lw=1.8, ls=ls, label=label))
        gd_drawn |= plot_series(ax, run.gd, key, log_y=log_y, color=f"C{i}", lw=1.2, ls="--", alpha=0.8)
    if gd_drawn:
        handles += [
            legend_line(color="k", ls="-", label="gradient flow"),
            legend_line(color="k", ls="--", lw=1.2, label="GD (same $\\eta$)"),
        ]
    return handles


def relative_gap(
    run: RunData, key: str, method: str, pointwise: bool, seed_mean: bool = False
) -> tuple[np.ndarray, np.ndarray] | None:
    """|x - x_flow| / |x_flow| (`pointwise`, for quantities spanning decades) or / max |x_flow| (the
    comparison verdicts' `rel_gap`) of `method` ("gd" or "sgd") against the flow at the method's save
    times: (t, gap) with gap (S,) or, for SGD, (seeds, S), or the gap of the seed mean (S,) with
    `seed_mean`; None when either side is missing."""
    flow, data = run.flow, getattr(run, method)
    if key not in flow or key not in data or "t" not in flow or "t" not in data:
        return None
    tf, yf = np.asarray(flow["t"], float), np.asarray(flow[key], float)
    t, y = np.asarray(data["t"], float), np.asarray(data[key], float)
    if yf.shape != tf.shape or y.shape[-1:] != t.shape:
        return None
    if seed_mean and y.ndim == 2:
        y = _spread(y)[1]
    ref = np.interp(t, tf, yf, left=np.nan, right=np.nan)
    with np.errstate(all="ignore"):
        scale = np.abs(ref) if pointwise else np.max(np.abs(yf[np.isfinite(yf)]), initial=0.0)
        return t, np.abs(y - ref) / scale


def _draw_gaps(ax: Axes, run: RunData, key: str, pointwise: bool) -> None:
    """The GD gap (dashed) and the SGD gaps (the seed mean's gap, with the min-max of the seeds')."""
    for name, color, ls, z in METHODS[1:]:
        res = relative_gap(run, key, name, pointwise)
        if res is None:
            continue
        t, gap = res
        lo = mid = hi = gap
        if gap.ndim == 2:
            lo, _, hi = _spread(gap)
            mid = relative_gap(run, key, name, pointwise, seed_mean=True)[1]  # pyright: ignore[reportOptionalSubscript]
        _band(ax, t, lo, mid, hi, True, color=color, ls=ls, lw=1.3, zorder=z)


def _finite(data: Mapping[str, np.ndarray], key: str) -> bool:
    """Whether `data[key]` exists and has a finite value."""
    return key in data and bool(np.isfinite(np.asarray(data[key], float)).any())


def _sgd_seeds(run: RunData) -> int:
    return next((v.shape[0] for k, v in run.sgd.items() if k != "t" and np.ndim(v) >= 2), 0)


def _lr(run: RunData) -> float | None:
    lr = run.config.get("lr")
    return float(lr) if isinstance(lr, (int, float)) else None


def comparison_figure(
    run: RunData,
    panels: Mapping[str, str],
    *,
    log_y: Sequence[str] = ("loss",),
    ncols: int = 4,
    gaps: bool = True,
    axes: Any = None,
    title: str | None = None,
    sgd_name: str = "SGD",
) -> Figure:
    """Draw gradient flow (solid) vs GD (dashed) vs SGD (mean over seeds with a min-max band), one
    panel per observable, each above a panel of the discrete runs' relative gap to the flow on a log
    axis (pointwise for keys in `log_y`, else relative to the flow's range), on log time with the GD
    step on top and the run's events marked; one legend above the panels.

    Arguments:
        run: the loaded run folder.
        panels: observable key -> its label in words and math (the panel's y label).
        log_y: keys drawn on a log y axis (and whose gap is pointwise).
        ncols: panels per row (a new figure only).
        gaps: draw the gap panels.
        axes: axes to draw into: shape (2, len(panels)) (value row, gap row), or (len(panels),)
            without gaps; default a new figure, with a panel for each observable that has a finite
            value in some method.
        title: the figure's title (a new figure only); default "Gradient flow vs GD vs `sgd_name`".
        sgd_name: how the legend names the minibatch comparator.

    Returns:
        The Figure.
    """
    own = axes is None
    if own:  # a new figure shows only the observables some method recorded
        panels = {k: v for k, v in panels.items() if any(_finite(getattr(run, m), k) for m, *_ in METHODS)} or panels
    n, rows = len(panels), 2 if gaps else 1
    if own:
        nrows = -(-n // ncols)
        fig, grid = new_figure(
            rows * nrows,
            ncols,
            figsize=(3.7 * ncols, (4.6 if gaps else 3.3) * nrows),
            gridspec_kw={"height_ratios": [2.2, 1.0] * nrows if gaps else [1.0] * nrows},
        )
        grid = grid.reshape(nrows, rows, ncols).transpose(1, 0, 2).reshape(rows, -1)
        for ax in np.asarray(grid)[:, n:].ravel():
            ax.set_visible(False)
        fig.suptitle(title or f"Gradient flow vs GD vs {sgd_name}")
    else:
        grid = np.asarray(axes, dtype=object).reshape(rows, n)
        fig = root_figure(grid[0, 0])
    lr, marks = _lr(run), run.event_marks()
    for i, (key, label) in enumerate(panels.items()):
        ax = grid[0, i]
        for name, color, ls, z in METHODS:
            plot_series(ax, getattr(run, name), key, log_y=key in log_y, color=color, ls=ls, lw=1.5, zorder=z)
        time_axis(ax, marks, ylabel=label, log_y=key in log_y, lr=lr)
        if gaps:
            gap_ax = grid[1, i]
            gap_ax.sharex(ax)
            _draw_gaps(gap_ax, run, key, pointwise=key in log_y)
            time_axis(gap_ax, marks, ylabel="gap to flow\n" + GAP_LABEL[key in log_y], log_y=True)
            gap_ax.yaxis.label.set_fontsize("small")
            ax.set_xlabel("")
            ax.tick_params(labelbottom=False)
    handles = method_handles(_sgd_seeds(run), gd=bool(run.gd), sgd=bool(run.sgd), sgd_name=sgd_name)
    handles += [legend_line(color="k", ls=(":", "-.", "--")[j % 3], label=lab) for j, (_, lab) in enumerate(marks)]
    legend_outside(fig, handles, own=own, ax=grid[0, 0], ncols=6)
    return fig


def plot_comparison(
    run: RunData,
    panels: Mapping[str, str],
    path: str | os.PathLike,
    log_y: Sequence[str] = ("loss",),
    ncols: int = 4,
    fmt: str | None = None,
) -> pathlib.Path:
    """Write `comparison_figure(run, panels, log_y=log_y, ncols=ncols)` to `path` (suffix replaced
    by `fmt` when given; see `flowsim._figure_style.save_figure`); returns the path written."""
    return save_figure(comparison_figure(run, panels, log_y=log_y, ncols=ncols), path, fmt)


def overlay_figure(
    curves: Mapping[str, Any],
    keys: Sequence[str] | Mapping[str, str],
    *,
    axes: Any = None,
    title: str = "continuous models vs discrete training",
) -> Figure:
    """Overlay any set of runs on the same observables, on linear time (top row) and log time
    (bottom row), with the end of Phase 1 marked where a curve knows it; one legend above.

    Arguments:
        curves: name -> `flowsim.Curve` (`label`, `t`, `obs`, `ensemble`, `marks`); ensembles are
            drawn as mean with a min-max band; GD ("gd") dashed.
        keys: observables, one column each (log y for keys starting with "loss"), or key -> label.
        axes: axes of shape (2, len(keys)) to draw into; default a new figure.
        title: the figure's title (a new figure only).

    Returns:
        The Figure.
    """
    labels = dict(keys) if isinstance(keys, Mapping) else {k: k.replace("_", " ") for k in keys}
    marks = next((list(c.marks) for c in curves.values() if getattr(c, "marks", None)), [])
    own = axes is None
    if own:
        fig, grid = new_figure(2, len(labels), figsize=(3.8 * len(labels) + 0.6, 6.6))
        fig.suptitle(title)
    else:
        grid = np.asarray(axes, dtype=object).reshape(2, len(labels))
        fig = root_figure(grid[0, 0])
    for row, log_x in enumerate((False, True)):
        for col, (key, label) in enumerate(labels.items()):
            ax, log_y = grid[row, col], key.startswith("loss")
            for i, (name, c) in enumerate(curves.items()):
                style = dict(color=f"C{i}", lw=1.6, ls="--" if name == "gd" else "-", label=c.label)
                plot_series(ax, {"t": c.t, key: c.obs[key]} if key in c.obs else {}, key, log_y=log_y, **style)
            time_axis(ax, marks, ylabel=label, title=f"{'log' if log_x else 'linear'} time", log_y=log_y, log_x=log_x)
    handles = [h for ax in grid.ravel() for h in ax.get_legend_handles_labels()[0]]
    legend_outside(fig, handles, own=own, ax=grid[0, 0], ncols=5)
    return fig


def plot_overlay(
    curves: Mapping[str, Any],
    keys: Sequence[str] | Mapping[str, str],
    path: str | os.PathLike,
    title: str = "continuous models vs discrete training",
    fmt: str | None = None,
) -> pathlib.Path:
    """Write `overlay_figure(curves, keys, title=title)` to `path` (suffix replaced by `fmt` when
    given); returns the path written."""
    return save_figure(overlay_figure(curves, keys, title=title), path, fmt)


def distance_vs_lr_figure(
    rows: Sequence[Mapping[str, Any]], key: str = "distance_loss_in_sgd_se", *, ax: Axes | None = None
) -> Figure:
    """Distance of each continuous model from SGD (in SGD standard errors) against lr, log-log, with
    the 3-standard-error line below which a model is indistinguishable from the SGD ensemble.

    Arguments:
        rows: as returned by `flowsim.compare_lrs`.
        key: the distance column.
        ax: axes to draw into; default a new figure.

    Returns:
        The Figure.
    """
    fig, ax, _ = figure_of(ax, figsize=(6.0, 4.2))
    for i, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
        pts = sorted((r["lr"], np.nan if r[key] is None else r[key]) for r in rows if r["model"] == model)
        ax.plot(*zip(*pts), "o-", color=f"C{i}", label=model)  # not measurable (None): a gap
    ax.axhline(3.0, color="k", ls=":", lw=1, label="3 SGD standard errors")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"learning rate $\eta$")
    ax.set_ylabel(r"distance to SGD: $\max_t |\bar x(t) - \bar x_{\rm SGD}(t)| \,/\, {\rm SE}_{\rm SGD}(t)$")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_distance_vs_lr(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    key: str = "distance_loss_in_sgd_se",
    fmt: str | None = None,
) -> pathlib.Path:
    """Write `distance_vs_lr_figure(rows, key)` to `path` (suffix replaced by `fmt` when given);
    returns the path written."""
    return save_figure(distance_vs_lr_figure(rows, key), path, fmt)
