"""Sweeps: spec validation, atomic per-point results, resume after SIGKILL, failures, no recompiles."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from jax import monitoring

from flowsim import (
    Config,
    SpecMismatchError,
    SweepSpec,
    SweepSpecError,
    cli,
    get_system,
    measures_of,
    registered_systems,
    run_point,
    run_sweep,
)
from flowsim._sweep_spec import point_key, shape_group

MEASURES = measures_of(get_system("cooccurrence"))

# Tiny shapes shared by every sweep test (and tests/test_phase_diagram.py): one compile per process.
TINY = dict(
    n=12,
    L=4,
    d=16,
    m=16,
    m1=16,
    steps=100,
    n_save_log=20,
    n_save_lin=10,
    batch_size=4,
    sgd_seeds=2,
    n_test=200,
    max_steps=4000,
)
FLOW_MEASURES = ["T1", "loss_T", "attn_disp_T1", "balance.R"]


def spec(axes, measures=FLOW_MEASURES, seeds=1, **base):
    return SweepSpec.from_dict({"base": {**TINY, **base}, "axes": axes, "seeds": seeds, "measures": measures})


def files(folder):
    return sorted((pathlib.Path(folder) / "points").glob("*.json"))


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"axes": {"widht": [16]}}, "axis 'widht'"),
        ({"axes": {"lr": []}}, "axis 'lr'"),
        ({"axes": {"n": [12, 7]}}, "axis 'n'"),
        ({"axes": {"init_scale": {"log": [0, 1], "num": 3}}}, "axis 'init_scale'"),
        ({"axes": {"init_scale": {"log": [1e-3, 1]}}}, "axis 'init_scale'"),
        ({"axes": {"m": ["wide"]}}, "axis 'm'"),
        ({"axes": {"lr": [0.1]}, "measures": ["T1", "T2"]}, "measures: unknown ['T2']"),
        ({"axes": {"lr": [0.1]}, "measures": []}, "measures"),
        ({"axes": {"lr": [0.1]}, "seeds": 0}, "seeds"),
        ({"axes": {"batch_size": [4, 24]}}, "axis 'batch_size'"),
        ({"axes": {"lr": [0.1]}, "bogus": 1}, "unknown spec key"),
        ({"axes": {"lr": [0.1]}, "system": "nope"}, "system: invalid system='nope'"),
        ({"axes": {"lr": [0.1]}, "system": 3}, "system: a registered system name"),
        ({"axes": {"seed": [1, 2]}}, "axis 'seed': give seeds with the top-level `seeds` key"),
        ({"axes": {"lr": [0.1]}, "base": {**TINY, "system": "cooccurrence"}}, "base: unknown config field 'system'"),
        ({"axes": {"lr": [0.1]}, "base": {**TINY, "steps": 0}}, "base field 'steps' at point"),
    ],
)
def test_spec_errors_name_the_axis(data, needle):
    data = {"base": TINY, "measures": ["T1"], **data}
    with pytest.raises(SweepSpecError, match=None) as e:
        SweepSpec.from_dict(data)
    assert needle in str(e.value)


def test_spec_ranges_and_yaml(tmp_path):
    s = spec({"init_scale": {"log": [1e-2, 1], "num": 3}, "m": {"lin": [16, 32], "num": 3}}, seeds=[3, 5])
    assert s.axes["init_scale"] == pytest.approx((0.01, 0.1, 1.0)) and s.axes["m"] == (16, 24, 32)
    assert len(s.configs()) == 18 and {c.seed for c in s.configs()} == {3, 5}
    (tmp_path / "s.toml").write_text('measures = ["T1"]\nseeds = 2\n[base]\nn = 12\n[axes]\nlr = [0.1, 1]\n')
    t = SweepSpec.from_file(tmp_path / "s.toml")
    assert t.axes["lr"] == (0.1, 1.0) and t.seeds == (0, 1)
    pytest.importorskip("yaml")
    (tmp_path / "s.yaml").write_text("measures: [T1]\nseeds: 2\nbase: {n: 12}\naxes: {lr: [0.1, 1]}\n")
    assert SweepSpec.from_file(tmp_path / "s.yaml") == t


def test_spec_names_its_system():
    """A spec's `system` defaults to the default system; naming it explicitly gives the same spec,
    the same points and the same keys, and it is stored in the normalised spec."""
    implicit = spec({"lr": [0.05, 0.1]})
    explicit = SweepSpec.from_dict(
        {"system": "cooccurrence", "base": TINY, "axes": {"lr": [0.05, 0.1]}, "seeds": 1, "measures": FLOW_MEASURES}
    )
    assert implicit.system == explicit.system == "cooccurrence" and implicit == explicit
    assert implicit.to_dict()["system"] == "cooccurrence"
    assert [c.system for c in explicit.configs()] == ["cooccurrence"] * 2
    assert [point_key(c) for c in implicit.configs()] == [point_key(c) for c in explicit.configs()]


def test_point_key_and_shape_group():
    a, b = Config(**TINY), Config(**{**TINY, "lr": 0.2, "init_scale": 0.5, "seed": 3})
    assert point_key(a) == point_key(Config(**TINY)) and point_key(a) != point_key(b)
    assert len(point_key(a)) == 16 and int(point_key(a), 16) >= 0
    assert shape_group(a) == shape_group(b) and shape_group(a)[0] == "cooccurrence"
    assert shape_group(a) != shape_group(a.replace(m=32)) != shape_group(a.replace(solver="dopri5"))


def test_cli_bad_spec_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('measures = ["T1"]\n[axes]\nn = [12, 13]\n')
    with pytest.raises(SystemExit) as e:
        cli.main(["sweep", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "axis 'n'" in err
    assert not (tmp_path / "o").exists()


def test_cli_unknown_system_in_spec_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('system = "nope"\nmeasures = ["T1"]\n[axes]\nlr = [0.1]\n')
    with pytest.raises(SystemExit) as e:
        cli.main(["sweep", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert f"system: invalid system='nope': system must be one of {sorted(registered_systems())}" in err
    assert not (tmp_path / "o").exists()


def test_measure_selection_skips_sgd_and_gd():
    assert MEASURES["T1"].needs == {"flow"}
    assert MEASURES["flow_gd_gap"].needs == {"flow", "gd"}
    assert MEASURES["gd_diverged"].needs == {"gd"} and MEASURES["flow_steps"].needs == {"flow"}
    assert "sgd" in MEASURES["compare.flow_sgd"].needs


_BACKEND_COMPILES = [0]
monitoring.register_event_duration_secs_listener(
    lambda event, d, **kw: _BACKEND_COMPILES.__setitem__(
        0, _BACKEND_COMPILES[0] + (event == "/jax/core/compile/backend_compile_duration")
    )
)


# Slow (15 s): the engine-level check that traced hyperparameters never recompile runs in the fast
# suite (tests/test_engine_core.py::test_hyperparameters_are_traced_no_recompilation).
@pytest.mark.slow
def test_no_recompilation_across_lr_init_scale_seed(tmp_path):
    measures = ["T1", "flow_gd_gap"]  # flow and GD
    run_sweep(spec({"lr": [0.05]}, measures), tmp_path / "warm", workers=1, progress=False)
    before = _BACKEND_COMPILES[0]
    r = run_sweep(
        spec({"lr": [0.02, 0.1], "init_scale": [0.7, 1.5]}, measures, seeds=[1, 2]),
        tmp_path / "sweep",
        workers=1,
        progress=False,
    )
    assert r.done == 8
    assert _BACKEND_COMPILES[0] == before, "a traced value (lr, init_scale, seed) caused an XLA compile"
    recs = [json.loads(f.read_text()) for f in files(tmp_path / "sweep")]
    assert all(rec["ran"] == ["flow", "gd"] for rec in recs)


def test_diverging_point_is_recorded_and_sweep_goes_on(tmp_path):
    r = run_sweep(spec({"lr": [30.0, 0.05]}, ["T1", "flow_gd_gap", "gd_diverged"]), tmp_path, workers=1, progress=False)
    recs = {json.loads(f.read_text())["axes"]["lr"]: json.loads(f.read_text()) for f in files(tmp_path)}
    assert r.done == 2 and r.failed == 1
    assert recs[30.0]["status"] == "failed" and "GD diverged" in recs[30.0]["reason"]
    assert recs[30.0]["measures"]["gd_diverged"] is True
    assert recs[0.05]["status"] == "ok" and recs[0.05]["reason"] is None
    assert recs[0.05]["versions"]["jax"] and recs[0.05]["config"]["lr"] == 0.05


def test_changed_spec_refuses_to_mix(tmp_path):
    run_sweep(spec({"lr": [0.05]}), tmp_path / "s", workers=1, progress=False)
    again = run_sweep(spec({"lr": [0.05]}), tmp_path / "s", workers=1, progress=False)
    assert again.skipped == 1 and again.done == 0
    with pytest.raises(SpecMismatchError, match="--new"):
        run_sweep(spec({"lr": [0.05, 0.1]}), tmp_path / "s", workers=1, progress=False)
    r = run_sweep(spec({"lr": [0.05, 0.1]}), tmp_path / "s", workers=1, progress=False, new=True)
    assert r.folder == tmp_path / "s-2" and r.done == 2 and len(files(tmp_path / "s")) == 1


_CHILD = """
import sys, jax
jax.config.update("jax_enable_x64", True)
from flowsim import SweepSpec, run_sweep
spec = SweepSpec.from_dict({spec!r})
run_sweep(spec, sys.argv[1], workers=2, progress=False)
"""


def _alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow  # a 2-process pool compiled from scratch, then SIGKILLed: run with -m slow
def test_resume_after_sigkill_loses_and_redoes_nothing(tmp_path):
    """A sweep on a pool of 2 worker processes is SIGKILLed mid-run; the rerun (in this process)
    keeps every finished file untouched and runs exactly the missing points."""
    data = {
        "base": TINY,
        "axes": {"lr": [0.02, 0.04, 0.06, 0.08, 0.1, 0.12]},
        "seeds": 2,
        "measures": FLOW_MEASURES,
    }
    out = tmp_path / "sweep"
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla")}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(spec=data), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while len(files(out)) < 3 and time.time() < deadline and child.poll() is None:
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    before = {f.name: f.stat().st_mtime_ns for f in files(out)}
    assert 3 <= len(before) < 12, f"kill landed at {len(before)} of 12 points"
    workers = set()
    for f in files(out):
        rec = json.loads(f.read_text())  # every file is complete JSON (atomic writes)
        assert rec["pid"] not in (child.pid, os.getpid())  # run by a pool worker
        workers.add(rec["pid"])
    # The pool's workers end with their parent, even after a SIGKILL: none is left orphaned.
    deadline = time.time() + 10
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"worker processes {left} outlived the killed sweep"
    r = run_sweep(SweepSpec.from_dict(data), out, workers=1, progress=False)
    assert r.skipped == len(before) and r.done == 12 - len(before)
    after = {f.name: f.stat().st_mtime_ns for f in files(out)}
    assert len(after) == 12 and all(after[k] == v for k, v in before.items())


def test_dask_two_workers(tmp_path):
    """The Dask path through a scheduler address, on a 2-worker in-process LocalCluster (threads
    share this process's compiled solves, which keeps the test fast; the process-based default
    LocalCluster is the slow test below)."""
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        r = run_sweep(
            spec({"lr": [0.05, 0.1]}, seeds=2),
            tmp_path,
            workers=2,
            use_dask=True,
            scheduler=cluster.scheduler_address,
            progress=False,
        )
    recs = [json.loads(f.read_text()) for f in files(tmp_path)]
    assert r.done == 4 and all(rec["measures"].keys() == set(FLOW_MEASURES) for rec in recs)


@pytest.mark.slow
def test_dask_default_local_cluster_processes(tmp_path):
    pytest.importorskip("dask.distributed")
    r = run_sweep(spec({"lr": [0.05, 0.1]}, seeds=2), tmp_path, workers=2, use_dask=True, progress=False)
    recs = [json.loads(f.read_text()) for f in files(tmp_path)]
    assert r.done == 4 and all(rec["pid"] != os.getpid() for rec in recs)


def test_run_point_unknown_measure():
    with pytest.raises(SweepSpecError, match=r"unknown measure\(s\) \['nope'\]"):
        run_point(Config(**TINY), ["nope"])
