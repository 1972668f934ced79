"""tqdm bars that jitted loops advance through `jax.debug.callback`.

Each bar has an integer id passed to the jitted code as a traced argument, so one compiled program
serves every bar (and runs on several threads at once each update their own bar).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator

import jax
import numpy as np
from tqdm.auto import tqdm

_BARS: dict[int, tqdm] = {}
_IDS = itertools.count(1)
_LOCK = threading.Lock()


def _tick(bar_id, n) -> None:
    bar = _BARS.get(int(np.asarray(bar_id)))
    if bar is not None:
        with _LOCK:
            bar.update(int(np.asarray(n)))


def tick(bar_id, n) -> None:
    """Advance bar `bar_id` by `n` units from inside a jitted function (no-op for an inactive id)."""
    jax.debug.callback(_tick, bar_id, n)


@contextlib.contextmanager
def progress_bar(total: int, desc: str, enabled: bool = True) -> Iterator[int]:
    """Open a bar (if `enabled`) and yield its id (0 = no bar) for the jitted code run in the block."""
    if not enabled:
        yield 0
        return
    with _LOCK:
        bar_id = next(_IDS)
        _BARS[bar_id] = tqdm(total=total, desc=desc, unit="step", leave=True, dynamic_ncols=True, position=len(_BARS))
    try:
        yield bar_id
    finally:
        with _LOCK:
            _BARS.pop(bar_id).close()
