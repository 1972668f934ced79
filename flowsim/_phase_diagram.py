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
    point, in the spec's point order; a pandas DataFrame if `as_frame` (needs pandas). A point file
    that is unreadable or not on the spec's grid raises `ConfigError` naming it."""
    folder = pathlib.Path(folder)
    spec = _spec(folder)
    rows = [_row(f, spec) for f in sorted((folder / "points").glob("*.json"))]
    order = {tuple(v): i for i, v in enumerate(itertools.product(*spec["axes"].values(), spec["seeds"]))}
    rows.sort(key=lambda r: order.get(tuple(r[a] for a in [*spec["axes"], "seed"]), len(order)))
    if as_frame:
        try:
            import pandas as pd  # pyright: ignore[reportMissingImports]  # optional, not a dependency
        except ImportError as e:
            raise ImportError("as_frame=True needs pandas (pip install pandas); the rows are plain dicts") from e
        return pd.DataFrame(rows)
    return rows


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


def _norm(mean: np.ndarray, boolean: bool):
    """Colour scale: [0, 1] for fractions, logarithmic for positive values spanning > 2 decades."""
    from matplotlib.colors import LogNorm, Normalize

    if boolean:
        return Normalize(0, 1)
    finite = mean[np.isfinite(mean)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        return LogNorm(finite.min(), finite.max())
    return None


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


def plot_phase_diagram(
    folder: str | os.PathLike, x: str, y: str | None = None, *, measure: str, out: str | os.PathLike | None = None
) -> pathlib.Path:
    """Draw `measure` over axes `x` (and `y`) of a sweep; returns the PNG path (default
    `<folder>/<measure>_<x>[_<y>].png`). Unknown axes or measures raise `ConfigError`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    folder = pathlib.Path(folder)
    spec, rows = check_request(folder, x, y, measure)
    axes = spec["axes"]
    others = [a for a in axes if a not in (x, y) and len(axes[a]) > 1]
    panels = list(itertools.product(*(axes[a] for a in others))) or [()]
    fig, axs = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    xs, ys = list(axes[x]), (list(axes[y]) if y else [None])
    try:
        for ax, panel in zip(axs[0], panels):
            sel = [r for r in rows if all(r[a] == v for a, v in zip(others, panel))]
            title = ", ".join(f"{a}={_fmt(v)}" for a, v in zip(others, panel))
            if not sel:
                ax.set_title(f"{title} (no points yet)")
                continue
            mean, lo, hi, failed, boolean = _aggregate(sel, x, y, measure, xs, ys)
            label = f"{measure} ({'fraction true' if boolean else 'mean'} over seeds)"
            if y:
                im = ax.imshow(mean, origin="lower", aspect="auto", cmap="viridis", norm=_norm(mean, boolean))
                fig.colorbar(im, ax=ax, label=label)
                ax.set_yticks(range(len(ys)), [_fmt(v) for v in ys])
                ax.set_ylabel(y)
                jj, ii = np.nonzero(failed.T)
                if len(ii):
                    ax.scatter(jj, ii, marker="x", color="red", s=60, label="a seed failed")
                    ax.legend(loc="upper right", fontsize=8)
                if boolean and np.nanmin(mean) < 0.5 < np.nanmax(mean) and min(mean.shape) > 1:
                    ax.contour(
                        np.arange(len(xs)),
                        np.arange(len(ys)),
                        np.nan_to_num(mean, nan=0.0),
                        [0.5],
                        colors="white",
                        linewidths=2,
                    )
            else:
                t = np.arange(len(xs))
                ax.plot(t, mean[0], "o-", label="mean over seeds")
                ax.fill_between(t, lo[0], hi[0], alpha=0.3, label="min-max over seeds")
                if failed[0].any():
                    ax.scatter(
                        t[failed[0]],
                        np.nan_to_num(mean[0][failed[0]], nan=np.nanmin(lo)),
                        marker="x",
                        color="red",
                        s=60,
                        zorder=3,
                        label="a seed failed",
                    )
                ax.set_ylabel(label)
                if isinstance(_norm(mean, boolean), LogNorm):
                    ax.set_yscale("log")
                ax.legend(fontsize=8)
            ax.set_xticks(range(len(xs)), [_fmt(v) for v in xs], rotation=45 if len(xs) > 6 else 0)
            ax.set_xlabel(x)
            ax.set_title(title or spec.get("name") or folder.name, fontsize=10)
        fig.tight_layout()
        out = pathlib.Path(out) if out else folder / f"{measure}_{x}{'_' + y if y else ''}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
    finally:
        plt.close(fig)
    return out
