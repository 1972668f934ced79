"""Command-line interface: a thin layer over the library.

    flowsim run [--config FILE] [--out DIR] [--<field> VALUE ...]   run the paper's experiment
    flowsim plot DIR                                                redraw a run's figures
    flowsim sweep SPEC [--out DIR] [--workers N] [--dask] [--new]   resumable parameter sweep
    flowsim phase-diagram RESULTS --x FIELD [--y FIELD] --measure NAME [--out PNG]
    flowsim compare [--dynamics gf,igr,sme] [--lrs ...]             continuous models vs GD/SGD
    flowsim theory NAME --values GRID [--axis A] [--seeds S] [--set KEY=VALUE ...]   one prediction

Every `Config` field is an option named after it (`--n`, `--L`, `--init-scale`, `--lr`, ...). Bad
input exits with status 2 and a one-line message naming the field and its allowed range.
"""

from __future__ import annotations

import os
import sys


def _prepare_environment() -> None:
    """Before JAX starts: one XLA CPU device per core (SGD seeds are sharded over them) and a
    persistent compilation cache, so that repeated runs skip XLA compilation."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={os.cpu_count() or 1}".strip()


_prepare_environment()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

from .config import Config, ConfigError  # noqa: E402


def _enable_cache(enabled: bool) -> None:
    if not enabled:
        return
    import jax

    path = os.environ.get("FLOWSIM_CACHE_DIR", str(pathlib.Path.home() / ".cache" / "flowsim" / "xla"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _field_type(f: dataclasses.Field):
    return type(f.default)


def _add_config_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("config fields (override the config file; defaults = the paper's experiment)")
    for f in dataclasses.fields(Config):
        opt = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            g.add_argument(opt, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        else:
            g.add_argument(opt, dest=f.name, type=_field_type(f), default=None, metavar=f.name.upper(),
                           help=f"(default {f.default})")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowsim", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="gradient flow vs GD vs SGD on the co-occurrence task, with verdicts")
    run.add_argument("--config", type=pathlib.Path, help="JSON or TOML file of config fields")
    run.add_argument("--out", type=pathlib.Path, help="results folder (default runs/<timestamp>)")
    run.add_argument("--no-plots", action="store_true", help="skip the figures")
    run.add_argument("--no-cache", action="store_true", help="do not use the persistent XLA compilation cache")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_config_options(run)
    plot = sub.add_parser("plot", help="redraw the figures of a run folder from its saved data")
    plot.add_argument("run_dir", type=pathlib.Path)
    _add_sweep_parsers(sub)
    _add_compare_parser(sub)
    _add_theory_parser(sub)
    return p


# `flowsim theory NAME`: the prediction functions of flowsim.theory (first positional argument: the
# grid, second: the seeds); `--set key=value` passes any of their keyword options.
_THEORY = {
    "t1": ("t1_scaling", "T1 along one axis (m, m1, sigma1) on the exact reduced flow"),
    "t1-full": ("t1_full_model", "T1 vs width with the full model (any Config regime) vs Lem 4.1's rate"),
    "phase2": ("phase2_scan", "the paper's Phase-2 system, loss law and balancing, across m or n"),
    "displacement": ("attention_displacement_vs_L", "attention displacement at a loss target vs L"),
    "scores": ("score_change_projections", "C_ij projections of the score change vs width"),
}


def _add_theory_parser(sub) -> None:
    th = sub.add_parser("theory", help="measure one of the paper's predictions (flowsim.theory) and save its table",
                        description="; ".join(f"{k}: {v[1]}" for k, v in _THEORY.items()))
    th.add_argument("prediction", choices=sorted(_THEORY))
    th.add_argument("--axis", help="t1: m, m1 or sigma1; phase2: m or n")
    th.add_argument("--values", type=_csv(float), required=True,
                    help="comma-separated grid (widths, m1, sigma1, n or L, by prediction)")
    th.add_argument("--seeds", type=_csv(int), default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    th.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="keyword option of the prediction function (repeatable), e.g. --set n=24")
    th.add_argument("--out", type=pathlib.Path, help="JSON path (default runs/theory-<name>-<timestamp>.json)")
    th.add_argument("--config", type=pathlib.Path, help="t1-full: JSON or TOML file of config fields")
    _add_config_options(th)


def _csv(kind):
    return lambda text: [kind(x) for x in text.split(",") if x]


def _add_compare_parser(sub) -> None:
    cmp = sub.add_parser("compare", help="continuous models (flow, IGR, heavy-ball ODE, SDE) vs GD/SGD, and vs lr")
    cmp.add_argument("--dynamics", type=_csv(str), default=["gf", "igr", "sme"],
                     help="comma-separated subset of gf,igr,heavy_ball,sme (default gf,igr,sme)")
    cmp.add_argument("--lrs", type=_csv(float), default=[],
                     help="also measure the distance to SGD at these lrs (same horizon lr*steps)")
    cmp.add_argument("--keys", type=_csv(str), default=["loss", "min_margin", "G1", "score_12"],
                     help="observables to overlay")
    cmp.add_argument("--paths", type=int, default=32, help="Brownian paths of the SDE ensemble")
    cmp.add_argument("--momentum", type=float, default=0.0, help="heavy-ball momentum of the discrete runs")
    cmp.add_argument("--sampling", choices=("iid", "shuffle"), default="iid", help="SGD batch sampling")
    cmp.add_argument("--config", type=pathlib.Path, help="JSON or TOML file of config fields")
    cmp.add_argument("--out", type=pathlib.Path, help="output folder (default runs/compare-<timestamp>)")
    _add_config_options(cmp)


def _add_sweep_parsers(sub) -> None:
    sw = sub.add_parser("sweep", help="resumable parameter sweep from a TOML/YAML spec (see flowsim.sweep)")
    sw.add_argument("spec", type=pathlib.Path, help="sweep spec (.toml, .yaml, .json)")
    sw.add_argument("--out", type=pathlib.Path, help="results folder (default sweeps/<spec name>)")
    sw.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core, at most one per shape group)")
    sw.add_argument("--dask", action="store_true", help="run on Dask distributed (LocalCluster unless --scheduler)")
    sw.add_argument("--scheduler", help="address of a running Dask scheduler (implies --dask)")
    sw.add_argument("--new", action="store_true", help="if --out holds a different sweep, use a new folder next to it")
    sw.add_argument("--no-cache", action="store_true", help="do not use the persistent XLA compilation cache")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    pd = sub.add_parser("phase-diagram", help="heatmap / line plot of a sweep measure")
    pd.add_argument("results", type=pathlib.Path)
    pd.add_argument("--x", required=True)
    pd.add_argument("--y")
    pd.add_argument("--measure", required=True)
    pd.add_argument("--out", type=pathlib.Path, help="PNG path (default in the results folder)")


def _config_from_args(args: argparse.Namespace) -> Config:
    base = Config.from_file(args.config).to_dict() if args.config else {}
    for f in dataclasses.fields(Config):
        v = getattr(args, f.name)
        if v is not None:
            base[f.name] = v
    return Config.from_dict(base)


def _cmd_run(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    _enable_cache(not args.no_cache)
    from . import experiment, plots, verdicts

    out = args.out or pathlib.Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    t0 = time.perf_counter()
    print(f"flowsim run -> {out}  (T = {config.t_final:g}: flow [{config.solver}, rtol {config.rtol:g}], "
          f"GD lr {config.lr:g} x {config.steps} steps, SGD batch {config.batch_size} x {config.sgd_seeds} seeds)")
    result = experiment.run_experiment(config, progress=not args.quiet)
    summary = experiment.save_experiment(result, out)
    if not args.no_plots:
        plots.plot_run(out)
    vs = [verdicts.Verdict(**v) for v in summary["verdicts"]]
    print(verdicts.format_table(vs))
    if not result.flow.ok:
        print(f"warning: flow stopped early with diffrax result '{result.flow.result}' at "
              f"t = {result.flow.t_reached:.6g}; the partial trajectory is saved", file=sys.stderr)
    for name, sol in (("GD", result.gd), ("SGD", result.sgd)):
        if sol.diverged:
            print(f"warning: {name} diverged (non-finite loss) at step(s) {sol.diverged_step.tolist()}",
                  file=sys.stderr)
    t = summary["timings_s"]
    parts = ", ".join(f"{k} {t[k]:.1f} s (compile {t[k + '_compile']:.1f} s)" for k in ("flow", "gd", "sgd"))
    print(f"wall time {time.perf_counter() - t0:.1f} s: {parts}; results in {out}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from . import plots

    for path in plots.plot_run(args.run_dir):
        print(path)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from . import sweep

    spec = sweep.SweepSpec.from_file(args.spec)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"invalid workers={args.workers}: workers must be a positive integer")
    _enable_cache(not args.no_cache)
    out = args.out or pathlib.Path("sweeps") / (spec.name or args.spec.stem)
    r = sweep.run_sweep(spec, out, workers=args.workers, new=args.new, use_dask=args.dask or bool(args.scheduler),
                        scheduler=args.scheduler, progress=not args.quiet)
    print(f"{r.total} points in {r.folder}: {r.skipped} already done, {r.done} run now ({r.failed} failed) "
          f"in {r.wall_s:.1f} s")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    if args.paths < 2:
        raise ConfigError(f"invalid paths={args.paths}: paths must be an integer >= 2")
    bad = [lr for lr in args.lrs if not lr > 0]
    if bad:
        raise ConfigError(f"invalid lrs={bad}: every lr must be > 0")
    from . import compare, plots
    from .results import package_versions, write_json, write_npz

    kw = dict(paths=args.paths, momentum=args.momentum, sampling=args.sampling)
    try:
        curves = compare.compare(config, args.dynamics, **kw)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    out = args.out or pathlib.Path("runs") / datetime.datetime.now().strftime("compare-%Y%m%d-%H%M%S")
    write_json(out / "config.json", {"config": config.to_dict(), "seed": config.seed, "compare": vars(args) | {
        "config": str(args.config), "out": str(out)}, "versions": package_versions()})
    for name, c in curves.items():
        write_npz(out / f"{name}.npz", {"t": c.t, **c.obs})
    missing = [k for k in args.keys if k not in curves["gd"].obs]
    if missing:
        raise ConfigError(f"invalid keys={missing}: not observables; choose from {sorted(curves['gd'].obs)}")
    print(plots.plot_overlay(curves, args.keys, out / "overlay.png"))
    dist = compare.distance_to_sgd(curves)
    write_json(out / "distance_to_sgd.json", dist)
    for name, d in dist.items():
        print(f"{curves[name].label:<32} max |mean loss - SGD mean| = {d:8.2f} SGD standard errors")
    if args.lrs:
        rows = compare.compare_lrs(config, args.lrs, args.dynamics, **kw)
        write_json(out / "distance_vs_lr.json", {"rows": rows})
        print(plots.plot_distance_vs_lr(rows, out / "distance_vs_lr.png"))
    return 0


def _theory_kwargs(fn, pairs: list[str]) -> dict:
    """Parse `key=value` options against `fn`'s keyword-only parameters (typed by their annotations)."""
    import inspect

    params = {k: p for k, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY}
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in params:
            raise ConfigError(f"invalid --set {pair!r}: expected KEY=VALUE with KEY one of {sorted(params)}")
        kind = str(params[key].annotation).split("|")[0].strip()  # e.g. "int", "float", "bool", "Literal[...]"
        try:
            if kind == "bool":
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError("expected true or false")
                out[key] = text.lower() in ("true", "1")
            elif kind == "int":
                out[key] = int(text)
            elif kind == "float":
                out[key] = float(text)
            else:
                out[key] = text
        except ValueError as e:
            raise ConfigError(f"invalid --set {pair!r}: {e}") from e
    return out


def _cmd_theory(args: argparse.Namespace) -> int:
    from . import theory
    from .results import package_versions, write_json

    name = args.prediction
    fn = getattr(theory, _THEORY[name][0])
    kwargs = _theory_kwargs(fn, args.set)
    ints = name != "t1" or args.axis != "sigma1"
    values = [int(v) if ints and float(v).is_integer() else v for v in args.values]
    if ints and any(not float(v).is_integer() or v < 1 for v in args.values):
        raise ConfigError(f"invalid values={args.values}: {name} needs positive integers here")
    if name in ("t1", "phase2"):
        if args.axis is None:
            raise ConfigError(f"theory {name} needs --axis ({'m, m1 or sigma1' if name == 't1' else 'm or n'})")
        call = lambda: fn(args.axis, values, args.seeds, **kwargs)  # noqa: E731
    elif name == "t1-full":
        call = lambda: fn(_config_from_args(args), values, args.seeds, **kwargs)  # noqa: E731
    else:
        call = lambda: fn(values, args.seeds, **kwargs)  # noqa: E731
    t0 = time.perf_counter()
    try:
        res = call()
    except ValueError as e:
        raise ConfigError(str(e)) from e
    out = args.out or pathlib.Path("runs") / datetime.datetime.now().strftime(f"theory-{name}-%Y%m%d-%H%M%S.json")
    write_json(out, {"prediction": name, "function": f"flowsim.theory.{fn.__name__}", "arguments": {
        "axis": args.axis, "values": values, "seeds": args.seeds, **kwargs}, **res, "versions": package_versions()})
    for row in res.get("rows", []):
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                        if isinstance(v, int | float | str)))
    summary = {k: res[k] for k in ("slope", "ci95", "predicted", "bound_exponent", "holds", "signs_hold",
                                   "ratio_holds", "scaling_holds") if k in res}
    print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    print(f"wall time {time.perf_counter() - t0:.1f} s; table in {out}")
    return 0


def _cmd_phase_diagram(args: argparse.Namespace) -> int:
    from . import phase_diagram

    print(phase_diagram.plot_phase_diagram(args.results, args.x, args.y, measure=args.measure, out=args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return {"run": _cmd_run, "plot": _cmd_plot, "sweep": _cmd_sweep,
                "phase-diagram": _cmd_phase_diagram, "compare": _cmd_compare,
                "theory": _cmd_theory}[args.command](args)
    except ConfigError as e:
        parser.exit(2, f"flowsim: error: {e}\n")
    except FileNotFoundError as e:
        parser.exit(2, f"flowsim: error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
