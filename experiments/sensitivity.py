"""Verdict run of the sensitivity system (Hahn & Rofin, ACL 2024; issue 11): PARITY vs FIRST under Adam
and under gradient flow, and random functions completed from a subset.

    python experiments/sensitivity.py [--ns 4,5,6,7] [--seeds 5] [--flow-ns 3,4] [--flow-seeds 2] ...

Three parts, each one run per (target, n, seed) through `flowsim.run_experiment` (the seed draws the
initial model, and for a random function its table and training subset):
- `adam`: the minibatch piece only, Adam at `--adam-lr` on the full table (batch = 2^n), stopped at
  the target MSE (`stop_loss`), top Hessian eigenvalue recorded (`sharpness=1`);
- `flow`: the gradient flow only (`--solver`, float64), stopped at the target MSE, with its step
  budget `--flow-max-steps`; a flow that does not fit is reported as such (how far it got, its
  lambda_max), never replaced by a discrete run;
- `completion`: Adam on random functions of `--completion-n` bits fitted on `--completion-train` inputs.

Thresholds (fixed before the run, from the research notes' T1-T3 and the issue's verdict 4):
V1 slope of log(perturbation sharpness) vs n over fitted Adam runs: PARITY's > 3x FIRST's and FIRST's
95% interval contains 0. V2 Spearman rho of blow-up x ||theta||^2 vs n: PARITY > 0.8, FIRST <= 0.8.
V3 as(learned) < mean as of random completions in >= 90% of fitted (function, seed) pairs. V4 (reported,
with a PASS/FAIL on the notes' prediction) Adam ends flatter than the flow in most jointly fitted pairs.
Writes runs.jsonl (resumable), runs.csv, verdicts.json, report.md and figures into `--out`.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import time
from typing import Any

import numpy as np
from sensitivity_report import fitted_rows, plot, slope_ci, spearman, targets_of, write_tables  # a sibling script

HERE = pathlib.Path(__file__).parent
KEYS = ("loss", "accuracy", "full_accuracy", "as_learned", "as_target", "as_completion", "pert_sharpness")
KEYS += ("lambda_max", "blowup", "theta_sq", "tradeoff")


def _config(args: argparse.Namespace, part: str, target: str, n: int, seed: int) -> Any:
    import flowsim

    common = dict(target=target, n=n, seed=seed, stop_loss=args.fit_loss, fit_loss=args.fit_loss, sharpness=1)
    if part == "flow":
        steps = int(round(args.flow_T / args.adam_lr))
        return flowsim.Config(
            "sensitivity", **common, lr=args.adam_lr, steps=steps, batch_size=1, solver=args.solver,
            max_steps=args.flow_max_steps, n_save_log=30, n_save_lin=30, precision="float64", rtol=args.flow_rtol,
        )  # fmt: skip
    n_train = args.completion_train if part == "completion" else 0
    batch = n_train or min(2**n, args.adam_batch)
    return flowsim.Config(
        "sensitivity", **common, n_train=n_train, optimizer="adam", opt_lr=args.adam_lr, lr=args.adam_lr,
        steps=args.adam_steps, batch_size=batch, sgd_seeds=1, n_save_log=20, n_save_lin=20,
        precision=args.precision,
    )  # fmt: skip


def _optimizer(args: argparse.Namespace) -> Any:
    """Adam, or AdamW (decoupled weight decay, the paper's optimiser) when `--weight-decay` > 0."""
    import optax

    return optax.adamw(args.adam_lr, weight_decay=args.weight_decay) if args.weight_decay else optax.adam(args.adam_lr)


def _record(part: str, config: Any, optimizer: Any, stop_every: int) -> Any:
    """Run one part and return its `flowsim.RunRecord`. The Adam parts call `flowsim.optax_descent`
    as the engine's minibatch piece does, but with one optimizer object for every run, so that the
    compiled program is reused (a fresh `optax.adam` per run is a new static argument)."""
    import flowsim

    s = flowsim.setup(config)
    observer = flowsim.Sharpness(s.observer, k=1, lr=config.lr)
    if part == "flow":
        flow = flowsim.run_flow(s)
        return flowsim.RunRecord(config, flow, None, None)
    sgd = flowsim.optax_descent(
        s.problem,
        optimizer,
        config.lr,
        flowsim.step_grid(config),
        observer,
        key=s.keys.sgd,
        batch_size=config.batch_size,
        seeds=config.sgd_seeds,
        events=s.events,
        stop=flowsim.Stop(flowsim.target_events(s), every=stop_every),
    )
    return flowsim.RunRecord(config, None, None, sgd)


def _row(part: str, config: Any, record: Any, wall: float) -> dict[str, Any]:
    from flowsim.systems.sensitivity import final_flow, final_seeds, flow_fit_time, is_fitted, seed_fit_steps

    row: dict[str, Any] = {"part": part, "target": config.target, "n": config.n, "seed": config.seed}
    row["n_train"], row["batch"] = config.n_train, config.batch_size
    if part == "flow":
        flow = record.flow
        fin = final_flow(record) or {}
        row.update({k: fin.get(k) for k in KEYS})
        row["t_fit"] = flow_fit_time(record, config.fit_loss)
        row["t_escape"] = record.event_time("escape")
        row.update(t_reached=flow.t_reached, solver_steps=flow.num_steps, result=flow.result)
        row["h_lambda_max"] = None
        if flow.step_stats is not None and "lambda_max" in flow.obs:
            hl = flow.step_stats.h_lambda(flow.ts, flow.obs["lambda_max"])
            row["h_lambda_max"] = float(np.nanmedian(hl)) if np.any(np.isfinite(hl)) else None
    else:
        fin = {k: float(v[0]) for k, v in final_seeds(record.sgd).items()}
        row.update({k: fin.get(k) for k in KEYS})
        steps = int(seed_fit_steps(record.sgd, config.fit_loss)[0])
        row["fit_steps"] = steps if steps >= 0 else None
        esc = record.sgd.crossings.get("escape")
        row["t_escape"] = None if esc is None or not np.isfinite(esc[0][0]) else float(esc[0][0])
    row["fitted"] = is_fitted(row["loss"], config.fit_loss)
    row["wall_s"] = wall
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def _curves(record: Any) -> dict[str, list]:
    """Loss and perturbation sharpness over time of one run (for the flow-vs-Adam figure)."""
    sol = record.flow if record.flow is not None else record.sgd
    out = {"t": np.asarray(sol.ts).tolist()}
    for k in ("loss", "pert_sharpness", "lambda_max"):
        v = np.asarray(sol.obs[k], float)
        out[k] = np.where(np.isfinite(v), v, np.nan).reshape(-1, v.shape[-1])[0].tolist()
    return out


def run_all(args: argparse.Namespace, out: pathlib.Path) -> list[dict[str, Any]]:
    """Every planned run not already in runs.jsonl; returns all rows."""
    optimizer = _optimizer(args)
    path = out / "runs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    done = {(r["part"], r["target"], r["n"], r["seed"]) for r in rows}
    plan = [("adam", t, n, s) for t in args.targets for n in args.ns for s in range(args.seeds)]
    plan += [("flow", t, n, s) for t in args.flow_targets for n in args.flow_ns for s in range(args.flow_seeds)]
    plan += [("completion", "random", args.completion_n, s) for s in range(args.completion_seeds)]
    plan = [x for x in plan if x[0] in args.parts]
    for part, target, n, seed in plan:
        if (part, target, n, seed) in done:
            continue
        config = _config(args, part, target, n, seed)
        t0 = time.perf_counter()
        record = _record(part, config, optimizer, args.stop_every)
        row = _row(part, config, record, time.perf_counter() - t0)
        if seed == 0 and target == "parity" and part in ("adam", "flow"):
            row["curves"] = _curves(record)
        rows.append(row)
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            f"{part:<10} {target:<7} n={n:<2} seed={seed}  fitted={row['fitted']!s:<5} loss={row['loss']:.3g}  "
            f"S={row['pert_sharpness']:.3g}  wall {row['wall_s']:.1f} s",
            flush=True,
        )
    return rows


def _v(name: str, claim: str, figures: dict[str, Any], criterion: str, passed: bool | None) -> dict[str, Any]:
    from flowsim import verdict

    return verdict(name, claim, figures, criterion, passed).to_dict()


def verdicts(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """V1-V4 from the rows (see the module docstring)."""
    fig1: dict[str, Any] = {}
    for t in targets_of(rows):  # PARITY vs FIRST judged; MAJORITY and MEAN reported
        fit = fitted_rows(rows, "adam", t)
        n, s = np.array([r["n"] for r in fit], float), np.array([r["pert_sharpness"] for r in fit], float)
        ok = s > 0
        fig1[f"{t}_slope"], fig1[f"{t}_ci95"] = slope_ci(n[ok], np.log(s[ok]))
        fig1[f"{t}_fitted_runs"] = int(ok.sum())
        fig1[f"{t}_runs"] = sum(r["part"] == "adam" and r["target"] == t for r in rows)
        lam = np.array([r["lambda_max"] or np.nan for r in fit], float)
        good = np.isfinite(lam) & (lam > 0)
        fig1[f"{t}_lambda_max_slope"] = slope_ci(n[good], np.log(lam[good]))[0]
    p, f, fci = fig1["parity_slope"], fig1["first_slope"], fig1["first_ci95"]
    # Not judged (None) without >= 3 fitted runs over >= 2 values of n per target.
    v1 = bool(p > 3 * abs(f) and abs(f) <= fci) if np.isfinite([p, f, fci]).all() else None
    out = [
        _v(
            "V1.sharpness_slope",
            "sharpness of fitted models grows with n much faster for PARITY than for FIRST (Adam)",
            fig1,
            "slope of log perturbation sharpness vs n: PARITY > 3 |FIRST| and FIRST's 95% interval contains 0",
            v1,
        )
    ]
    fig2: dict[str, Any] = {}
    for t in targets_of(rows):
        fit = fitted_rows(rows, "adam", t)
        fig2[f"{t}_spearman"] = spearman(
            np.array([r["n"] for r in fit], float), np.array([r["tradeoff"] for r in fit], float)
        )
    ok2 = np.isfinite([fig2["parity_spearman"], fig2["first_spearman"]]).all()
    v2 = bool(fig2["parity_spearman"] > 0.8 and fig2["first_spearman"] <= 0.8) if ok2 else None
    out.append(
        _v(
            "V2.norm_blowup_tradeoff",
            "blow-up x ||theta||^2 of fitted models grows with n for PARITY, not for FIRST (Adam)",
            fig2,
            "Spearman rho vs n: PARITY > 0.8 and FIRST <= 0.8",
            v2,
        )
    )
    return [*out, _completion_verdict(rows, args), _flow_verdict(rows)]


def _completion_verdict(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    comp = [r for r in rows if r["part"] == "completion"]
    fit = [r for r in comp if r["accuracy"] == 1]
    below = [r["as_learned"] < r["as_completion"] for r in fit]
    figs = {
        "n": args.completion_n,
        "n_train": args.completion_train,
        "runs": len(comp),
        "fitted": len(fit),
        "fraction_below": float(np.mean(below)) if below else None,
        "as_learned_median": float(np.median([r["as_learned"] for r in fit])) if fit else None,
        "as_completion_mean": float(np.mean([r["as_completion"] for r in fit])) if fit else None,
    }
    claim = "random functions fitted on a subset complete the rest with lower sensitivity than random completions"
    crit = "as(learned) < mean as of random completions in >= 90% of fitted (function, seed) pairs"
    return _v("V3.completion_bias", claim, figs, crit, bool(below) and float(np.mean(below)) >= 0.9 if fit else None)


def _flow_verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    flow = {(r["target"], r["n"], r["seed"]): r for r in rows if r["part"] == "flow"}
    adam = {(r["target"], r["n"], r["seed"]): r for r in rows if r["part"] == "adam"}
    pairs = [(flow[k], adam[k]) for k in flow if k in adam and flow[k]["fitted"] and adam[k]["fitted"]]
    flatter = [a["pert_sharpness"] < f["pert_sharpness"] for f, a in pairs]
    figs: dict[str, Any] = {"pairs_jointly_fitted": len(pairs), "adam_flatter": int(sum(flatter))}
    for (t, n, s), r in sorted(flow.items()):
        figs[f"flow_{t}_n{n}_s{s}"] = {k: r.get(k) for k in ("fitted", "t_fit", "t_escape", "solver_steps", "loss")}
        figs[f"flow_{t}_n{n}_s{s}"]["lambda_max"] = r.get("lambda_max")
    crit = "Adam's final perturbation sharpness < the flow's in more than half of the jointly fitted pairs"
    claim = "gradient flow vs Adam from the same init: does the flow fit, and is Adam's minimum flatter"
    return _v("V4.flow_vs_adam", claim, figs, crit, (sum(flatter) > len(flatter) / 2) if pairs else None)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--out", type=pathlib.Path, default=HERE / "results" / "sensitivity")
    p.add_argument("--parts", default="adam,completion,flow", type=lambda s: s.split(","))
    p.add_argument("--targets", default="parity,first,majority,mean", type=lambda s: s.split(","))
    p.add_argument("--flow-targets", default="parity,first", type=lambda s: s.split(","))
    p.add_argument("--ns", default="4,5,6,7,8,10", type=_ints, help="n of the Adam part")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--adam-lr", type=float, default=1e-3)
    p.add_argument("--adam-steps", type=int, default=16000)
    p.add_argument("--adam-batch", type=int, default=256, help="minibatch of the table (full table when 2^n <= it)")
    p.add_argument("--stop-every", type=int, default=10, help="discrete runs check the target loss every k steps")
    p.add_argument("--weight-decay", type=float, default=0.0, help="> 0: AdamW with this decoupled decay")
    p.add_argument("--precision", default="float32", help="of the Adam and completion parts")
    p.add_argument("--fit-loss", type=float, default=1e-3)
    p.add_argument("--flow-ns", default="3,4,5,6,7,8", type=_ints)
    p.add_argument("--flow-seeds", type=int, default=3)
    p.add_argument("--flow-rtol", type=float, default=1e-4, help="relative tolerance of the flow solve")
    p.add_argument("--flow-T", type=float, default=400.0, help="flow time horizon")
    p.add_argument("--flow-max-steps", type=int, default=20000, help="flow step budget (accepted + rejected)")
    p.add_argument("--solver", default="rkc", help="flow solver (rkc: the stabilised one; tsit5)")
    p.add_argument("--completion-n", type=int, default=10)
    p.add_argument("--completion-train", type=int, default=256)
    p.add_argument("--completion-seeds", type=int, default=10)
    args = p.parse_args()
    from flowsim.cli import _enable_cache  # the `flowsim` command's XLA setup and compilation cache

    _enable_cache(True)

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = run_all(args, args.out)
    from flowsim.systems.sensitivity import is_fitted

    for r in rows:  # the same rule for rows written by an earlier version of this script
        r["fitted"] = is_fitted(r["loss"], args.fit_loss)
    vs = verdicts(rows, args)
    write_tables(rows, vs, args.out, args)
    for path in plot(rows, args.out):
        print(" ", path)
    for v in vs:
        print(f"{v['name']:<24} {v['status']:<4} {json.dumps(v['figures'])[:200]}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
