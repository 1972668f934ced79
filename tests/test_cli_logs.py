"""Logs and the CLI's help: a piped `flowsim run` writes a clean log (no carriage returns or cursor
codes) and a group-readable folder; `--version`; every option has help text; every subcommand's help
ends with examples that parse."""

import argparse
import importlib.util
import io
import os
import pathlib
import shlex
import stat
import subprocess
import sys

import pytest

import flowsim
from flowsim import load_run
from flowsim._cli_parser import EXAMPLES, build_parser, progress_enabled, system_of
from flowsim.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("system", sorted(flowsim.registered_systems()))
def test_every_option_of_every_subcommand_has_help(system):
    """For each system (its config fields become options): every action but -h has help text; a
    config field's text starts with its own help, not just its range."""
    parser = build_parser(system)
    commands = _subparsers(parser)
    assert set(commands) == set(EXAMPLES)
    missing = [
        f"{name} {a.option_strings or a.dest}"
        for name, p in {"flowsim": parser, **commands}.items()
        for a in p._actions
        if not isinstance(a, argparse._HelpAction) and not (a.help and a.help.strip() and not a.help.startswith(";"))
    ]
    assert not missing, missing
    for name, p in commands.items():
        assert p.epilog is not None and p.epilog.startswith("examples:\n"), name
        assert all(line.startswith(f"  flowsim {name}") for line in p.epilog.splitlines()[1:]), p.epilog


def test_fields_with_a_fixed_set_take_choices(capsys):
    actions = {a.dest: a for a in _subparsers(build_parser("cooccurrence"))["run"]._actions}
    assert actions["solver"].choices == flowsim.SOLVERS and actions["init"].choices == ("kaiming", "theory")
    assert actions["progress"].choices == ("auto", "always", "never")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "--init {kaiming,theory}" in out and "--progress {auto,always,never}" in out
    assert out.rstrip().endswith(EXAMPLES["run"].splitlines()[-1])  # the help ends with the examples


@pytest.mark.parametrize(
    "line",
    [line for text in EXAMPLES.values() for line in text.splitlines()],
    ids=[f"{name}-{i}" for name, text in EXAMPLES.items() for i in range(len(text.splitlines()))],
)
def test_every_example_parses(line):
    argv = shlex.split(line.split("#")[0].split(">")[0])[1:]
    args = build_parser(system_of(argv)).parse_args(argv)
    assert args.command == argv[0]


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"flowsim {flowsim.__version__}\n"


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    "argv, tty, expected",
    [
        ([], True, True),
        ([], False, False),  # piped or redirected: no bars
        (["--progress", "always"], False, True),
        (["--progress", "never"], True, False),
        (["--quiet"], True, False),
        (["--quiet", "--progress", "always"], True, False),
    ],
)
def test_progress_bars_only_on_a_terminal_by_default(argv, tty, expected):
    for command in (["run"], ["sweep", "spec.toml"]):
        args = build_parser("cooccurrence").parse_args([*command, *argv])
        assert progress_enabled(args, _Stream(tty)) is expected


# A tiny run of the test system (registered in the child: a fresh process knows only the shipped
# systems), its log piped to files under umask 027; the child is killed if it outlives the timeout.
CHILD = (
    "import os, sys, flowsim; from tests import toy_system; os.umask(0o027); "
    "flowsim.register(toy_system.SYSTEM, replace=True); from flowsim.cli import main; sys.exit(main(sys.argv[1:]))"
)
TINY = ["--steps", "20", "--n-save-log", "4", "--n-save-lin", "4", "--sgd-seeds", "2", "--batch-size", "4"]


def test_piped_run_writes_a_clean_log_and_a_group_readable_folder(tmp_path):
    out = tmp_path / "run"
    with open(tmp_path / "stdout", "wb") as so, open(tmp_path / "stderr", "wb") as se:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, "run", "toy-linreg", *TINY, "--no-cache", "--out", str(out)],
            stdout=so,
            stderr=se,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            timeout=300,
        )
    log, err = (tmp_path / "stdout").read_bytes(), (tmp_path / "stderr").read_bytes()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    assert b"toy.loss_decreases" in log and b"wall time" in log
    for name, text in (("stdout", log), ("stderr", err)):
        assert b"\r" not in text and b"\x1b" not in text, (name, text[:500])
    modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in [out, *out.iterdir()]}
    assert {"config.json", "flow.npz", "sgd.npz", "summary.json", "toy.png"} <= set(modes)
    assert modes.pop("run") == 0o750 and set(modes.values()) == {0o640}, modes
    if importlib.util.find_spec("pandas") is not None:  # the real folder as a notebook reads it
        df = load_run(out).to_frame()
        assert sorted(set(zip(df["piece"], df["seed"]))) == [("flow", -1), ("gd", -1), ("sgd", 0), ("sgd", 1)]
        gd = df[df["piece"] == "gd"]
        assert gd["t"].tolist() == pytest.approx((gd["step"].to_numpy(float) * 0.01).tolist())  # default lr
