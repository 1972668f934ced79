"""One contract test for every registered system (plus a toy system registered here, not shipped).

Modelled on optax's `contrib` common test: each system runs end to end at its `smoke` size (flow,
GD, SGD, summary, figures), its verdict names are unique and reachable as sweep measures, every
measure resolves, a sweep and a phase diagram work, `compare` works, and a bad config is refused with
one line before any work. The toy system goes through the CLI's run, sweep, compare and phase-diagram
with no change to engine code.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import flowsim
from flowsim.cli import main

from . import toy_system


@pytest.fixture(scope="module", autouse=True)
def toy_registered():  # registered for this module only
    flowsim.register(toy_system.SYSTEM, replace=True)
    yield
    from flowsim._registry import unregister

    unregister(toy_system.SYSTEM.name)


NAMES = sorted(set(flowsim.registered_systems()) | {toy_system.SYSTEM.name})
_RUNS: dict[str, flowsim.ExperimentResult] = {}


def _smoke(name: str) -> flowsim.Config:
    return flowsim.Config(name, **flowsim.get_system(name).smoke)


def _run(name: str) -> flowsim.ExperimentResult:
    if name not in _RUNS:
        _RUNS[name] = flowsim.run_experiment(_smoke(name))
    return _RUNS[name]


@pytest.mark.parametrize("name", NAMES)
def test_fields_are_declared_with_help_and_do_not_collide(name):
    system = flowsim.get_system(name)
    assert system.name == name and system.summary and "\n" not in system.summary
    cls = system.config_type
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    run_names = {f.name for f in dataclasses.fields(flowsim.RunConfig)}
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{name}.{f.name} has no help text"
        assert f.name not in run_names | {"system"}, f"{name}.{f.name} collides with a run setting"
    flowsim.Config(name)  # the defaults are valid
    assert _smoke(name).system == name


@pytest.mark.parametrize("name", NAMES)
def test_runs_end_to_end_and_writes_a_results_folder(name, tmp_path):
    res = _run(name)
    assert res.flow is not None and res.flow.ok, res.flow and res.flow.result
    assert res.gd is not None and not res.gd.diverged
    assert res.sgd is not None and res.sgd.obs["loss"].shape[0] == res.setup.config.sgd_seeds
    summary = flowsim.save_experiment(res, tmp_path)
    for f in ("config.json", "initial_state.npz", "flow.npz", "gd.npz", "sgd.npz", "summary.json"):
        assert (tmp_path / f).is_file(), f
    saved = json.loads((tmp_path / "config.json").read_text())
    assert flowsim.Config.from_dict(saved["config"]) == res.setup.config
    assert set(saved["versions"]) >= {"jax", "diffrax", "equinox", "flowsim"}
    assert summary["system"] == name and set(summary["held_out"]) == {"flow", "gd", "sgd_mean"}
    paths = flowsim.get_system(name).figures(flowsim.load_run(tmp_path), tmp_path)
    assert paths and all(p.is_file() and p.stat().st_size > 1000 for p in paths)


@pytest.mark.parametrize("name", NAMES)
def test_verdicts_are_unique_named_and_reachable_from_sweeps(name):
    system = flowsim.get_system(name)
    verdicts = system.verdicts(_run(name).record)
    names = [v.name for v in verdicts]
    assert len(names) == len(set(names)), names
    assert set(names) <= set(system.verdict_needs), set(names) - set(system.verdict_needs)
    assert all(v.status in ("PASS", "FAIL", "INFO") for v in verdicts)
    measures = flowsim.measures_of(system)
    assert set(system.verdict_needs) <= set(measures)


@pytest.mark.parametrize("name", NAMES)
def test_every_measure_resolves(name):
    record = _run(name).record
    for m in flowsim.measures_of(flowsim.get_system(name)).values():
        m.fn(record)  # no exception on a finished run
        assert m.doc


@pytest.mark.parametrize("name", NAMES)
def test_bad_config_is_refused_with_one_line(name, capsys):
    cls = flowsim.get_system(name).config_type
    ints = [f for f in dataclasses.fields(cls) if type(f.default) is int]
    assert ints, "every system has at least one integer field"
    f = ints[0]
    with pytest.raises(flowsim.ConfigError) as e:
        flowsim.Config(name, **{f.name: -5})
    assert f"invalid {f.name}=" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SystemExit) as ex:
        main(["run", name, f"--{f.name.replace('_', '-')}", "-5", "--out", "/nonexistent-never-written"])
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"invalid {f.name}=" in err[0]


@pytest.mark.parametrize("name", NAMES)
def test_sweep_phase_diagram_and_compare(name, tmp_path):
    system = flowsim.get_system(name)
    own = [m.name for m in system.measures()]
    spec = flowsim.SweepSpec.from_dict(
        {
            "system": name,
            "base": dict(system.smoke),
            "seeds": 1,
            "axes": {"lr": [system.smoke["lr"], system.smoke["lr"] / 2]},
            "measures": [own[0], next(iter(system.verdict_needs))],
        }
    )
    report = flowsim.run_sweep(spec, tmp_path / "sw", workers=1, progress=False)
    assert report.done == 2 and report.failed == 0
    rows = flowsim.load_sweep(tmp_path / "sw")
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    png = flowsim.plot_phase_diagram(tmp_path / "sw", "lr", None, measure=own[0])
    assert png.is_file()
    curves = flowsim.compare(_smoke(name), ["gf"])
    assert set(curves) == {"gf", "gd", "sgd"} and curves["sgd"].ensemble


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
