"""Shared figure conventions: new figures without pyplot, the time axis, the legend, the output format.

Figures are `matplotlib.figure.Figure` objects made without `pyplot`, so importing flowsim selects no
backend and keeps no global figure state (a notebook's backend is left alone; the CLI draws the same
way on a machine without a display). Every plot function takes an optional `ax=` (or `axes=`) to draw
into, and returns the Figure; `write_figures` saves a system's list of figures into a run folder in
the format chosen by `output_format` (the CLI's `--format`), or in the format of each file's suffix.

The time axis: flow time t on a symmetric-log axis whose linear part ends at the first positive save
time, so the initial point t = 0 stays on the axis next to decades of t; the matching GD step
k = t / lr on a secondary axis on top; events as vertical lines.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn: `import flowsim` stays light
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from ._results import RunData

DPI = 120
FORMATS = ("png", "pdf", "svg")
LINSCALE = 0.6  # width of the linear part [0, t_first] of a time axis, in decades
_FORMAT: list[str | None] = [None]  # the current output format; None: each path's own suffix


@contextlib.contextmanager
def output_format(fmt: str | None) -> Iterator[None]:
    """Within this block `save_figure` and `write_figures` write `fmt` ("png", "pdf" or "svg"); None
    keeps each path's suffix. Process-wide (the CLI's work runs in a worker thread).

    Arguments:
        fmt: one of `FORMATS`, or None.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"figure format {fmt!r} is not one of {FORMATS}")
    old, _FORMAT[0] = _FORMAT[0], fmt
    try:
        yield
    finally:
        _FORMAT[0] = old


def new_figure(
    nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6.4, 4.4), **kwargs
) -> tuple[Figure, np.ndarray]:
    """A Figure (no pyplot, constrained layout) and its (nrows, ncols) array of axes.

    Arguments:
        nrows, ncols: the grid.
        figsize: width and height in inches.
        **kwargs: passed to `Figure.subplots` (e.g. `sharex`, `gridspec_kw`).

    Returns:
        (figure, axes array of shape (nrows, ncols)).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, np.asarray(axes)


def root_figure(ax: Axes) -> Figure:
    """The top-level Figure that `ax` belongs to."""
    from matplotlib.figure import Figure

    fig = ax.get_figure(root=True)
    assert isinstance(fig, Figure)
    return fig


def figure_of(ax: Axes | None, figsize: tuple[float, float] = (6.4, 4.4)) -> tuple[Figure, Axes, bool]:
    """The axes to draw into: `ax` and its figure, or a new single-panel figure.

    Returns:
        (figure, axes, whether the figure is new, i.e. owned by the caller's plot function).
    """
    if ax is not None:
        return root_figure(ax), ax, False
    fig, axes = new_figure(figsize=figsize)
    return fig, axes[0, 0], True


def time_range(ax: Axes) -> tuple[float, float, float] | None:
    """(smallest, smallest positive, largest) finite x value of the curves drawn on `ax`, or None
    when no curve has a positive x."""
    xs = [np.asarray(line.get_xdata(), float) for line in ax.get_lines()]
    xs = [x[np.isfinite(x)] for x in xs]
    xs = [x for x in xs if x.size and x.max() > x.min()]  # vertical lines (events) span no time
    pos = [x[x > 0] for x in xs if (x > 0).any()]
    if not pos:
        return None
    return float(min(x.min() for x in xs)), float(min(p.min() for p in pos)), float(max(x.max() for x in xs))


def _sync_steps_axis(ax: Axes, top: Axes, lr: float) -> None:
    lo, hi = ax.get_xlim()
    top.set_xlim(lo / lr, hi / lr)


def _decade_ticks(ax: Axes, first: float, last: float, zero: bool) -> None:
    """Ticks at 0 (when drawn) and at the powers of ten in [first, last] (every other one beyond
    eight decades), labelled 0 and 10^k; no minor ticks."""
    lo, hi = int(np.ceil(np.log10(first) - 1e-9)), int(np.floor(np.log10(last) + 1e-9))
    exps = list(range(lo, hi + 1))
    exps = exps[:: 1 + len(exps) // 9]
    ticks = ([0.0] if zero else []) + [10.0**k for k in exps]
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: "0" if x == 0 else f"$10^{{{round(np.log10(x))}}}$"))
    ax.xaxis.set_minor_locator(NullLocator())  # log minor ticks triple the drawing time


def log_time_axis(ax: Axes, *, lr: float | None = None, label: str = "flow time $t$") -> None:
    """Make x a log time axis that keeps t = 0: symmetric-log with its linear part [0, t_first] (the
    first positive time drawn) squeezed into `LINSCALE` decades; with `lr`, the GD step k = t / lr
    on a matching axis on top.

    Arguments:
        ax: axes whose lines are already drawn.
        lr: the step size linking flow time and GD steps; None draws no step axis.
        label: the x label.
    """
    span = time_range(ax)
    ax.set_xlabel(label)
    if span is None:
        return
    t_min, t_first, t_max = span
    ax.set_xscale("symlog", linthresh=t_first, linscale=LINSCALE)
    _decade_ticks(ax, t_first, t_max, zero=t_min <= 0)
    ax.set_xlim(min(t_min, 0.0) if t_min <= 0 else t_first, t_max)
    if lr is None or not np.isfinite(lr) or lr <= 0:
        return
    top = ax.twiny()
    top.set_xscale("symlog", linthresh=t_first / lr, linscale=LINSCALE)
    _decade_ticks(top, t_first / lr, t_max / lr, zero=t_min <= 0)
    top.set_xlabel(f"GD step $k = t / \\eta$ ($\\eta$ = {lr:g})", fontsize="small")
    top.tick_params(labelsize="small")
    _sync_steps_axis(ax, top, lr)
    ax.callbacks.connect("xlim_changed", lambda a: _sync_steps_axis(a, top, lr))


def mark_events(ax: Axes, marks: Sequence[tuple[float, str]]) -> None:
    """A black vertical line at each event (time, label), dotted, dash-dotted, dashed in turn."""
    for i, (t, label) in enumerate(marks):
        ax.axvline(t, color="k", ls=(":", "-.", "--")[i % 3], lw=1.1, label=label)


def no_data(ax: Axes) -> None:
    """Write "no data" on a panel with nothing drawn."""
    if not (ax.lines or ax.collections or ax.patches or ax.images):
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")


def legend_outside(fig: Figure, handles: Sequence, *, own: bool, ax: Axes | None = None, ncols: int = 4) -> None:
    """One legend for the figure, below the panels when the figure is the plot function's own (`own`),
    else in `ax` (a caller's axes). Duplicate labels are dropped."""
    seen: dict[str, Any] = {}
    for h in handles:
        label = h.get_label()
        if label and not label.startswith("_") and label not in seen:
            seen[label] = h
    if not seen:
        return
    if own:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=min(ncols, len(seen)))
    elif ax is not None:
        ax.legend(list(seen.values()), list(seen), fontsize="small")


def legend_line(**style: Any) -> Line2D:
    """A legend entry: a line with no data, drawn in `style` (`color`, `ls`, `lw`, `label`, ...)."""
    from matplotlib.lines import Line2D

    return Line2D([], [], **style)


def method_handles(nseeds: int, gd: bool = True, sgd: bool = True, sgd_name: str = "SGD") -> list:
    """Legend entries of the three methods: the flow (solid), GD (dashed), SGD (mean and band)."""
    from matplotlib.patches import Patch

    out: list = [legend_line(color="C0", lw=1.8, label="gradient flow")]
    if gd:
        out.append(legend_line(color="C1", lw=1.5, ls="--", label="GD (same $\\eta$)"))
    if sgd:
        out.append(legend_line(color="C2", lw=1.5, label=f"{sgd_name}: mean over {nseeds} seeds"))
        out.append(Patch(color="C2", alpha=0.3, lw=0, label=f"{sgd_name}: min-max over seeds"))
    return out


def save_figure(fig: Figure, path: str | os.PathLike, fmt: str | None = None) -> pathlib.Path:
    """Write `fig` to `path` with its suffix replaced by `fmt` (default: the `output_format` in force,
    else the path's own suffix); parent folders are created.

    Returns:
        The path written.
    """
    fmt = fmt or _FORMAT[0]
    path = pathlib.Path(path)
    if fmt is not None:
        path = path.with_suffix(f".{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def write_figures(
    run: RunData,
    out_dir: str | os.PathLike | None,
    figures: Sequence[tuple[Callable[[RunData], Figure | None], str]],
    fmt: str | None = None,
) -> list[pathlib.Path]:
    """Draw each figure of a run and save it into `out_dir` (default: the run folder).

    Arguments:
        run: the loaded run.
        out_dir: the folder to write into (created if needed).
        figures: (plot function `run -> Figure`, or None when it has nothing to draw; file name
            without suffix) pairs.
        fmt: "png", "pdf" or "svg"; default: the `output_format` in force, else "png".

    Returns:
        The paths written, in the order of `figures` (a figure that returned None is skipped).
    """
    out = pathlib.Path(out_dir) if out_dir is not None else run.path
    paths = []
    for fn, name in figures:
        fig = fn(run)
        if fig is not None:
            paths.append(save_figure(fig, out / f"{name}.png", fmt))
    return paths
