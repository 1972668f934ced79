"""A sweep's results folder: which folder to use (`resolve_out`), its lock, and the temporaries
of interrupted writes removed on resume."""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
from collections.abc import Iterator

from ._fields import ConfigError
from ._results import read_json
from ._sweep_spec import SpecMismatchError, SweepSpec


class SweepLockedError(ConfigError):
    """Another sweep holds the results folder's lock."""


def resolve_out(out: str | os.PathLike, spec: SweepSpec, new: bool = False) -> pathlib.Path:
    """The results folder to use: `out` if empty or holding this spec; with `new`, the first free
    `out-2`, `out-3`, ... when `out` holds a different sweep. Otherwise `SpecMismatchError`."""
    out = pathlib.Path(out)
    want = spec.to_dict()

    def matches(p: pathlib.Path) -> bool | None:  # None: nothing there yet
        f = p / "spec.json"
        if not f.is_file():  # hidden files (.lock, temporaries) do not count
            return None if not p.exists() or not any(not q.name.startswith(".") for q in p.iterdir()) else False
        stored = read_json(f).get("spec")
        if not isinstance(stored, dict):
            return False
        stored = dict(stored)
        stored.setdefault("system", want["system"])  # folders written before specs named their system
        return stored == want

    ok = matches(out)
    if ok is None or ok:
        return out
    if not new:
        raise SpecMismatchError(
            f"results folder {str(out)!r} holds a different sweep (or other files); "
            "pass --new for a fresh folder next to it, or another --out"
        )
    for i in itertools.count(2):
        cand = out.with_name(f"{out.name}-{i}")
        if matches(cand) is not False:
            return cand
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _locked(folder: pathlib.Path) -> Iterator[None]:
    """Hold an exclusive lock on the sweep folder (`.lock`, released by the OS when this process
    ends, even by SIGKILL): a second sweep on the same folder is refused instead of computing the
    same points twice."""
    import fcntl

    f = open(folder / ".lock", "a+")  # held open for the lock's lifetime
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise SweepLockedError(
                f"results folder {str(folder)!r} is in use by another flowsim sweep ({holder}); wait for it to end"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        yield
    finally:
        f.close()


def _remove_stale_temporaries(folder: pathlib.Path) -> None:
    """Temporary files of writes cut short by a kill (`.NAME.*.tmp`; the lock is held, so none is live)."""
    for d in (folder, folder / "points"):
        for tmp in d.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
