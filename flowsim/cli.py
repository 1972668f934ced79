"""Command-line interface: a thin layer over the library, the same for every system.

    flowsim systems                                                  the registered systems
    flowsim run [SYSTEM] [--config FILE] [--out DIR] [--<field> VALUE ...]   flow vs GD vs SGD, verdicts
    flowsim plot DIR                                                 redraw a run's figures
    flowsim sweep SPEC [--out DIR] [--workers N] [--dask] [--new]    resumable parameter sweep
    flowsim phase-diagram RESULTS --x FIELD [--y FIELD] --measure NAME [--out PNG]
    flowsim compare [SYSTEM] [--dynamics gf,igr,sme] [--lrs ...]     continuous models vs GD/SGD
    flowsim theory NAME --values GRID [--system S] [--axis A] [--seeds S] [--set KEY=VALUE ...]

`flowsim --version` prints the version; `flowsim COMMAND --help` lists every option with its help
text and ends with examples. Progress bars go to stderr only when it is a terminal (`--progress
{auto,always,never}`, `--quiet`), so a log piped to a file has no carriage returns or cursor codes.
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
import shutil  # noqa: E402
import time  # noqa: E402

from ._cli_guard import SET_FLOAT_MAX, SET_INT_MAX, check_out, on_interrupt, run_interruptibly, set_options  # noqa: E402
from ._cli_parser import build_parser, config_from_args, progress_enabled, system_of  # noqa: E402
from ._fields import ConfigError  # noqa: E402
from ._figure_style import output_format  # noqa: E402
from ._registry import default_system, get_system, registered_systems  # noqa: E402
from ._validate import check_memory  # noqa: E402


def _enable_cache(enabled: bool) -> None:
    if not enabled:
        return
    import jax

    path = os.environ.get("FLOWSIM_CACHE_DIR", str(pathlib.Path.home() / ".cache" / "flowsim" / "xla"))
    jax.config.update("jax_compilation_cache_dir", path)
    # Every program, the small ones too: a warm run that compiled its many small programs again
    # (each under half a second) spent 20-25% more wall time than one that read them all back.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _work(fn, *args, **kwargs):
    """Every command's computation goes through here (interruptible; see `flowsim._cli_guard`)."""
    return run_interruptibly(fn, *args, **kwargs)


def _staged(out: pathlib.Path) -> pathlib.Path:
    """A staging folder for `out`, removed if the command is interrupted."""
    from ._results import staging_folder

    tmp = staging_folder(out)
    on_interrupt(lambda: shutil.rmtree(tmp, ignore_errors=True))
    return tmp


def _cmd_run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    check_memory(config)
    default = pathlib.Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = check_out(args.out if args.out is not None else default, empty=not args.overwrite)
    _enable_cache(not args.no_cache)
    from . import _verdicts
    from ._experiment import save_interrupted
    from ._results import publish_folder

    t0 = time.perf_counter()
    print(
        f"flowsim run {config.system} -> {out}  (T = {config.t_final:g}: flow [{config.solver}, "
        f"rtol {config.rtol:g}], GD lr {config.lr:g} x {config.steps} steps, SGD batch {config.batch_size} x "
        f"{config.sgd_seeds} seeds)"
    )
    tmp = _staged(out)
    finished: list = []  # run_experiment's partial results, latest last: published if interrupted
    on_interrupt(lambda: save_interrupted(finished[-1] if finished else None, out, overwrite=args.overwrite))
    try:
        with output_format(args.format):
            result, summary = _work(
                _run_and_save, config, tmp, progress_enabled(args), not args.no_plots, on_piece=finished.append
            )
        publish_folder(tmp, out, overwrite=args.overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    vs = [_verdicts.Verdict(**v) for v in summary["verdicts"]]
    print(_verdicts.format_table(vs))
    _warn_run(result)
    t = summary["timings_s"]
    parts = ", ".join(f"{k} {t[k]:.1f} s (compile {t[k + '_compile']:.1f} s)" for k in ("flow", "gd", "sgd") if k in t)
    print(f"wall time {time.perf_counter() - t0:.1f} s: {parts}; results in {out}")
    return 0


def _run_and_save(config, folder: pathlib.Path, progress: bool, plots: bool, on_piece=None):
    from . import _experiment
    from ._results import load_run

    result = _experiment.run_experiment(config, progress=progress, on_piece=on_piece)
    summary = _experiment.save_experiment(result, folder)
    if plots:
        get_system(config.system).figures(load_run(folder), folder)
    return result, summary


def _warn_run(result) -> None:
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


def _cmd_plot(args: argparse.Namespace) -> int:
    from ._results import load_run

    run = load_run(args.run_dir)
    system = get_system(run.system or default_system())
    if not (run.flow or run.gd or run.sgd):
        raise ConfigError(f"{str(run.path)!r} has no flow.npz, gd.npz or sgd.npz: nothing to draw")
    with output_format(args.format):
        paths = _work(system.figures, run, run.path)
    for path in paths:
        print(path)
    return 0


def _cmd_systems(args: argparse.Namespace) -> int:
    table = registered_systems()
    w = max(len(n) for n in table)
    for name, sys_ in table.items():
        mark = " (default)" if name == default_system() else ""
        print(f"{name:<{w}}  {sys_.summary}{mark}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from . import _sweep_run, _sweep_spec

    spec = _sweep_spec.SweepSpec.from_file(args.spec)
    limit = 4 * (os.cpu_count() or 1)
    if args.workers is not None and not 1 <= args.workers <= limit:
        raise ConfigError(f"invalid workers={args.workers}: workers must be an integer in [1, {limit}] (4 per core)")
    for config in {_sweep_spec.shape_group(c): c for c in spec.configs()}.values():
        check_memory(config)
    _enable_cache(not args.no_cache)
    out = check_out(args.out if args.out is not None else pathlib.Path("sweeps") / (spec.name or args.spec.stem))
    out = _sweep_run.resolve_out(out, spec, args.new)
    r = _work(
        _sweep_run.run_sweep,
        spec,
        out,
        workers=args.workers,
        use_dask=args.dask or bool(args.scheduler),
        scheduler=args.scheduler,
        progress=progress_enabled(args),
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


def _check_compare(args: argparse.Namespace) -> None:
    from . import _compare as compare

    if not 2 <= args.paths <= 4096:
        raise ConfigError(f"invalid paths={args.paths}: paths must be an integer in [2, 4096]")
    bad = [lr for lr in args.lrs if not 0 < lr <= 1e4]
    if bad:
        raise ConfigError(f"invalid lrs={bad}: every lr must be in (0, 10000]")
    if not (math.isfinite(args.momentum) and 0 <= args.momentum < 1):
        raise ConfigError(f"invalid momentum={args.momentum}: momentum must be in [0, 1)")
    unknown = sorted(set(args.dynamics) - set(compare.DYNAMICS))
    if unknown:
        raise ConfigError(f"invalid dynamics={unknown}: choose from {compare.DYNAMICS}")
    if "heavy_ball" in args.dynamics and args.momentum <= 0:
        raise ConfigError("invalid dynamics=['heavy_ball']: heavy_ball needs momentum > 0 (--momentum)")


def _cmd_compare(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    _check_compare(args)
    check_memory(config)
    for lr in args.lrs:
        check_memory(config.replace(lr=float(lr), steps=max(1, round(config.t_final / lr))))
    default = pathlib.Path("runs") / datetime.datetime.now().strftime("compare-%Y%m%d-%H%M%S")
    out = check_out(args.out if args.out is not None else default, empty=not args.overwrite)
    from ._experiment import setup
    from ._results import publish_folder

    s = setup(config)
    names = _observable_names(s)
    missing = [k for k in args.keys if k not in names]
    if missing:
        raise ConfigError(f"invalid keys={missing}: not observables; choose from {sorted(names)}")
    tmp = _staged(out)
    try:
        lines = _work(_compare_and_save, config, args, s, tmp, out)
        publish_folder(tmp, out, overwrite=args.overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(line.replace(str(tmp), str(out)) for line in lines))
    return 0


def _compare_and_save(config, args: argparse.Namespace, s, folder: pathlib.Path, out: pathlib.Path) -> list[str]:
    from . import _compare as compare, _plots as plots
    from ._results import package_versions, write_json, write_npz

    kw = dict(paths=args.paths, momentum=args.momentum, sampling=args.sampling)
    curves = compare.compare(config, args.dynamics, s=s, **kw)
    write_json(
        folder / "config.json",
        {
            "config": config.to_dict(),
            "seed": config.seed,
            "compare": vars(args) | {"config": str(args.config), "out": str(out)},
            "versions": package_versions(),
        },
    )
    for name, c in curves.items():
        write_npz(folder / f"{name}.npz", {"t": c.t, **c.obs})
    lines = [str(plots.plot_overlay(curves, args.keys, folder / "overlay.png", fmt=args.format))]
    dist = compare.distance_to_sgd(curves)
    write_json(folder / "distance_to_sgd.json", dist)
    lines += [compare.describe_distance(curves[name].label, d) for name, d in dist.items()]
    if args.lrs:
        rows = compare.compare_lrs(config, args.lrs, args.dynamics, **kw)
        write_json(folder / "distance_vs_lr.json", {"rows": rows})
        lines.append(str(plots.plot_distance_vs_lr(rows, folder / "distance_vs_lr.png", fmt=args.format)))
    return lines


def _check_theory_values(name: str, pred, args: argparse.Namespace) -> list:
    """The grid and seeds of `flowsim theory`, range-checked: integers in [1, 65536] where the
    prediction takes integers, else finite values in (0, 1e6]; seeds in [0, 2**31 - 1]."""
    if pred.axes and args.axis not in pred.axes:
        raise ConfigError(f"invalid axis={args.axis!r}: theory {name} needs --axis, one of {pred.axes}")
    ints = pred.integer_values(args.axis)
    if ints and any(not float(v).is_integer() or not 1 <= v <= SET_INT_MAX for v in args.values):
        raise ConfigError(f"invalid values={args.values}: {name} needs positive integers <= {SET_INT_MAX} here")
    if not ints and any(not 0 < v <= SET_FLOAT_MAX for v in args.values):
        raise ConfigError(
            f"invalid values={args.values}: {name} needs finite values > 0 (at most {SET_FLOAT_MAX:g}) here"
        )
    if any(not 0 <= s < 2**31 for s in args.seeds) or len(set(args.seeds)) != len(args.seeds):
        raise ConfigError(f"invalid seeds={args.seeds}: distinct integers in [0, 2147483647]")
    return [int(v) if ints else v for v in args.values]


def _print_theory(res: dict) -> None:
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


def _cmd_theory(args: argparse.Namespace) -> int:
    from ._results import package_versions, write_json

    name = args.prediction
    pred = get_system(args.system).predictions[name]
    kwargs = set_options(pred.options_of, args.set)
    values = _check_theory_values(name, pred, args)
    default = pathlib.Path("runs") / datetime.datetime.now().strftime(f"theory-{name}-%Y%m%d-%H%M%S.json")
    out = args.out if args.out is not None else default
    if out.exists() and not out.is_dir():
        raise ConfigError(f"invalid out={str(out)!r}: it exists and is not a folder")  # never overwrite a table
    out = check_out(out, file=True)
    config = config_from_args(args)
    t0 = time.perf_counter()
    res = _work(pred.run, args.axis, values, args.seeds, config, **kwargs)
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
    _print_theory(res)
    print(f"wall time {time.perf_counter() - t0:.1f} s; table in {out}")
    return 0


def _cmd_phase_diagram(args: argparse.Namespace) -> int:
    from . import _phase_diagram as phase_diagram

    if args.out is not None:
        check_out(args.out, file=True)
    phase_diagram.check_request(args.results, args.x, args.y, args.measure)  # every file read and checked
    kw = dict(measure=args.measure, out=args.out, fmt=args.format)
    print(_work(phase_diagram.plot_phase_diagram, args.results, args.x, args.y, **kw))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`flowsim ...`: bad input exits with status 2 and one line on stderr, before any work."""
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
    except MemoryError:
        parser.exit(2, "flowsim: error: out of memory: choose smaller sizes (fewer samples, widths, seeds or saves)\n")
    except KeyboardInterrupt:
        parser.exit(130, "flowsim: error: interrupted\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
