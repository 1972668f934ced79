"""Save grids shared by the flow and the discrete runs: integer GD steps k, flow times t = k * lr."""

from __future__ import annotations

import numpy as np


def save_steps(steps: int, n_log: int, n_lin: int) -> np.ndarray:
    """Sorted unique step indices in [0, steps]: 0, `n_log` log-spaced and `n_lin` linear points.

    Log spacing resolves the fast Phase 1 (a few dozen GD steps at the defaults), linear spacing the
    long Phase 2; every index is an integer so that GD at step k and the flow at t = k * lr are
    compared at exactly the same time.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    log = np.round(np.logspace(0, np.log10(steps), n_log)).astype(np.int64)
    lin = np.round(np.linspace(0, steps, n_lin)).astype(np.int64)
    return np.unique(np.concatenate([[0, steps], log, lin]))
