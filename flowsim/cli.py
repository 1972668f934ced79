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
import datetime  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

from ._cli_parser import build_parser, config_from_args, system_of  # noqa: E402
from ._fields import ConfigError  # noqa: E402
from ._registry import default_system, get_system, registered_systems  # noqa: E402


def _enable_cache(enabled: bool) -> None:
    if not enabled:
        return
    import jax

    path = os.environ.get("FLOWSIM_CACHE_DIR", str(pathlib.Path.home() / ".cache" / "flowsim" / "xla"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _cmd_run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
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


def _observable_names(s) -> list[str]:
    """The names the setup's observer records, by abstract evaluation (nothing is computed)."""
    import equinox as eqx
    import jax.numpy as jnp

    out = eqx.filter_eval_shape(s.observer, jnp.zeros(()), s.problem.params0, s.problem)
    return list(out) if isinstance(out, dict) else []


def _cmd_compare(args: argparse.Namespace) -> int:
    config = config_from_args(args)
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
    unknown = sorted(set(args.dynamics) - set(compare.DYNAMICS))
    if unknown:
        raise ConfigError(f"invalid dynamics={unknown}: choose from {compare.DYNAMICS}")
    kw = dict(paths=args.paths, momentum=args.momentum, sampling=args.sampling)
    out = _check_out(args.out or pathlib.Path("runs") / datetime.datetime.now().strftime("compare-%Y%m%d-%H%M%S"))
    from ._experiment import setup

    s = setup(config)
    names = _observable_names(s)
    missing = [k for k in args.keys if k not in names]
    if missing:
        raise ConfigError(f"invalid keys={missing}: not observables; choose from {sorted(names)}")
    try:
        curves = compare.compare(config, args.dynamics, s=s, **kw)
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
    config = config_from_args(args)
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
        name = system_of(argv)
        get_system(name)
    except ConfigError:
        name = None  # argparse reports the unknown system among the choices
    parser = build_parser(name)
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
