"""One contract test for every registered system (plus a toy system registered here, not shipped).

Modelled on optax's `contrib` common test: each system runs end to end at its `smoke` size (flow,
GD, SGD, summary, figures), its verdict names are unique and reachable as sweep measures, every
measure resolves, a sweep and a phase diagram work, `compare` works, and a bad config is refused with
one line before any work. The toy system goes through the CLI's run, sweep, compare and phase-diagram
with no change to engine code.

The tests live here and run from two shard modules (`test_systems_contract_0.py`,
`test_systems_contract_1.py`), each taking every other registered system, so that pytest-xdist (one
worker per test file) runs the systems' end-to-end runs on both cores. A newly registered system is
covered with no change here.
"""

from __future__ import annotations

import dataclasses
import json

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
SHARDS = 2


def pytest_generate_tests(metafunc):
    """Parametrize `name` by the calling shard module's systems (every SHARDS-th from its SHARD)."""
    if "name" in metafunc.fixturenames:
        shard = metafunc.module.SHARD
        metafunc.parametrize("name", [n for i, n in enumerate(NAMES) if i % SHARDS == shard])


_RUNS: dict[str, flowsim.ExperimentResult] = {}


def _smoke(name: str) -> flowsim.Config:
    return flowsim.Config(name, **flowsim.get_system(name).smoke)


def _run(name: str) -> flowsim.ExperimentResult:
    if name not in _RUNS:
        _RUNS[name] = flowsim.run_experiment(_smoke(name))
    return _RUNS[name]


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


def test_verdicts_are_unique_named_and_reachable_from_sweeps(name):
    system = flowsim.get_system(name)
    verdicts = system.verdicts(_run(name).record)
    names = [v.name for v in verdicts]
    assert len(names) == len(set(names)), names
    assert set(names) <= set(system.verdict_needs), set(names) - set(system.verdict_needs)
    assert all(v.status in ("PASS", "FAIL", "INFO") for v in verdicts)
    measures = flowsim.measures_of(system)
    assert set(system.verdict_needs) <= set(measures)


def test_every_measure_resolves(name):
    record = _run(name).record
    for m in flowsim.measures_of(flowsim.get_system(name)).values():
        m.fn(record)  # no exception on a finished run
        assert m.doc


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
