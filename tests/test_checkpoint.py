"""Checkpoints (`flowsim.Checkpoint`): a discrete run split at a checkpoint, written to disk, read back
and resumed equals the run in one piece (GD, GD with momentum, SGD over seeds, optax Adam); the file
round trip; atomic writes; one-line errors on a mismatched `like` or `start`."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowsim import Event, gradient_descent, sgd
from flowsim._checkpoint import Checkpoint, checkpoint_info, load_checkpoint, save_checkpoint
from flowsim._optax import optax_descent

from .test_early_stop import _observe, problem

KEY = jax.random.PRNGKey(0)
LR = 0.05
STEPS = np.arange(0, 61, 10)
K = 30  # the checkpoint step
__all__ = ["problem"]  # the shared linear-regression fixture of tests/test_early_stop.py


RUNS = {
    "gd": lambda p, steps, **kw: gradient_descent(p, LR, steps, _observe, **kw),
    "gd-momentum": lambda p, steps, **kw: gradient_descent(
        p, LR, steps, _observe, momentum=0.8, weight_decay=0.01, **kw
    ),
    "sgd": lambda p, steps, **kw: sgd(p, LR, steps, _observe, batch_size=3, key=KEY, seeds=3, momentum=0.5, **kw),
    "adam": lambda p, steps, **kw: optax_descent(p, optax.adam(LR), LR, steps, _observe, **kw),
}


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-16)


def _shapes(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


@pytest.mark.parametrize("name", list(RUNS))
def test_split_run_resumed_from_disk_equals_the_run_in_one_piece(problem, tmp_path, name):
    run = RUNS[name]
    whole = run(problem, STEPS, checkpoint_steps=[K])
    ck = whole.checkpoints[K]
    assert list(whole.checkpoints) == [K] and ck.step == K and ck.time == pytest.approx(K * LR, rel=1e-15)
    i = int(np.flatnonzero(STEPS == K)[0])
    np.testing.assert_array_equal(ck.params.w, whole.obs["w"][..., i, :])  # the params at step K
    assert ck.kind == {"gd-momentum": "gd", "adam": "optax"}.get(name, name) and (ck.state is None) == (name == "gd")
    path = save_checkpoint(tmp_path / "ck.eqx", ck, {"run": name})
    loaded = load_checkpoint(path, _shapes(ck) if name == "sgd" else ck)
    assert (loaded.step, loaded.time, loaded.kind) == (ck.step, ck.time, ck.kind)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(ck), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    rest = run(problem, STEPS[i:], start=loaded)
    np.testing.assert_array_equal(rest.steps, STEPS[i:])
    np.testing.assert_allclose(rest.ts, whole.ts[i:], rtol=1e-15)
    # The same loop body from the same carry: bitwise on CPU (round-off elsewhere, other fusions).
    same = np.testing.assert_array_equal if jax.default_backend() == "cpu" else _close
    same(rest.obs["loss"], whole.obs["loss"][..., i:])
    same(rest.obs["w"], whole.obs["w"][..., i:, :])
    same(rest.params.w, whole.params.w)
    np.testing.assert_array_equal(rest.diverged_step, whole.diverged_step)


def test_checkpoint_file_header_and_step_zero(problem, tmp_path):
    sol = gradient_descent(
        problem, LR, STEPS, _observe, momentum=0.8, weight_decay=0.01, checkpoint_steps=np.array([0, 60])
    )
    first, last = sol.checkpoints[0], sol.checkpoints[60]
    np.testing.assert_array_equal(first.params.w, problem.params0.w)
    np.testing.assert_array_equal(first.state.w, np.zeros(3))  # the velocity starts at 0
    np.testing.assert_array_equal(last.params.w, sol.params.w)
    assert int(last.status["diverged_step"]) == -1 and int(last.status["stop_step"]) == -1

    @dataclasses.dataclass
    class Cfg:
        lr: float = LR

    save_checkpoint(tmp_path / "last.eqx", last, {"config": Cfg(), "seed": np.int64(3), "scale": np.float64(0.5)})
    info = checkpoint_info(tmp_path / "last.eqx")
    assert (info["step"], info["kind"]) == (60, "gd") and info["time"] == pytest.approx(3.0)
    assert info["meta"] == {"config": {"lr": LR}, "seed": 3, "scale": 0.5}
    assert set(info["versions"]) == {"jax", "equinox", "diffrax", "optax", "flowsim"}
    assert [leaf["path"] for leaf in info["leaves"]][:2] == [".params.w", ".state.w"]
    assert info["leaves"][0] == {"path": ".params.w", "shape": [3], "dtype": "float64"}


def test_write_is_atomic(tmp_path, monkeypatch):
    ck = Checkpoint({"w": jnp.arange(3.0)}, None, 5, 0.25, "gd")
    path = save_checkpoint(tmp_path / "ck.eqx", ck)
    before = path.read_bytes()
    with pytest.raises(FileNotFoundError):
        save_checkpoint(tmp_path / "missing" / "ck.eqx", ck)

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, Checkpoint({"w": jnp.zeros(3)}, None, 9, 0.5, "gd"))
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "new.eqx", ck)
    assert sorted(os.listdir(tmp_path)) == ["ck.eqx"]  # no temporary file, no partial file
    assert path.read_bytes() == before


def test_mismatched_like_is_a_one_line_error(tmp_path):
    ck = Checkpoint({"w": jnp.arange(3.0)}, {"v": jnp.zeros(3)}, 5, 0.25, "gd")
    path = save_checkpoint(tmp_path / "ck.eqx", ck)
    cases = [
        (Checkpoint({"w": jnp.zeros(4)}, {"v": jnp.zeros(3)}, 0, 0.0, "gd"), r"\['w'\].*\(3,\).*\(4,\)"),
        (Checkpoint({"w": jnp.zeros(3, jnp.float32)}, {"v": jnp.zeros(3)}, 0, 0.0, "gd"), "float64.*float32"),
        (Checkpoint({"w": jnp.zeros(3)}, None, 0, 0.0, "gd"), "2 leaves in the file vs 1 in like"),
        (Checkpoint({"w": jnp.zeros(3)}, {"v": jnp.zeros(3)}, 0, 0.0, "sgd"), "kind 'gd'.*'sgd'"),
    ]
    for like, what in cases:
        with pytest.raises(ValueError, match=what) as err:
            load_checkpoint(path, like)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "junk.eqx").write_bytes(b"not a checkpoint\n")
    with pytest.raises(ValueError, match=r"junk\.eqx: not a flowsim checkpoint"):
        load_checkpoint(tmp_path / "junk.eqx", ck)
    with pytest.raises(TypeError, match="Checkpoint"):
        load_checkpoint(path, ck.params)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="kind"):
        Checkpoint(None, None, 0, 0.0, "adam")


def test_bad_checkpoint_steps_and_start_are_rejected(problem):
    with pytest.raises(ValueError, match="checkpoint step 35 is not one of the recorded steps"):
        gradient_descent(problem, LR, STEPS, _observe, checkpoint_steps=[30, 35])
    ck = Checkpoint(problem.params0, None, 10, 0.5, "gd")
    with pytest.raises(ValueError, match=r"starting at start\.step=10"):
        gradient_descent(problem, LR, STEPS, _observe, start=ck)
    with pytest.raises(ValueError, match="'gd' checkpoint, but this is a 'optax' run"):
        optax_descent(problem, optax.sgd(LR), LR, STEPS[1:], _observe, start=ck)
    with pytest.raises(ValueError, match=r"start does not fit this run: leaf .params.w \(3,\)"):
        sgd(problem, LR, STEPS[1:], _observe, batch_size=2, key=KEY, seeds=2, start=dataclasses.replace(ck, kind="sgd"))
    with pytest.raises(ValueError, match=r"\.state"):
        gradient_descent(problem, LR, STEPS[1:], _observe, momentum=0.5, start=ck)


def test_a_stopped_run_stays_stopped_when_resumed(problem):
    low = Event("low", lambda t, p, pr: pr.loss(p) - 0.6, direction="down")
    whole = gradient_descent(problem, LR, STEPS, _observe, stop=low, checkpoint_steps=[K])
    assert 0 < int(whole.stop_step) < K
    ck = whole.checkpoints[K]
    assert int(ck.status["stop_step"]) == int(whole.stop_step)
    rest = gradient_descent(problem, LR, STEPS[3:], _observe, stop=low, start=ck)
    assert int(rest.stop_step) == int(whole.stop_step) and np.all(np.isnan(rest.obs["loss"]))
    np.testing.assert_array_equal(rest.params.w, whole.params.w)
    with pytest.raises(ValueError, match="stopped run"):
        gradient_descent(problem, LR, STEPS[3:], _observe, start=ck)
