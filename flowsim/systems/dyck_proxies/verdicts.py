"""Per-run verdicts of the dyck-proxies system: the proxy study on the final models of a run.

The flow's final model and each minibatch seed's final model are studied (`proxies.study`): every
proxy family's smallest size with iid agreement >= `agree_target`, and at it the agreement gaps
(iid - split) and the accuracy differences (proxy - model) on the systematic splits. The study is
the same on every model; the data are regenerated from the config's seed (`data.make_data`).
A model that does not fit (training closing accuracy < `fit_accuracy`) is studied and reported,
but its claims are "not judged". Thresholds are fixed here, before any verdict run (the research
notes' T1-T3). The interval over seeds is the verdict experiment's (`experiments/dyck_proxies.py`).
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import numpy as np

from ..._config import Config
from ..._system import RunKeys, RunRecord
from ..._verdicts import Verdict, verdict as _v
from .data import SYSTEMATIC, DyckProxiesData, make_data
from .proxies import FAMILIES, study, summarise

FLOW, SGD, FLOW_SGD = (frozenset(p) for p in ({"flow"}, {"sgd"}, {"flow", "sgd"}))
VERDICT_NEEDS: dict[str, frozenset[str]] = {
    "fit.flow": FLOW,
    "fit.minibatch": SGD,
    "illusion.flow": FLOW,
    "illusion.minibatch": SGD,
    "both_signs.minibatch": SGD,
    "data_free.minibatch": SGD,
    "optimizer.flow_vs_minibatch": FLOW_SGD,
}
"""Every verdict name with the runs it is computed from."""
GAP = 0.04  # a family shows the illusion on a model: agreement on the deep split >= 4 points below iid
MIN_FAMILIES = 2  # ... for >= 2 of the 3 families
SEED_FRACTION = 0.6  # ... in >= 3 of 5 seeds (>= 60% of the fitted seeds)
SIGN = 0.01  # proxy - model accuracy beyond +-1 point counts as a sign
PRIMARY = "deep"


@functools.lru_cache(maxsize=8)
def data_of(config: Config) -> DyckProxiesData:
    """The run's training rows and splits, regenerated from its seed."""
    keys = RunKeys.from_seed(config.seed)
    return make_data(config.task, keys.data, keys.test)


def study_model(config: Config, model: Any) -> dict[str, Any]:
    """The proxy study of one model (a `DyckLM`) of a run: `study` plus its `summarise` and the
    number of families showing the illusion (`illusion_families`)."""
    keys = RunKeys.from_seed(config.seed)
    res = study(model, data_of(config), config.task.max_depth, jax.random.fold_in(keys.test, 7))
    summ = summarise(res, config.task.agree_target)
    res["summary"] = summ
    res["illusion_families"] = sum(1 for f in FAMILIES if summ[f].get("gap", {}).get(PRIMARY, 0.0) >= GAP)
    return res


def _full(run: RunRecord, params: Any) -> Any:
    from .system import template

    return eqx.combine(params, template(run.config))


def _flow_final(run: RunRecord) -> dict[str, float] | None:
    assert run.flow is not None
    loss = np.asarray(run.flow.obs["loss"])
    ok = np.flatnonzero(np.isfinite(loss))
    hit = run.flow.events.get("target_loss")
    if hit is not None and hit.fired and hit.obs is not None:
        return {k: float(v) for k, v in hit.obs.items() if np.ndim(v) == 0}
    return None if ok.size == 0 else {k: float(np.asarray(v)[ok[-1]]) for k, v in run.flow.obs.items()}


def _seed_final(run: RunRecord) -> dict[str, np.ndarray]:
    assert run.sgd is not None
    out = {}
    for k, v in run.sgd.obs.items():
        v = np.asarray(v)
        col = np.full(v.shape[0], np.nan)
        for s in range(v.shape[0]):
            ok = np.flatnonzero(np.isfinite(v[s]))
            stop = int(np.atleast_1d(run.sgd.stop_step)[s])
            if stop >= 0 and k in run.sgd.stop_obs:
                col[s] = float(np.atleast_1d(run.sgd.stop_obs[k])[s])
            elif ok.size:
                col[s] = v[s, ok[-1]]
        out[k] = col
    return out


def _headline(st: dict[str, Any]) -> dict[str, Any]:
    s = st["summary"]
    out: dict[str, Any] = {f"model_acc_{k}": v for k, v in st["model_accuracy"].items()}
    for f in FAMILIES:
        out[f"{f}_size"] = s[f]["size"]
        for split in SYSTEMATIC:
            out[f"{f}_gap_{split}"] = s[f].get("gap", {}).get(split)
    out["illusion_families"] = st["illusion_families"]
    return out


def _flow_verdicts(run: RunRecord, fitted: bool, st: dict[str, Any]) -> list[Verdict]:
    assert run.flow is not None
    fin = _flow_final(run) or {}
    thr = run.config.task.fit_accuracy
    figs = {
        "accuracy": fin.get("accuracy"),
        "loss": fin.get("loss"),
        "t_reached": run.flow.t_reached,
        "T": run.config.t_final,
        "stopped_by": run.flow.stopped_by,
        "flow_steps": run.flow.num_steps,
        "lambda_max_final": fin.get("lambda_max"),
    }
    out = [_v("fit.flow", "the gradient flow fits the training strings", figs, f"accuracy >= {thr:g}", fitted)]
    claim = "proxies faithful in distribution lose agreement on deeper nesting (flow-trained model)"
    crit = f"agreement_iid - agreement_{PRIMARY} >= {GAP:g} for >= {MIN_FAMILIES} of 3 families"
    ok = st["illusion_families"] >= MIN_FAMILIES if fitted else None
    figs = _headline(st) | ({} if fitted else {"judged": False})
    out.append(_v("illusion.flow", claim, figs, crit if fitted else "not judged: the flow did not fit", ok))
    return out


def _seed_verdicts(run: RunRecord, fitted: np.ndarray, studies: list[dict[str, Any]]) -> list[Verdict]:
    thr = run.config.task.fit_accuracy
    fin = _seed_final(run)
    figs: dict[str, Any] = {"optimizer": run.config.optimizer, "accuracy": fin["accuracy"].tolist()}
    out = [_v("fit.minibatch", "every minibatch seed fits", figs, f"accuracy >= {thr:g}", bool(fitted.all()))]
    fit_st = [st for st, f in zip(studies, fitted) if f]
    judged = bool(fit_st)
    fams = [st["illusion_families"] for st in fit_st]
    frac = float(np.mean([n >= MIN_FAMILIES for n in fams])) if judged else None
    claim = "proxies faithful in distribution lose agreement on deeper nesting (minibatch-trained models)"
    crit = f"{PRIMARY}-split gap >= {GAP:g} for >= {MIN_FAMILIES} families in >= {SEED_FRACTION:.0%} of fitted seeds"
    figs = {"seeds_fitted": len(fit_st), "illusion_families": fams, "fraction": frac}
    out.append(_v("illusion.minibatch", claim, figs, crit, None if frac is None else frac >= SEED_FRACTION))
    deltas = [
        d
        for st in fit_st
        for f in FAMILIES
        for d in st["summary"][f].get("accuracy_delta", {}).values()
        if d is not None
    ]
    pos, neg = sum(d > SIGN for d in deltas), sum(d < -SIGN for d in deltas)
    claim = "proxy - model out-of-distribution accuracy takes both signs"
    crit = f"some proxy beats the model by > {SIGN:g} and some falls short by > {SIGN:g} (systematic splits)"
    out.append(
        _v("both_signs.minibatch", claim, {"above": pos, "below": neg, "n": len(deltas)}, crit,
           None if not judged else (pos > 0 and neg > 0))
    )  # fmt: skip
    gaps = [st["summary"]["svd"].get("gap", {}).get(PRIMARY) for st in fit_st]
    gaps = [g for g in gaps if g is not None]
    frac_svd = float(np.mean([g >= GAP for g in gaps])) if gaps else None
    claim = "the data-free proxy (SVD of W_Q^T W_K) shows the gap too"
    crit = f"svd {PRIMARY}-split gap >= {GAP:g} in >= {SEED_FRACTION:.0%} of fitted seeds"
    ok = None if frac_svd is None else frac_svd >= SEED_FRACTION
    out.append(_v("data_free.minibatch", claim, {"svd_gaps": gaps, "fraction": frac_svd}, crit, ok))
    return out


def evaluate(run: RunRecord) -> list[Verdict]:
    """The verdicts of a run whose pieces ran, in the order of `VERDICT_NEEDS`."""
    thr = run.config.task.fit_accuracy
    out: list[Verdict] = []
    flow_st = seed_st = None
    if run.flow is not None:
        fin = _flow_final(run)
        flow_fit = fin is not None and fin["accuracy"] >= thr
        flow_st = study_model(run.config, _full(run, run.flow.params))
        out += _flow_verdicts(run, flow_fit, flow_st)
    if run.sgd is not None:
        fitted = _seed_final(run)["accuracy"] >= thr
        params = run.sgd.params
        n = int(np.asarray(fitted).shape[0])
        seed_st = [study_model(run.config, _full(run, jax.tree.map(lambda x: x[s], params))) for s in range(n)]
        out += _seed_verdicts(run, fitted, seed_st)
    if flow_st is not None and seed_st is not None:
        figs = {
            "flow_illusion_families": flow_st["illusion_families"],
            "minibatch_illusion_families": [st["illusion_families"] for st in seed_st],
            "flow_gap_deep": {f: flow_st["summary"][f].get("gap", {}).get(PRIMARY) for f in FAMILIES},
        }
        claim = "the illusion does not depend on the optimiser (flow vs minibatch models)"
        out.append(
            _v("optimizer.flow_vs_minibatch", claim, figs, "figures only (judged across seeds in the experiment)", None)
        )
    order = list(VERDICT_NEEDS)
    return sorted(out, key=lambda v: order.index(v.name))
