"""Continuous models vs SGD (`flowsim.compare`), the overlay plots, and the public API end to end."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsim
from flowsim import Curve, compare, distance_to_sgd, plot_distance_vs_lr, plot_overlay
from flowsim.cli import main
from flowsim.systems.cooccurrence import PHASE1_EVENT

from .conftest import SMALL


class _Linear(eqx.Module):
    w: jax.Array

    def __call__(self, x):
        return self.w @ x


class _Preconditioned(flowsim.AbstractFlow):
    """A user dynamics: gradient flow preconditioned by a fixed diagonal."""

    diag: jax.Array

    def vector_field(self, t, params, problem):
        return _Linear(-self.diag * jax.grad(problem.loss)(params).w)


def test_custom_problem_and_dynamics_through_the_public_api(tmp_path):
    x = jax.random.normal(jax.random.PRNGKey(0), (24, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5])
    problem = flowsim.make_problem(_Linear(jnp.zeros(3)), x, y, loss_fn=lambda o, t: 0.5 * (o - t) ** 2)
    observe = lambda t, p, pr: {"loss": pr.loss(p), "w": p.w}
    steps = flowsim.save_steps(1000, 10, 5)
    flow = flowsim.integrate(_Preconditioned(jnp.ones(3)), problem, steps * 0.01, observe)
    gf = flowsim.integrate(flowsim.GradientFlow(), problem, steps * 0.01, observe)
    np.testing.assert_allclose(flow.obs["loss"], gf.obs["loss"], rtol=1e-5, atol=1e-12)
    with pytest.raises(TypeError, match="key"):
        flowsim.sgd(problem, 0.01, steps, observe, batch_size=6, seeds=4)  # the minibatch key is required
    sgd = flowsim.sgd(problem, 0.01, steps, observe, batch_size=6, seeds=4, key=jax.random.PRNGKey(1))
    assert sgd.obs["w"].shape == (4, len(steps), 3)
    again = flowsim.sgd(problem, 0.01, steps, observe, batch_size=6, seeds=4, key=jax.random.PRNGKey(1))
    np.testing.assert_array_equal(again.obs["w"], sgd.obs["w"])
    np.testing.assert_allclose(flow.params.w, [1.0, -2.0, 0.5], atol=2e-2)
    curves = {
        "flow": Curve("flow", flow.ts, flow.obs, marks=((1.0, "a mark"),)),
        "sgd": Curve("SGD", sgd.ts, sgd.obs, ensemble=True),
    }
    assert plot_overlay(curves, ["loss"], tmp_path / "o.png").stat().st_size > 1000


def test_compare_distance_and_cli(small_config, small_setup, tmp_path, capsys):
    c = small_config  # the shapes the session has compiled already
    curves = compare(c, ("gf", "igr"), s=small_setup)
    assert {"gf", "igr", "gd", "sgd"} <= set(curves) and curves["sgd"].obs["loss"].shape[0] == c.sgd_seeds
    # The system's event (end of Phase 1) is located on the flows and carried as a mark.
    for name in ("gf", "igr"):
        ((t1, label),) = curves[name].marks
        assert label == PHASE1_EVENT.label and 0 < t1 < c.t_final
    assert curves["gd"].marks == curves["sgd"].marks == ()
    dist = distance_to_sgd(curves)
    assert set(dist) == {"gf", "igr", "gd"} and all(np.isfinite(v) and v >= 0 for v in dist.values())
    rows = [
        {"lr": lr, "model": m, "distance_loss_in_sgd_se": d}
        for lr, d0 in ((0.01, 1.0), (0.1, 5.0))
        for m, d in (("gf", d0), ("sme", d0 / 2))
    ]
    assert plot_distance_vs_lr(rows, tmp_path / "d.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="unknown dynamics"):
        compare(c, ("rk4",))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    out = tmp_path / "cmp"
    same: list[str] = []  # the shapes compiled above: no recompilation
    assert main(["compare", *flags, *same, "--dynamics", "gf", "--out", str(out)]) == 0
    assert (out / "overlay.png").is_file() and (out / "gf.npz").is_file() and (out / "sgd.npz").is_file()
    assert "SGD standard errors" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["system"] == "cooccurrence" and saved["steps"] == SMALL["steps"] and saved["m1"] == SMALL["m1"]
    with pytest.raises(SystemExit) as e:  # the system named explicitly; an unknown observable
        main(["compare", "cooccurrence", *flags, *same, "--dynamics", "gf", "--keys", "nope", "--out", str(out) + "2"])
    assert e.value.code == 2
    assert "invalid keys=['nope']: not observables" in capsys.readouterr().err


def test_distance_is_none_for_a_run_that_did_not_reach_every_save_time():
    t = np.arange(4.0)
    sgd = Curve("sgd", t, {"loss": np.array([[1.0, 0.9, 0.8, 0.7], [1.0, 0.8, 0.7, 0.6]])}, ensemble=True)
    full = Curve("gf", t, {"loss": np.array([1.0, 0.85, 0.75, 0.65])})
    early = Curve("stopped", t, {"loss": np.array([1.0, 0.85, np.inf, np.inf])})
    dist = distance_to_sgd({"sgd": sgd, "gf": full, "stopped": early})
    assert dist["gf"] == pytest.approx(0.0) and dist["stopped"] is None
