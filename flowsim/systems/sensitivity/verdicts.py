"""Per-run verdicts of the sensitivity system, computed from the recorded observables.

A run's final state is where a terminal `stop_loss` stopped it (the observables recorded there),
else its last save point with a finite loss; the minibatch comparator's, per seed. A claim that needs
a fitted model (training loss <= `fit_loss`) is reported as INFO "not judged" when the model did
not fit: it never passes silently. Thresholds are fixed here, before any verdict run. The claims
across n, targets and seeds (slopes, rank correlations, fractions of pairs) are the verdict
experiment's (`experiments/sensitivity.py`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._discrete import DiscreteSolution
from ..._final_state import final_flow_scalars as final_flow, final_seed_scalars as final_seeds
from ..._system import RunRecord
from ..._verdicts import Verdict, rel_gap, verdict as _v

FLOW, SGD, FLOW_GD, FLOW_SGD = (frozenset(p) for p in ({"flow"}, {"sgd"}, {"flow", "gd"}, {"flow", "sgd"}))
VERDICT_NEEDS: dict[str, frozenset[str]] = {
    "fit.flow": FLOW,
    "fit.minibatch": SGD,
    "sensitivity.matches_target": FLOW,
    "sensitivity.completion.flow": FLOW,
    "sensitivity.completion.minibatch": SGD,
    "sharpness.flow_vs_minibatch": FLOW_SGD,
    "compare.flow_gd": FLOW_GD,
}
"""Every verdict name with the runs it is computed from."""
GD_LOSS_GAP = 0.05  # max pointwise relative gap of GD's loss to the flow's


FIT_RTOL = 1e-6  # a flow stopped by its target-loss event sits at fit_loss to root-finding accuracy


def is_fitted(loss: float | None, fit_loss: float) -> bool:
    """Whether a training loss counts as fitted: <= fit_loss (1 + FIT_RTOL) (None or nan: no)."""
    return loss is not None and bool(loss <= fit_loss * (1 + FIT_RTOL))


def fitted_mask(loss: np.ndarray, fit_loss: float) -> np.ndarray:
    """`is_fitted` elementwise."""
    return np.asarray(loss, float) <= fit_loss * (1 + FIT_RTOL)


def seed_fit_steps(sol: DiscreteSolution, fit_loss: float) -> np.ndarray:
    """Per seed, the step where the loss fell below `fit_loss`: the exact stop step when a terminal
    `stop_loss` <= `fit_loss` ended the run first, else the first recorded step at or after the
    'fitted' event's crossing (save-grid resolution); -1 if it never did."""
    stop = np.atleast_1d(np.asarray(sol.stop_step))
    steps = np.full(stop.shape, -1)
    if "fitted" in sol.crossings:
        steps = np.atleast_1d(np.asarray(sol.crossings["fitted"][1])).copy()
    if "loss" in sol.stop_obs:
        exact = (stop >= 0) & fitted_mask(np.atleast_1d(np.asarray(sol.stop_obs["loss"])), fit_loss)
        steps = np.where(exact & ((steps < 0) | (stop < steps)), stop, steps)
    return steps


def flow_fit_time(run: RunRecord, fit_loss: float) -> float | None:
    """The flow time the loss fell below `fit_loss`: the 'fitted' event, or the terminal
    `stop_loss` event when it stopped the solve there first; None if neither."""
    t = run.event_time("fitted")
    stop = run.event_time("target_loss")
    fin = final_flow(run)
    if stop is not None and fin is not None and is_fitted(fin["loss"], fit_loss) and (t is None or stop < t):
        return stop
    return t


def _fit_verdicts(run: RunRecord, fit_loss: float) -> list[Verdict]:
    out = []
    if run.flow is not None:
        fin = final_flow(run) or {}
        t_fit = flow_fit_time(run, fit_loss)
        out.append(
            _v(
                "fit.flow",
                "the gradient flow fits the target (training MSE below fit_loss) within the horizon",
                {
                    "t_fitted": t_fit,
                    "t_escape": run.event_time("escape"),
                    "loss_final": fin.get("loss"),
                    "t_reached": run.flow.t_reached,
                    "T": run.config.t_final,
                    "stopped_by": run.flow.stopped_by,
                    "flow_steps": run.flow.num_steps,
                    "lambda_max_final": fin.get("lambda_max"),
                },
                f"the loss falls below {fit_loss:g} before T ('fitted' or a terminal stop_loss event)",
                t_fit is not None,
            )
        )
    if run.sgd is not None:
        steps = seed_fit_steps(run.sgd, fit_loss)
        fin = final_seeds(run.sgd)
        esc = run.sgd.crossings.get("escape")
        out.append(
            _v(
                "fit.minibatch",
                f"the minibatch comparator ({run.config.optimizer}) fits the target on every seed",
                {
                    "optimizer": run.config.optimizer,
                    "seeds": len(steps),
                    "seeds_fitted": int(np.sum(steps >= 0)),
                    "fit_steps_median": float(np.median(steps[steps >= 0])) if np.any(steps >= 0) else None,
                    "fit_steps": steps.tolist(),
                    "t_escape": None if esc is None else np.atleast_1d(esc[0]).tolist(),
                    "loss_final": fin["loss"].tolist(),
                },
                f"every seed's loss falls below {fit_loss:g} within the steps",
                bool(np.all(steps >= 0)),
            )
        )
    return out


def _not_judged(name: str, claim: str, figures: dict[str, Any], why: str) -> Verdict:
    return _v(name, claim, {**figures, "judged": False}, f"not judged: {why}", None)


def _sensitivity_flow(run: RunRecord, fit_loss: float) -> list[Verdict]:
    task = run.config.task
    fin = final_flow(run)
    fitted = fin is not None and is_fitted(fin["loss"], fit_loss)
    figs = {} if fin is None else {k: fin[k] for k in ("as_learned", "as_target", "full_accuracy", "loss")}
    if task.n_train:
        name, claim = "sensitivity.completion.flow", "the flow completes unseen inputs with lower sensitivity"
        figs = {**figs, "as_completion": None if fin is None else fin["as_completion"]}
        if fin is None or fin["accuracy"] < 1:
            return [_not_judged(name, claim, figs, "the flow does not fit every training input")]
        crit = "as(learned) < mean as of random completions of the training rows"
        return [_v(name, claim, figs, crit, fin["as_learned"] < fin["as_completion"])]
    name = "sensitivity.matches_target"
    claim = "a fitted flow's learned function has the target's exact average sensitivity"
    if task.target == "mean":
        figs = {} if fin is None else {k: fin[k] for k in ("as_real", "as_target_real", "loss")}
        return [_v(name, claim, figs, "figures only: MEAN is real-valued (real-valued sensitivity)", None)]
    if not fitted:
        return [_not_judged(name, claim, figs, f"the flow did not reach loss {fit_loss:g}")]
    assert fin is not None
    ok = fin["full_accuracy"] == 1 and abs(fin["as_learned"] - fin["as_target"]) <= 1e-9 * task.n
    return [_v(name, claim, figs, "full-table accuracy 1 and as(learned) = as(target) (to 1e-9 n)", ok)]


def _completion_minibatch(run: RunRecord) -> list[Verdict]:
    assert run.sgd is not None
    fin = final_seeds(run.sgd)
    fitted = fin["accuracy"] == 1
    name, claim = "sensitivity.completion.minibatch", "the minibatch runs complete unseen inputs with lower sensitivity"
    figs = {
        "as_learned": fin["as_learned"].tolist(),
        "as_completion": float(np.nanmax(fin["as_completion"])),
        "seeds_fitted": int(fitted.sum()),
    }
    if not fitted.any():
        return [_not_judged(name, claim, figs, "no seed fits every training input")]
    below = fin["as_learned"][fitted] < fin["as_completion"][fitted]
    figs["fraction_below"] = float(below.mean())
    crit = "as(learned) < mean as of random completions on >= 90% of the fitted seeds"
    return [_v(name, claim, figs, crit, float(below.mean()) >= 0.9)]


def _sharpness_verdict(run: RunRecord, fit_loss: float) -> list[Verdict]:
    assert run.sgd is not None
    fin, seeds = final_flow(run), final_seeds(run.sgd)
    name = "sharpness.flow_vs_minibatch"
    claim = f"the minibatch comparator ({run.config.optimizer}) ends at a flatter minimum than the gradient flow"
    fitted = fitted_mask(seeds["loss"], fit_loss)
    figs: dict[str, Any] = {
        "flow_pert_sharpness": None if fin is None else fin["pert_sharpness"],
        "flow_loss": None if fin is None else fin["loss"],
        "seeds_fitted": int(fitted.sum()),
    }
    if fin is None or not is_fitted(fin["loss"], fit_loss) or not fitted.any():
        return [_not_judged(name, claim, figs, f"needs the flow and >= 1 seed at loss <= {fit_loss:g}")]
    mb = float(np.median(seeds["pert_sharpness"][fitted]))
    figs.update(minibatch_pert_sharpness=mb, minibatch_loss=float(np.median(seeds["loss"][fitted])))
    if "lambda_max" in seeds:
        figs.update(
            flow_lambda_max=fin.get("lambda_max"), minibatch_lambda_max=float(np.median(seeds["lambda_max"][fitted]))
        )
    crit = "median perturbation sharpness of the fitted seeds < the flow's, both at their final (fitted) states"
    return [_v(name, claim, figs, crit, mb < fin["pert_sharpness"])]


def _gd_verdict(run: RunRecord) -> list[Verdict]:
    assert run.flow is not None and run.gd is not None
    f, g = run.flow.obs, run.gd.obs
    both = np.isfinite(f["loss"]) & np.isfinite(g["loss"])
    claim = "full-batch GD at lr tracks the gradient flow"
    if not both.any():
        return [_not_judged("compare.flow_gd", claim, {}, "no save point reached by both")]
    gaps = {k: rel_gap(g[k][both], f[k][both], pointwise=k == "loss") for k in ("loss", "pert_sharpness", "as_real")}
    figs: dict[str, Any] = {f"gap_{k}": v for k, v in gaps.items()}
    figs["save_points_compared"] = int(both.sum())
    if "eos_ratio" in g:
        figs["max_eos_ratio"] = float(np.nanmax(g["eos_ratio"]))
    crit = f"max pointwise relative gap of the loss <= {GD_LOSS_GAP:g} at the save points both reached"
    return [
        _v("compare.flow_gd", "full-batch GD at lr tracks the gradient flow", figs, crit, gaps["loss"] <= GD_LOSS_GAP)
    ]


def evaluate(run: RunRecord) -> list[Verdict]:
    """The verdicts of a run whose pieces ran, in the order of `VERDICT_NEEDS`."""
    fit_loss = run.config.fit_loss
    out = _fit_verdicts(run, fit_loss)
    if run.flow is not None:
        out += _sensitivity_flow(run, fit_loss)
    if run.sgd is not None and run.config.n_train:
        out += _completion_minibatch(run)
    if run.flow is not None and run.sgd is not None:
        out += _sharpness_verdict(run, fit_loss)
    if run.flow is not None and run.gd is not None:
        out += _gd_verdict(run)
    order = list(VERDICT_NEEDS)
    return sorted(out, key=lambda v: order.index(v.name))
