"""Results folders: what a run writes to disk and how to read it back.

Layout of a run folder: `config.json` (full config, seed, package versions), `initial_state.npz`
(`W_Q, W_K, W_V, W, a` at t = 0 and the data `tokens`, `y`, `kind`), `flow.npz`, `gd.npz`, `sgd.npz`
(`t` and one array per observable; SGD arrays have a leading seed axis), `summary.json` (verdicts,
`phase1_end_time`, timings). Every file is written atomically (temporary file + rename), so an
interrupted run never leaves a truncated file behind.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import pathlib
import platform
import tempfile
from collections.abc import Mapping
from typing import Any, final

import numpy as np

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


def _atomic_write(path: pathlib.Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@final
@dataclasses.dataclass(frozen=True)
class RunData:
    """A run folder read back: `config` (the flat config dict, with `system`), `flow`, `gd`, `sgd`
    (dicts of arrays, possibly empty when a file is missing) and `summary` (dict)."""

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

    def event_marks(self) -> list[tuple[float, str]]:
        """(time, label) of every event that fired on the flow, from `summary.json`."""
        marks = []
        for name, ev in (self.summary.get("events") or {}).items():
            t = ev.get("time") if isinstance(ev, dict) else None
            if isinstance(t, (int, float)) and np.isfinite(t) and t > 0:
                marks.append((float(t), str(ev.get("label") or name)))
        return marks


def load_run(path: str | os.PathLike) -> RunData:
    """Read a run folder written by `flowsim run` (raises FileNotFoundError if it is not one)."""
    path = pathlib.Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a flowsim run folder (no config.json)")
    load = lambda name: read_npz(path / name) if (path / name).is_file() else {}
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else {}
    config = json.loads((path / "config.json").read_text()).get("config", {})
    return RunData(path, config, load("flow.npz"), load("gd.npz"), load("sgd.npz"), summary)
