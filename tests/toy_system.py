"""A toy system for the engine's tests (not shipped): linear regression towards a teacher.

y_i = <w*, x_i>, model f(x) = <w, x>, squared loss. Its gradient flow is linear with a closed form,
so the contract test can also check the engine's numbers. Everything here goes through the public
API only (`flowsim.AbstractSystem`, `flowsim.field`, ...): no engine code knows about it.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

import flowsim


@final
class Linear(eqx.Module):
    w: Float[Array, " k"]

    def __call__(self, x: Float[Array, " k"]) -> Float[Array, ""]:
        return self.w @ x


@final
@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """Linear regression: `n` samples in `k` dimensions, initial weights times `init_scale`."""

    n: int = flowsim.field(16, "training samples", low=1, high=10_000, shape=True)
    k: int = flowsim.field(3, "input dimension", low=1, high=1000, shape=True)
    init_scale: float = flowsim.field(1.0, "initial weight scale", low=0.0, low_open=True, high=100.0)
    loss_target: float = flowsim.field(
        0.05, "the 'fitted' event fires when the loss falls below this", low=0.0, low_open=True, high=1e6
    )

    def __post_init__(self) -> None:
        flowsim.check_fields(self)


@final
class Observer(eqx.Module):
    w_star: Array

    def __call__(self, t: Array, params: PyTree, problem: flowsim.Problem) -> dict[str, Array]:
        model = problem.model(params)
        return {
            "loss": problem.loss(params),
            "w_norm": jnp.linalg.norm(model.w),
            "dist": jnp.linalg.norm(model.w - self.w_star),
        }


def _verdicts(run: flowsim.RunRecord) -> list[flowsim.Verdict]:
    flow = run.obs("flow")
    assert flow is not None
    out = [
        flowsim.verdict(
            "toy.loss_decreases",
            "the flow's loss never increases",
            {"max_increase": float(np.max(np.diff(flow["loss"])))},
            "max increase <= 1e-10",
            bool(np.max(np.diff(flow["loss"])) <= 1e-10),
        )
    ]
    t_fit = run.event_time("fitted")
    out.append(
        flowsim.verdict(
            "toy.fitted",
            "the loss falls below its target",
            {"t_fitted": t_fit},
            "the 'fitted' event fires",
            t_fit is not None,
        )
    )
    gd = run.obs("gd")
    if gd is not None:
        gap = flowsim.rel_gap(gd["loss"], flow["loss"], pointwise=True)
        out.append(flowsim.verdict("toy.gd_tracks_flow", "GD tracks the flow", {"gap": gap}, "gap <= 0.1", gap <= 0.1))
    sgd = run.obs("sgd")
    if sgd is not None:
        spread = float(np.nanmax(np.nanstd(sgd["loss"], 0)))
        out.append(flowsim.verdict("toy.sgd_spread", "SGD seeds differ", {"spread": spread}, "figures only", None))
    return out


@final
class ToySystem(flowsim.AbstractSystem):
    """Linear regression towards a teacher (tests only)."""

    name: ClassVar[str] = "toy-linreg"
    summary: ClassVar[str] = "linear regression towards a teacher (test system)"
    config_type: ClassVar[type] = ToyConfig
    verdict_needs: ClassVar[Mapping[str, frozenset[str]]] = {
        "toy.loss_decreases": frozenset({"flow"}),
        "toy.fitted": frozenset({"flow"}),
        "toy.gd_tracks_flow": frozenset({"flow", "gd"}),
        "toy.sgd_spread": frozenset({"flow", "sgd"}),
    }
    predictions: ClassVar[Mapping[str, flowsim.Prediction]] = {}
    smoke: ClassVar[Mapping[str, Any]] = {
        "n": 16,
        "k": 3,
        "lr": 0.05,
        "steps": 100,
        "n_save_log": 10,
        "n_save_lin": 10,
        "batch_size": 4,
        "sgd_seeds": 2,
    }

    def train_size(self, task: ToyConfig) -> int:
        return task.n

    def setup(
        self, config: flowsim.Config, keys: flowsim.RunKeys, model: Any = None, data: Any = None
    ) -> flowsim.Setup:
        task: ToyConfig = config.task
        dtype = jnp.float64 if config.precision == "float64" else jnp.float32
        kx, kw = jax.random.split(keys.data)
        if data is None:
            x = jax.random.normal(kx, (task.n, task.k), dtype)
            w_star = jax.random.normal(kw, (task.k,), dtype)
            data = {"x": x, "y": x @ w_star, "w_star": w_star}
        if model is None:
            model = Linear(task.init_scale * jax.random.normal(keys.init, (task.k,), dtype))
        problem = flowsim.make_problem(model, data["x"], data["y"], flowsim.squared_loss)
        fitted = flowsim.LossBelow(jnp.asarray(task.loss_target, dtype))
        event = flowsim.Event("fitted", fitted, "up", "loss below target")
        return flowsim.Setup(config, keys, data, model, problem, Observer(data["w_star"]), (event,))

    def held_out(self, setup: flowsim.Setup, params: PyTree, key: Array) -> Array:
        x = jax.random.normal(key, (64, setup.config.k), jax.tree.leaves(params)[0].dtype)
        w = setup.problem.model(params).w
        return 0.5 * jnp.mean((x @ (w - setup.data["w_star"])) ** 2)

    def initial_arrays(self, setup: flowsim.Setup) -> dict[str, Any]:
        return {"w": setup.model.w, **setup.data}

    def verdicts(self, run: flowsim.RunRecord) -> list[flowsim.Verdict]:
        return _verdicts(run)

    def measures(self) -> Sequence[flowsim.Measure]:
        return [
            flowsim.Measure("loss_T", frozenset({"flow"}), lambda r: r.flow.obs["loss"][-1], "flow loss at T"),
            flowsim.Measure(
                "t_fitted",
                frozenset({"flow"}),
                lambda r: r.event_time("fitted"),
                "time the loss falls below its target",
            ),
        ]

    def summary_extras(self, run: flowsim.RunRecord) -> dict[str, Any]:
        return {"final_loss": float(run.flow.obs["loss"][-1])} if run.flow is not None else {}

    def figures(self, run: flowsim.RunData, out_dir: pathlib.Path) -> list[pathlib.Path]:
        return [flowsim.plot_comparison(run, {"loss": "loss", "dist": "|w - w*|"}, out_dir / "toy.png", ncols=2)]


SYSTEM = ToySystem()
