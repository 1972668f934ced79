"""Contract tests, shard 1 of 2 (see `tests/contract_cases.py`), and the toy system through the CLI
and the run settings (`stop_loss`, `sharpness`, `optimizer`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import flowsim
from flowsim.cli import main

from . import toy_system
from .contract_cases import *  # noqa: F403  (the contract's tests and its `name` parametrization)
from .contract_cases import _run, _smoke

SHARD = 1


def test_toy_system_through_the_cli(tmp_path, capsys):
    smoke = dict(toy_system.SYSTEM.smoke)
    opts = [x for k, v in smoke.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    assert main(["systems"]) == 0
    assert "toy-linreg" in capsys.readouterr().out
    assert main(["run", "toy-linreg", "--out", str(tmp_path / "run"), "--quiet", *opts]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {v["name"] for v in summary["verdicts"]} >= {"toy.loss_decreases", "toy.fitted"}
    assert main(["plot", str(tmp_path / "run")]) == 0
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'system = "toy-linreg"\nname = "toy"\nseeds = 1\nmeasures = ["loss_T", "toy.fitted"]\n'
        "[base]\n" + "".join(f"{k} = {v}\n" for k, v in smoke.items()) + "[axes]\nk = [2, 3]\n"
    )
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sw"), "--workers", "1", "--quiet"]) == 0
    assert main(["phase-diagram", str(tmp_path / "sw"), "--x", "k", "--measure", "loss_T"]) == 0
    assert (
        main(
            [
                "compare",
                "toy-linreg",
                "--dynamics",
                "gf,igr",
                "--keys",
                "loss,dist",
                "--out",
                str(tmp_path / "cmp"),
                *opts,
            ]
        )
        == 0
    )
    assert (tmp_path / "cmp" / "overlay.png").is_file()


def test_run_settings_stop_loss_and_sharpness(tmp_path):
    """`stop_loss` ends the flow and GD/SGD at the target (exact GD step); `sharpness` records the
    top Hessian eigenvalues (and the edge-of-stability ratio of the discrete runs). On the toy
    (linear regression) the Hessian is X^T X / n at every point."""
    name = toy_system.SYSTEM.name
    base = _run(name)
    target = float(base.gd.obs["loss"][len(base.gd.steps) // 2]) if base.gd else 0.0
    res = flowsim.run_experiment(_smoke(name).replace(stop_loss=target, sharpness=2))
    flow, gd, sg = res.flow, res.gd, res.sgd
    assert flow is not None and gd is not None and sg is not None
    assert flow.ok and flow.stopped_by == "target_loss" and flow.t_reached < res.setup.config.t_final
    hit = flow.events["target_loss"]
    assert hit.obs is not None and hit.obs["loss"] == pytest.approx(target, rel=1e-6)
    assert 0 < int(gd.stop_step) < res.setup.config.steps and np.all(sg.stop_step != 0)
    x = np.asarray(res.setup.data["x"])
    top = np.linalg.eigvalsh(x.T @ x / x.shape[0])[::-1][:2]
    np.testing.assert_allclose(flow.obs["hessian_top"][0], top, rtol=1e-6)
    np.testing.assert_allclose(gd.obs["eos_ratio"][0], res.setup.config.lr * top[0] / 2, rtol=1e-6)
    summary = flowsim.save_experiment(res, tmp_path)
    assert summary["flow"]["stopped_by"] == "target_loss" and summary["gd"]["stop_step"] == int(gd.stop_step)
    assert summary["flow"]["steps"]["accepted"] > 0 and summary["flow"]["steps"]["h_lambda_max"]["max"] > 0


def test_optimizer_setting_runs_the_optax_comparator():
    """`optimizer = "adam"` makes the minibatch piece Adam at `opt_lr`, on the same minibatches, grid
    and seeds as `flowsim.optax_descent` with the run's key."""
    import optax

    config = _smoke(toy_system.SYSTEM.name).replace(optimizer="adam", opt_lr=0.02)
    res = flowsim.run_experiment(config, pieces=("sgd",))
    s = res.setup
    direct = flowsim.optax_descent(
        s.problem,
        optax.adam(0.02),
        config.lr,
        flowsim.step_grid(config),
        s.observer,
        key=s.keys.sgd,
        batch_size=config.batch_size,
        seeds=config.sgd_seeds,
        events=s.events,
    )
    assert res.sgd is not None
    np.testing.assert_array_equal(res.sgd.obs["loss"], direct.obs["loss"])
    assert not np.array_equal(res.sgd.obs["loss"], _run(toy_system.SYSTEM.name).sgd.obs["loss"])  # not SGD
