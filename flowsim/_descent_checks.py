"""Checks of a discrete run's arguments, on the host before anything compiles: step size, momentum,
weight decay, divergence factor, seed count, step indices and finite initial parameters. Each bad
value is one `ValueError` naming the argument and its allowed range."""

from __future__ import annotations

import jax
import numpy as np
from numpy.typing import ArrayLike

from ._problem import Problem
from ._validate import check_finite

DIVERGENCE_FACTOR = 1e6  # a loss above this many times the initial loss has diverged


def check_number(name: str, value: object, lo: float, hi: float, closed: str) -> float:
    """`value` as a float after checking it is a real number in the interval from `lo` to `hi`
    (`closed`: which ends are included, "both", "lo", "hi" or "neither"); `ValueError` otherwise."""
    arr = np.asarray(value) if isinstance(value, (int, float, np.generic, np.ndarray, jax.Array)) else None
    ok = arr is not None and arr.ndim == 0 and arr.dtype.kind in "iuf"  # bools and complex are refused
    v = float(arr) if ok and arr is not None else float("nan")
    above = v >= lo if closed in ("both", "lo") else v > lo
    below = v <= hi if closed in ("both", "hi") else v < hi
    if not (ok and above and below):
        left, right = "[" if closed in ("both", "lo") else "(", "]" if closed in ("both", "hi") else ")"
        raise ValueError(f"invalid {name}={value!r}: {name} must be a number in {left}{lo:g}, {hi:g}{right}")
    return v


def check_count(name: str, value: object, lo: int = 1) -> int:
    """`value` as an int after checking it is an integer >= `lo`; `ValueError` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"invalid {name}={value!r}: {name} must be an integer >= {lo}")
    return int(value)


def check_descent(
    problem: Problem,
    *,
    lr: object,
    momentum: object = 0.0,
    weight_decay: object = 0.0,
    divergence_factor: object = DIVERGENCE_FACTOR,
    seeds: object = 1,
    lr_name: str = "lr",
) -> None:
    """The checks of a discrete run, before anything compiles: the step size a finite number > 0,
    momentum in [0, 1), weight decay finite and >= 0, the divergence factor > 1 (inf: only a
    non-finite loss diverges), an integer number of seeds >= 1 and finite initial parameters."""
    inf = float("inf")
    check_number(lr_name, lr, 0.0, inf, "neither")
    check_number("momentum", momentum, 0.0, 1.0, "lo")
    check_number("weight_decay", weight_decay, 0.0, inf, "lo")
    check_number("divergence_factor", divergence_factor, 1.0, inf, "hi")
    check_count("seeds", seeds)
    check_finite(problem.params0, "the initial parameters (problem.params0)")


def check_steps(steps: ArrayLike, first: int = 0) -> np.ndarray:
    raw = np.asarray(steps)
    if raw.dtype == bool or not np.issubdtype(raw.dtype, np.number) or np.issubdtype(raw.dtype, np.complexfloating):
        raise ValueError(f"steps must be integer step indices, got dtype {raw.dtype}")
    if not np.issubdtype(raw.dtype, np.integer):
        whole = np.isfinite(raw) & (raw == np.round(raw))
        if not np.all(whole):
            raise ValueError(f"steps must be integer step indices, got {raw[~whole][:3].tolist()}")
        if raw.size and np.max(np.abs(raw)) >= 2**62:
            raise ValueError("steps must be integer step indices below 2**62")
    steps = np.asarray(raw, dtype=np.int64)
    if steps.ndim != 1 or steps.size < 2 or steps[0] != first or np.any(np.diff(steps) <= 0):
        where = "0" if first == 0 else f"start.step={first}"
        raise ValueError(f"steps must be a strictly increasing 1-D integer array starting at {where}")
    return steps
