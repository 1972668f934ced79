"""Verdict run of the spectra system (Charton 2022; issue 13): how a small encoder fails on the
spectra of 3x3 symmetric matrices, out of distribution, and under gradient flow vs Adam.

    python experiments/spectra.py [--seeds 2] [--adam-steps 8000] [--ood-steps 3000] [--flow-T 1000] [--parts ...]

Three parts (every random stream split from one key per seed, `flowsim.RunKeys.from_seed`):
- `adam`: the eigenvector task on Wigner matrices, Adam on fresh samples (`--batch` per step,
  `--adam-steps` steps, float32); the per-matrix errors on `--test-size` held-out matrices give
  verdicts 1 (roughly right) and 2 (failures predictable), the histograms and kappa distributions;
- `ood`: the eigenvalue task, one model per eigenvalue distribution (Adam on fresh samples,
  `--ood-steps`), each tested on every distribution (the accuracy table, verdict 3), and the steps
  each model takes to reach `OOD_TARGET` accuracy on its own distribution;
- `flow`: the eigenvector task on a fixed set of `--flow-n-train` matrices with a model of width
  `--flow-d`, by gradient flow (`--flow-solver`, default the stabilised RKC, `--flow-precision`,
  stopped at `--fit-loss`, step budget `--flow-max-steps`) and by Adam on fresh samples from the same
  initial model (verdict 4: do verdicts 1-2 come out the same?). A flow that does not reach the target
  is reported as such (how far it got, its lambda_max), never replaced by a discrete run.

Thresholds (fixed before the run): verdicts 1-2 as `flowsim.systems.spectra.verdicts` (>= 80% of
failures within 2% on eigenvalues and norms and orthogonality the most violated property; AUROC of
kappa(Q_hat) or of -eigengap >= 0.85); verdict 3: the Laplace-trained model's mean accuracy on the
six other distributions > the Wigner-trained model's; verdict 4: the flow-trained model's verdicts 1
and 2 have the same status as the Adam-trained model's (both judged).
Writes verdicts.json, report.md, ood_accuracy.csv, adam_runs.csv, flow.json and figures into `--out`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import pathlib
import time
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).parent
OOD_TARGET = 0.5  # accuracy at tol on the training distribution that counts as "reached" (verdict 3)
ERRORS = ("eig_err", "vec_err", "norm_err", "orth_err")


def _task(args: argparse.Namespace, task: str, d: int, dist: str = "wigner") -> Any:
    from flowsim.systems.spectra import SpectraConfig

    return SpectraConfig(
        task=task, n=args.n, dist=dist, d_model=d, mlp_hidden=2 * d, heads=args.heads, layers=args.layers,
        n_train=args.flow_n_train, n_test=args.test_size, tol=args.tol, fit_loss=args.fit_loss,
    )  # fmt: skip


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        v = np.asarray(v).item() if np.ndim(v) == 0 and not isinstance(v, (str, bool)) else v
        out[k] = None if isinstance(v, float) and not np.isfinite(v) else v
    return out


def _train(
    task: Any, seed: int, steps: int, args: argparse.Namespace, model: Any = None, dist: str | None = None
) -> tuple[Any, dict[str, np.ndarray], Any]:
    """Adam on fresh samples of `dist` from seed's init (or `model`); returns (model, record, test)."""
    import jax
    import jax.numpy as jnp

    import flowsim
    from flowsim.systems import spectra as sp

    keys = flowsim.RunKeys.from_seed(seed)
    if model is None:
        model = sp.init_model(keys.init, task, jnp.float32)
    test = sp.make_data(task, keys.test, args.test_size, jnp.float32, dist)
    every = max(steps // 20, 1)
    key = jax.random.fold_in(keys.sgd, 0)
    trained, rec = sp.fresh_adam(
        model, task, key, test, lr=args.adam_lr, steps=steps, batch=args.batch, every=every, dist=dist
    )
    return trained, rec, test


def _errors(model: Any, test: Any, task: Any) -> dict[str, np.ndarray]:
    import jax

    from flowsim.systems import spectra as sp

    pred = jax.jit(jax.vmap(model))(test.x)
    return {k: np.asarray(v) for k, v in sp.per_matrix(test.m, pred, sp.sigma(task.n, task.scale_a)).items()}


def _final(model: Any, test: Any, task: Any) -> dict[str, Any]:
    from flowsim.systems import spectra as sp

    return _clean(sp.evaluate_model(model, test, task))


def adam_part(args: argparse.Namespace, out: pathlib.Path) -> list[dict[str, Any]]:
    """Part `adam`: per seed, the final summary, verdicts 1-2 and the per-matrix errors (npz)."""
    from flowsim.systems import spectra as sp

    rows = []
    for seed in range(args.seeds):
        task = _task(args, "eigenvectors", args.d_model)
        t0 = time.perf_counter()
        model, rec, test = _train(task, seed, args.adam_steps, args)
        fin = _final(model, test, task)
        errs = _errors(model, test, task)
        np.savez_compressed(out / f"adam_errors_seed{seed}.npz", allow_pickle=False, **errs)
        row = {"seed": seed, **fin, "wall_s": time.perf_counter() - t0}
        row["roughly_right"], row["predictable"] = sp.roughly_right(fin)[0], sp.predictable(fin)[0]
        row["curve"] = {
            "step": rec["step"].tolist(),
            "test_loss": rec["test_loss"].tolist(),
            "acc": rec["acc"].tolist(),
        }
        rows.append(row)
        print(f"adam seed={seed} acc={fin['acc']:.3f} acc_2={fin['acc_2']:.3f} wall {row['wall_s']:.0f} s", flush=True)
    return rows


def ood_part(args: argparse.Namespace) -> dict[str, Any]:
    """Part `ood`: accuracy table (train dist x test dist) and steps to OOD_TARGET on the own dist."""
    import jax.numpy as jnp

    import flowsim
    from flowsim.systems import spectra as sp

    table: dict[str, dict[str, float]] = {}
    reach: dict[str, int | None] = {}
    for dist in args.dists:
        task = _task(args, "eigenvalues", args.d_model, dist)
        t0 = time.perf_counter()
        model, rec, _ = _train(task, args.ood_seed, args.ood_steps, args, dist=dist)
        hit = np.flatnonzero(rec["acc"] >= OOD_TARGET)
        reach[dist] = int(rec["step"][hit[0]]) if hit.size else None
        keys = flowsim.RunKeys.from_seed(args.ood_seed)
        table[dist] = {}
        for test_dist in args.dists:
            test = sp.make_data(task, keys.test, args.ood_test, jnp.float32, test_dist)
            table[dist][test_dist] = float(sp.evaluate_model(model, test, task)["acc"])
        print(f"ood train={dist:<9} " + " ".join(f"{v:.2f}" for v in table[dist].values())
              + f"  reach={reach[dist]} wall {time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    return {"table": table, "steps_to_target": reach}


def flow_part(args: argparse.Namespace) -> dict[str, Any]:
    """Part `flow`: gradient flow on a fixed set vs Adam on fresh samples from the same init."""
    import flowsim
    from flowsim.systems import spectra as sp

    task = _task(args, "eigenvectors", args.flow_d)
    config = flowsim.Config(
        "spectra", **dataclasses.asdict(task), seed=args.flow_seed, lr=args.flow_lr,
        steps=int(round(args.flow_T / args.flow_lr)), solver=args.flow_solver, precision=args.flow_precision,
        stop_loss=args.fit_loss, sharpness=1, max_steps=args.flow_max_steps, n_save_log=20, n_save_lin=20,
        rtol=args.flow_rtol, atol=args.flow_rtol * 1e-2, batch_size=min(64, args.flow_n_train),
    )  # fmt: skip
    t0 = time.perf_counter()
    res = flowsim.run_experiment(config, pieces=("flow", "gd") if args.flow_gd else ("flow",))
    wall = time.perf_counter() - t0
    flow = res.flow
    assert flow is not None
    model = res.setup.problem.model(flow.params)
    test = res.setup.observer.test  # type: ignore[attr-defined]
    fin = _final(model, test, task)
    obs = {k: np.asarray(v, float) for k, v in flow.obs.items() if np.ndim(v) == 1}
    ok = np.isfinite(obs["loss"])
    hl = flow.step_stats.h_lambda(flow.ts, obs["lambda_max"]) if flow.step_stats is not None else np.array([])
    info = _clean(
        {"wall_s": wall, "t_reached": flow.t_reached, "T": config.t_final, "stopped_by": flow.stopped_by,
         "result": flow.result, "num_steps": flow.num_steps, "loss_final": obs["loss"][ok][-1],
         "lambda_max_final": obs["lambda_max"][ok][-1], "h_lambda_max_median": np.nanmedian(hl) if hl.size else None}
    )  # fmt: skip
    info["curve"] = {k: np.where(ok, obs[k], np.nan).tolist() for k in ("loss", "test_loss", "acc", "lambda_max")}
    info["curve"]["t"] = np.asarray(flow.ts, float).tolist()
    if res.gd is not None:
        info["gd_curve_labelled_GD"] = {
            "t": np.asarray(res.gd.ts).tolist(),
            "loss": np.asarray(res.gd.obs["loss"]).tolist(),
        }
    model0 = res.setup.problem.model(res.setup.problem.params0)
    adam_model, _, adam_test = _train(task, args.flow_seed, args.flow_adam_steps, args, model=sp.SpectraModel(
        model0.embedding, model0.stack, model0.norm, model0.readout))  # fmt: skip
    print(f"flow: stopped_by={info['stopped_by']} t={info['t_reached']:.3g} loss={info['loss_final']:.3g} "
          f"acc={fin['acc']:.3f} wall {wall:.0f} s", flush=True)  # fmt: skip
    return {"flow": {**info, "final": fin}, "adam_same_init": _final(adam_model, adam_test, task)}


def _v(name: str, claim: str, figures: dict[str, Any], criterion: str, passed: bool | None) -> dict[str, Any]:
    from flowsim import verdict

    return verdict(name, claim, figures, criterion, passed).to_dict()


def _seed_verdict(name: str, claim: str, rows: list[dict[str, Any]], key: str, crit: str) -> dict[str, Any]:
    """A verdict over the Adam seeds: PASS if every judged seed passes, INFO if none was judged."""
    status = [r[key] for r in rows]
    judged = [s for s in status if s is not None]
    keys = ("acc", "acc_2", "acc_1", "failures", "fail_eig_ok", "fail_norm_ok", "viol_eig", "viol_norm", "viol_orth")
    keys += ("auroc_kappa", "auroc_gap", "kappa_correct_p98", "kappa_failed_p2")
    figs: dict[str, Any] = {f"seed{r['seed']}": {k: r.get(k) for k in keys} for r in rows}
    figs["seeds_judged"], figs["seeds_passed"] = len(judged), int(sum(judged))
    return _v(name, claim, figs, crit, bool(all(judged)) if judged else None)


def verdicts(adam: list[dict[str, Any]], ood: dict[str, Any], flow: dict[str, Any] | None) -> list[dict[str, Any]]:
    """V1-V4 (see the module docstring)."""
    from flowsim.systems.spectra import predictable, roughly_right

    crit1 = roughly_right({})[2] + "; on every judged seed"
    crit2 = predictable({})[2] + "; on every judged seed"
    claim1 = "failures keep eigenvalues and norms; they lose orthogonality"
    claim2 = "failures are predictable without the ground truth (kappa, eigengap)"
    out = [
        _seed_verdict("V1.roughly_right", claim1, adam, "roughly_right", crit1),
        _seed_verdict("V2.predictable", claim2, adam, "predictable", crit2),
    ]
    table, reach = ood["table"], ood["steps_to_target"]
    mean_ood = {d: float(np.mean([v for t, v in row.items() if t != d])) for d, row in table.items()}
    figs3 = {"mean_ood_accuracy": mean_ood, "iid_accuracy": {d: table[d][d] for d in table}, "steps_to_target": reach}
    figs3["target_accuracy"] = OOD_TARGET
    ok3 = None
    if "laplace" in mean_ood and "wigner" in mean_ood and len(table) > 2:
        ok3 = mean_ood["laplace"] > mean_ood["wigner"]
    crit3 = "mean accuracy on the other distributions: Laplace-trained > Wigner-trained (steps to target reported)"
    out.append(
        _v(
            "V3.ood_laplace_vs_wigner",
            "Laplace-trained models generalise better than Wigner-trained",
            figs3,
            crit3,
            ok3,
        )
    )
    out.append(_flow_verdict(flow))
    return out


def _flow_verdict(flow: dict[str, Any] | None) -> dict[str, Any]:
    from flowsim.systems.spectra import predictable, roughly_right

    claim = "verdicts 1-2 survive the change from Adam (fresh samples) to gradient flow (fixed set), same init"
    crit = "the flow's and Adam's verdicts 1 and 2 have the same status, both judged"
    if flow is None:
        return _v("V4.flow_vs_adam", claim, {"ran": False}, f"not judged: {crit}", None)
    f, a = flow["flow"]["final"], flow["adam_same_init"]
    st = {who: (roughly_right(s)[0], predictable(s)[0]) for who, s in (("flow", f), ("adam", a))}
    figs = {k: v for k, v in flow["flow"].items() if k not in ("curve", "final", "gd_curve_labelled_GD")}
    figs.update(flow_acc=f.get("acc"), adam_acc=a.get("acc"), flow_verdicts=st["flow"], adam_verdicts=st["adam"])
    figs.update({f"flow_{k}": f.get(k) for k in ("viol_orth", "fail_eig_ok", "auroc_kappa", "auroc_gap")})
    figs.update({f"adam_{k}": a.get(k) for k in ("viol_orth", "fail_eig_ok", "auroc_kappa", "auroc_gap")})
    judged = all(x is not None for x in (*st["flow"], *st["adam"]))
    if not judged:
        return _v("V4.flow_vs_adam", claim, {**figs, "judged": False}, f"not judged: {crit}", None)
    return _v("V4.flow_vs_adam", claim, figs, crit, st["flow"] == st["adam"])


def plot(
    out: pathlib.Path, adam: list[dict[str, Any]], ood: dict[str, Any], flow: dict[str, Any] | None, tol: float
) -> list[pathlib.Path]:
    """error_histograms.png and kappa.png (Adam part), ood_heatmap.png (OOD part), flow.png (flow part)."""
    from flowsim._figure_style import save_figure
    from flowsim.systems.spectra.figures import plot_error_histograms, plot_kappa, plot_ood_heatmap

    paths = []
    if adam:
        keys = (*ERRORS, "kappa", "gap", "correct_err")
        e = {k: np.concatenate([np.load(out / f"adam_errors_seed{r['seed']}.npz")[k] for r in adam]) for k in keys}
        paths += [
            save_figure(plot_error_histograms(e, tol), out / "error_histograms.png"),
            save_figure(plot_kappa(e, tol), out / "kappa.png"),
        ]
    if ood["table"]:
        paths.append(save_figure(plot_ood_heatmap(ood["table"], tol), out / "ood_heatmap.png"))
    if flow is not None:
        paths.append(save_figure(_plot_flow(flow), out / "flow.png"))
    return paths


def _plot_flow(flow: dict[str, Any]) -> Any:
    from flowsim._figure_style import new_figure
    from flowsim._plots import time_axis

    c = flow["flow"]["curve"]
    fig, grid = new_figure(1, 3, figsize=(16, 4.4))
    t = np.array(c["t"])
    labels = {
        "loss": "MSE",
        "acc": "held-out accuracy at the tolerance",
        "lambda_max": r"top Hessian eigenvalue $\lambda_{\max}$",
    }
    for ax, (k, label) in zip(grid[0], labels.items()):
        ax.plot(t, np.array(c[k], float), label="gradient flow (training)" if k == "loss" else "gradient flow")
        if k == "loss":
            ax.plot(t, np.array(c["test_loss"], float), ls="--", label="gradient flow (held-out)")
            g = flow["flow"].get("gd_curve_labelled_GD")
            if g:
                ax.plot(g["t"], g["loss"], ls=":", label="GD (cross-check)")
        time_axis(ax, [], ylabel=label, log_y=k != "acc")
        ax.legend(fontsize="small")
    return fig


def write_tables(
    out: pathlib.Path,
    adam: list[dict[str, Any]],
    ood: dict[str, Any],
    flow: Any,
    vs: list[dict[str, Any]],
    args: Any,
    wall: float,
) -> None:
    """adam_runs.csv, ood_accuracy.csv, flow.json, verdicts.json and report.md."""
    from flowsim._results import package_versions, write_json

    cols = [k for k in adam[0] if k != "curve"] if adam else []
    with (out / "adam_runs.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(adam)
    dists = list(ood["table"])
    with (out / "ood_accuracy.csv").open("w", newline="") if dists else open(os.devnull, "w") as f:
        w2 = csv.writer(f)
        w2.writerow(["train \\ test", *dists, "steps_to_target"])
        w2.writerows([[a, *(f"{ood['table'][a][b]:.4f}" for b in dists), ood["steps_to_target"][a]] for a in dists])
    if flow is not None:
        write_json(out / "flow.json", flow)
    settings = {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()}
    write_json(
        out / "verdicts.json", {"args": settings, "wall_s": wall, "verdicts": vs, "versions": package_versions()}
    )
    lines = ["# Spectra verdict run", "", f"wall time {wall:.0f} s (shared 2-core machine)", ""]
    lines += ["| verdict | status | criterion |", "|---|---|---|"]
    lines += [f"| {v['name']} | {v['status']} | {v['criterion']} |" for v in vs]
    lines += [
        "",
        "Adam (fresh samples), eigenvector task:",
        "",
        "| seed | acc@tol | acc@2% | acc@1% | viol_orth | viol_eig | viol_norm | AUROC kappa | AUROC gap |",
    ]
    lines += ["|---|---|---|---|---|---|---|---|---|"]
    f3 = lambda x: "-" if x is None else f"{x:.3f}"
    for r in adam:
        ks = ("acc", "acc_2", "acc_1", "viol_orth", "viol_eig", "viol_norm", "auroc_kappa", "auroc_gap")
        lines.append(f"| {r['seed']} | " + " | ".join(f3(r.get(k)) for k in ks) + " |")
    if dists:
        lines += ["", "OOD accuracy (eigenvalue task, rows: train, columns: test):", ""]
        lines += ["| train | " + " | ".join(dists) + " | steps to target |", "|---" * (len(dists) + 2) + "|"]
        for a in dists:
            accs = " | ".join(f"{ood['table'][a][b]:.2f}" for b in dists)
            lines.append(f"| {a} | {accs} | {ood['steps_to_target'][a]} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--out", type=pathlib.Path, default=HERE / "results" / "spectra")
    p.add_argument("--seeds", type=int, default=2, help="seeds of the Adam eigenvector part")
    p.add_argument("--n", type=int, default=3, help="matrix size")
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--tol", type=float, default=0.05)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--adam-lr", type=float, default=2e-3)
    p.add_argument("--adam-steps", type=int, default=8000)
    p.add_argument("--test-size", type=int, default=5000)
    p.add_argument(
        "--dists", default="wigner,uniform,gaussian,laplace,positive,positive2,marcenko", type=lambda s: s.split(",")
    )
    p.add_argument("--ood-steps", type=int, default=3000)
    p.add_argument("--ood-test", type=int, default=2000)
    p.add_argument("--ood-seed", type=int, default=0)
    p.add_argument("--fit-loss", type=float, default=1e-3)
    p.add_argument("--parts", default="adam,ood,flow", type=lambda s: s.split(","), help="parts to run")
    p.add_argument("--flow-seed", type=int, default=0)
    p.add_argument("--flow-d", type=int, default=16)
    p.add_argument("--flow-n-train", type=int, default=256)
    p.add_argument("--flow-T", type=float, default=1000.0)
    p.add_argument("--flow-lr", type=float, default=0.05, help="save-grid step (T = lr x steps) and GD's lr")
    p.add_argument("--flow-solver", default="rkc")
    p.add_argument("--flow-rtol", type=float, default=1e-4)
    p.add_argument("--flow-precision", default="float32")
    p.add_argument("--flow-max-steps", type=int, default=3000)
    p.add_argument("--flow-gd", action="store_true", help="also run GD at --flow-lr (a cross-check, labelled GD)")
    p.add_argument("--flow-adam-steps", type=int, default=4000)
    args = p.parse_args()
    from flowsim.cli import _enable_cache

    _enable_cache(True)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    adam = adam_part(args, args.out) if "adam" in args.parts else []
    ood = ood_part(args) if "ood" in args.parts else {"table": {}, "steps_to_target": {}}
    flow = flow_part(args) if "flow" in args.parts else None
    vs = verdicts(adam, ood, flow)
    wall = time.perf_counter() - t0
    write_tables(args.out, adam, ood, flow, vs, args, wall)
    for path in plot(args.out, adam, ood, flow, args.tol):
        print(" ", path)
    for v in vs:
        print(f"{v['name']:<26} {v['status']:<4} {json.dumps(v['figures'])[:240]}")
    print(f"total {wall:.0f} s")


if __name__ == "__main__":
    main()
