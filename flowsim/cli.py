"""Command-line interface: a thin layer over the library, the same for every system.

    flowsim systems                                                  the registered systems
    flowsim run [SYSTEM] [--config FILE] [--out DIR] [--<field> VALUE ...]   flow vs GD vs SGD, verdicts
    flowsim plot DIR                                                 redraw a run's figures
    flowsim sweep SPEC [--out DIR] [--workers N] [--dask] [--new]    resumable parameter sweep
    flowsim phase-diagram RESULTS --x FIELD [--y FIELD] --measure NAME [--out PNG]
    flowsim compare [SYSTEM] [--dynamics gf,igr,sme] [--lrs ...]     continuous models vs GD/SGD
    flowsim theory NAME --values GRID [--system S] [--axis A] [--seeds S] [--set KEY=VALUE ...]

SYSTEM defaults to the default system (co-occurrence). Every field of the system's config and of the
run settings is an option named after it (`--n`, `--init-scale`, `--lr`, ...), with its help text,
range and choices. Bad input exits with status 2 and a one-line message naming the field.
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
import math  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

from ._config import Config, RunConfig  # noqa: E402
from ._fields import ConfigError, allowed, kind  # noqa: E402
from ._registry import default_system, get_system, registered_systems  # noqa: E402


def _enable_cache(enabled: bool) -> None:
    if not enabled:
        return
    import jax

    path = os.environ.get("FLOWSIM_CACHE_DIR", str(pathlib.Path.home() / ".cache" / "flowsim" / "xla"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _system_of(argv: list[str]) -> str:
    """The system named by the first positional argument after `run`/`compare`, else the default
    (the options of that system's fields are then added to the parser)."""
    if len(argv) >= 2 and argv[0] in ("run", "compare") and not argv[1].startswith("-"):
        return argv[1]
    for i, a in enumerate(argv[:-1]):
        if argv[0] == "theory" and a == "--system":
            return argv[i + 1]
    return default_system()


def _field_classes(system: str | None) -> list[tuple[str, type]]:
    classes: list[tuple[str, type]] = []
    if system is not None:
        classes.append((f"{system} fields", get_system(system).config_type))
    classes.append(("run settings", RunConfig))
    return classes


def _add_config_options(p: argparse.ArgumentParser, system: str | None) -> None:
    """One option per field of the system's config and of `RunConfig`: help text, range, choices."""
    for title, cls in _field_classes(system):
        g = p.add_argument_group(f"{title} (override the config file)")
        for f in dataclasses.fields(cls):
            opt = "--" + f.name.replace("_", "-")
            text = f"{f.metadata.get('help', '')}; {allowed(f)} (default {f.default})"
            if kind(f) is bool:
                g.add_argument(opt, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
            else:
                g.add_argument(
                    opt,
                    dest=f.name,
                    type=kind(f),
                    default=None,
                    metavar=f.name.upper(),
                    choices=f.metadata.get("choices"),
                    help=text,
                )


def _parser(system: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowsim", description=(__doc__ or "").split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("systems", help="list the registered systems, one line each")
    run = sub.add_parser("run", help="gradient flow vs GD vs SGD from one init, with the system's verdicts")
    run.add_argument(
        "system",
        nargs="?",
        choices=sorted(registered_systems()),
        default=system or default_system(),
        help="the system (default: %(default)s)",
    )
    run.add_argument("--config", type=pathlib.Path, help="JSON, TOML or YAML file of config fields")
    run.add_argument("--out", type=pathlib.Path, help="results folder (default runs/<timestamp>)")
    run.add_argument("--no-plots", action="store_true", help="skip the figures")
    run.add_argument("--no-cache", action="store_true", help="do not use the persistent XLA compilation cache")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_config_options(run, system)
    plot = sub.add_parser("plot", help="redraw the figures of a run folder from its saved data")
    plot.add_argument("run_dir", type=pathlib.Path)
    _add_sweep_parsers(sub)
    _add_compare_parser(sub, system)
    _add_theory_parser(sub, system)
    return p


def _add_theory_parser(sub, system: str | None) -> None:
    name = system or default_system()
    preds = get_system(name).predictions
    th = sub.add_parser(
        "theory",
        help="measure one of a system's theory predictions and save its table",
        description="; ".join(f"{k}: {preds[k].doc}" for k in preds) or "no predictions",
    )
    th.add_argument("prediction", choices=sorted(preds))
    th.add_argument(
        "--system", default=name, choices=sorted(registered_systems()), help="the system (default: %(default)s)"
    )
    th.add_argument("--axis", help="the axis of the grid, where the prediction takes one (see the description)")
    th.add_argument("--values", type=_csv(float), required=True, help="comma-separated grid")
    th.add_argument("--seeds", type=_csv(int), default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    th.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword option of the prediction function (repeatable), e.g. --set n=24",
    )
    th.add_argument("--out", type=pathlib.Path, help="JSON path (default runs/theory-<name>-<timestamp>.json)")
    th.add_argument("--config", type=pathlib.Path, help="file of config fields (predictions that take a config)")
    _add_config_options(th, name)


def _csv(kind_):
    def parse(text: str) -> list:
        items = [x.strip() for x in text.split(",")]
        if not items or any(not x for x in items):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list without empty items, got {text!r}")
        out = [kind_(x) for x in items]
        if kind_ is float and not all(math.isfinite(x) for x in out):
            raise argparse.ArgumentTypeError(f"every value must be finite, got {text!r}")
        return out

    return parse


def _add_compare_parser(sub, system: str | None) -> None:
    cmp = sub.add_parser("compare", help="continuous models (flow, IGR, heavy-ball ODE, SDE) vs GD/SGD, and vs lr")
    cmp.add_argument(
        "system",
        nargs="?",
        choices=sorted(registered_systems()),
        default=system or default_system(),
        help="the system (default: %(default)s)",
    )
    cmp.add_argument(
        "--dynamics",
        type=_csv(str),
        default=["gf", "igr", "sme"],
        help="comma-separated subset of gf,igr,heavy_ball,sme (default gf,igr,sme)",
    )
    cmp.add_argument(
        "--lrs",
        type=_csv(float),
        default=[],
        help="also measure the distance to SGD at these lrs (same horizon lr*steps)",
    )
    cmp.add_argument(
        "--keys", type=_csv(str), default=["loss", "min_margin", "G1", "score_12"], help="observables to overlay"
    )
    cmp.add_argument("--paths", type=int, default=32, help="Brownian paths of the SDE ensemble")
    cmp.add_argument("--momentum", type=float, default=0.0, help="heavy-ball momentum of the discrete runs")
    cmp.add_argument("--sampling", choices=("iid", "shuffle"), default="iid", help="SGD batch sampling")
    cmp.add_argument("--config", type=pathlib.Path, help="JSON, TOML or YAML file of config fields")
    cmp.add_argument("--out", type=pathlib.Path, help="output folder (default runs/compare-<timestamp>)")
    _add_config_options(cmp, system)


def _add_sweep_parsers(sub) -> None:
    sw = sub.add_parser("sweep", help="resumable parameter sweep from a TOML/YAML spec (see flowsim.SweepSpec)")
    sw.add_argument("spec", type=pathlib.Path, help="sweep spec (.toml, .yaml, .json)")
    sw.add_argument("--out", type=pathlib.Path, help="results folder (default sweeps/<spec name>)")
    sw.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: one per core, at most one per shape group)",
    )
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
    system = args.system
    base = Config.from_file(args.config, system).to_dict() if args.config else {"system": system}
    for _, cls in _field_classes(system):
        for f in dataclasses.fields(cls):
            v = getattr(args, f.name, None)
            if v is not None:
                base[f.name] = v
    return Config.from_dict(base)


def _cmd_run(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    out = _check_out(args.out or pathlib.Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    _enable_cache(not args.no_cache)
    from . import _experiment, _verdicts
    from ._results import load_run

    t0 = time.perf_counter()
    print(
        f"flowsim run {config.system} -> {out}  (T = {config.t_final:g}: flow [{config.solver}, "
        f"rtol {config.rtol:g}], GD lr {config.lr:g} x {config.steps} steps, SGD batch {config.batch_size} x "
        f"{config.sgd_seeds} seeds)"
    )
    result = _experiment.run_experiment(config, progress=not args.quiet)
    summary = _experiment.save_experiment(result, out)
    if not args.no_plots:
        get_system(config.system).figures(load_run(out), out)
    vs = [_verdicts.Verdict(**v) for v in summary["verdicts"]]
    print(_verdicts.format_table(vs))
    flow = result.flow
    if flow is not None and not flow.ok:
        print(
            f"warning: flow stopped early with diffrax result '{flow.result}' at "
            f"t = {flow.t_reached:.6g}; the partial trajectory is saved",
            file=sys.stderr,
        )
    for name, sol in (("GD", result.gd), ("SGD", result.sgd)):
        if sol is not None and sol.diverged:
            print(
                f"warning: {name} diverged (non-finite loss) at step(s) {sol.diverged_step.tolist()}", file=sys.stderr
            )
    t = summary["timings_s"]
    parts = ", ".join(f"{k} {t[k]:.1f} s (compile {t[k + '_compile']:.1f} s)" for k in ("flow", "gd", "sgd"))
    print(f"wall time {time.perf_counter() - t0:.1f} s: {parts}; results in {out}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from ._results import load_run

    run = load_run(args.run_dir)
    for path in get_system(run.system or default_system()).figures(run, run.path):
        print(path)
    return 0


def _cmd_systems(args: argparse.Namespace) -> int:
    table = registered_systems()
    w = max(len(n) for n in table)
    for name, sys_ in table.items():
        mark = " (default)" if name == default_system() else ""
        print(f"{name:<{w}}  {sys_.summary}{mark}")
    return 0


def _check_out(out: pathlib.Path) -> pathlib.Path:
    """Refuse, before any work, an output path that is empty, an existing file, or not writable."""
    if not str(out).strip():
        raise ConfigError("invalid out='': out must be a folder path")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"invalid out={str(out)!r}: it exists and is not a folder")
    parent = next((p for p in (out, *out.parents) if p.exists()), pathlib.Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"invalid out={str(out)!r}: {str(parent)!r} is not writable")
    return out


def _cmd_sweep(args: argparse.Namespace) -> int:
    from . import _sweep_run, _sweep_spec

    spec = _sweep_spec.SweepSpec.from_file(args.spec)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"invalid workers={args.workers}: workers must be a positive integer")
    _enable_cache(not args.no_cache)
    out = _check_out(args.out or pathlib.Path("sweeps") / (spec.name or args.spec.stem))
    r = _sweep_run.run_sweep(
        spec,
        out,
        workers=args.workers,
        new=args.new,
        use_dask=args.dask or bool(args.scheduler),
        scheduler=args.scheduler,
        progress=not args.quiet,
    )
    print(
        f"{r.total} points in {r.folder}: {r.skipped} already done, {r.done} run now ({r.failed} failed) "
        f"in {r.wall_s:.1f} s"
    )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    if args.paths < 2:
        raise ConfigError(f"invalid paths={args.paths}: paths must be an integer >= 2")
    bad = [lr for lr in args.lrs if not lr > 0]
    if bad:
        raise ConfigError(f"invalid lrs={bad}: every lr must be > 0")
    from . import _compare as compare, _plots as plots
    from ._results import package_versions, write_json, write_npz

    if not (math.isfinite(args.momentum) and 0 <= args.momentum < 1):
        raise ConfigError(f"invalid momentum={args.momentum}: momentum must be in [0, 1)")
    if args.paths > 4096:
        raise ConfigError(f"invalid paths={args.paths}: paths must be an integer in [2, 4096]")
    kw = dict(paths=args.paths, momentum=args.momentum, sampling=args.sampling)
    out = _check_out(args.out or pathlib.Path("runs") / datetime.datetime.now().strftime("compare-%Y%m%d-%H%M%S"))
    try:
        curves = compare.compare(config, args.dynamics, **kw)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    write_json(
        out / "config.json",
        {
            "config": config.to_dict(),
            "seed": config.seed,
            "compare": vars(args) | {"config": str(args.config), "out": str(out)},
            "versions": package_versions(),
        },
    )
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
    from ._results import package_versions, write_json

    name = args.prediction
    pred = get_system(args.system).predictions[name]
    kwargs = _theory_kwargs(pred.options_of, args.set)
    if pred.axes and args.axis not in pred.axes:
        raise ConfigError(f"invalid axis={args.axis!r}: theory {name} needs --axis, one of {pred.axes}")
    ints = pred.integer_values(args.axis)
    if ints and any(not float(v).is_integer() or v < 1 for v in args.values):
        raise ConfigError(f"invalid values={args.values}: {name} needs positive integers here")
    if not ints and any(not v > 0 for v in args.values):
        raise ConfigError(f"invalid values={args.values}: {name} needs finite values > 0 here")
    values = [int(v) if ints else v for v in args.values]
    out = _check_out(
        args.out or pathlib.Path("runs") / datetime.datetime.now().strftime(f"theory-{name}-%Y%m%d-%H%M%S.json")
    )
    config = _config_from_args(args)
    t0 = time.perf_counter()
    try:
        res = pred.run(args.axis, values, args.seeds, config, **kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    fn = pred.options_of
    write_json(
        out,
        {
            "prediction": name,
            "system": args.system,
            "function": f"{fn.__module__}.{fn.__name__}",
            "arguments": {"axis": args.axis, "values": values, "seeds": args.seeds, **kwargs},
            **res,
            "versions": package_versions(),
        },
    )
    for row in res.get("rows", []):
        print(
            "  ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in row.items()
                if isinstance(v, int | float | str)
            )
        )
    summary = {
        k: res[k]
        for k in ("slope", "ci95", "predicted", "bound_exponent", "holds", "signs_hold", "ratio_holds", "scaling_holds")
        if k in res
    }
    print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    print(f"wall time {time.perf_counter() - t0:.1f} s; table in {out}")
    return 0


def _cmd_phase_diagram(args: argparse.Namespace) -> int:
    from . import _phase_diagram as phase_diagram

    print(phase_diagram.plot_phase_diagram(args.results, args.x, args.y, measure=args.measure, out=args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        name = _system_of(argv)
        get_system(name)
    except ConfigError:
        name = None  # argparse reports the unknown system among the choices
    parser = _parser(name)
    args = parser.parse_args(argv)
    try:
        return {
            "systems": _cmd_systems,
            "run": _cmd_run,
            "plot": _cmd_plot,
            "sweep": _cmd_sweep,
            "phase-diagram": _cmd_phase_diagram,
            "compare": _cmd_compare,
            "theory": _cmd_theory,
        }[args.command](args)
    except (ConfigError, FileNotFoundError) as e:
        parser.exit(2, f"flowsim: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
