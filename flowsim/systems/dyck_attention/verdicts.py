"""Per-run verdicts of the dyck-attention system, read from the recorded observables.

A run's final state is its last save point with a finite loss (or where a terminal `stop_loss`
stopped it); the minibatch comparator's, per seed. The claims across initialisation seeds (attention
multiplicity, uniform first layer, balance violation vs length generalisation, flow vs Adam) are the
verdict experiment's (`experiments/dyck_attention.py`); a single run reports whether each trainer
fits and how far the flow's attention ends from the discrete trainer's.
"""

from __future__ import annotations

import numpy as np

from ..._final_state import final_flow_obs as final_flow, final_seed_obs as final_seeds
from ..._system import RunRecord
from ..._verdicts import Verdict, verdict as _v

FLOW, SGD, FLOW_SGD = frozenset({"flow"}), frozenset({"sgd"}), frozenset({"flow", "sgd"})
VERDICT_NEEDS: dict[str, frozenset[str]] = {
    "fit.flow": FLOW,
    "fit.minibatch": SGD,
    "attention.flow_vs_minibatch": FLOW_SGD,
}
"""Every verdict name with the runs it is computed from."""
SCALARS = ("loss", "acc_train", "acc_test", "acc_test_argmax", "acc_long", "stack", "balance")


def tv(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over layers and probe queries of the total-variation distance of attention rows."""
    return float(np.mean(0.5 * np.abs(np.asarray(a) - np.asarray(b)).sum(axis=-1)))


def evaluate(run: RunRecord) -> list[Verdict]:
    fit = run.config.task.fit_acc
    out: list[Verdict] = []
    fin = final_flow(run)
    if fin is not None:
        assert run.flow is not None
        figs = {k: float(fin[k]) for k in SCALARS}
        figs.update(t_reached=run.flow.t_reached, T=run.config.t_final, flow_steps=run.flow.num_steps)
        if "lambda_max" in fin:
            figs["lambda_max_final"] = float(fin["lambda_max"])
        claim = "the gradient flow reaches the held-out closing-bracket accuracy fit_acc within its horizon"
        out.append(_v("fit.flow", claim, figs, f"acc_test >= {fit:g} at the flow's end", bool(fin["acc_test"] >= fit)))
    if run.sgd is not None:
        seeds = final_seeds(run.sgd)
        figs = {k: seeds[k].tolist() for k in SCALARS}
        claim = f"the minibatch comparator ({run.config.optimizer}) reaches acc_test >= fit_acc on every seed"
        ok = bool(np.all(seeds["acc_test"] >= fit))
        out.append(_v("fit.minibatch", claim, figs, f"every seed's acc_test >= {fit:g}", ok))
        if fin is not None:
            d = [tv(fin["probe_attn"], seeds["probe_attn"][s]) for s in range(seeds["loss"].shape[0])]
            claim = "total-variation distance between the flow's and the minibatch runs' final probe attention"
            out.append(
                _v("attention.flow_vs_minibatch", claim, {"tv": d}, "figures only (seed claims: experiment)", None)
            )
    return out
