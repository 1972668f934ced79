"""The state a run ended in, read from its recorded observables: a flow's at its terminal stop
(the `target_loss` event of `stop_loss`) or else its last save point with a finite loss, and each
discrete seed's at its stop step or else its last save point with a finite loss. Systems read the
"final" figures of their verdicts, measures and summaries from here."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._discrete import DiscreteSolution
from ._system import RunRecord


def last_finite_index(loss: np.ndarray) -> int | None:
    """Index of the last finite entry of a 1-D loss record (None if there is none)."""
    ok = np.flatnonzero(np.isfinite(loss))
    return int(ok[-1]) if ok.size else None


def final_flow_obs(run: RunRecord, stop_event: str = "target_loss") -> dict[str, Any] | None:
    """The flow's observables (arrays of any shape) at its terminal stop `stop_event` when it
    fired, else at its last save point with a finite loss; None without a flow or such a point."""
    flow = run.flow
    if flow is None:
        return None
    hit = flow.events.get(stop_event)
    if hit is not None and hit.fired and hit.obs is not None:
        return {k: np.asarray(v) for k, v in hit.obs.items()}
    i = last_finite_index(np.asarray(flow.obs["loss"]))
    return None if i is None else {k: np.asarray(v)[i] for k, v in flow.obs.items()}


def final_seed_obs(sol: DiscreteSolution) -> dict[str, np.ndarray]:
    """Each seed's observables at its stop step (`stop_obs`) when it stopped, else at its last save
    point with a finite loss (NaN without one): arrays with a leading seed axis."""
    loss = np.asarray(sol.obs["loss"])
    stop = np.atleast_1d(np.asarray(sol.stop_step))
    out: dict[str, list[Any]] = {k: [] for k in sol.obs}
    for s in range(loss.shape[0]):
        i = last_finite_index(loss[s])
        for k, v in sol.obs.items():
            if stop[s] >= 0 and k in sol.stop_obs:
                out[k].append(np.asarray(sol.stop_obs[k])[s])
            else:
                out[k].append(np.full(np.shape(v)[2:], np.nan) if i is None else np.asarray(v)[s, i])
    return {k: np.stack(v) for k, v in out.items()}


def final_flow_scalars(run: RunRecord) -> dict[str, float] | None:
    """The scalar observables of `final_flow_obs`, as floats."""
    fin = final_flow_obs(run)
    return None if fin is None else {k: float(v) for k, v in fin.items() if np.ndim(v) == 0}


def final_seed_scalars(sol: DiscreteSolution) -> dict[str, np.ndarray]:
    """The scalar observables of `final_seed_obs`: float64 (seeds,) arrays."""
    return {k: v.astype(np.float64) for k, v in final_seed_obs(sol).items() if v.ndim == 1}
