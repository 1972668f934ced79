"""Compiled programs that JAX's persistent compilation cache can keep.

JAX never writes a program that contains a host callback to its persistent cache. equinox's runtime
checks (`eqx.error_if`) are host callbacks unless `EQX_ON_ERROR` says otherwise, and diffrax and
optimistix place several inside every `diffeqsolve` even with `throw=False`: that saved times are
increasing and inside [t0, t1], and that a bisection's bracket contains a root. flowsim checks the
save times on the host before it compiles (`flowsim._validate.check_save_times`), every flow piece
runs from t0 < t1 over save times clipped to [t0, t1], and diffrax calls its event root finder only
on a step where the condition changed sign; a solve's failures are reported in its `result`, never
raised. So while flowsim traces a solve, those checks take equinox's "nan" form (no callback), and
the solve's program is cached like any other.

JAX keeps traces of equinox's check in memory by argument shapes: a check traced earlier in the
process outside this context (e.g. by `flowsim.solve_flow`, which keeps equinox's default because
its save times are not checked on the host) can be reused inside it, and that program then has a
callback again and is not written to the cache. Results are the same either way.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Iterator

__all__ = ["host_callback_free"]

_lock = threading.Lock()
_depth = 0
_saved: str | None = None


@contextlib.contextmanager
def host_callback_free() -> Iterator[None]:
    """Trace inside this context to compile equinox's runtime checks without host callbacks.

    Applies only where the user left `EQX_ON_ERROR` at its default ("raise"): an explicit
    "breakpoint", "nan" or "off" is kept. Thread-safe and re-entrant (the pieces of a run trace in
    parallel threads); the setting is restored when the last context exits.
    """
    global _depth, _saved
    errors = importlib.import_module("equinox._errors")
    with _lock:
        if _depth == 0:
            _saved = getattr(errors, "EQX_ON_ERROR", None)
            if _saved == "raise":
                setattr(errors, "EQX_ON_ERROR", "nan")  # noqa: B010  (a module global of equinox)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved == "raise":
                setattr(errors, "EQX_ON_ERROR", _saved)  # noqa: B010
