"""The composed experiment (`flowsim.run_experiment`, `flowsim.save_experiment`) on the co-occurrence
system, and its results folder (`flowsim.load_run`)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowsim import RunKeys, load_run, run_experiment, run_flow, save_experiment, setup, step_grid
from flowsim.systems.cooccurrence import PHASE1_END, CooccurrenceData, CooccurrenceTransformer


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
    assert cfg["config"]["n"] == 12 and cfg["config"]["system"] == "cooccurrence" and cfg["seed"] == 0
    assert "jax" in cfg["versions"]
    assert run.config == cfg["config"] and run.system == "cooccurrence"  # RunData.config: the flat config
    for name in (
        "loss",
        "loss_type1",
        "loss_type4",
        "min_margin",
        "score_12",
        "score_21",
        "score_31",
        "score_32",
        "S2_over_S3",
        "R",
        "G1",
        "N",
        "attn_disp",
    ):
        assert run.flow[name].shape == run.flow["t"].shape
        assert run.gd[name].shape == run.gd["t"].shape
        assert run.sgd[name].shape == (4, *run.sgd["t"].shape)
    np.testing.assert_allclose(run.flow["t"], run.gd["t"])
    np.testing.assert_array_equal(run.gd["step"], step_grid(result.setup.config))
    t1 = result.flow.events[PHASE1_END].time
    assert result.flow.events[PHASE1_END].fired and result.flow.event_time == t1
    assert run.summary["system"] == "cooccurrence"
    assert run.summary["phase1_end_time"] == pytest.approx(t1)
    assert run.summary["events"][PHASE1_END]["time"] == pytest.approx(t1)
    assert run.summary["events"][PHASE1_END]["label"] == "end of Phase 1"
    assert run.summary["at_phase1_end"]["min_margin"] == pytest.approx(0.0, abs=1e-6)
    assert run.event_marks() == [(pytest.approx(t1), "end of Phase 1")]
    names = [v["name"] for v in run.summary["verdicts"]]
    assert "balance.R" in names and "compare.flow_sgd" in names
    assert all(v["status"] in ("PASS", "FAIL", "INFO") for v in run.summary["verdicts"])
    assert set(result.timings) >= {"flow", "flow_compile", "gd", "sgd"}
    assert set(result.held_out) == {"flow", "gd", "sgd_mean"} and run.summary["held_out"] == result.held_out
    assert all(np.isfinite(v) and v > 0 for v in result.held_out.values())
    assert "gen_loss" not in run.summary and "generalization_loss" not in run.summary


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


def test_random_streams_come_from_the_seed(small_setup, small_config):
    """Every stream is split from PRNGKey(seed) into (data, init, sgd, test, sde); another seed
    draws another training set and another init."""
    keys = jax.random.split(jax.random.PRNGKey(small_config.seed), 5)
    for i, name in enumerate(("data", "init", "sgd", "test", "sde")):
        np.testing.assert_array_equal(getattr(small_setup.keys, name), keys[i])
        np.testing.assert_array_equal(getattr(RunKeys.from_seed(small_config.seed), name), keys[i])
    other = setup(small_config.replace(seed=1))
    assert not np.array_equal(other.data.tokens, small_setup.data.tokens)
    assert not np.allclose(other.model.W_Q, small_setup.model.W_Q)
    assert [e.name for e in small_setup.events] == [PHASE1_END]


def test_unknown_piece_is_refused(small_setup):
    with pytest.raises(ValueError, match=r"unknown pieces \['adam'\]"):
        run_experiment(small_setup.config, setup_=small_setup, pieces=("flow", "adam"))


def test_float32_and_trainable_readout(small_config):
    """precision="float32" runs in float32 end to end (also with x64 enabled, as in this test
    session, the min-margin event is located); train_a=True makes `a` move."""
    s = setup(small_config.replace(precision="float32", train_a=True))
    assert s.problem.params0.a.dtype == jnp.float32
    flow = run_flow(s, rtol=1e-4, atol=1e-6)
    assert flow.ok and flow.obs["loss"].dtype == np.float32
    hit = flow.events[PHASE1_END]
    assert hit.fired and 0 < hit.time < s.config.t_final and abs(hit.obs["min_margin"]) < 1e-4
    assert flow.obs["loss"][-1] < flow.obs["loss"][0]
    assert not np.allclose(np.asarray(flow.params.a), np.asarray(s.problem.params0.a))
