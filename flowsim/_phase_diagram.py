"""Read a sweep's results folder as a tidy table and draw its phase diagrams.

`load_sweep(folder)` gives one row per point and seed (axis values, `seed`, `status`, `reason`,
one column per measure); `as_frame=True` returns a pandas DataFrame when pandas is importable.
`plot_phase_diagram` draws a heatmap of the seed-mean of a measure over two axes (x markers on cells
with a failed seed, the contour where a boolean verdict flips), or, without `y`, a line with a band
over seeds. Axes of the sweep that are neither x nor y become one panel per value.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import warnings
from typing import Any

import numpy as np

from ._fields import ConfigError
from ._results import read_json
from ._tables import SweepRows


def _spec(folder: pathlib.Path) -> dict[str, Any]:
    """The normalised spec of a sweep folder; a missing, unreadable or malformed spec.json raises."""
    f = folder / "spec.json"
    if not f.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a flowsim sweep folder (no spec.json)")
    spec = read_json(f).get("spec")
    ok = (
        isinstance(spec, dict)
        and isinstance(spec.get("axes"), dict)
        and all(isinstance(v, list) and v for v in spec["axes"].values())
        and isinstance(spec.get("seeds"), list)
        and isinstance(spec.get("measures"), list)
        and all(isinstance(m, str) for m in spec["measures"])
    )
    if not ok:
        raise ConfigError(f"{str(f)!r} is not a sweep spec (needs 'spec' with axes, seeds and measures)")
    return spec  # pyright: ignore[reportReturnType]


def _is_value(v: Any) -> bool:
    """A measure value as written by a sweep: None, a number, a bool, "inf"/"-inf", or a list of them."""
    if isinstance(v, list):
        return all(_is_value(x) for x in v)
    return v is None or isinstance(v, (bool, int, float)) or v in ("inf", "-inf")


def _row(f: pathlib.Path, spec: dict[str, Any]) -> dict[str, Any]:
    """One point file as a table row, checked against the spec: its axes and seed are on the spec's
    grid and its measures are numbers (else `ConfigError` naming the file)."""
    rec = read_json(f)
    axes, measures = rec.get("axes"), rec.get("measures")
    if not (isinstance(axes, dict) and isinstance(measures, dict) and "status" in rec and "seed" in rec):
        raise ConfigError(f"{str(f)!r} is not a sweep point (needs axes, seed, status and measures)")
    off = {a: v for a, v in axes.items() if a not in spec["axes"] or v not in spec["axes"][a]}
    if off or set(axes) != set(spec["axes"]) or rec["seed"] not in spec["seeds"]:
        raise ConfigError(f"{str(f)!r}: point {axes} seed {rec['seed']!r} is not on the spec's axes and seeds")
    bad = [m for m in spec["measures"] if not _is_value(measures.get(m))]
    if bad:
        raise ConfigError(f"{str(f)!r}: measure(s) {bad} are not numbers")
    return {
        **axes,
        "seed": rec["seed"],
        "status": rec["status"],
        "reason": rec.get("reason"),
        **{m: measures.get(m) for m in spec["measures"]},
    }


def load_sweep(folder: str | os.PathLike, *, as_frame: bool = False) -> Any:
    """Rows {axis: value, ..., "seed", "status", "reason", measure: value, ...} of every finished
    point, in the spec's point order, as a list with `.to_frame()` (a pandas DataFrame; needs pandas),
    or that DataFrame directly if `as_frame`. A point file that is unreadable or not on the spec's
    grid raises `ConfigError` naming it."""
    folder = pathlib.Path(folder)
    spec = _spec(folder)
    rows = [_row(f, spec) for f in sorted((folder / "points").glob("*.json"))]
    order = {tuple(v): i for i, v in enumerate(itertools.product(*spec["axes"].values(), spec["seeds"]))}
    rows.sort(key=lambda r: order.get(tuple(r[a] for a in [*spec["axes"], "seed"]), len(order)))
    return SweepRows(rows).to_frame() if as_frame else SweepRows(rows)


def write_csv(rows: list[dict[str, Any]], path: str | os.PathLike) -> pathlib.Path:
    """Write the tidy table as CSV (atomically, like every flowsim result)."""
    import csv
    import io

    from ._results import _atomic_write

    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, cols)
    w.writeheader()
    w.writerows(rows)
    path = pathlib.Path(path)
    _atomic_write(path, lambda f: f.write(buf.getvalue().encode()))
    return path


def _num(v: Any) -> float:
    """A plottable float: None and non-finite values ("inf" as written by write_json) become nan."""
    x = np.nan if v is None or isinstance(v, list) else float(v)
    return x if np.isfinite(x) else np.nan


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _aggregate(rows, x, y, measure, xs, ys):
    """Seed-mean grid (plus min and max), any-failed grid, and whether the measure is boolean.

    Numeric measures are averaged over the seeds whose point is ok (a diverged run's value would
    swamp the colour scale; failed cells are marked instead); boolean ones (verdicts, divergence
    flags) over every seed, as the fraction true.
    """
    vals: list[list[list[float]]] = [[[] for _ in xs] for _ in ys]
    failed = np.zeros((len(ys), len(xs)), bool)
    boolean = all(isinstance(r[measure], bool) or r[measure] is None for r in rows)
    for r in rows:
        i, j = (ys.index(r[y]) if y else 0), xs.index(r[x])
        failed[i, j] |= r["status"] != "ok"
        if boolean or r["status"] == "ok":
            vals[i][j].append(_num(r[measure]))

    def reduce(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-nan cells stay nan
            return np.array([[fn(v) if v else np.nan for v in row] for row in vals])

    return reduce(np.nanmean), reduce(np.nanmin), reduce(np.nanmax), failed, boolean


def _norm(means: list[np.ndarray], boolean: bool, seeds: int):
    """One colour scale for every panel: the seed fractions 0, 1/seeds, ..., 1 in discrete steps for
    a boolean measure; logarithmic for positive values spanning > 2 decades; else linear."""
    from matplotlib.colors import BoundaryNorm, LogNorm, Normalize

    if boolean:
        steps = max(1, seeds)
        return BoundaryNorm(np.linspace(-0.5 / steps, 1 + 0.5 / steps, steps + 2), 256)
    finite = np.concatenate([m[np.isfinite(m)] for m in means]) if means else np.zeros(0)
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        return LogNorm(finite.min(), finite.max())
    if finite.size:
        return Normalize(finite.min(), finite.max())
    return Normalize(0, 1)


def check_request(
    folder: str | os.PathLike, x: str, y: str | None, measure: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The spec and rows of the sweep in `folder`, after checking that `x` (and `y`) are distinct
    axes, `measure` was recorded and some point has a value to draw; else `ConfigError`."""
    folder = pathlib.Path(folder)
    spec = _spec(folder)
    axes = spec["axes"]
    if y is not None and y == x:
        raise ConfigError(f"--y {y!r} is the same axis as --x")
    for name, what in ((x, "x"), (y, "y")):
        if name is not None and name not in axes:
            raise ConfigError(f"--{what} {name!r} is not an axis of this sweep; axes: {list(axes)}")
    if measure not in spec["measures"]:
        raise ConfigError(f"--measure {measure!r} was not recorded; measures: {spec['measures']}")
    rows = load_sweep(folder)
    if not rows:
        raise ConfigError(f"{str(folder)!r} has no finished points yet")
    if all(r["status"] == "ok" for r in rows) and all(np.isnan(_num(r[measure])) for r in rows):
        raise ConfigError(f"--measure {measure!r} has no finite value in any point of {str(folder)!r}")
    return spec, rows


def _heatmap(ax, mean, failed, boolean, norm, xs, ys):
    """A seed-mean heatmap: red x on cells with a failed seed, the labelled contour where a boolean
    verdict holds for half the seeds."""
    im = ax.imshow(mean, origin="lower", aspect="auto", cmap="viridis", norm=norm)
    jj, ii = np.nonzero(failed.T)
    if len(ii):
        ax.scatter(jj, ii, marker="x", color="red", s=60, label="a seed failed")
    if boolean and np.nanmin(mean) < 0.5 < np.nanmax(mean) and min(mean.shape) > 1:
        cs = ax.contour(np.arange(len(xs)), np.arange(len(ys)), np.nan_to_num(mean, nan=0.0), [0.5], colors="white")
        ax.clabel(cs, fmt={0.5: "half the seeds"}, fontsize="small")
    return im


def _line(ax, mean, lo, hi, failed, log_y: bool) -> None:
    """Seed mean against the x axis with the min-max band; red x where a seed failed."""
    t = np.arange(mean.shape[1])
    ax.plot(t, mean[0], "o-", label="mean over seeds")
    ax.fill_between(t, lo[0], hi[0], alpha=0.3, label="min-max over seeds")
    if failed[0].any():
        y = np.nan_to_num(mean[0][failed[0]], nan=np.nanmin(lo))
        ax.scatter(t[failed[0]], y, marker="x", color="red", s=60, zorder=3, label="a seed failed")
    if log_y:
        ax.set_yscale("log")


def _ticks(values: list[Any], limit: int = 10) -> tuple[list[int], list[str]]:
    """Positions and labels of at most about `limit` ticks along a categorical axis."""
    step = max(1, -(-len(values) // limit))
    pos = list(range(0, len(values), step))
    return pos, [_fmt(values[p]) for p in pos]


def phase_diagram_figure(folder: str | os.PathLike, x: str, y: str | None = None, *, measure: str, axes=None):
    """Draw `measure` over axes `x` (and `y`) of a sweep: a heatmap of the seed mean (a fraction of
    seeds, in discrete steps, for a boolean measure) on one colour scale shared by every panel, or
    without `y` a line with a min-max band over seeds; one panel per value of the other axes.

    Arguments:
        folder: the sweep's results folder.
        x, y: sweep axes; `y` None draws lines.
        measure: a measure the sweep recorded.
        axes: one axes per panel to draw into; default a new figure.

    Returns:
        The Figure. Unknown axes or measures raise `ConfigError`.
    """
    from matplotlib.colors import LogNorm

    from ._figure_style import new_figure, root_figure

    folder = pathlib.Path(folder)
    spec, rows = check_request(folder, x, y, measure)
    grid = spec["axes"]
    others = [a for a in grid if a not in (x, y) and len(grid[a]) > 1]
    panels = list(itertools.product(*(grid[a] for a in others))) or [()]
    if axes is None:
        fig, axs = new_figure(1, len(panels), figsize=(5.0 * len(panels) + 1.0, 4.4))
        axes = list(axs[0])
    fig = root_figure(axes[0])
    xs, ys = list(grid[x]), (list(grid[y]) if y else [None])
    sel = [[r for r in rows if all(r[a] == v for a, v in zip(others, p))] for p in panels]
    aggs = [_aggregate(s, x, y, measure, xs, ys) if s else None for s in sel]
    boolean = any(a[4] for a in aggs if a is not None)
    norm = _norm([a[0] for a in aggs if a is not None], boolean, len(spec["seeds"]))
    label = measure.replace("_", " ") + (" (fraction of seeds true)" if boolean else " (mean over seeds)")
    im = None
    for ax, panel, agg in zip(axes, panels, aggs):
        title = ", ".join(f"{a} = {_fmt(v)}" for a, v in zip(others, panel))
        ax.set_title(title or spec.get("name") or folder.name, fontsize="medium")
        if agg is None:
            ax.set_title(f"{title} (no points yet)", fontsize="medium")
            continue
        mean, lo, hi, failed, _ = agg
        if y:
            im = _heatmap(ax, mean, failed, boolean, norm, xs, ys)
            ax.set_yticks(*_ticks(ys))
            ax.set_ylabel(y.replace("_", " "))
        else:
            _line(ax, mean, lo, hi, failed, isinstance(norm, LogNorm))
            ax.set_ylabel(label)
        ax.set_xticks(*_ticks(xs), rotation=45 if len(xs) > 6 else 0)
        ax.set_xlabel(x.replace("_", " "))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize="small")
    if im is not None:
        fig.colorbar(im, ax=list(axes), label=label)
    return fig


def plot_phase_diagram(
    folder: str | os.PathLike,
    x: str,
    y: str | None = None,
    *,
    measure: str,
    out: str | os.PathLike | None = None,
    fmt: str | None = None,
) -> pathlib.Path:
    """Write `phase_diagram_figure(folder, x, y, measure=measure)`; returns the path (default
    `<folder>/<measure>_<x>[_<y>].png`, its suffix replaced by `fmt` when given). Unknown axes or
    measures raise `ConfigError`."""
    from ._figure_style import save_figure

    fig = phase_diagram_figure(folder, x, y, measure=measure)
    out = pathlib.Path(out) if out else pathlib.Path(folder) / f"{measure}_{x}{'_' + y if y else ''}.png"
    return save_figure(fig, out, fmt)
