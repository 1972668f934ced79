"""Results folders: what a run writes to disk and how to read it back.

Layout of a run folder: `config.json` (full config, seed, package versions), `initial_state.npz`
(`W_Q, W_K, W_V, W, a` at t = 0 and the data `tokens`, `y`, `kind`), `flow.npz`, `gd.npz`, `sgd.npz`
(`t` and one array per observable; SGD arrays have a leading seed axis), `summary.json` (verdicts,
`phase1_end_time`, timings). Every file is written atomically (temporary file + rename), so an
interrupted run never leaves a truncated file behind, and with the permissions of a plain `open`
(0666 less the umask: readable by the group by default); `flowsim run` writes the whole folder into a
staging folder and publishes it with one rename (`staging_folder`, `publish_folder`), so a results
folder never mixes two runs.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import pathlib
import platform
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any, final

import numpy as np

from ._fields import ConfigError
from ._tables import run_dataset, run_frame

PACKAGES = ("flowsim", "jax", "jaxlib", "diffrax", "equinox", "optimistix", "lineax", "optax", "numpy", "matplotlib")


def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on (plus Python and the platform)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def current_umask() -> int:
    """The process's file-mode creation mask, read without changing it where the OS allows
    (`/proc/self/status` on Linux; elsewhere it is set and restored, which is not thread-safe)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_shareable(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Give `path` the mode a plain `open`/`mkdir` would (0666, resp. 0777, less the umask):
    `tempfile.mkstemp`/`mkdtemp` create 0600/0700, which would hide results from the group."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


def _atomic_write(path: pathlib.Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        make_shareable(tmp)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, float) and not np.isfinite(x):
        return None if np.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    """Write `data` as indented JSON, atomically (non-finite floats become null / "inf")."""
    text = json.dumps(_jsonable(data), indent=1, allow_nan=False).encode()
    _atomic_write(pathlib.Path(path), lambda f: f.write(text))


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> None:
    """Write a dict of arrays as an `.npz`, atomically."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    _atomic_write(pathlib.Path(path), lambda f: np.savez(f, **arrays))


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` file; a file that is not a readable npz of plain arrays (truncated,
    not a zip, pickled objects) raises `ConfigError` naming the file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{str(path)!r} is not a readable .npz of plain arrays: {first}") from None


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from `path`; unreadable, non-UTF-8, invalid JSON or a non-object raises
    `ConfigError` naming the file."""
    try:
        data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{str(path)!r} is not a readable JSON file: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{str(path)!r} must hold a JSON object, got {type(data).__name__}")
    return data


@final
@dataclasses.dataclass(frozen=True)
class RunData:
    """A run folder read back: `config` (the flat config dict, with `system`), `flow`, `gd`, `sgd`
    (dicts of arrays, possibly empty when a file is missing) and `summary` (dict); `to_frame()` and
    `to_xarray()` give the same data as tidy tables."""

    path: pathlib.Path
    config: dict[str, Any]
    flow: dict[str, np.ndarray]
    gd: dict[str, np.ndarray]
    sgd: dict[str, np.ndarray]
    summary: dict[str, Any]

    @property
    def system(self) -> str | None:
        """The name of the run's system (None for a folder written before systems existed)."""
        return self.config.get("system")

    def to_frame(self) -> Any:
        """The run as one tidy pandas table (needs pandas).

        **Returns:** a DataFrame with one row per piece, seed and save time: columns `run` (the
        folder's name), `piece` (flow, gd, sgd), `seed` (the SGD ensemble member; -1 for the flow and
        GD), `step` (GD/SGD step; missing for the flow), `t` (flow time; GD/SGD: step x lr) and one
        column per scalar observable. Observables with more axes are in `to_xarray()`.
        """
        return run_frame(self)

    def to_xarray(self) -> Any:
        """The run as an xarray Dataset (needs xarray).

        **Returns:** one variable per observable (vector ones included), with dimensions (piece, seed,
        t, then `<name>_dim1`, ...); coordinates `piece`, `seed` (-1 for the flow and GD), `t` and
        `step` along t; NaN where a piece has no value (the flow at SGD seeds). E.g.
        `ds.loss.sel(piece="sgd").mean("seed")`, `ds.loss.sel(piece="flow", seed=-1)`.
        """
        return run_dataset(self)

    def event_marks(self) -> list[tuple[float, str]]:
        """(time, label) of every event that fired on the flow, from `summary.json`."""
        marks = []
        for name, ev in (self.summary.get("events") or {}).items():
            t = ev.get("time") if isinstance(ev, dict) else None
            if isinstance(t, (int, float)) and np.isfinite(t) and t > 0:
                marks.append((float(t), str(ev.get("label") or name)))
        return marks


def _check_lengths(path: pathlib.Path, arrays: dict[str, np.ndarray], axis: int) -> None:
    """Every array of a run file has one entry per save time: along axis 0 for 1-D arrays, along
    `axis` otherwise (1 for SGD's (seeds, times) arrays)."""
    if not arrays:
        return
    t = arrays.get("t")
    if t is None or t.ndim != 1:
        raise ConfigError(f"{str(path)!r} has no 1-D save times 't'")
    bad = [k for k, v in arrays.items() if v.ndim == 0 or v.shape[axis if v.ndim > 1 else 0] != t.size]
    if bad:
        raise ConfigError(f"{str(path)!r}: {bad} do not have one value per save time ({t.size} times)")


def load_run(path: str | os.PathLike) -> RunData:
    """Read a run folder written by `flowsim run` (raises FileNotFoundError if it is not one, and
    `ConfigError` naming the file when a file is corrupt or inconsistent)."""
    path = pathlib.Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a flowsim run folder (no config.json)")

    def load(name: str, axis: int) -> dict[str, np.ndarray]:
        if not (path / name).is_file():
            return {}
        arrays = read_npz(path / name)
        _check_lengths(path / name, arrays, axis)
        return arrays

    summary = read_json(path / "summary.json") if (path / "summary.json").is_file() else {}
    config = read_json(path / "config.json").get("config", {})
    if not isinstance(config, dict) or not isinstance(config.get("system", ""), str):
        raise ConfigError(f"{str(path / 'config.json')!r}: 'config' must be a table with a system name")
    return RunData(path, config, load("flow.npz", 0), load("gd.npz", 0), load("sgd.npz", 1), summary)


def staging_folder(out: pathlib.Path) -> pathlib.Path:
    """A fresh hidden folder next to `out` (same file system) to write a run into before it is
    published; staging folders of processes that no longer exist (killed runs) are removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in out.parent.glob(f".{out.name}.partial-*"):
        pid = old.name.rsplit("-", 2)[-2] if old.name.count("-") >= 2 else ""
        if pid.isdigit() and not pathlib.Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    staged = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-{os.getpid()}-"))
    make_shareable(staged, folder=True)  # published as is: readable like any folder the user makes
    return staged


def publish_folder(staged: pathlib.Path, out: pathlib.Path, *, overwrite: bool = False) -> None:
    """Move the finished folder `staged` to `out` in one rename. An existing `out` must be empty,
    unless `overwrite` (then the old folder is moved aside first and deleted after)."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"invalid out={str(out)!r}: it is not empty (pass --overwrite to replace it)")
        aside = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-{os.getpid()}-"))
        os.replace(out, aside / "run")
        os.replace(staged, out)
        shutil.rmtree(aside, ignore_errors=True)
        return
    os.replace(staged, out)  # onto a missing or empty folder: atomic
