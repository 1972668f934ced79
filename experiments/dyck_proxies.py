"""Verdict run of the dyck-proxies system (Friedman et al., ICML 2024; issue 12, system 2): are proxies
of the layer-2 queries/keys that match the model in distribution faithful on systematic splits?

    python experiments/dyck_proxies.py [--seeds 5] [--adam-steps 3000] [--flow-seeds 1] [--report-only] ...

Two parts, each one run per seed through `flowsim.run_experiment` (the seed draws the training set,
the splits and the initial model), then the proxy study (`study_model`) of every final model:
- `adam`: Dyck-(k, D) with `--n-train` strings, Adam at peak step size `--adam-lr` with a cosine decay
  to 0 (`--schedule cosine`, as Wen et al.'s code; `constant` runs the engine's minibatch piece), batch
  `--batch`, `--adam-steps` steps, `--precision`;
- `flow`: the same task on `--flow-n-train` strings: the gradient flow (`--solver`, float32, step budget
  `--flow-max-steps`, top Hessian eigenvalue recorded) and Adam from the same initial point on the same
  strings. A flow that does not fit is reported as such (how far it got, its lambda_max), never
  replaced by a discrete run.

Thresholds (fixed before the run, from the research notes' T1-T3; `GAP`, `SIGN` in the system's
verdicts): V1 per family the smallest size with iid agreement >= 0.99 has agreement on the deep split
>= 4 points lower, for >= 2 of 3 families in >= 3 of 5 seeds, and those families' mean gaps have a
95% interval above 0. V2 proxy - model accuracy on the systematic splits exceeds +1 point for some
(family, split) and falls below -1 point for another (seed means). V3 the SVD family's deep-split gap
has a 95% interval above 0. V1-V3 read the seeds whose training closing accuracy reaches 0.99 and are
NOT JUDGED with fewer than 3 of them (no interval). V4 (reported) the flow-trained vs the Adam-trained
model (constant step size) from the same initial point on the same strings.
Writes runs.jsonl, seeds.csv, verdicts.json, report.md and figures into `--out`.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import time
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).parent
SPLITS = ("iid", "unseen", "deep", "long")
SYSTEMATIC = ("unseen", "deep", "long")
FAMILIES = ("pca", "kmeans", "svd")
FAMILY_NAMES = {"pca": "PCA", "kmeans": "k-means", "svd": "SVD"}
MIN_SEEDS = 3  # fitted seeds needed for an interval (fixed with the thresholds)
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


def _config(args: argparse.Namespace, part: str, seed: int) -> Any:
    import flowsim

    common = dict(k=args.k, max_depth=args.depth, max_len=args.max_len, n_test=args.n_test, seed=seed,
                  optimizer="adam", opt_lr=args.adam_lr, lr=args.adam_lr, steps=args.adam_steps,
                  batch_size=args.batch, sgd_seeds=1, n_save_log=10, n_save_lin=10)  # fmt: skip
    if part == "adam":
        return flowsim.Config("dyck-proxies", **common, n_train=args.n_train, precision=args.precision)
    # The time grid t = step * lr ends at --flow-T after --adam-steps Adam steps (Adam's own step size is opt_lr).
    return flowsim.Config(
        "dyck-proxies", **{**common, "lr": args.flow_T / args.adam_steps, "n_save_log": 20, "n_save_lin": 20},
        n_train=args.flow_n_train, precision="float32", solver=args.solver, max_steps=args.flow_max_steps,
        sharpness=1, rtol=1e-4, atol=1e-6,
    )  # fmt: skip


def _adam_model(config: Any, record: Any, steps: int) -> tuple[Any, dict[str, Any]]:
    import equinox as eqx
    import jax

    from flowsim.systems.dyck_proxies import template

    sol = record.sgd
    params = jax.tree.map(lambda x: x[0], sol.params)
    acc = np.asarray(sol.obs["accuracy"])[0]
    return eqx.combine(params, template(config)), {"accuracy": float(acc[np.isfinite(acc)][-1]), "steps": steps}


def _row(part: str, seed: int, optimizer: str, config: Any, model: Any, fit: dict[str, Any]) -> dict[str, Any]:
    from flowsim.systems.dyck_proxies import study_model

    st = study_model(config, model)
    fams = {f: dict(fam) for f, fam in st["families"].items()}
    return {"part": part, "seed": seed, "optimizer": optimizer, **fit, "model_accuracy": st["model_accuracy"],
            "positions": st["positions"], "summary": st["summary"], "families": fams,
            "illusion_families": st["illusion_families"]}  # fmt: skip


def run_adam(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    import flowsim

    config = _config(args, "adam", seed)
    t0 = time.time()
    if args.schedule == "constant":
        record = flowsim.run_experiment(config, pieces=("sgd",)).record
    else:  # Adam with a cosine decay of its step size to 0 (as Wen et al.'s code), on the engine's minibatches
        import optax

        s = flowsim.setup(config)
        opt = optax.adam(optax.cosine_decay_schedule(args.adam_lr, config.steps))
        sol = flowsim.optax_descent(
            s.problem, opt, config.lr, flowsim.step_grid(config), s.observer, key=s.keys.sgd,
            batch_size=config.batch_size, seeds=1, events=s.events,
        )  # fmt: skip
        record = flowsim.RunRecord(config, None, None, sol)
    model, fit = _adam_model(config, record, config.steps)
    fit["wall_s"] = time.time() - t0
    fit["schedule"] = args.schedule
    return [_row("adam", seed, "adam", config, model, fit)]


def run_flow(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    import equinox as eqx

    import flowsim
    from flowsim.systems.dyck_proxies import template

    config = _config(args, "flow", seed)
    t0 = time.time()
    res = flowsim.run_experiment(config, pieces=("flow", "sgd"))
    flow = res.flow
    assert flow is not None
    obs = {k: np.asarray(v) for k, v in flow.obs.items()}
    ok = np.flatnonzero(np.isfinite(obs["loss"]))
    last = int(ok[-1]) if ok.size else 0
    lam = obs.get("lambda_max", np.full_like(obs["loss"], np.nan))
    fit = {"accuracy": float(obs["accuracy"][last]), "loss": float(obs["loss"][last]), "t_reached": flow.t_reached,
           "T": config.t_final, "flow_steps": flow.num_steps, "result": flow.result,
           "lambda_max_first": float(lam[0]), "lambda_max_last": float(lam[last]),
           "curve": {"t": np.asarray(flow.ts)[ok].tolist(), "loss": obs["loss"][ok].tolist(),
                     "accuracy": obs["accuracy"][ok].tolist(), "lambda_max": lam[ok].tolist()},
           "wall_s": time.time() - t0}  # fmt: skip
    rows = [_row("flow", seed, "flow", config, eqx.combine(flow.params, template(config)), fit)]
    model, afit = _adam_model(config, res.record, config.steps)
    rows.append(_row("flow", seed, "adam", config, model, afit))
    return rows


def _ci(x: list[float]) -> tuple[float, float, float]:
    a = np.asarray([v for v in x if v is not None and np.isfinite(v)], float)
    if a.size == 0:
        return math.nan, math.nan, math.nan
    if a.size == 1:
        return float(a[0]), math.nan, math.nan
    h = T95.get(a.size - 1, 1.96) * a.std(ddof=1) / math.sqrt(a.size)
    return float(a.mean()), float(a.mean() - h), float(a.mean() + h)


def _status(ok: bool, judged: bool, fitted: int) -> str:
    if not judged:
        return f"NOT JUDGED ({fitted} fitted seeds < {MIN_SEEDS}: no interval)"
    return "PASS" if ok else "FAIL"


def verdicts(rows: list[dict[str, Any]], fit_accuracy: float) -> dict[str, Any]:
    from flowsim.systems.dyck_proxies.verdicts import GAP, MIN_FAMILIES, SEED_FRACTION, SIGN

    adam = [r for r in rows if r["part"] == "adam" and r["accuracy"] >= fit_accuracy]
    all_adam = [r for r in rows if r["part"] == "adam"]
    gaps = {f: {s: _ci([r["summary"][f].get("gap", {}).get(s) for r in adam]) for s in SYSTEMATIC} for f in FAMILIES}
    deltas = {f: {s: _ci([r["summary"][f].get("accuracy_delta", {}).get(s) for r in adam]) for s in SYSTEMATIC}
              for f in FAMILIES}  # fmt: skip
    per_seed = [r["illusion_families"] for r in adam]
    frac = float(np.mean([n >= MIN_FAMILIES for n in per_seed])) if per_seed else math.nan
    above0 = [f for f in FAMILIES if gaps[f]["deep"][1] > 0]
    v1 = bool(per_seed) and frac >= SEED_FRACTION and len(above0) >= MIN_FAMILIES
    judged = len(adam) >= MIN_SEEDS
    means = [deltas[f][s][0] for f in FAMILIES for s in SYSTEMATIC if np.isfinite(deltas[f][s][0])]
    v2 = any(m > SIGN for m in means) and any(m < -SIGN for m in means)
    v3 = bool(np.isfinite(gaps["svd"]["deep"][1]) and gaps["svd"]["deep"][1] > 0)
    out: dict[str, Any] = {
        "seeds": len(all_adam), "seeds_fitted": len(adam),
        "V1_illusion": {"status": _status(v1, judged, len(adam)),
                        "deep_gap_mean_ci": {f: gaps[f]["deep"] for f in FAMILIES},
                        "illusion_families_per_seed": per_seed, "fraction_seeds": frac, "families_ci_above_0": above0,
                        "criterion": f"deep gap >= {GAP} for >= {MIN_FAMILIES} families in >= {SEED_FRACTION:.0%} of "
                                     f"fitted seeds, and >= {MIN_FAMILIES} families' mean deep gap 95% CI above 0",
                        "gaps_all_splits": gaps,
                        "deep_gap_mean_ci_all_seeds": {f: _ci([r["summary"][f].get("gap", {}).get("deep")
                                                               for r in all_adam]) for f in FAMILIES},
                        "illusion_families_all_seeds": [r["illusion_families"] for r in all_adam],
                        "train_accuracy_all_seeds": [r["accuracy"] for r in all_adam]},
        "V2_both_signs": {"status": _status(v2, judged, len(adam)), "accuracy_delta_mean_ci": deltas,
                          "criterion": f"some seed-mean proxy - model accuracy > +{SIGN} and some < -{SIGN}"},
        "V3_data_free": {"status": _status(v3, judged, len(adam)), "svd_deep_gap_ci": gaps["svd"]["deep"],
                         "criterion": "svd deep-split gap 95% CI above 0"},
    }  # fmt: skip
    out["V4_optimizer"] = _v4(rows, fit_accuracy)
    return out


def _v4(rows: list[dict[str, Any]], fit_accuracy: float) -> dict[str, Any]:
    pairs = []
    for f in [r for r in rows if r["part"] == "flow" and r["optimizer"] == "flow"]:
        a = next(r for r in rows if r["part"] == "flow" and r["optimizer"] == "adam" and r["seed"] == f["seed"])
        pairs.append({"seed": f["seed"], "flow_fitted": f["accuracy"] >= fit_accuracy, "flow_accuracy": f["accuracy"],
                      "adam_accuracy": a["accuracy"], "flow_t_reached": f["t_reached"], "T": f["T"],
                      "flow_lambda_max_last": f["lambda_max_last"], "flow_illusion_families": f["illusion_families"],
                      "adam_illusion_families": a["illusion_families"],
                      "flow_deep_gap": {g: f["summary"][g].get("gap", {}).get("deep") for g in FAMILIES},
                      "adam_deep_gap": {g: a["summary"][g].get("gap", {}).get("deep") for g in FAMILIES}})  # fmt: skip
    judged = [p for p in pairs if p["flow_fitted"] and p["adam_accuracy"] >= fit_accuracy]
    same = [p["flow_illusion_families"] >= 2 for p in judged] == [p["adam_illusion_families"] >= 2 for p in judged]
    status = "INFO" if judged else "INFO (not judged: the flow did not fit within its budget)"
    if not pairs:
        status = "INFO (not judged: no flow run in this folder)"
    answer = None if not judged else ("same illusion verdict" if same else "the illusion verdict differs")
    return {"status": status, "answer": answer, "pairs": pairs}


def _size_band(ax: Any, runs: list[dict[str, Any]], f: str, split: str, color: str, ls: str) -> None:
    """Agreement of family `f` on `split` against proxy size: mean over seeds and their min-max band
    (a size a seed did not fit is a gap)."""
    sizes = sorted({s for r in runs for s in r["families"][f]["sizes"]})
    y = np.full((len(runs), len(sizes)), np.nan)
    for i, r in enumerate(runs):
        fam = r["families"][f]
        for s, a in zip(fam["sizes"], fam["agreement"][split]):
            y[i, sizes.index(s)] = np.nan if a is None else a
    with np.errstate(all="ignore"):
        lo, mid, hi = np.nanmin(y, 0), np.nanmean(y, 0), np.nanmax(y, 0)
    ax.fill_between(sizes, lo, hi, color=color, alpha=0.15, lw=0)
    ax.plot(sizes, mid, color=color, ls=ls, lw=1.4)


def _fig_agreement(rows: list[dict[str, Any]], out: pathlib.Path) -> None:
    from matplotlib.lines import Line2D

    from flowsim._figure_style import legend_outside, new_figure, save_figure

    adam = [r for r in rows if r["part"] == "adam"]
    fig, axes = new_figure(1, 2, figsize=(12, 4.6))
    x = np.arange(len(SPLITS))
    handles: list = []
    for i, f in enumerate(FAMILIES):
        cis = [_ci([r["summary"][f].get("agreement", {}).get(s) for r in adam]) for s in SPLITS]
        m = np.asarray([c[0] for c in cis])
        lo, hi = np.asarray([c[1] for c in cis]), np.asarray([c[2] for c in cis])
        sizes = sorted({r["summary"][f]["size"] for r in adam if r["summary"][f]["size"] is not None})
        chosen = f"chosen size {', '.join(map(str, sizes))}" if sizes else "no size reaches iid 0.99"
        axes[0, 0].errorbar(x + 0.1 * (i - 1), m, yerr=[m - lo, hi - m], color=f"C{i}", marker="o", capsize=3)
        _size_band(axes[0, 1], adam, f, "iid", f"C{i}", "-")
        _size_band(axes[0, 1], adam, f, "deep", f"C{i}", "--")
        handles.append(Line2D([], [], color=f"C{i}", marker="o", label=f"{FAMILY_NAMES.get(f, f)} ({chosen})"))
    handles += [Line2D([], [], color="k", label="iid split"), Line2D([], [], color="k", ls="--", label="deep split")]
    axes[0, 0].set_xticks(x, list(SPLITS))
    axes[0, 0].set(xlabel="test split", ylabel="agreement of proxy and model")
    axes[0, 0].set_title(
        "chosen proxy (smallest with iid agreement $\\geq$ 0.99):\nmean and 95% interval over Adam seeds"
    )
    axes[0, 1].set_xscale("log", base=2)
    axes[0, 1].set(xlabel="proxy size (rank $r$ or centroids $c$)")
    axes[0, 1].set_title("agreement against proxy size:\nmean and min-max band over Adam seeds")
    for ax in axes[0]:
        ax.grid(True, alpha=0.3)
    legend_outside(fig, handles, own=True, ncols=5)
    save_figure(fig, out / "agreement_vs_split.png")


def _fig_flow(rows: list[dict[str, Any]], out: pathlib.Path) -> None:
    from flowsim._figure_style import legend_outside, log_time_axis, new_figure, save_figure

    flows = [r for r in rows if r["optimizer"] == "flow"]
    if not flows:
        return
    panels = {
        "loss": "training cross-entropy",
        "accuracy": "closing accuracy (argmax)",
        "lambda_max": r"top Hessian eigenvalue $\lambda_{\max}$",
    }
    fig, axes = new_figure(1, 3, figsize=(13, 4.2))
    for ax, key in zip(axes[0], panels):
        for i, r in enumerate(flows):
            c = r["curve"]
            ax.plot(c["t"], c[key], marker=".", color=f"C{i}", label=f"gradient flow, seed {r['seed']}")
        ax.set_ylabel(panels[key])
        y = np.asarray([v for r in flows for v in r["curve"][key]], float)
        y = y[np.isfinite(y)]
        if key != "accuracy" and y.size and y.min() > 0 and y.max() > 30 * y.min():  # log where it spans decades
            ax.set_yscale("log")
        t = np.asarray([v for r in flows for v in r["curve"]["t"]], float)
        if (t > 0).any() and t.max() > 100 * t[t > 0].min():
            log_time_axis(ax)
        else:
            ax.set_xlabel("flow time $t$")
        ax.grid(True, alpha=0.3)
    legend_outside(fig, axes[0, 0].get_legend_handles_labels()[0], own=True)
    save_figure(fig, out / "flow.png")


def write_report(rows: list[dict[str, Any]], v: dict[str, Any], out: pathlib.Path) -> None:
    """seeds.csv (one row per final model), report.md and the figures."""
    head = ["part", "seed", "optimizer", "accuracy", *[f"acc_{s}" for s in SPLITS]]
    head += [f"{f}_{k}" for f in FAMILIES for k in ("size", *[f"gap_{s}" for s in SYSTEMATIC])]
    lines = [",".join(head)]
    for r in rows:
        vals = [r["part"], r["seed"], r["optimizer"], r["accuracy"], *[r["model_accuracy"][s] for s in SPLITS]]
        for f in FAMILIES:
            sm = r["summary"][f]
            size = sm["size"] if sm["size"] is not None else f"none (best iid {sm['best_iid_agreement']:.3f})"
            vals += [size, *[sm.get("gap", {}).get(s) for s in SYSTEMATIC]]
        lines.append(",".join("" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x)) for x in vals))
    (out / "seeds.csv").write_text("\n".join(lines) + "\n")
    md = [f"# dyck-proxies verdict run ({v['label']}), wall {v['wall_s']:.0f} s", ""]
    md += ["| verdict | status | criterion |", "|---|---|---|"]
    for k in ("V1_illusion", "V2_both_signs", "V3_data_free", "V4_optimizer"):
        md.append(f"| {k} | {v[k]['status']} | {v[k].get('criterion', v[k].get('answer', ''))} |")
    md += ["", "Deep-split gap (agreement_iid - agreement_deep), mean [95% CI] over fitted Adam seeds:", ""]
    for f, (m, lo, hi) in v["V1_illusion"]["deep_gap_mean_ci"].items():
        md.append(f"- {f}: {m:.4f} [{lo:.4f}, {hi:.4f}]")
    md += ["", "The same over all Adam seeds (fitted or not):", ""]
    for f, (m, lo, hi) in v["V1_illusion"]["deep_gap_mean_ci_all_seeds"].items():
        md.append(f"- {f}: {m:.4f} [{lo:.4f}, {hi:.4f}]")
    md += ["", "Per model (seeds.csv):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + line.replace(",", " | ") + " |" for line in lines[1:]]
    (out / "report.md").write_text("\n".join(md) + "\n")
    _fig_agreement(rows, out)
    _fig_flow(rows, out)


def _run_all(args: argparse.Namespace, out: pathlib.Path, t0: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with (out / "runs.jsonl").open("w") as fh:
        jobs = [("adam", s) for s in range(args.seeds)] + [("flow", s) for s in range(args.flow_seeds)]
        for part, seed in jobs:
            new = (run_adam if part == "adam" else run_flow)(args, seed)
            for r in new:
                fh.write(json.dumps(r, default=float) + "\n")
                fh.flush()
                print(f"[{time.time() - t0:6.0f}s] {part} seed {seed} {r['optimizer']}: acc {r['accuracy']:.4f} "
                      f"illusion families {r['illusion_families']}", flush=True)  # fmt: skip
            rows += new
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Verdict run of the dyck-proxies system (issue 12, system 2).")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--max-len", type=int, default=60)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--adam-lr", type=float, default=1e-2)
    p.add_argument("--adam-steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--schedule", choices=("constant", "cosine"), default="cosine", help="Adam step size (adam part)")
    p.add_argument("--precision", default="float32")
    p.add_argument("--flow-seeds", type=int, default=1)
    p.add_argument("--flow-n-train", type=int, default=256)
    p.add_argument("--flow-T", type=float, default=500.0)
    p.add_argument("--flow-max-steps", type=int, default=200)
    p.add_argument("--solver", default="rkc")
    p.add_argument("--fit-accuracy", type=float, default=0.99)
    p.add_argument("--label", default="full")
    p.add_argument("--report-only", action="store_true", help="recompute verdicts and report from runs.jsonl")
    p.add_argument("--out", default=str(HERE / "results" / "dyck_proxies"))
    args = p.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.report_only:
        rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines() if line.strip()]
    else:
        rows = _run_all(args, out, t0)
    v = verdicts(rows, args.fit_accuracy)
    v["label"], v["wall_s"], v["args"] = args.label, time.time() - t0, vars(args)
    if args.report_only:
        old = json.loads((out / "verdicts.json").read_text()) if (out / "verdicts.json").is_file() else {}
        v["wall_s"] = old.get("wall_s", math.nan)
    (out / "verdicts.json").write_text(json.dumps(v, indent=1, default=float))
    write_report(rows, v, out)
    print(json.dumps({k: v[k]["status"] for k in ("V1_illusion", "V2_both_signs", "V3_data_free", "V4_optimizer")}))


if __name__ == "__main__":
    main()
