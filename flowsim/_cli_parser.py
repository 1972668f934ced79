"""The command line's parser: one option per config field (help text, range, choices from the
field metadata), the subcommands and their arguments, and the `Config` built from parsed options."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import io
import math
import pathlib
import sys
from typing import final

from ._config import Config, RunConfig
from ._fields import allowed, kind
from ._registry import default_system, get_system, registered_systems

DESCRIPTION = "flowsim: training dynamics as numerical ODEs, against discrete training, for any registered system"
PROGRESS = ("auto", "always", "never")

# Each subcommand's help ends with these examples (tests/test_cli_logs.py parses every one).
EXAMPLES = {
    "systems": "  flowsim systems",
    "run": """\
  flowsim run                                     # the paper's experiment (co-occurrence, defaults)
  flowsim run sensitivity --n 6 --out runs/n6     # another system, one of its fields changed
  flowsim run --config my.toml --lr 0.05 > log    # a config file and an override; the log has no bars""",
    "plot": """\
  flowsim plot runs/20250101-120000               # redraw a run's figures from its npz files""",
    "sweep": """\
  flowsim sweep experiments/specs/default_seeds.toml           # resumes where it stopped
  flowsim sweep experiments/specs/lr_x_batch.toml --workers 2 --progress never""",
    "phase-diagram": """\
  flowsim phase-diagram sweeps/init_scale_x_width --x init_scale --y m --measure T1
  flowsim phase-diagram sweeps/lr_x_batch --x lr --measure flow_sgd_gap --out gap.png  # a panel per batch_size""",
    "compare": """\
  flowsim compare --dynamics gf,igr,sme            # distance of each model to SGD
  flowsim compare --lrs 0.01,0.03,0.1 --out runs/cmp  # and how it grows with the step size""",
    "theory": """\
  flowsim theory t1 --axis m --values 256,1024,4096 --seeds 0,1
  flowsim theory phase2 --axis n --values 12,24,48 --set m=64""",
}


def system_of(argv: list[str]) -> str:
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
                    metavar=None if f.metadata.get("choices") else f.name.upper(),  # {a,b} lists the choices
                    choices=f.metadata.get("choices"),
                    help=text,
                )


def _add_system_argument(p: argparse.ArgumentParser, system: str | None) -> None:
    """The optional positional SYSTEM (a registered name; default: the default system)."""
    p.add_argument(
        "system",
        nargs="?",
        choices=sorted(registered_systems()),
        default=system or default_system(),
        help="the system (default: %(default)s)",
    )


def _command(sub, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose help ends with its examples (kept as written: raw description and epilog)."""
    return sub.add_parser(
        name,
        help=help,
        epilog="examples:\n" + EXAMPLES[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def _add_progress_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        choices=PROGRESS,
        default="auto",
        help="progress bars on stderr: auto = only when stderr is a terminal (default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars (the same as --progress never)")


def progress_enabled(args: argparse.Namespace, stream: io.TextIOBase | None = None) -> bool:
    """Whether to draw progress bars: `--progress always`, or `auto` (the default) when `stream`
    (stderr) is a terminal; never with `--quiet` or `--progress never`. A log piped to a file thus
    gets no carriage returns or cursor codes."""
    if args.quiet or args.progress == "never":
        return False
    if args.progress == "always":
        return True
    isatty = getattr(sys.stderr if stream is None else stream, "isatty", None)
    return bool(isatty is not None and isatty())


def version() -> str:
    """`flowsim <version>`, from the installed package's metadata."""
    try:
        return f"flowsim {importlib.metadata.version('flowsim')}"
    except importlib.metadata.PackageNotFoundError:
        return "flowsim (version unknown: not installed)"


@final
class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (`flowsim: error: ...`), status 2, and no
    option is matched by a prefix (`--m` is not `--max-steps`)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # pyright: ignore[reportIncompatibleMethodOverride]
        self.exit(2, f"flowsim: error: {message.splitlines()[0]} (see {self.prog} --help)\n")


def build_parser(system: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(
        prog="flowsim",
        description=DESCRIPTION,
        allow_abbrev=False,
        epilog="examples (each command's --help has more):\n" + EXAMPLES["run"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=version(), help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")
    _command(sub, "systems", "list the registered systems, one line each")
    run = _command(sub, "run", "gradient flow vs GD vs SGD from one init, with the system's verdicts")
    _add_system_argument(run, system)
    run.add_argument("--config", type=_path, help="JSON, TOML or YAML file of config fields")
    run.add_argument("--out", type=_path, help="results folder (default runs/<timestamp>); must be new or empty")
    run.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (once the run has finished)")
    run.add_argument("--no-plots", action="store_true", help="skip the figures")
    run.add_argument("--format", choices=("png", "pdf", "svg"), default=None, help="figure file format (default png)")
    run.add_argument("--no-cache", action="store_true", help="do not use the persistent XLA compilation cache")
    _add_progress_options(run)
    _add_config_options(run, system)
    plot = _command(sub, "plot", "redraw the figures of a run folder from its saved data")
    plot.add_argument("run_dir", type=_path, help="a results folder written by flowsim run")
    plot.add_argument("--format", choices=("png", "pdf", "svg"), default=None, help="figure file format (default png)")
    _add_sweep_parsers(sub)
    _add_compare_parser(sub, system)
    _add_theory_parser(sub, system)
    return p


def _add_theory_parser(sub, system: str | None) -> None:
    name = system or default_system()
    preds = get_system(name).predictions
    th = _command(
        sub,
        "theory",
        "measure one of a system's theory predictions and save its table",
        description="\n".join(f"{k}: {preds[k].doc}" for k in preds) or "no predictions",
    )
    th.add_argument("prediction", choices=sorted(preds), help="the prediction to measure (see above)")
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
    th.add_argument("--out", type=_path, help="JSON path (default runs/theory-<name>-<timestamp>.json)")
    th.add_argument("--config", type=_path, help="file of config fields (predictions that take a config)")
    _add_config_options(th, name)


def _path(text: str) -> pathlib.Path:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"an empty path ({text!r})")
    return pathlib.Path(text)


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
    cmp = _command(sub, "compare", "continuous models (flow, IGR, heavy-ball ODE, SDE) vs GD/SGD, and vs lr")
    _add_system_argument(cmp, system)
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
    cmp.add_argument("--config", type=_path, help="JSON, TOML or YAML file of config fields")
    cmp.add_argument("--out", type=_path, help="output folder (default runs/compare-<timestamp>); new or empty")
    cmp.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (once compare has finished)")
    cmp.add_argument("--format", choices=("png", "pdf", "svg"), default=None, help="figure file format (default png)")
    _add_config_options(cmp, system)


def _add_sweep_parsers(sub) -> None:
    sw = _command(sub, "sweep", "resumable parameter sweep from a TOML/YAML spec (see flowsim.SweepSpec)")
    sw.add_argument("spec", type=_path, help="sweep spec (.toml, .yaml, .json)")
    sw.add_argument("--out", type=_path, help="results folder (default sweeps/<spec name>)")
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
    _add_progress_options(sw)
    pd = _command(sub, "phase-diagram", "heatmap / line plot of a sweep measure")
    pd.add_argument("results", type=_path, help="a results folder written by flowsim sweep")
    pd.add_argument("--x", required=True, help="the sweep axis along x")
    pd.add_argument("--y", help="the sweep axis along y (default: a line plot with a band over seeds)")
    pd.add_argument("--measure", required=True, help="one of the spec's measures, drawn as the colour / the line")
    pd.add_argument("--out", type=_path, help="image path (default in the results folder)")
    pd.add_argument(
        "--format",
        choices=("png", "pdf", "svg"),
        default=None,
        help="figure file format (default: --out's suffix, else png)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    system = args.system
    base = Config.from_file(args.config, system).to_dict() if args.config else {"system": system}
    for _, cls in _field_classes(system):
        for f in dataclasses.fields(cls):
            v = getattr(args, f.name, None)
            if v is not None:
                base[f.name] = v
    return Config.from_dict(base)
