"""The command line (`flowsim/cli.py`): bad input exits 2 with one line, a small run writes a folder."""

import json
import subprocess
import sys

import pytest

from flowsim.cli import main
from flowsim.results import load_run

from .conftest import SMALL


@pytest.mark.parametrize(
    "args, field",
    [(["--n", "7"], "n"), (["--L", "2"], "L"), (["--d", "3"], "d"), (["--init-scale", "-1"], "init_scale"),
     (["--solver", "rk4"], "solver"), (["--m", "0"], "m"), (["--d", "20", "--distinct-tokens"], "d")],
)
def test_invalid_config_exits_2_naming_the_field(args, field):
    proc = subprocess.run([sys.executable, "-m", "flowsim.cli", "run", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"invalid {field}=" in proc.stderr and "must be" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_config_file_and_missing_run_dir(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text('{"widht": 3}')
    for argv in (["run", "--config", str(bad)], ["plot", str(tmp_path / "nope")]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2


def test_run_and_plot_small_config(tmp_path, capsys):
    out = tmp_path / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    assert main(["run", *flags, "--out", str(out), "--quiet", "--no-cache"]) == 0
    printed = capsys.readouterr().out
    assert "phase1.end" in printed and "wall time" in printed
    run = load_run(out)
    assert run.config["config"]["m1"] == SMALL["m1"]
    for png in ("attention_scores.png", "losses.png", "flow_vs_discrete.png", "balancing.png"):
        assert (out / png).stat().st_size > 1000
        (out / png).unlink()
    assert main(["plot", str(out)]) == 0
    assert (out / "balancing.png").is_file()


def test_theory_command_measures_a_prediction(tmp_path, capsys):
    out = tmp_path / "t1.json"
    argv = ["theory", "t1", "--axis", "m", "--values", "256,1024,4096", "--seeds", "0",
            "--set", "n=12", "--set", "L=3", "--set", "d=12", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert res["function"] == "flowsim.theory.t1_scaling" and len(res["rows"]) == 3
    assert res["arguments"]["n"] == 12 and "versions" in res
    assert -1.3 < res["slope"] < -0.6
    assert "slope=" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["theory", "t1", "--values", "256"], "needs --axis"),
    (["theory", "phase2", "--axis", "m", "--values", "256", "--set", "foo=1"], "KEY one of"),
    (["theory", "t1", "--axis", "m", "--values", "256", "--set", "n=1.5"], "invalid --set 'n=1.5'"),
    (["theory", "phase2", "--axis", "q", "--values", "256"], "axis must be 'm' or 'n'"),
    (["theory", "scores", "--values", "25.5"], "positive integers"),
])
def test_theory_command_bad_input_exits_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
