"""tqdm bars that jitted loops and flow solves advance through `jax.debug.callback`.

Each bar has an integer id passed to the jitted code as a traced argument, so one compiled program
serves every bar (and runs on several threads at once each update their own bar). A bar's clock
starts at its first update, so its rate leaves out the compilation before it. Bars exist only when
asked for (the CLI asks only when stderr is a terminal): a program with a host callback is never
written to JAX's persistent compilation cache.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator
from typing import final

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array
from tqdm.auto import tqdm

_BARS: dict[int, tqdm] = {}
_STARTED: set[int] = set()
_IDS = itertools.count(1)
_LOCK = threading.Lock()


def _advance_to(bar_id: int, n: int) -> None:
    """Move bar `bar_id` forward to `n` (never back); the first move restarts its clock."""
    bar = _BARS.get(bar_id)
    if bar is None or n <= bar.n:
        return
    with _LOCK:
        if bar_id not in _STARTED:  # compiled and running now: the rate starts here
            _STARTED.add(bar_id)
            bar.reset(total=bar.total)
        bar.update(n - bar.n)


def _tick(bar_id, n) -> None:
    bar_id = int(np.asarray(bar_id))
    bar = _BARS.get(bar_id)
    if bar is not None:
        _advance_to(bar_id, bar.n + int(np.asarray(n)))


def _set_fraction(bar_id, fraction) -> None:
    bar_id = int(np.asarray(bar_id))
    bar = _BARS.get(bar_id)
    if bar is not None:
        _advance_to(bar_id, int(round(float(np.asarray(fraction)) * bar.total)))


def tick(bar_id, n) -> None:
    """Advance bar `bar_id` by `n` units from inside a jitted function (no-op for an inactive id)."""
    jax.debug.callback(_tick, bar_id, n)


@contextlib.contextmanager
def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "step") -> Iterator[int]:
    """Open a bar labelled `desc` (if `enabled`) and yield its id (0 = no bar) for the jitted code
    run in the block."""
    if not enabled:
        yield 0
        return
    with _LOCK:
        bar_id = next(_IDS)
        _BARS[bar_id] = tqdm(total=total, desc=desc, unit=unit, leave=True, dynamic_ncols=True, position=len(_BARS))
    try:
        yield bar_id
    finally:
        with _LOCK:
            _STARTED.discard(bar_id)
            _BARS.pop(bar_id).close()


@final
class FlowProgress(diffrax.AbstractProgressMeter):
    """A diffrax progress meter that moves flowsim bar `bar` (in percent of a whole solve) while a
    piece covering the fractions [`start`, `end`] of the solve's time span runs; every `every`
    steps, and to `end` when the piece closes. All fields but `every` are traced, so the pieces of
    a solve share one compiled program."""

    bar: Array
    start: Array
    end: Array
    every: int = eqx.field(static=True, default=20)

    def init(self) -> Array:
        return jnp.zeros((), jnp.int32)

    def step(self, state: Array, progress) -> Array:
        fraction = self.start + (self.end - self.start) * progress

        def report() -> None:
            jax.debug.callback(_set_fraction, self.bar, fraction)

        jax.lax.cond(state % self.every == 0, report, lambda: None)
        return state + 1

    def close(self, state: Array) -> None:
        jax.debug.callback(_set_fraction, self.bar, self.end)
