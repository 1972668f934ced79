"""The command line (`flowsim/cli.py`): bad input exits 2 with one line, a small run writes a folder."""

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
