"""Results as tidy tables for notebooks: a run folder as pandas rows or an xarray Dataset, a sweep
as pandas rows.

pandas and xarray are optional: they are imported only when a table is asked for, and a missing one
raises `ImportError` in one line saying what to install. A run's rows are (run, piece, seed, step, t,
observables...): `piece` is flow, gd or sgd, `seed` the SGD ensemble member (-1 for the flow and GD,
which are not ensembles), `t` the flow time (GD/SGD: step x lr, as recorded), `step` the GD/SGD step
(missing for the flow).
"""

from __future__ import annotations

import importlib
import os
import pathlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, final

import numpy as np

from ._fields import ConfigError

if TYPE_CHECKING:
    from ._results import RunData

PIECES = ("flow", "gd", "sgd")
GRID = ("t", "step")  # the save grid's arrays in a run file; every other array is an observable
NOT_AN_ENSEMBLE = -1  # the `seed` of the flow's and GD's rows


def optional_import(module: str, what: str) -> Any:
    """Import `module` (pandas, xarray) for `what`, or raise `ImportError` naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{what} needs {module}, which is not installed: pip install {module}") from None


def _per_time_rank(piece: str) -> int:
    """Axes before an observable's own shape: (save times,), or (seeds, save times) for SGD."""
    return 2 if piece == "sgd" else 1


def _observables(piece: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in arrays.items() if k not in GRID and v.ndim >= _per_time_rank(piece)}


def _seed_count(piece: str, arrays: Mapping[str, np.ndarray]) -> int:
    """SGD: the length of the leading seed axis (0 without observables); the flow and GD: 1."""
    if piece != "sgd":
        return 1
    return next((v.shape[0] for v in _observables(piece, arrays).values()), 0)


def piece_columns(piece: str, arrays: Mapping[str, np.ndarray], t: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Long-format columns of one piece of a run (one row per seed and save time).

    **Arguments:** `piece`: "flow", "gd" or "sgd"; `arrays`: its file's arrays (`t`, GD/SGD `step`,
    observables with leading axis (save times,), SGD (seeds, save times)); `t`: the save times to
    report instead of the file's (the run's common grid).

    **Returns:** columns `seed`, `step` (float, NaN for the flow), `t` and one per scalar observable
    (observables with more axes are left to `run_dataset`), each of length seeds x save times.
    """
    t = np.asarray(arrays["t"] if t is None else t, float)
    seeds = _seed_count(piece, arrays)
    step = np.asarray(arrays["step"], float) if "step" in arrays else np.full(t.shape, np.nan)
    cols: dict[str, np.ndarray] = {
        "seed": np.repeat(np.arange(seeds) if piece == "sgd" else np.array([NOT_AN_ENSEMBLE]), t.size),
        "step": np.tile(step, seeds),
        "t": np.tile(t, seeds),
    }
    for name, v in _observables(piece, arrays).items():
        if v.ndim == _per_time_rank(piece):
            cols[name] = v.reshape(-1)
    return cols


def run_frame(run: RunData) -> Any:
    """The tidy pandas table of a run: columns run (the folder's name), piece, seed, step (nullable
    integer), t, then one per scalar observable (missing where a piece does not record it)."""
    pd = optional_import("pandas", "RunData.to_frame()")
    present = [(piece, getattr(run, piece)) for piece in PIECES if getattr(run, piece)]
    try:
        t = _common_grid(present) if present else None
    except ConfigError:
        t = None  # pieces on different grids keep their own times
    parts = [pd.DataFrame({"piece": piece, **piece_columns(piece, arrays, t)}) for piece, arrays in present]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["piece", "seed", "step", "t"])
    frame.insert(0, "run", pathlib.Path(run.path).name)
    frame["step"] = frame["step"].astype("Int64")
    return frame


def _common_grid(present: list[tuple[str, dict[str, np.ndarray]]]) -> np.ndarray:
    """The save times shared by the pieces: they record on one grid, the flow's rounded to its
    precision (float32 runs), GD's and SGD's exactly step x lr, which is the one returned."""
    ref, times = max(present, key=lambda p: "step" in p[1])
    t = np.asarray(times["t"], float)
    for piece, arrays in present:
        other = np.asarray(arrays["t"], float)
        if other.shape != t.shape or not np.allclose(other, t, rtol=1e-6, atol=0.0, equal_nan=True):
            raise ConfigError(f"the {piece} run's save times differ from the {ref} run's: no common t axis")
    return t


def _extra_shape(name: str, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """An observable's own shape, which must be the same in every piece that records it."""
    if len(set(shapes.values())) > 1:
        raise ConfigError(f"observable {name!r} has different shapes in the pieces: {shapes}")
    return next(iter(shapes.values()))


def run_dataset(run: RunData) -> Any:
    """The run as an xarray Dataset: one variable per observable with dimensions (piece, seed, t,
    then `<name>_dim1`, ... for an observable's own axes); coordinates piece, seed (-1 for the flow
    and GD, 0.. for the SGD ensemble), t and, when GD or SGD ran, step along t. Cells a piece does
    not fill (the flow at SGD seeds, an observable it does not record) are NaN, so integer and
    boolean observables become floats there."""
    xr = optional_import("xarray", "RunData.to_xarray()")
    present = [(piece, getattr(run, piece)) for piece in PIECES if getattr(run, piece)]
    if not present:
        raise ConfigError(f"{os.fspath(run.path)!r} has no flow.npz, gd.npz or sgd.npz: nothing to tabulate")
    t = _common_grid(present)
    seeds = ([NOT_AN_ENSEMBLE] if any(p != "sgd" for p, _ in present) else []) + [
        *range(_seed_count("sgd", run.sgd) if run.sgd else 0)
    ]
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    for piece, arrays in present:
        for name, v in _observables(piece, arrays).items():
            shapes.setdefault(name, {})[piece] = v.shape[_per_time_rank(piece) :]
    variables = {}
    for name, by_piece in shapes.items():
        extra = _extra_shape(name, by_piece)
        data = np.full((len(present), len(seeds), t.size, *extra), np.nan)
        for i, (piece, arrays) in enumerate(present):
            if name in arrays:
                rows = slice(seeds.index(0), None) if piece == "sgd" else seeds.index(NOT_AN_ENSEMBLE)
                data[i, rows] = arrays[name]
        variables[name] = (("piece", "seed", "t", *(f"{name}_dim{k + 1}" for k in range(len(extra)))), data)
    coords: dict[str, Any] = {"piece": [p for p, _ in present], "seed": seeds, "t": t}
    steps = next((a["step"] for p, a in present if "step" in a), None)
    if steps is not None:
        coords["step"] = ("t", np.asarray(steps))
    attrs = {"run": os.fspath(run.path), "system": str(run.config.get("system"))}
    return xr.Dataset(variables, coords=coords, attrs=attrs)


@final
class SweepRows(list):
    """The rows of a sweep's results folder ([`flowsim.load_sweep`][flowsim.load_sweep]), a plain
    list of dicts {axis: value, ..., "seed", "status", "reason", measure: value, ...}, plus
    `to_frame()`."""

    def to_frame(self) -> Any:
        """The rows as a pandas DataFrame (one row per point and seed; needs pandas)."""
        pd = optional_import("pandas", "load_sweep(...).to_frame()")
        return pd.DataFrame(list(self))
