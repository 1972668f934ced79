"""Simplified-proxy faithfulness on bounded Dyck languages (Friedman et al., ICML 2024) as a system."""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

from ..._config import Config
from ..._dyck import DyckLanguage
from ..._problem import Problem, make_problem
from ..._results import RunData
from ..._system import AbstractSystem, Measure, Prediction, RunKeys, RunRecord, Setup
from ..._validate import MemoryParts, run_bytes, transformer_params, transformer_values
from ..._verdicts import Verdict
from .config import DyckProxiesConfig
from .data import DyckProxiesData, DyckSplit, make_data
from .model import DyckLM, init_model, lm_loss
from .observables import DyckObserver
from .verdicts import VERDICT_NEEDS, evaluate


def _dtype(config: Config) -> Any:
    return jnp.float64 if config.precision == "float64" else jnp.float32


def vocab_of(task: DyckProxiesConfig) -> int:
    return DyckLanguage(task.k, task.max_depth).vocab_size


@functools.lru_cache(maxsize=8)
def template(config: Config) -> DyckLM:
    """The non-trainable part of the config's model (combine with trained parameters)."""
    model = init_model(RunKeys.from_seed(config.seed).init, config.task, vocab_of(config.task), _dtype(config))
    return eqx.partition(model, eqx.is_inexact_array)[1]


@eqx.filter_jit
def _split_loss(problem: Problem, split: DyckSplit, params: PyTree) -> Array:
    logits = jax.vmap(problem.model(params))(split.tokens)
    return jnp.mean(jax.vmap(problem.loss_fn)(logits, split.targets))


def _verdict_figure(name: str, key: str):
    def get(r: RunRecord) -> Any:
        v = r.verdicts.get(name)
        return None if v is None else v.figures.get(key)

    return get


def _measures() -> list[Measure]:
    flow, sgd = frozenset({"flow"}), frozenset({"sgd"})
    return [
        Measure(
            "flow_accuracy", flow, _verdict_figure("fit.flow", "accuracy"), "flow's final training closing accuracy"
        ),
        Measure("flow_t_reached", flow, _verdict_figure("fit.flow", "t_reached"), "flow time reached"),
        Measure(
            "flow_illusion_families",
            flow,
            _verdict_figure("illusion.flow", "illusion_families"),
            "families whose chosen proxy loses >= 4 points of agreement on the deep split (flow model)",
        ),
        Measure(
            "mb_illusion_fraction",
            sgd,
            _verdict_figure("illusion.minibatch", "fraction"),
            "fraction of fitted minibatch seeds with the illusion in >= 2 families",
        ),
    ]


@final
class DyckProxiesSystem(AbstractSystem):
    """Dyck-(k, D) next-token prediction by a 2-layer causal transformer; proxies of its layer-2
    queries/keys and their faithfulness on systematic splits (Friedman et al., ICML 2024)."""

    name: ClassVar[str] = "dyck-proxies"
    summary: ClassVar[str] = (
        "Dyck-(k, D) with a 2-layer causal transformer (Friedman et al., ICML 2024): PCA, k-means and SVD "
        "proxies of the layer-2 queries/keys, agreement on iid vs unseen-structure, deeper and longer strings"
    )
    config_type: ClassVar[type] = DyckProxiesConfig
    verdict_needs: ClassVar[Mapping[str, frozenset[str]]] = VERDICT_NEEDS
    predictions: ClassVar[Mapping[str, Prediction]] = {}
    smoke: ClassVar[Mapping[str, Any]] = {
        "k": 2,
        "max_depth": 3,
        "max_len": 12,
        "n_train": 24,
        "n_test": 8,
        "d_model": 8,
        "mlp_hidden": 8,
        "lr": 0.05,
        "steps": 20,
        "n_save_log": 5,
        "n_save_lin": 5,
        "batch_size": 8,
        "sgd_seeds": 2,
        "optimizer": "adam",
        "opt_lr": 0.01,
    }

    def train_size(self, task: DyckProxiesConfig) -> int:
        return task.n_train

    def memory_bytes(self, config: Config) -> float:
        """A generous estimate of the bytes a run holds at once (checked by the CLI before any work;
        `flowsim._validate.run_bytes`): the token rows of the training set and of the four test splits
        (rows of `long_max` + 1 tokens; host copies while sampling, device arrays), the model's
        gradients (attention maps: length^2 per row), the observer's forward pass on the training rows
        and, after the runs, the proxy study (the layer-2 inputs of every training row, then one
        proxy's forward pass over a test split at a time)."""
        t: DyckProxiesConfig = config.task
        V, d, mlp = vocab_of(t), t.d_model, t.mlp_hidden
        P = transformer_params(tokens_in=V, d=d, mlp=mlp, layers=2, out=V)

        def values(length: int, forward: bool = False) -> float:
            return transformer_values(length=length, d=d, heads=1, mlp=mlp, layers=2, out=V, forward=forward)

        g, f, f_test = values(t.row_len), values(t.row_len, True), values(t.long_max + 1, True)
        observer = t.n_train * (f + 3 * t.row_len * V)
        after = t.n_train * (f + 3 * t.row_len * d) + 2 * t.n_test * f_test
        positions = t.n_train * t.row_len + 4 * t.n_test * (t.long_max + 1)
        return run_bytes(config, MemoryParts(P, g, observer, data_bytes=64 * positions, after=after))

    def setup(self, config: Config, keys: RunKeys, model: Any = None, data: Any = None) -> Setup:
        task: DyckProxiesConfig = config.task
        dtype = _dtype(config)
        if data is None:
            data = make_data(task, keys.data, keys.test)
        if model is None:
            model = init_model(keys.init, task, vocab_of(task), dtype)
        model = jax.tree.map(lambda x: jnp.asarray(x, dtype) if eqx.is_inexact_array(x) else x, model)
        problem = make_problem(model, data.train.tokens, data.train.targets, lm_loss)
        return Setup(config, keys, data, model, problem, DyckObserver())

    def held_out(self, setup: Setup, params: PyTree, key: Array) -> Array:
        """The cross-entropy on the iid test split (strings unseen, structures seen)."""
        data: DyckProxiesData = setup.data
        return _split_loss(setup.problem, data.split("iid"), params)

    def initial_arrays(self, setup: Setup) -> dict[str, Any]:
        leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(setup.model, eqx.is_array))[0]
        data: DyckProxiesData = setup.data
        out = {jax.tree_util.keystr(p, simple=True, separator="."): np.asarray(x) for p, x in leaves}
        out.update(train_tokens=np.asarray(data.train.tokens), train_targets=np.asarray(data.train.targets))
        return out

    def verdicts(self, run: RunRecord) -> list[Verdict]:
        return evaluate(run)

    def measures(self) -> Sequence[Measure]:
        return _measures()

    def summary_extras(self, run: RunRecord) -> dict[str, Any]:
        return {}

    def figures(self, run: RunData, out_dir: pathlib.Path) -> list[pathlib.Path]:
        from .figures import plot_run

        return plot_run(run, out_dir)


SYSTEM = DyckProxiesSystem()
