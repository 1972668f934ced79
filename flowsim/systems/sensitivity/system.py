"""Sensitivity and the loss landscape (Hahn & Rofin, ACL 2024) as a flowsim system."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

from ..._config import Config
from ..._events import Event
from ..._experiment import LossBelow
from ..._problem import Problem, make_problem
from ..._results import RunData
from ..._system import AbstractSystem, Measure, Prediction, RunKeys, RunRecord, Setup
from ..._validate import MemoryParts, run_bytes, transformer_params, transformer_values
from ..._verdicts import Verdict
from .config import SensitivityConfig
from .data import TOKEN_DTYPE, SensitivityData, make_data
from .model import init_model, mse_loss
from .observables import SensitivityObserver
from .verdicts import VERDICT_NEEDS, evaluate, final_flow, final_seeds, flow_fit_time, seed_fit_steps

ESCAPE, FITTED = "escape", "fitted"
# Scalars reported at the final state of each run (summary, measures).
FINAL_KEYS = ("loss", "accuracy", "full_accuracy", "as_learned", "pert_sharpness", "blowup", "theta_sq", "tradeoff")


def perturbation_key(keys: RunKeys) -> Array:
    """The key of the perturbation-sharpness draws: `fold_in(keys.test, 1)` (fixed per seed)."""
    return jax.random.fold_in(keys.test, 1)


def loss_events(data: SensitivityData, fit_loss: float, fitted: bool = True) -> tuple[Event, ...]:
    """The flow's events: `escape` (the training MSE falls below half the variance of the training
    targets, i.e. half the loss of the best constant predictor: the end of the plateau) and, with
    `fitted`, `fitted` (the loss falls below `fit_loss`).

    `setup` leaves `fitted` out when the run's terminal `stop_loss` equals `fit_loss`: the stop marks
    the same instant (`flow_fit_time` reads it), and two events on one condition fire together (an
    engine that located only the first of them lost the terminal stop: the flow ran past the target)."""
    dtype = data.y.dtype
    plateau = jnp.var(data.y_train)
    escape = Event(ESCAPE, LossBelow(plateau / 2), "up", "loss < half the plateau (escape)")
    if not fitted:
        return (escape,)
    return (escape, Event(FITTED, LossBelow(jnp.asarray(fit_loss, dtype)), "up", f"loss < {fit_loss:g} (fitted)"))


@eqx.filter_jit
def _table_loss(problem: Problem, data: SensitivityData, params: PyTree) -> Array:
    out = jax.vmap(problem.model(params))(data.bits)
    return jnp.mean(jax.vmap(mse_loss)(out, data.y))


def _final(piece: str, key: str):
    def get(r: RunRecord) -> Any:
        if piece == "flow":
            fin = final_flow(r)
            return None if fin is None else fin.get(key)
        assert r.sgd is not None
        seeds = final_seeds(r.sgd)
        return None if key not in seeds else float(np.nanmedian(seeds[key]))

    return get


def _fit_steps(r: RunRecord) -> np.ndarray:
    assert r.sgd is not None
    return seed_fit_steps(r.sgd, r.config.fit_loss)


def _median_fit_steps(r: RunRecord) -> float | None:
    steps = _fit_steps(r)
    return float(np.median(steps)) if np.all(steps >= 0) else None


def _measures() -> list[Measure]:
    flow, sgd = frozenset({"flow"}), frozenset({"sgd"})
    out = [
        Measure("t_escape", flow, lambda r: r.event_time(ESCAPE), "flow time the loss falls below half the plateau"),
        Measure(
            "t_fitted",
            flow,
            lambda r: flow_fit_time(r, r.config.fit_loss),
            "flow time the loss falls below fit_loss (event or terminal stop)",
        ),
        Measure("flow_lambda_max", flow, _final("flow", "lambda_max"), "flow's top Hessian eigenvalue at its end"),
        Measure(
            "mb_fitted_fraction",
            sgd,
            lambda r: float(np.mean(_fit_steps(r) >= 0)),
            "fraction of minibatch seeds whose loss fell below fit_loss",
        ),
        Measure(
            "mb_fit_steps",
            sgd,
            _median_fit_steps,
            "median steps for the minibatch loss to fall below fit_loss (null unless every seed did)",
        ),
        Measure("mb_lambda_max", sgd, _final("sgd", "lambda_max"), "median top Hessian eigenvalue at the seeds' ends"),
    ]
    for key in FINAL_KEYS:
        out.append(Measure(f"flow_{key}", flow, _final("flow", key), f"flow's {key} at its final state"))
        out.append(Measure(f"mb_{key}", sgd, _final("sgd", key), f"median over minibatch seeds of {key} at their ends"))
    return out


def _leaf_name(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path, simple=True, separator=".")


@final
class SensitivitySystem(AbstractSystem):
    """Boolean functions of n bits fitted by a post-LN transformer with MSE (Hahn & Rofin, ACL 2024)."""

    name: ClassVar[str] = "sensitivity"
    summary: ClassVar[str] = (
        "Boolean functions of n bits (parity, majority, first, mean, random) with a post-LN transformer "
        "(Hahn & Rofin, ACL 2024): sensitivity, sharpness and LayerNorm blow-up"
    )
    config_type: ClassVar[type] = SensitivityConfig
    verdict_needs: ClassVar[Mapping[str, frozenset[str]]] = VERDICT_NEEDS
    predictions: ClassVar[Mapping[str, Prediction]] = {}
    smoke: ClassVar[Mapping[str, Any]] = {
        "target": "first",
        "n": 3,
        "layers": 1,
        "heads": 1,
        "d_model": 8,
        "mlp_hidden": 8,
        "sharpness_draws": 4,
        "lr": 0.1,
        "steps": 100,
        "n_save_log": 10,
        "n_save_lin": 10,
        "batch_size": 4,
        "sgd_seeds": 2,
    }

    def train_size(self, task: SensitivityConfig) -> int:
        return task.train_size

    def memory_bytes(self, config: Config) -> float:
        """A generous estimate of the bytes a run holds at once (checked by the CLI before any work;
        `flowsim._validate.run_bytes`): the table of 2^n inputs, the transformer's gradients, and the
        observer's forward passes on the training rows and the table plus its perturbation sharpness
        (all 2 x `sharpness_draws` perturbed copies of the parameters and of a training forward pass
        at once, vmapped)."""
        t: SensitivityConfig = config.task
        N, m = 2**t.n, t.train_size
        P = transformer_params(tokens_in=2 + t.n, d=t.d_model, mlp=t.mlp_hidden, layers=t.layers, out=1)
        g, f = (
            transformer_values(
                length=t.n, d=t.d_model, heads=t.heads, mlp=t.mlp_hidden, layers=t.layers, out=1, forward=forward
            )
            for forward in (False, True)
        )
        draws = t.sharpness_draws * (2 if t.sharpness_antithetic else 1)
        observer = (m + N) * f + t.layers * 2 * m * t.n * t.d_model + draws * (2 * P + m * f) + 8 * N
        return run_bytes(config, MemoryParts(P, g, observer, data_bytes=8 * N * (t.n + 4)))

    def setup(self, config: Config, keys: RunKeys, model: Any = None, data: Any = None) -> Setup:
        task: SensitivityConfig = config.task
        dtype = jnp.float64 if config.precision == "float64" else jnp.float32
        if data is None:
            data = make_data(task, keys.data, dtype=dtype)
        data = SensitivityData(
            jnp.asarray(data.bits, TOKEN_DTYPE), jnp.asarray(data.y, dtype), jnp.asarray(data.train_idx, TOKEN_DTYPE)
        )
        if model is None:
            model = init_model(keys.init, task, dtype=dtype)
        model = jax.tree.map(lambda x: jnp.asarray(x, dtype) if eqx.is_inexact_array(x) else x, model)
        problem = make_problem(model, data.x_train, data.y_train, mse_loss)
        observer = SensitivityObserver.build(
            data, perturbation_key(keys), task.sharpness_eps, task.sharpness_draws, task.sharpness_antithetic
        )
        events = loss_events(data, task.fit_loss, fitted=config.stop_loss != task.fit_loss)
        return Setup(config, keys, data, model, problem, observer, events)

    def held_out(self, setup: Setup, params: PyTree, key: Array) -> Array:
        """The MSE over the whole table {0,1}^n (the uniform population; = the training loss when
        training on the full table)."""
        return _table_loss(setup.problem, setup.data, params)

    def initial_arrays(self, setup: Setup) -> dict[str, Any]:
        leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(setup.model, eqx.is_array))[0]
        d: SensitivityData = setup.data
        return {**{_leaf_name(p): x for p, x in leaves}, "bits": d.bits, "y": d.y, "train_idx": d.train_idx}

    def verdicts(self, run: RunRecord) -> list[Verdict]:
        return evaluate(run)

    def measures(self) -> Sequence[Measure]:
        return _measures()

    def summary_extras(self, run: RunRecord) -> dict[str, Any]:
        out: dict[str, Any] = {"final_flow": final_flow(run)}
        if run.sgd is not None:
            out["final_minibatch"] = {k: v.tolist() for k, v in final_seeds(run.sgd).items()}
            out["minibatch_fit_steps"] = seed_fit_steps(run.sgd, run.config.fit_loss).tolist()
        return out

    def figures(self, run: RunData, out_dir: pathlib.Path) -> list[pathlib.Path]:
        from .figures import plot_run

        return plot_run(run, out_dir)


SYSTEM = SensitivitySystem()
