"""Small symmetric matrices to their spectra (Charton 2022, "What is my math transformer doing?") as
a flowsim system."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

from ..._config import Config
from ..._problem import make_problem
from ..._results import RunData
from ..._system import AbstractSystem, Measure, Prediction, RunKeys, RunRecord, Setup
from ..._validate import MemoryParts, run_bytes, transformer_params, transformer_values
from ..._verdicts import Verdict
from .config import SpectraConfig
from .data import SpectraData, encode, make_data, sigma
from .model import init_model, mse_loss
from .observables import SpectraObserver
from .verdicts import SUMMARY_KEYS, VERDICT_NEEDS, evaluate, final_flow, final_minibatch

FINAL_KEYS = ("loss", "test_loss", *SUMMARY_KEYS, "lambda_max")


def _final(piece: str, key: str) -> Callable[[RunRecord], Any]:
    def get(r: RunRecord) -> Any:
        fin = final_flow(r) if piece == "flow" else final_minibatch(r)
        v = None if fin is None else fin.get(key)
        return None if v is None or not np.isfinite(v) else v

    return get


def _measures() -> list[Measure]:
    flow, sgd = frozenset({"flow"}), frozenset({"sgd"})
    out = [Measure("flow_t_reached", flow, lambda r: r.flow and r.flow.t_reached, "flow time the solve reached")]
    for key in FINAL_KEYS:
        out.append(Measure(f"flow_{key}", flow, _final("flow", key), f"flow's {key} at its final state"))
        out.append(Measure(f"mb_{key}", sgd, _final("sgd", key), f"median over minibatch seeds of {key} at their ends"))
    return out


def _leaf_name(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path, simple=True, separator=".")


def _as_data(data: Any, task: SpectraConfig, dtype: Any) -> SpectraData:
    """Re-encode given data (a `SpectraData` or anything with the matrices `m`) in `dtype`."""
    m = data.m if hasattr(data, "m") else data["m"]
    return encode(jnp.asarray(m, dtype), task)


@final
class SpectraSystem(AbstractSystem):
    """Symmetric n x n matrices to their eigenvalues (and eigenvectors) with a small encoder (Charton 2022)."""

    name: ClassVar[str] = "spectra"
    summary: ClassVar[str] = (
        "small symmetric matrices to their sorted eigenvalues and eigenvectors (Charton 2022): tolerance "
        "accuracy, how failures fail (orthogonality, kappa(Q)), out-of-distribution spectra"
    )
    config_type: ClassVar[type] = SpectraConfig
    verdict_needs: ClassVar[Mapping[str, frozenset[str]]] = VERDICT_NEEDS
    predictions: ClassVar[Mapping[str, Prediction]] = {}
    smoke: ClassVar[Mapping[str, Any]] = {
        "n_train": 32,
        "n_test": 64,
        "heads": 1,
        "d_model": 8,
        "mlp_hidden": 8,
        "lr": 0.05,
        "steps": 40,
        "n_save_log": 5,
        "n_save_lin": 5,
        "batch_size": 8,
        "sgd_seeds": 2,
    }

    def train_size(self, task: SpectraConfig) -> int:
        return task.n_train

    def memory_bytes(self, config: Config) -> float:
        """A generous estimate of the bytes a run holds at once (checked by the CLI before any work;
        `flowsim._validate.run_bytes`): the training and held-out matrices with their features and
        targets (and the eigendecompositions that make them), the encoder's gradients, and the
        observer's forward passes on both sets plus its per-matrix metrics (eigh, SVD, sorting)."""
        t: SpectraConfig = config.task
        L, F, n2 = t.tokens, 1 + 2 * t.n, t.n * t.n
        extra = (F + 1) * t.d_model  # the feature embedding
        P = transformer_params(tokens_in=0, d=t.d_model, mlp=t.mlp_hidden, layers=t.layers, out=t.out_dim, extra=extra)
        g, f = (
            L * F
            + transformer_values(
                length=L, d=t.d_model, heads=t.heads, mlp=t.mlp_hidden, layers=t.layers, out=t.out_dim, forward=forward
            )
            for forward in (False, True)
        )
        matrices = t.n_train + t.n_test
        observer = matrices * f + t.n_test * (16 * n2 + 4 * t.out_dim)
        data = 8 * matrices * 4 * (n2 + L * F + t.out_dim)  # generation and encoding copies
        return run_bytes(config, MemoryParts(P, g, observer, data_bytes=data))

    def setup(self, config: Config, keys: RunKeys, model: Any = None, data: Any = None) -> Setup:
        task: SpectraConfig = config.task
        dtype = jnp.float64 if config.precision == "float64" else jnp.float32
        data = make_data(task, keys.data, task.n_train, dtype) if data is None else _as_data(data, task, dtype)
        if model is None:
            model = init_model(keys.init, task, dtype=dtype)
        model = jax.tree.map(lambda x: jnp.asarray(x, dtype) if eqx.is_inexact_array(x) else x, model)
        problem = make_problem(model, data.x, data.y, mse_loss)
        test = make_data(task, keys.test, task.n_test, dtype)
        observer = SpectraObserver(test, sigma(task.n, task.scale_a), task.tol)
        return Setup(config, keys, data, model, problem, observer)

    def held_out(self, setup: Setup, params: PyTree, key: Array) -> Array:
        """The MSE on the held-out matrices of the observer (the test key's)."""
        obs: SpectraObserver = setup.observer  # type: ignore[assignment]
        model = setup.problem.model(params)
        return jnp.mean(jax.vmap(mse_loss)(jax.vmap(model)(obs.test.x), obs.test.y))

    def initial_arrays(self, setup: Setup) -> dict[str, Any]:
        leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(setup.model, eqx.is_array))[0]
        d: SpectraData = setup.data
        return {**{_leaf_name(p): x for p, x in leaves}, "m": d.m, "x": d.x, "y": d.y}

    def verdicts(self, run: RunRecord) -> list[Verdict]:
        return evaluate(run)

    def measures(self) -> Sequence[Measure]:
        return _measures()

    def summary_extras(self, run: RunRecord) -> dict[str, Any]:
        return {"final_flow": final_flow(run), "final_minibatch": final_minibatch(run)}

    def figures(self, run: RunData, out_dir: pathlib.Path) -> list[pathlib.Path]:
        from .figures import plot_run

        return plot_run(run, out_dir)


SYSTEM = SpectraSystem()
