"""Parameter checkpoints: the state a run needs to continue exactly, and its file format.

A [`Checkpoint`][flowsim.Checkpoint] holds the trainable parameters, the optimizer/update state
(momentum velocity, optax state, a solver's state; any PyTree), the step and time it was taken at,
the kind of run, and the run's bookkeeping (`status`: e.g. a discrete run's first diverged step).

**File format** (one file, written atomically: a temporary file in the same folder, then
`os.replace`, so a reader never sees a partial checkpoint):

1. the line `FLOWSIM-CHECKPOINT 1`;
2. one line of JSON: `step`, `time`, `kind`, `leaves` (each array leaf's PyTree path, shape and
   dtype), `meta` (the caller's dict: config, seed, ...) and `versions` (jax, equinox, diffrax,
   optax, flowsim);
3. the array leaves, by `equinox.tree_serialise_leaves` (NumPy `.npy` records, in leaf order).

[`checkpoint_info`][flowsim.checkpoint_info] reads the JSON line without loading any array.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import tempfile
from typing import IO, Any, final

import equinox as eqx
import jax
import numpy as np
from jaxtyping import PyTree

from ._results import make_shareable

KINDS = ("gd", "sgd", "optax", "flow")
MAGIC = b"FLOWSIM-CHECKPOINT 1\n"
_PACKAGES = ("jax", "equinox", "diffrax", "optax", "flowsim")


@final
class Checkpoint(eqx.Module):
    """The state of a run at one step, enough to continue it exactly.

    **Fields:** `params` the trainable parameters (runs over several seeds keep the leading seed
    axis); `state` the optimizer/update state, any PyTree (None for plain GD; the velocity for
    momentum; the optax state; a flow's solver/controller state); `step` the step index (-1 for
    flows); `time` the flow time; `kind` one of "gd", "sgd", "optax", "flow"; `status` the run's
    bookkeeping as a dict of arrays (discrete runs: `diverged_step`, `stop_step`, `stop_event`, -1
    when not, one per seed). `step`, `time` and `kind` are static (not PyTree leaves).
    """

    params: PyTree
    state: PyTree
    step: int = eqx.field(static=True, converter=int)
    time: float = eqx.field(static=True, converter=float)
    kind: str = eqx.field(static=True, default="gd")
    status: dict[str, Any] = eqx.field(default_factory=dict)

    def __check_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"invalid kind={self.kind!r}: kind must be one of {KINDS}")


def _leaf_info(path: Any, leaf: Any) -> dict[str, Any]:
    dtype = getattr(leaf, "dtype", None)
    return {
        "path": jax.tree_util.keystr(path),
        "shape": [int(n) for n in getattr(leaf, "shape", ())],
        "dtype": type(leaf).__name__ if dtype is None else str(np.dtype(dtype)),
    }


def describe(tree: PyTree) -> list[dict[str, Any]]:
    """Path, shape and dtype of each leaf of `tree` (arrays, `jax.ShapeDtypeStruct`s or scalars)."""
    return [_leaf_info(p, x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _show(leaf: dict[str, Any]) -> str:
    return f"{leaf['path']} {tuple(leaf['shape'])} {leaf['dtype']}"


def mismatch(have: list[dict[str, Any]], want: list[dict[str, Any]], names: tuple[str, str]) -> str | None:
    """The first difference between two `describe` lists, in words (`names`: what each list is), or None."""
    for a, b in zip(have, want):
        if a != b:
            return f"leaf {_show(a)} in {names[0]} vs {_show(b)} in {names[1]}"
    if len(have) != len(want):
        extra = (have if len(have) > len(want) else want)[min(len(have), len(want))]
        return f"{len(have)} leaves in {names[0]} vs {len(want)} in {names[1]} (first unmatched: {_show(extra)})"
    return None


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray | np.generic | jax.Array):
        return np.asarray(x).tolist()
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.asdict(x)
    if isinstance(x, set | frozenset | tuple):
        return list(x)
    return str(x)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def save_checkpoint(
    path: str | os.PathLike, checkpoint: Checkpoint, meta: dict[str, Any] | None = None
) -> pathlib.Path:
    """Write `checkpoint` to `path` atomically (no partial file is ever visible at `path`).

    **Arguments:** `path` the file (its folder must exist); `checkpoint`; `meta` a JSON-able dict
    stored in the header (config, seed, ...; numpy values, dataclasses and tuples are converted,
    anything else is written as its `str`).

    **Returns:** the path written.
    """
    path = pathlib.Path(path)
    header = {
        "step": checkpoint.step,
        "time": checkpoint.time,
        "kind": checkpoint.kind,
        "leaves": describe(checkpoint),
        "meta": meta or {},
        "versions": _versions(),
    }
    line = json.dumps(header, default=_jsonable).encode() + b"\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    make_shareable(tmp)  # mkstemp's 0600 would hide the checkpoint from the group
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + line)
            eqx.tree_serialise_leaves(f, checkpoint)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _read_header(f: IO[bytes], path: str | os.PathLike) -> dict[str, Any]:
    if f.readline() != MAGIC:
        raise ValueError(f"{path}: not a flowsim checkpoint (no {MAGIC.strip().decode()!r} first line)")
    try:
        return json.loads(f.readline())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: unreadable checkpoint header ({e})") from e


def checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """The header of the checkpoint file at `path` (step, time, kind, leaves, meta, versions)."""
    with open(path, "rb") as f:
        return _read_header(f, path)


def load_checkpoint(path: str | os.PathLike, like: Checkpoint) -> Checkpoint:
    """Read the checkpoint at `path`.

    **Arguments:** `like` a `Checkpoint` of the same structure giving the PyTree structure, shapes
    and dtypes (its leaves may be arrays or `jax.ShapeDtypeStruct`s, e.g. from
    `equinox.filter_eval_shape`; its `step` and `time` are ignored, its `kind` must match).

    **Returns:** the `Checkpoint`, with `step`, `time` and `kind` from the file. Raises a one-line
    `ValueError` naming the file and the first mismatch when the file does not fit `like`.
    """
    if not isinstance(like, Checkpoint):
        raise TypeError(f"like must be a flowsim.Checkpoint (the structure to load into), got {type(like).__name__}")
    with open(path, "rb") as f:
        header = _read_header(f, path)
        if header["kind"] != like.kind:
            raise ValueError(f"{path}: checkpoint of kind {header['kind']!r}, but like has kind {like.kind!r}")
        problem = mismatch(header["leaves"], describe(like), ("the file", "like"))
        if problem is not None:
            raise ValueError(f"{path}: checkpoint does not match like: {problem}")
        out = eqx.tree_deserialise_leaves(f, like)
    return Checkpoint(out.params, out.state, header["step"], header["time"], header["kind"], out.status)
