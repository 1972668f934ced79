"""Many attention solutions on bounded Dyck (Wen et al., NeurIPS 2023) as a flowsim system."""

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
from ..._problem import make_problem
from ..._results import RunData
from ..._system import AbstractSystem, Measure, Prediction, RunKeys, RunRecord, Setup
from ..._validate import MemoryParts, run_bytes, transformer_params, transformer_values
from ..._verdicts import Verdict
from .config import DyckAttentionConfig
from .data import DyckData, make_data
from .model import init_model, lm_loss, trainable
from .observables import DyckObserver
from .verdicts import SCALARS, VERDICT_NEEDS, evaluate, final_flow, final_seeds


@eqx.filter_jit
def _test_loss(model: Any, rows_tokens: Array, rows_targets: Array) -> Array:
    return jnp.mean(jax.vmap(lm_loss)(jax.vmap(model)(rows_tokens), rows_targets))


def _final(piece: str, key: str):
    def get(r: RunRecord) -> float | None:
        if piece == "flow":
            fin = final_flow(r)
            return None if fin is None else float(fin[key])
        assert r.sgd is not None
        return float(np.nanmedian(final_seeds(r.sgd)[key]))

    return get


def _leaf_name(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path, simple=True, separator=".")


@final
class DyckAttentionSystem(AbstractSystem):
    """Dyck-(2, 4) next-token prediction by Wen et al.'s 1-layer depth-given or 2-layer model."""

    name: ClassVar[str] = "dyck-attention"
    summary: ClassVar[str] = (
        "bounded Dyck next-token prediction with small causal transformers (Wen et al., NeurIPS 2023): "
        "many attention solutions, balance violation, uniform first layer"
    )
    config_type: ClassVar[type] = DyckAttentionConfig
    verdict_needs: ClassVar[Mapping[str, frozenset[str]]] = VERDICT_NEEDS
    predictions: ClassVar[Mapping[str, Prediction]] = {}
    smoke: ClassVar[Mapping[str, Any]] = {
        "n_train": 8,
        "max_len": 8,
        "n_test": 4,
        "n_long": 2,
        "long_min": 12,
        "long_max": 16,
        "d_model": 19,
        "lr": 0.05,
        "steps": 10,
        "n_save_log": 3,
        "n_save_lin": 3,
        "batch_size": 4,
        "sgd_seeds": 2,
        "optimizer": "adam",
        "opt_lr": 0.01,
    }

    def train_size(self, task: DyckAttentionConfig) -> int:
        return task.train_size

    def memory_bytes(self, config: Config) -> float:
        """A generous estimate of the bytes a run holds at once (checked by the CLI before any work;
        `flowsim._validate.run_bytes`): the token rows (host copies while sampling, device arrays), the
        model's gradients on rows of `max_len` + 1 tokens (attention maps: length^2 per row), the
        observer's forward passes on the training rows and on the held-out and long rows (padded to
        `long_max` + 1), the balance violation's probe masks (2^(depth - 1) assignment sets per query)
        and the recorded probe attention maps."""
        t: DyckAttentionConfig = config.task
        V, d, one = 3 + 2 * t.k, t.d_model, t.arch == "one_layer"
        layers, mlp = (1, 0) if one else (2, t.mlp_hidden)
        P = transformer_params(tokens_in=0, d=d, mlp=mlp, layers=layers, out=V, extra=0 if one else 2 * d)

        def values(length: int, forward: bool = False) -> float:
            return transformer_values(length=length, d=d, heads=1, mlp=mlp, layers=layers, out=V, forward=forward)

        g, width, probe = values(t.max_len + 1), max(t.max_len, t.long_max) + 1, 4 * t.depth + 1
        queries = 2 * max(t.depth - 1, 1)
        balance = 3 * queries * (2 * t.depth + 2 ** (t.depth - 1)) * (probe + d)
        forward = t.n_train * values(t.max_len + 1, True) + (t.n_test + t.n_long) * values(width, True)
        observer = forward + balance
        positions = (t.n_train + t.n_test) * (t.max_len + 1) + (t.n_test + t.n_long) * width
        parts = MemoryParts(P, g, observer, data_bytes=48 * positions, recorded=layers * probe * probe)
        return run_bytes(config, parts)

    def setup(self, config: Config, keys: RunKeys, model: Any = None, data: Any = None) -> Setup:
        task: DyckAttentionConfig = config.task
        dtype = jnp.float64 if config.precision == "float64" else jnp.float32
        if data is None:
            data = make_data(task, keys.data)
        if model is None:
            model = init_model(keys.init, task, dtype=dtype)
        model = jax.tree.map(lambda x: jnp.asarray(x, dtype) if eqx.is_inexact_array(x) else x, model)
        problem = make_problem(
            model, data.train.tokens, data.train.targets, lm_loss, trainable=trainable(model, task.uniform_first)
        )
        return Setup(config, keys, data, model, problem, DyckObserver.build(data), ())

    def held_out(self, setup: Setup, params: PyTree, key: Array) -> Array:
        """The cross-entropy on the held-out rows (same law as training)."""
        d: DyckData = setup.data
        return _test_loss(setup.problem.model(params), d.test.tokens, d.test.targets)

    def initial_arrays(self, setup: Setup) -> dict[str, Any]:
        leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(setup.model, eqx.is_array))[0]
        d: DyckData = setup.data
        rows = {f"{n}_{f}": getattr(getattr(d, n), f) for n in ("train", "test", "long") for f in ("tokens", "targets")}
        return {**{_leaf_name(p): x for p, x in leaves}, **rows, "probe": d.probe}

    def verdicts(self, run: RunRecord) -> list[Verdict]:
        return evaluate(run)

    def measures(self) -> Sequence[Measure]:
        flow, sgd = frozenset({"flow"}), frozenset({"sgd"})
        out = []
        for key in SCALARS:
            out.append(Measure(f"flow_{key}", flow, _final("flow", key), f"flow's {key} at its final state"))
            out.append(
                Measure(f"mb_{key}", sgd, _final("sgd", key), f"median over minibatch seeds of {key} at their ends")
            )
        return out

    def summary_extras(self, run: RunRecord) -> dict[str, Any]:
        fin = final_flow(run)
        out: dict[str, Any] = {"final_flow": None if fin is None else {k: float(fin[k]) for k in SCALARS}}
        if run.sgd is not None:
            out["final_minibatch"] = {k: v.tolist() for k, v in final_seeds(run.sgd).items() if k in SCALARS}
        return out

    def figures(self, run: RunData, out_dir: pathlib.Path) -> list[pathlib.Path]:
        from .figures import plot_run

        return plot_run(run, out_dir)


SYSTEM = DyckAttentionSystem()
