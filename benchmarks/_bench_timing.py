"""Timing helpers shared by the benchmark scripts: compile once, then interleaved timed calls.

Other processes may share the machine. Calls of the programs being compared are therefore
interleaved (every round calls each of them in turn), so that load from elsewhere hits all of them
alike, and a ratio is given from the fastest calls, from the medians and as the range of the
per-round ratios.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any, final

import diffrax
import jax
import numpy as np

from flowsim._integrate import SOLVERS
from flowsim._timing import timed_call


@final
@dataclasses.dataclass
class Timing:
    """A program's calls: `result` of the last call; `first_s` first call (compile + run);
    `compile_jax_s` compile seconds reported by jax.monitoring then; `rounds` later calls' seconds,
    one list per round of `interleave`."""

    call: Callable[[], Any]
    result: Any
    first_s: float
    compile_jax_s: float
    rounds: list[list[float]] = dataclasses.field(default_factory=list)

    @classmethod
    def start(cls, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Timing:
        """Call `fn(*args, **kwargs)` once (trace + compile + run), waiting for every array it returns."""

        def call() -> Any:
            out = fn(*args, **kwargs)
            jax.block_until_ready(vars(out) if dataclasses.is_dataclass(out) else out)
            return out

        out, first, compile_jax = timed_call(call)
        return cls(call, out, first, compile_jax)

    def again(self, times: int) -> None:
        """`times` more calls, recorded as one round."""
        seconds = []
        for _ in range(times):
            self.result, s, _ = timed_call(self.call)
            seconds.append(s)
        self.rounds.append(seconds)

    @property
    def run_s(self) -> float:
        return min(min(r) for r in self.rounds)

    @property
    def median_s(self) -> float:
        return float(np.median([s for r in self.rounds for s in r]))

    @property
    def compile_s(self) -> float:
        return self.first_s - self.run_s


def interleave(entries: Sequence[tuple[Timing, int]], rounds: int) -> None:
    """`rounds` rounds, each calling every (timing, calls per round) entry in turn."""
    for r in range(rounds):
        print(f"  timing round {r + 1}/{rounds}", flush=True)
        for timing, calls in entries:
            timing.again(calls)


def ratios(slow: Timing, fast: Timing) -> str:
    """slow / fast wall time: fastest calls, medians, and the range of the per-round ratios."""
    per_round = [min(a) / min(b) for a, b in zip(slow.rounds, fast.rounds, strict=True)]
    return (
        f"{slow.run_s / fast.run_s:.1f}x (medians {slow.median_s / fast.median_s:.1f}x, "
        f"rounds {min(per_round):.1f}-{max(per_round):.1f}x)"
    )


def environment() -> str:
    """Machine, library versions and the class behind flowsim's solver name "tsit5", for a results file."""
    tsit5 = SOLVERS["tsit5"]
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} ({jax.devices()[0].platform}), "
        f'diffrax {diffrax.__version__}; solver "tsit5" = `{tsit5.__module__}.{tsit5.__qualname__}`'
    )


def command_line() -> str:
    """The command that ran this script, relative to the working directory."""
    return " ".join(["python", *map(shlex.quote, [os.path.relpath(sys.argv[0]), *sys.argv[1:]])])


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")
