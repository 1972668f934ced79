"""The command line (`flowsim/cli.py`): bad input exits 2 with one line, a small run writes a folder."""

import functools
import json
import subprocess
import sys

import pytest

import flowsim
from flowsim import default_system, get_system, load_run
from flowsim.cli import main

from .conftest import SMALL

FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "7"], "invalid n=7: n must be a positive multiple of 6"),
        (["--L", "2"], "invalid L=2: L must be an integer >= 3"),
        (["--d", "3"], "invalid d=3: d must be an integer >= 4"),
        (["--init-scale", "-1"], "invalid init_scale=-1.0: init_scale must be a finite number in (0, 1e+06]"),
        # fields with choices are refused by argparse, which names the option and lists the choices
        (["--solver", "rk4"], "argument --solver: invalid choice: 'rk4' (choose from 'tsit5', 'dopri5'"),
        (["--m", "0"], "invalid m=0: m must be a positive integer <= 65536"),
        (["--d", "20", "--distinct-tokens"], "invalid d=20: d must be >= 163 for distinct_tokens=True"),
    ],
    ids=["n", "L", "d", "init_scale", "solver", "m", "distinct_tokens"],
)
def test_invalid_config_exits_2_naming_the_field(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_invalid_config_exits_2_from_a_fresh_process():
    """The same refusal as a user sees it: a new interpreter, exit status 2, one line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "flowsim.cli", "run", "--n", "7"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "flowsim: error: invalid n=7: n must be a positive multiple of 6 (type counts n/2, n/6, n/6, n/6)"
    ]
    assert "Traceback" not in proc.stderr


def test_bad_config_file_and_missing_run_dir(tmp_path, capsys):
    bad = tmp_path / "c.json"
    bad.write_text('{"widht": 3}')
    for argv, message in (
        (["run", "--config", str(bad)], "unknown config field(s) ['widht']"),
        (["run", "cooccurrence", "--config", str(bad)], "unknown config field(s) ['widht']"),
        (["plot", str(tmp_path / "nope")], "not a flowsim run folder"),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_systems_lists_the_registered_systems(capsys):
    assert main(["systems"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert default_system() == "cooccurrence"
    assert len(lines) == len(flowsim._registry._SYSTEMS) and lines[0].split()[:3] == [
        "cooccurrence",
        "word",
        "co-occurrence,",
    ]
    assert lines[0].endswith("(default)") and get_system("cooccurrence").summary in lines[0]


def test_unknown_system_exits_2(capsys):
    for argv in (["run", "nope"], ["compare", "nope"], ["theory", "t1", "--system", "nope", "--values", "1"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_run_help_lists_the_fields_with_their_ranges(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "cooccurrence", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "cooccurrence fields" in out and "run settings" in out
    assert "--init-scale INIT_SCALE" in out and "--no-train-a" in out
    assert "a positive integer <= 60000 (default 60)" in out and "an integer in [0, 2147483647]" in out


@pytest.fixture
def no_work(monkeypatch):
    """Make every command's work function fail loudly: a refusal must come before any work."""

    def boom(*args, **kwargs):
        raise AssertionError("work started before the output path was checked")

    from flowsim import _compare, _experiment, _sweep_run
    from flowsim.systems.cooccurrence import theory

    monkeypatch.setattr(_experiment, "run_experiment", boom)
    monkeypatch.setattr(_compare, "compare", boom)
    monkeypatch.setattr(_sweep_run, "run_sweep", boom)
    monkeypatch.setattr(theory, "t1_scaling", functools.wraps(theory.t1_scaling)(boom))


@pytest.mark.parametrize("command", ["run", "compare", "sweep", "theory"])
def test_out_at_an_existing_file_exits_2_before_any_work(command, tmp_path, capsys, no_work):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    spec = tmp_path / "s.toml"
    spec.write_text('measures = ["T1"]\n[base]\nn = 12\nbatch_size = 4\n[axes]\nlr = [0.1]\n')
    argv = {
        "run": ["run", "cooccurrence", *FLAGS, "--quiet"],
        "compare": ["compare", "cooccurrence", *FLAGS, "--dynamics", "gf"],
        "sweep": ["sweep", str(spec), "--quiet"],
        "theory": ["theory", "t1", "--axis", "m", "--values", "256", "--seeds", "0"],
    }[command]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(taken)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert f"invalid out={str(taken)!r}: it exists and is not a folder" in err
    assert taken.read_text() == "not a folder"


# Slow (about 25 s): the fast suite runs the CLI's run and plot end to end on the toy system
# (contract_cases / test_systems_contract_1.py) and in a piped subprocess (test_cli_logs.py), and
# the co-occurrence system end to end through the library with its figures (contract_cases).
@pytest.mark.slow
def test_run_and_plot_small_config(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *FLAGS, "--out", str(out), "--quiet", "--no-cache"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"flowsim run cooccurrence -> {out}")
    assert "phase1.end" in printed and "wall time" in printed
    run = load_run(out)
    assert run.config["m1"] == SMALL["m1"] and run.system == "cooccurrence"
    for png in ("attention_scores.png", "losses.png", "flow_vs_discrete.png", "balancing.png"):
        assert (out / png).stat().st_size > 1000
        (out / png).unlink()
    assert main(["plot", str(out)]) == 0
    assert (out / "balancing.png").is_file()
    # The same run with the system named explicitly (and a config file for some fields): same numbers.
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"n = {SMALL['n']}\nL = {SMALL['L']}\nbatch_size = {SMALL['batch_size']}\nlr = 0.5\n")
    again = tmp_path / "again"
    assert (
        main(
            [
                "run",
                "cooccurrence",
                "--config",
                str(cfg),
                *FLAGS,
                "--out",
                str(again),
                "--quiet",
                "--no-cache",
                "--no-plots",
            ]
        )
        == 0
    )
    assert f"flowsim run cooccurrence -> {again}" in capsys.readouterr().out
    rerun = load_run(again)
    assert rerun.config == run.config and not list(again.glob("*.png"))
    assert rerun.summary["phase1_end_time"] == run.summary["phase1_end_time"] is not None
    assert rerun.summary["events"] == run.summary["events"]


@pytest.mark.slow  # test_theory_t1 checks the same scaling through the API; the fast suite checks the refusals
def test_theory_command_measures_a_prediction(tmp_path, capsys):
    out = tmp_path / "t1.json"
    argv = [
        "theory",
        "t1",
        "--axis",
        "m",
        "--values",
        "256,1024,4096",
        "--seeds",
        "0",
        "--set",
        "n=12",
        "--set",
        "L=3",
        "--set",
        "d=12",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert res["function"] == "flowsim.systems.cooccurrence.theory.t1.t1_scaling" and len(res["rows"]) == 3
    assert res["prediction"] == "t1" and res["system"] == "cooccurrence"
    assert res["arguments"]["n"] == 12 and "versions" in res
    assert -1.3 < res["slope"] < -0.6
    assert "slope=" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["theory", "t1", "--values", "256"], "needs --axis"),
        (["theory", "phase2", "--axis", "m", "--values", "256", "--set", "foo=1"], "KEY one of"),
        (["theory", "t1", "--axis", "m", "--values", "256", "--set", "n=1.5"], "invalid --set 'n=1.5'"),
        (
            ["theory", "phase2", "--axis", "q", "--values", "256"],
            "invalid axis='q': theory phase2 needs --axis, one of ('m', 'n')",
        ),
        (["theory", "scores", "--values", "25.5"], "positive integers"),
        (["theory", "t1", "--axis", "sigma1", "--values", "0.5,-1"], "finite values > 0"),
    ],
)
def test_theory_command_bad_input_exits_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
