"""The command line's guards: output paths checked before any work, `--set` options checked against
the prediction function's signature, and the work itself run so that SIGINT / SIGTERM end it at once.

A command's computation runs in a worker thread while the main thread waits interruptibly: a signal
is handled even while XLA computes (a compiled loop cannot be interrupted from Python), the
command's cleanups run (e.g. `flowsim run` publishes the pieces that finished and removes its
staging folder), one line is printed and the process exits with status 128 + the signal number.
"""

from __future__ import annotations

import inspect
import math
import os
import pathlib
import signal
import sys
import tempfile
import threading
import typing
from collections.abc import Callable
from typing import Any

from ._fields import ConfigError

SET_INT_MAX = 65_536  # sizes given with --set (widths, sample counts): beyond this, memory runs out
SET_FLOAT_MAX = 1e6  # horizons, scales, targets given with --set: finite and at most this

_CLEANUPS: list[Callable[[], Any]] = []
NOTHING_SAVED = "unfinished results were not published"


def on_interrupt(cleanup: Callable[[], Any]) -> None:
    """Run `cleanup` if the current command is ended by SIGINT or SIGTERM (latest registered first).
    A cleanup that returns a string says what it saved: the interrupt's line prints it instead of
    "unfinished results were not published"."""
    _CLEANUPS.append(cleanup)


class _Interrupted(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def run_interruptibly(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` in a worker thread; SIGINT / SIGTERM run the cleanups registered with
    `on_interrupt`, print one line (what they saved, if anything) and end the process (status 128 +
    signal number)."""
    if threading.current_thread() is not threading.main_thread():
        return fn(*args, **kwargs)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = fn(*args, **kwargs)
        except BaseException as e:  # re-raised in the main thread
            box["err"] = e

    def handler(signum: int, frame: Any) -> None:
        raise _Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    worker = threading.Thread(target=target, name="flowsim-work", daemon=True)
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
    except _Interrupted as e:
        for s in old:  # a second signal must not cut the cleanups short (they publish what finished)
            signal.signal(s, signal.SIG_IGN)
        notes = []
        for cleanup in reversed(_CLEANUPS):
            try:
                note = cleanup()
            except Exception:  # a cleanup that fails must not hide the others
                note = None
            if isinstance(note, str):
                notes.append(note)
        name = signal.Signals(e.signum).name
        sys.stderr.write(f"flowsim: error: interrupted by {name}; {'; '.join(notes) or NOTHING_SAVED}\n")
        sys.stderr.flush()
        os._exit(128 + e.signum)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _CLEANUPS.clear()
    if "err" in box:
        raise box["err"]
    return box["out"]


def _writable(folder: pathlib.Path) -> bool:
    """Whether a file can be created in `folder` (tried, since root ignores permission bits)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".flowsim-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def check_out(out: pathlib.Path, *, file: bool = False, empty: bool = False) -> pathlib.Path:
    """Refuse, before any work, an output path that is empty, of the wrong kind (an existing file
    for a folder, a folder for a file), below a file, not writable, or (with `empty`) a non-empty
    folder."""
    if not str(out).strip():
        raise ConfigError(f"invalid out={str(out)!r}: out must be a {'file' if file else 'folder'} path")
    if file and out.is_dir():
        raise ConfigError(f"invalid out={str(out)!r}: it is a folder, not a file path")
    if not file and out.exists() and not out.is_dir():
        raise ConfigError(f"invalid out={str(out)!r}: it exists and is not a folder")
    if empty and out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"invalid out={str(out)!r}: it is not empty (pass --overwrite to replace it)")
    parent = next((p for p in out.parents if p.exists()), pathlib.Path("."))
    if not parent.is_dir():
        raise ConfigError(f"invalid out={str(out)!r}: {str(parent)!r} is not a folder")
    if not _writable(out if out.is_dir() else parent):
        raise ConfigError(f"invalid out={str(out)!r}: {str(parent)!r} is not writable")
    return out


def _parse_set(pair: str, kind: str, choices: tuple[str, ...]) -> Any:
    """The value of one `--set KEY=VALUE` of annotation `kind`, range-checked."""
    text = pair.partition("=")[2]
    if choices:
        if text not in choices:
            raise ValueError(f"choose from {list(choices)}")
        return text
    if kind == "bool":
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError("expected true or false")
        return text.lower() in ("true", "1")
    if kind == "int":
        v = int(text)
        if not 1 <= v <= SET_INT_MAX:
            raise ValueError(f"an integer in [1, {SET_INT_MAX}]")
        return v
    if kind == "float":
        v = float(text)
        if not (math.isfinite(v) and 0 < v <= SET_FLOAT_MAX):
            raise ValueError(f"a finite number in (0, {SET_FLOAT_MAX:g}]")
        return v
    return text


def set_options(fn: Callable[..., Any], pairs: list[str]) -> dict[str, Any]:
    """Parse `key=value` options against `fn`'s keyword-only parameters: an unknown key, a value of
    the wrong type, out of range (non-finite, <= 0, too large) or not one of a `Literal`'s choices
    raises `ConfigError`."""
    params = {k: p for k, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY}
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: fall back to their text
        hints = {}
    out = {}
    for pair in pairs:
        key, sep, _ = pair.partition("=")
        if not sep or key not in params:
            raise ConfigError(f"invalid --set {pair!r}: expected KEY=VALUE with KEY one of {sorted(params)}")
        hint = hints.get(key)
        choices = tuple(typing.get_args(hint)) if typing.get_origin(hint) is typing.Literal else ()
        kind = str(params[key].annotation).split("|")[0].strip()  # e.g. "int", "float", "bool"
        try:
            out[key] = _parse_set(pair, kind, tuple(str(c) for c in choices))
        except ValueError as e:
            raise ConfigError(f"invalid --set {pair!r}: {e}") from None
    return out
