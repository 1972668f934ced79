"""Verdicts of the spectra system, computed from the held-out summaries at a run's final state.

A run's final state is where a terminal `stop_loss` stopped it (the observables recorded there),
else its last save point with a finite loss; the minibatch comparator's, per seed (the figures are
medians over seeds). `roughly_right` and `predictable` are pure functions of such a summary dict, so
the verdict experiment applies the same rules to its fresh-sample Adam runs. Thresholds are fixed
here, before any verdict run (research notes, section A, T1 and T2):

- roughly right: among failures at tol, >= 80% keep eigenvalues within 2% and >= 80% keep norms
  within 2%, and orthogonality (max |cos| > tol) is the most often violated of the three properties;
- predictable: the AUROC of kappa(Q_hat) or of the (negated) minimum eigengap for failure >= 0.85.

Either needs at least `MIN_CASES` failures (and correct predictions, for an AUROC); otherwise it is
INFO "not judged", never a silent pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._final_state import final_flow_scalars as final_flow, final_seed_scalars as final_seeds
from ..._system import RunRecord
from ..._verdicts import Verdict, rel_gap, verdict as _v

FLOW, SGD, FLOW_GD = (frozenset(p) for p in ({"flow"}, {"sgd"}, {"flow", "gd"}))
VERDICT_NEEDS: dict[str, frozenset[str]] = {
    "fit.flow": FLOW,
    "fit.minibatch": SGD,
    "roughly_right.flow": FLOW,
    "roughly_right.minibatch": SGD,
    "predictable.flow": FLOW,
    "predictable.minibatch": SGD,
    "compare.flow_gd": FLOW_GD,
}
"""Every verdict name with the runs it is computed from."""
ROUGH_FRACTION = 0.8  # failures keeping eigenvalues / norms within 2%
AUROC_PASS = 0.85  # AUROC of kappa(Q_hat) or of -gap for failure
MIN_CASES = 10  # failures (and correct predictions) needed to judge
GD_LOSS_GAP = 0.05  # max pointwise relative gap of GD's loss to the flow's
FIT_RTOL = 1e-6  # a flow stopped by its target-loss event sits at the target to root-finding accuracy
SUMMARY_KEYS = ("acc", "acc_2", "acc_1", "failures", "correct", "fail_eig_ok", "fail_norm_ok", "viol_eig", "viol_norm")
SUMMARY_KEYS += ("viol_orth", "auroc_kappa", "auroc_gap", "kappa_correct_p98", "kappa_failed_p2")


def final_minibatch(run: RunRecord) -> dict[str, float] | None:
    """Medians over seeds of the minibatch comparator's final scalars (None without one)."""
    if run.sgd is None:
        return None
    return {
        k: float(np.nanmedian(v)) if np.any(np.isfinite(v)) else float("nan") for k, v in final_seeds(run.sgd).items()
    }


def _finite(x: Any) -> bool:
    return x is not None and bool(np.isfinite(x))


def roughly_right(fin: dict[str, float]) -> tuple[bool | None, dict[str, Any], str]:
    """Verdict 1 on a final summary: (passed or None when not judged, figures, criterion)."""
    figs: dict[str, Any] = {k: fin.get(k) for k in ("acc", "acc_2", "acc_1", "failures", "fail_eig_ok", "fail_norm_ok")}
    figs.update({k: fin.get(k) for k in ("viol_eig", "viol_norm", "viol_orth")})
    crit = (
        f"among failures: >= {ROUGH_FRACTION:.0%} eigenvalues within 2% and >= {ROUGH_FRACTION:.0%} norms within "
        "2%, and orthogonality the most violated property (needs >= 10 failures and eigenvectors)"
    )
    if not _finite(fin.get("viol_orth")) or (fin.get("failures") or 0) < MIN_CASES:
        return None, figs, crit
    viol = {k: float(fin[f"viol_{k}"]) for k in ("eig", "norm", "orth")}
    figs["dominant_violation"] = max(viol, key=lambda k: viol[k])
    ok = fin["fail_eig_ok"] >= ROUGH_FRACTION and fin["fail_norm_ok"] >= ROUGH_FRACTION
    return bool(ok and viol["orth"] > max(viol["eig"], viol["norm"])), figs, crit


def predictable(fin: dict[str, float]) -> tuple[bool | None, dict[str, Any], str]:
    """Verdict 2 on a final summary: (passed or None when not judged, figures, criterion)."""
    figs = {k: fin.get(k) for k in ("acc", "failures", "correct", "auroc_kappa", "auroc_gap", "kappa_correct_p98")}
    figs["kappa_failed_p2"] = fin.get("kappa_failed_p2")
    crit = f"AUROC of kappa(Q_hat) or of -min eigengap for failure >= {AUROC_PASS} (needs >= 10 of each class)"
    correct = fin.get("correct") or 0
    aucs = [float(fin[k]) for k in ("auroc_kappa", "auroc_gap") if _finite(fin.get(k))]
    if not aucs or (fin.get("failures") or 0) < MIN_CASES or correct < MIN_CASES:
        return None, figs, crit
    return max(aucs) >= AUROC_PASS, figs, crit


def _not_judged(name: str, claim: str, figs: dict[str, Any], crit: str, passed: bool | None) -> Verdict:
    if passed is None:
        return _v(name, claim, {**figs, "judged": False}, f"not judged: {crit}", None)
    return _v(name, claim, figs, crit, passed)


def _piece_verdicts(piece: str, fin: dict[str, float] | None, fit_loss: float) -> list[Verdict]:
    label = "gradient flow" if piece == "flow" else "minibatch comparator"
    fin = fin or {}
    loss = fin.get("loss")
    fitted = _finite(loss) and bool(loss <= fit_loss * (1 + FIT_RTOL))  # type: ignore[operator]
    fit_figs = {"loss_final": loss, "test_loss": fin.get("test_loss"), "acc": fin.get("acc")}
    fit_figs["lambda_max_final"] = fin.get("lambda_max")
    out = [_v(f"fit.{piece}", f"the {label} fits the training set", fit_figs, f"training MSE <= {fit_loss:g}", fitted)]
    rr = roughly_right(fin)
    out.append(_not_judged(f"roughly_right.{piece}", f"the {label}'s failures are roughly right", *rr[1:], rr[0]))
    pr = predictable(fin)
    out.append(_not_judged(f"predictable.{piece}", f"the {label}'s failures are predictable", *pr[1:], pr[0]))
    return out


def _gd_verdict(run: RunRecord) -> list[Verdict]:
    assert run.flow is not None and run.gd is not None
    f, g = run.flow.obs, run.gd.obs
    both = np.isfinite(f["loss"]) & np.isfinite(g["loss"])
    claim = "full-batch GD at lr tracks the gradient flow"
    crit = f"max pointwise relative gap of the loss <= {GD_LOSS_GAP:g} at the save points both reached"
    if not both.any():
        return [_v("compare.flow_gd", claim, {"judged": False}, f"not judged: {crit}", None)]
    figs: dict[str, Any] = {"gap_loss": rel_gap(g["loss"][both], f["loss"][both], pointwise=True)}
    figs["gap_acc"] = rel_gap(g["acc"][both], f["acc"][both], pointwise=False)
    figs["save_points_compared"] = int(both.sum())
    return [_v("compare.flow_gd", claim, figs, crit, figs["gap_loss"] <= GD_LOSS_GAP)]


def evaluate(run: RunRecord) -> list[Verdict]:
    """The verdicts of a run whose pieces ran, in the order of `VERDICT_NEEDS`."""
    fit_loss = run.config.fit_loss
    out: list[Verdict] = []
    if run.flow is not None:
        out += _piece_verdicts("flow", final_flow(run), fit_loss)
    if run.sgd is not None:
        out += _piece_verdicts("minibatch", final_minibatch(run), fit_loss)
    if run.flow is not None and run.gd is not None:
        out += _gd_verdict(run)
    order = list(VERDICT_NEEDS)
    return sorted(out, key=lambda v: order.index(v.name))
