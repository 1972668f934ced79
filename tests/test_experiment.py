"""The composed experiment (`flowsim/experiment.py`) and its results folder (`flowsim/results.py`)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from flowsim.experiment import run_experiment, save_experiment, setup
from flowsim.model import CooccurrenceTransformer
from flowsim.results import load_run
from flowsim.tasks.cooccurrence import CooccurrenceData


@pytest.fixture(scope="module")
def run_dir(small_setup, tmp_path_factory):
    result = run_experiment(small_setup.config, setup_=small_setup)
    out = tmp_path_factory.mktemp("run")
    save_experiment(result, out)
    return out, result


def test_results_folder_layout(run_dir):
    out, result = run_dir
    run = load_run(out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["n"] == 12 and cfg["seed"] == 0 and "jax" in cfg["versions"]
    for name in ("loss", "loss_type1", "loss_type4", "min_margin", "score_12", "score_21", "score_31",
                 "score_32", "S2_over_S3", "R", "G1", "N", "attn_disp"):
        assert run.flow[name].shape == run.flow["t"].shape
        assert run.gd[name].shape == run.gd["t"].shape
        assert run.sgd[name].shape == (4,) + run.sgd["t"].shape
    np.testing.assert_allclose(run.flow["t"], run.gd["t"])
    assert run.summary["phase1_end_time"] == pytest.approx(result.flow.event_time)
    names = [v["name"] for v in run.summary["verdicts"]]
    assert "balance.R" in names and "compare.flow_sgd" in names
    assert all(v["status"] in ("PASS", "FAIL", "INFO") for v in run.summary["verdicts"])
    assert set(result.timings) >= {"flow", "flow_compile", "gd", "sgd"}
    assert np.isfinite(result.gen_loss["flow"])


def test_initial_state_round_trip(run_dir, small_config):
    """Restarting from initial_state.npz reproduces the run's initial observables exactly."""
    out, result = run_dir
    z = np.load(out / "initial_state.npz")
    assert z["tokens"].dtype.kind == "i" and set(np.unique(z["kind"])) == {1, 2, 3, 4}
    model = CooccurrenceTransformer(*(jnp.asarray(z[k]) for k in ("W_Q", "W_K", "W_V", "W", "a")))
    data = CooccurrenceData(jnp.asarray(z["tokens"]), jnp.asarray(z["y"]), jnp.asarray(z["kind"]))
    s = setup(small_config, model, data)
    assert float(s.problem.loss(s.problem.params0)) == pytest.approx(result.flow.obs["loss"][0], rel=1e-13)


def test_same_config_same_numbers(run_dir, small_config):
    _, result = run_dir
    again = setup(small_config)
    assert float(again.problem.loss(again.problem.params0)) == result.flow.obs["loss"][0]


def test_float32_and_trainable_readout(small_config):
    """precision="float32" runs in float32 end to end; train_a=True makes `a` move."""
    from flowsim.experiment import run_flow

    s = setup(small_config.replace(precision="float32", train_a=True))
    assert s.problem.params0.a.dtype == jnp.float32
    flow = run_flow(s, rtol=1e-4, atol=1e-6)
    assert flow.ok and flow.obs["loss"].dtype == np.float32
    assert flow.obs["loss"][-1] < flow.obs["loss"][0]
    assert not np.allclose(np.asarray(flow.params.a), np.asarray(s.problem.params0.a))
