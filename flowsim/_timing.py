"""Wall time of a call and the part of it spent compiling, per thread.

JAX reports compilation phases through `jax.monitoring`; a listener attributes them to the thread
that triggered them, so runs dispatched from several threads each get their own compile time.
Counted: lowering to MLIR and XLA's backend compile, which happen once per top-level program.
Tracing is not counted: nested jitted functions report their own trace durations inside the
enclosing trace, so summing them would count the same seconds twice.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from jax import monitoring

_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_SECONDS: defaultdict[int, float] = defaultdict(float)
_LOCK = threading.Lock()
_REGISTERED = False


def _listener(event: str, duration_secs: float, **kwargs: Any) -> None:
    if event in _COMPILE_EVENTS:
        with _LOCK:
            _SECONDS[threading.get_ident()] += duration_secs


def timed_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    """Run `fn(*args, **kwargs)`; return (result, total seconds, compile seconds in this thread)."""
    global _REGISTERED
    with _LOCK:
        if not _REGISTERED:
            monitoring.register_event_duration_secs_listener(_listener)
            _REGISTERED = True
        before = _SECONDS[threading.get_ident()]
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    total = time.perf_counter() - t0
    with _LOCK:
        compile_s = _SECONDS[threading.get_ident()] - before
    return out, total, compile_s
