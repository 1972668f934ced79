"""Phase diagrams: the tidy table and the heatmap / line-plot command on a small real sweep."""

import json

import pytest

from flowsim import SweepSpec, cli, load_sweep, plot_phase_diagram, run_sweep
from flowsim._phase_diagram import write_csv

from .test_sweep import TINY


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """lr x init_scale x 2 seeds on the tiny shapes (seed 0 at init_scale 100 fails: the stiff flow
    reaches max_steps before Phase 1 ends, so the failure marker and the phase1.end contour are
    exercised too)."""
    out = tmp_path_factory.mktemp("sweep")
    spec = SweepSpec.from_dict(
        {
            "base": TINY,
            "axes": {"lr": [0.05, 0.1], "init_scale": [0.5, 1.0, 100.0]},
            "seeds": 2,
            "measures": ["T1", "loss_T", "balance.R", "phase1.end"],
        }
    )
    run_sweep(spec, out, workers=1, progress=False)
    return out


def test_load_sweep_tidy_rows(sweep, tmp_path):
    rows = load_sweep(sweep)
    assert len(rows) == 12
    assert set(rows[0]) == {"lr", "init_scale", "seed", "status", "reason", "T1", "loss_T", "balance.R", "phase1.end"}
    assert [(r["lr"], r["init_scale"], r["seed"]) for r in rows[:3]] == [(0.05, 0.5, 0), (0.05, 0.5, 1), (0.05, 1.0, 0)]
    text = write_csv(rows, tmp_path / "t.csv").read_text().splitlines()
    assert len(text) == 13 and text[0].startswith("lr,init_scale,seed,status")
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            load_sweep(sweep, as_frame=True)
    else:
        assert load_sweep(sweep, as_frame=True).shape[0] == 12


@pytest.mark.parametrize(
    "args",
    [
        ["--x", "lr", "--y", "init_scale", "--measure", "T1"],
        ["--x", "init_scale", "--y", "lr", "--measure", "phase1.end"],  # boolean: fraction + contour
        ["--x", "init_scale", "--measure", "loss_T"],  # 1-D line with seed band, one panel per lr
    ],
)
def test_phase_diagram_command(sweep, tmp_path, args, capsys):
    out = tmp_path / "fig.png"
    assert cli.main(["phase-diagram", str(sweep), *args, "--out", str(out)]) == 0
    assert out.stat().st_size > 5000 and str(out) in capsys.readouterr().out


def test_phase_diagram_bad_axis_exits_2(sweep, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["phase-diagram", str(sweep), "--x", "m", "--measure", "T1"])
    assert e.value.code == 2 and "'m' is not an axis" in capsys.readouterr().err
    with pytest.raises(Exception, match="not recorded"):
        plot_phase_diagram(sweep, "lr", measure="flow_gd_gap")


def test_failed_points_are_in_the_table(sweep):
    recs = [json.loads(f.read_text()) for f in (sweep / "points").glob("*.json")]
    rows = load_sweep(sweep)
    assert sum(r["status"] == "failed" for r in rows) == sum(r["status"] == "failed" for r in recs)
    failed = [r for r in rows if r["status"] == "failed"]
    assert [(r["lr"], r["init_scale"], r["seed"]) for r in failed] == [(0.05, 100.0, 0), (0.1, 100.0, 0)]
    # a failed flow did not reach T: its verdicts are "not measured" (None), never FAIL
    assert all("max_steps_reached" in r["reason"] and r["T1"] is None and r["phase1.end"] is None for r in failed)
    assert all(r["reason"] is None and r["T1"] > 0 for r in rows if r["status"] == "ok")
