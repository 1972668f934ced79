"""Faults lose nothing and leave nothing behind: run folders are published whole or not at all, a
sweep folder is locked, stale temporaries are cleaned on resume, a killed worker does not abandon
its points, and killing a sweep (SIGKILL, Ctrl-C, SIGTERM) ends its worker processes too."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from flowsim import Config, SweepSpec, _cli_guard, cli, run_sweep
from flowsim._results import write_json
from flowsim._sweep_run import _locked, _run_pool
from flowsim._sweep_spec import point_key

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = 'measures = ["T1"]\n[base]\nn = 12\nbatch_size = 4\nsteps = 10\n[axes]\nlr = [0.1, 0.2]\n'


# ---------------------------------------------------------------- tasks run by pool workers (spawned)
def _record() -> dict:
    return {"ran": [], "measures": {}, "status": "ok", "reason": None, "wall_s": 0.0, "compile_s": 0.0}


def dies_once_task(config, measures):
    """Kills its worker the first time it sees a point with lr = 0.2 (a marker file remembers)."""
    marker = pathlib.Path(os.environ["FLOWSIM_TEST_MARKERS"]) / f"died-{config.lr}"
    if config.lr == 0.2 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(9)
    return {**_record(), "pid": os.getpid()}


def always_dies_task(config, measures):
    os._exit(9)


def sleepy_task(config, measures):
    """Announces its worker's pid, then works for a long time."""
    (pathlib.Path(os.environ["FLOWSIM_TEST_MARKERS"]) / f"worker-{os.getpid()}").write_text("")
    time.sleep(120)
    return _record()


# ---------------------------------------------------------------- flowsim run: atomic, never mixed
def _fake_run(seed_files):
    """A stand-in for the run's computation: writes `seed_files` into the staging folder."""

    def run_and_save(config, folder, progress, plots, on_piece=None):
        for name in seed_files:
            (folder / name).write_text(str(config.seed))

        class R:
            flow = gd = sgd = None

        verdict = {"name": "v", "claim": "c", "figures": {}, "criterion": "k", "status": "INFO"}
        return R(), {"verdicts": [verdict], "timings_s": {}}

    return run_and_save


def test_run_refuses_a_used_folder_and_overwrite_replaces_it_whole(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    monkeypatch.setattr(cli, "_run_and_save", _fake_run(["config.json", "seed0_figure.png"]))
    assert cli.main(["run", "--seed", "0", "--out", str(out), "--quiet"]) == 0
    monkeypatch.setattr(cli, "_run_and_save", _fake_run(["config.json"]))
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "--seed", "2", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "is not empty (pass --overwrite" in err
    assert (out / "config.json").read_text() == "0"
    assert cli.main(["run", "--seed", "2", "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]  # seed 0's figure is gone with its run
    assert (out / "config.json").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging or aside folder left


def test_a_failed_run_publishes_nothing_and_stale_staging_is_cleaned(tmp_path, monkeypatch):
    out = tmp_path / "run"
    stale = tmp_path / ".run.partial-999999999-abc"  # a killed run's staging folder (no such pid)
    stale.mkdir()

    def broken(config, folder, progress, plots, on_piece=None):
        (folder / "flow.npz").write_text("half")
        raise RuntimeError("the solve crashed")

    monkeypatch.setattr(cli, "_run_and_save", broken)
    with pytest.raises(RuntimeError, match="the solve crashed"):
        cli.main(["run", "--out", str(out), "--quiet"])
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_sigterm_during_work_runs_cleanups_and_exits_143(monkeypatch, capsys):
    """The work runs in a thread; SIGTERM is handled at once by the main thread (os._exit replaced
    here so that the test process survives)."""
    exits, cleaned, release = [], [], threading.Event()

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(_cli_guard.os, "_exit", fake_exit)
    _cli_guard.on_interrupt(lambda: cleaned.append(True))
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
    t0 = time.perf_counter()
    with pytest.raises(SystemExit):
        _cli_guard.run_interruptibly(release.wait, 30)
    release.set()
    assert exits == [128 + signal.SIGTERM] and cleaned == [True] and time.perf_counter() - t0 < 5
    assert capsys.readouterr().err == "flowsim: error: interrupted by SIGTERM; unfinished results were not published\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


# ---------------------------------------------------------------- flowsim run interrupted: finished pieces kept
# Run in a process (the subprocess test) or in-process: SGD is replaced by a piece that blocks until
# released, and a marker says when the flow and GD have finished (after `run_experiment` has handed
# their partial result on), so the signal always arrives with exactly the SGD piece unfinished.
_DRIVER = """
import pathlib, sys, threading
sys.path.insert(0, {root!r})
from flowsim import _experiment, cli, register
from tests import toy_system

register(toy_system.SYSTEM, replace=True)
marker, release = None, threading.Event()
real = _experiment.run_experiment


def blocked_sgd(s, progress=False):
    release.wait(600)
    raise RuntimeError("the blocked SGD piece was released")


def spy(config, **kw):
    inner = kw["on_piece"]

    def on_piece(result):
        inner(result)
        if result.missing == ("sgd",):
            marker.write_text("flow and gd finished")

    return real(config, **{{**kw, "on_piece": on_piece}})


if __name__ == "__main__":
    marker = pathlib.Path(sys.argv[1])
    _experiment.run_sgd, _experiment.run_experiment = blocked_sgd, spy
    sys.exit(cli.main(sys.argv[2:]))
"""
TOY_RUN = ["run", "toy-linreg", "--n", "16", "--k", "3", "--steps", "20", "--batch-size", "4", "--sgd-seeds", "2"]


def _check_partial_run(out: pathlib.Path, line: str) -> None:
    """`out` holds the flow and GD and a summary naming SGD missing; `line` says so."""
    from flowsim import load_run

    assert line.startswith("flowsim: error: interrupted by SIGINT; the finished pieces (flow, gd; missing: sgd)"), line
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "flow.npz",
        "gd.npz",
        "initial_state.npz",
        "summary.json",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["missing_pieces"] == ["sgd"]
    verdicts = {v["name"]: v for v in summary["verdicts"]}
    assert set(verdicts) == {"toy.loss_decreases", "toy.fitted", "toy.gd_tracks_flow", "toy.sgd_spread"}
    missing = verdicts["toy.sgd_spread"]
    assert missing["status"] == "INFO" and missing["criterion"].startswith("not measured: the run was interrupted")
    assert verdicts["toy.gd_tracks_flow"]["status"] in ("PASS", "FAIL")  # its pieces finished: judged
    run = load_run(out)
    assert run.flow and run.gd and not run.sgd
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_interrupted_run_publishes_the_finished_pieces_in_process(tmp_path, monkeypatch, capsys):
    """SIGINT once the flow and GD have finished (os._exit replaced so that the test process
    survives): the folder is published with them and a summary that names SGD missing."""
    namespace: dict = {}
    exec(compile(_DRIVER.format(root=str(ROOT)), "driver", "exec"), namespace)  # registers the toy system
    marker, out, exits = tmp_path / "marker", tmp_path / "run", []
    namespace["marker"] = marker

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    def signal_when_done():
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    from flowsim import _experiment
    from flowsim._registry import unregister

    monkeypatch.setattr(_cli_guard.os, "_exit", fake_exit)
    monkeypatch.setattr(_experiment, "run_sgd", namespace["blocked_sgd"])
    monkeypatch.setattr(_experiment, "run_experiment", namespace["spy"])
    sender = threading.Thread(target=signal_when_done, daemon=True)
    sender.start()
    try:
        with pytest.raises(SystemExit):
            cli.main([*TOY_RUN, "--out", str(out), "--quiet", "--no-plots"])
    finally:
        namespace["release"].set()
        sender.join(5)
        unregister("toy-linreg")
    assert exits == [130] and marker.exists()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    _check_partial_run(out, lines[0])


@pytest.mark.slow  # a fresh process imports JAX and compiles the toy run
def test_interrupted_run_process_exits_130_with_the_finished_pieces(tmp_path):
    driver, marker, out = tmp_path / "driver.py", tmp_path / "marker", tmp_path / "runs" / "run"
    driver.write_text(_DRIVER.format(root=str(ROOT)))
    child = subprocess.Popen(
        [sys.executable, str(driver), str(marker), *TOY_RUN, "--out", str(out), "--quiet", "--no-plots"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), child.communicate(timeout=30)[1] if child.poll() is not None else "no marker"
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == 130, err
    lines = [line for line in err.splitlines() if line.startswith("flowsim:")]
    assert len(lines) == 1, err
    _check_partial_run(out, lines[0])


# ---------------------------------------------------------------- sweeps: lock, temporaries, workers
def test_second_sweep_on_a_locked_folder_is_refused(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    out = tmp_path / "sw"
    out.mkdir()
    with _locked(out):
        with pytest.raises(SystemExit) as e:
            cli.main(["sweep", str(spec), "--out", str(out), "--quiet", "--workers", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "in use by another flowsim sweep (pid" in err
    assert not (out / "points").exists()


def test_resume_removes_stale_temporaries(tmp_path):
    spec = SweepSpec.from_dict(
        {"base": {"n": 12, "batch_size": 4, "steps": 10}, "axes": {"lr": [0.1]}, "measures": ["T1"]}
    )
    out = tmp_path / "sw"
    (out / "points").mkdir(parents=True)
    write_json(out / "spec.json", {"spec": spec.to_dict()})  # as the killed run left it
    for c in spec.configs():  # every point already done: the resume computes nothing
        (out / "points" / f"{point_key(c)}.json").write_text(json.dumps({"status": "ok"}))
    stale = out / "points" / ".0123456789abcdef.json.x1y2.tmp"
    stale.write_text('{"half": ')
    r = run_sweep(spec, out, workers=1, progress=False)
    assert r.skipped == 1 and r.done == 0 and not stale.exists()


@pytest.mark.slow  # spawned workers import flowsim (10-30 s on a loaded 2-core machine): run with -m slow
def test_a_killed_worker_does_not_abandon_the_sweep(tmp_path, monkeypatch):
    """One point kills its worker once: the lane gets a new worker and every point is recorded; a
    point that kills every worker is recorded failed after `WORKER_DEATHS` tries."""
    monkeypatch.setenv("FLOWSIM_TEST_MARKERS", str(tmp_path))
    todo = [(f"k{lr}", Config(n=12, batch_size=4, steps=10, lr=lr)) for lr in (0.1, 0.2, 0.3)]
    got: dict[str, dict] = {}
    _run_pool(todo, ("T1",), 1, lambda key, config, rec: got.__setitem__(key, rec), task=dies_once_task)
    assert sorted(got) == ["k0.1", "k0.2", "k0.3"] and all(r["status"] == "ok" for r in got.values())
    assert (tmp_path / "died-0.2").exists()
    assert int((tmp_path / "died-0.2").read_text()) != got["k0.2"]["pid"]  # redone by a fresh worker
    got.clear()
    _run_pool(todo[:1], ("T1",), 1, lambda key, config, rec: got.__setitem__(key, rec), task=always_dies_task)
    assert got["k0.1"]["status"] == "failed" and "worker process died 2 times" in got["k0.1"]["reason"]


# ---------------------------------------------------------------- killing the sweep: no orphans
_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from flowsim import Config
    from flowsim._cli_guard import run_interruptibly
    from flowsim._sweep_run import _run_pool
    from tests.test_faults import sleepy_task
    todo = [(f"k{{lr}}", Config(n=12, batch_size=4, steps=10, lr=lr, m=8 + 8 * i)) for i, lr in enumerate((0.1, 0.2))]
    run_interruptibly(_run_pool, todo, ("T1",), 2, lambda *a: None, task=sleepy_task)
    """
)


def _stderr(child: subprocess.Popen) -> str:
    assert child.stderr is not None
    return child.stderr.read().decode()


def _session(sid: int) -> list[int]:
    """Pids of the live (non-zombie) processes of session `sid`."""
    out = []
    for d in pathlib.Path("/proc").iterdir():
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if d.name.isdigit() and int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(d.name))
    return out


@pytest.mark.slow  # as above: the workers must have started before the kill
@pytest.mark.parametrize("how", ["SIGKILL", "Ctrl-C"])
def test_killing_a_sweep_ends_its_workers(how, tmp_path):
    env = {**os.environ, "FLOWSIM_TEST_MARKERS": str(tmp_path)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(root=str(ROOT))],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own session: every process it starts is found by session id
    )
    sid = child.pid
    try:
        deadline = time.time() + 60
        while len(list(tmp_path.glob("worker-*"))) < 2 and time.time() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert len(list(tmp_path.glob("worker-*"))) == 2, _stderr(child) if child.poll() else ""
        if how == "SIGKILL":
            os.kill(child.pid, signal.SIGKILL)
        else:
            os.killpg(sid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground group
        code = child.wait(timeout=10)
        deadline = time.time() + 8
        while _session(sid) and time.time() < deadline:
            time.sleep(0.1)
        assert _session(sid) == [], "processes outlived the killed sweep"
        if how == "Ctrl-C":
            assert code == 130
            lines = _stderr(child).splitlines()  # (the resource tracker may add a warning)
            assert "flowsim: error: interrupted by SIGINT; unfinished results were not published" in lines
    finally:
        for pid in _session(sid):
            os.kill(pid, signal.SIGKILL)
        if child.poll() is None:
            child.kill()
        child.wait()
