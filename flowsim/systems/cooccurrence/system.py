"""The co-occurrence system (Yang, Kailkhura, Wang & Liang, NeurIPS 2024) as a flowsim system."""

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
from ..._experiment import draw_in_float64
from ..._losses import logistic_loss
from ..._problem import Problem, make_problem
from ..._results import RunData
from ..._system import AbstractSystem, Measure, Prediction, RunKeys, RunRecord, Setup
from ..._verdicts import Verdict
from .config import CooccurrenceConfig
from .data import CooccurrenceData, make_dataset, sample_population
from .model import CooccurrenceTransformer, init_transformer
from .observables import CooccurrenceObserver
from .verdicts import VERDICT_NEEDS, evaluate

PHASE1_END = "phase1_end"


def min_margin(t: float | Array, params: PyTree, problem: Problem) -> Array:
    """Event condition for the end of Phase 1: min_i y_i F(X_i) (crosses 0 upwards)."""
    return jnp.min(problem.targets * problem.outputs(params))


PHASE1_EVENT = Event(PHASE1_END, min_margin, "up", "end of Phase 1")


@eqx.filter_jit
def _population_loss(problem: Problem, params: PyTree, key: Array, num: int, L: int, d: int) -> Array:
    fresh = sample_population(key, num, L, d)
    out = jax.vmap(problem.model(params))(fresh.tokens)
    return jnp.mean(jax.vmap(logistic_loss)(out, fresh.y.astype(out.dtype)))  # the per-sample loss, per sample


def draw_data(task: CooccurrenceConfig, keys: RunKeys) -> CooccurrenceData:
    """The training set of `task` from `keys.data` (its numpy seed drawn with 64-bit types on, so a
    float32 run in a process without them draws the float64 run's training set)."""
    seed = int(draw_in_float64(lambda: jax.random.randint(keys.data, (), 0, 2**31 - 1), jnp.float64))
    return make_dataset(task.n, task.L, task.d, seed, task.distinct_tokens)


def draw_model(task: CooccurrenceConfig, keys: RunKeys, dtype: Any) -> CooccurrenceTransformer:
    """The initial model of `task` from `keys.init`, drawn in float64 and cast to `dtype` (a float32
    run starts from the float64 run's model, rounded)."""
    init = lambda: init_transformer(keys.init, task.d, task.m, task.m1, init=task.init, scale=task.init_scale, L=task.L)
    return draw_in_float64(init, dtype)


def _fig(verdict: str, figure: str):
    def get(r: RunRecord) -> Any:
        v = r.verdicts.get(verdict)
        return None if v is None else v.figures.get(figure)

    return get


def evaluate_record(run: RunRecord) -> list[Verdict]:
    """The paper's verdicts of a run (those whose pieces ran)."""
    flow = run.obs("flow")
    assert flow is not None, "the co-occurrence verdicts need the flow"
    return evaluate(flow, run.obs("gd"), run.obs("sgd"), run.event_time(PHASE1_END), run.event_obs(PHASE1_END))


def _measures() -> list[Measure]:
    flow = frozenset({"flow"})
    both = frozenset({"flow", "gd"})
    every = frozenset({"flow", "gd", "sgd"})

    def obs_T(key: str):
        return lambda r: r.flow.obs[key][-1]

    def at_t1(key: str):
        return lambda r: None if r.event_obs(PHASE1_END) is None else r.event_obs(PHASE1_END)[key]

    return [
        Measure(
            "T1",
            flow,
            lambda r: r.event_time(PHASE1_END),
            "end of Phase 1 (min-margin event time); null if it never fires before T",
        ),
        Measure("loss_T", flow, obs_T("loss"), "flow training loss at T"),
        Measure("min_margin_T", flow, obs_T("min_margin"), "flow min margin at T"),
        Measure("attn_disp_T1", flow, at_t1("attn_disp"), "max |p(T1) - p(0)| of the attention weights"),
        Measure("attn_disp_T", flow, obs_T("attn_disp"), "max |p(T) - p(0)|"),
        Measure(
            "S2_S3_worst_ratio",
            flow,
            _fig("balance.S2_S3", "worst_max_ratio"),
            "max over Phase 2 of max(S2/S3, S3/S2) (1 = perfect balance)",
        ),
        Measure("R_in_12_fraction", flow, _fig("balance.R", "fraction_in_(1,2)"), "fraction of Phase 2 with 1 < R < 2"),
        Measure(
            "flow_gd_gap",
            both,
            _fig("compare.flow_gd", "max_rel_gap_loss"),
            "max pointwise relative gap between the GD and flow losses",
        ),
        Measure(
            "flow_sgd_gap",
            every,
            _fig("compare.flow_sgd", "max_rel_gap_loss_sgd_mean"),
            "max pointwise relative gap between the SGD seed-mean loss and the flow loss",
        ),
        Measure(
            "sgd_envelope_fraction",
            every,
            _fig("compare.flow_sgd", "fraction_inside_sgd_envelope"),
            "fraction of save times with the flow loss inside the SGD seed envelope",
        ),
    ]


def _predictions() -> dict[str, Prediction]:
    from . import theory

    return {
        "t1": Prediction(
            "T1 along one axis (m, m1, sigma1) on the exact reduced flow",
            lambda axis, values, seeds, config, **kw: theory.t1_scaling(axis, values, seeds, **kw),
            theory.t1_scaling,
            ("m", "m1", "sigma1"),
            lambda axis: axis != "sigma1",
        ),
        "t1-full": Prediction(
            "T1 vs width with the full model (any Config regime) vs Lem 4.1's rate",
            lambda axis, values, seeds, config, **kw: theory.t1_full_model(config, values, seeds, **kw),
            theory.t1_full_model,
        ),
        "phase2": Prediction(
            "the paper's Phase-2 system, loss law and balancing, across m or n",
            lambda axis, values, seeds, config, **kw: theory.phase2_scan(axis, values, seeds, **kw),
            theory.phase2_scan,
            ("m", "n"),
        ),
        "displacement": Prediction(
            "attention displacement at a loss target vs L",
            lambda axis, values, seeds, config, **kw: theory.attention_displacement_vs_L(values, seeds, **kw),
            theory.attention_displacement_vs_L,
        ),
        "scores": Prediction(
            "C_ij projections of the score change vs width",
            lambda axis, values, seeds, config, **kw: theory.score_change_projections(values, seeds, **kw),
            theory.score_change_projections,
        ),
    }


@final
class _LazyPredictions(Mapping[str, Prediction]):
    """The theory predictions, imported on first use (the theory package is large)."""

    def _table(self) -> dict[str, Prediction]:
        return _predictions()

    def __getitem__(self, key: str) -> Prediction:
        return self._table()[key]

    def __iter__(self):
        return iter(("t1", "t1-full", "phase2", "displacement", "scores"))

    def __len__(self) -> int:
        return 5


@final
class CooccurrenceSystem(AbstractSystem):
    """Word co-occurrence with a shallow transformer (W_Q, W_K, W_V, linear MLP read-out), logistic loss."""

    name: ClassVar[str] = "cooccurrence"
    summary: ClassVar[str] = (
        "word co-occurrence, shallow transformer (Yang et al., NeurIPS 2024): "
        "two-phase dynamics and automatic balancing"
    )
    config_type: ClassVar[type] = CooccurrenceConfig
    verdict_needs: ClassVar[Mapping[str, frozenset[str]]] = VERDICT_NEEDS
    predictions: ClassVar[Mapping[str, Prediction]] = _LazyPredictions()
    smoke: ClassVar[Mapping[str, Any]] = {
        "n": 12,
        "L": 4,
        "d": 16,
        "m": 16,
        "m1": 16,
        "lr": 0.05,
        "steps": 200,
        "n_save_log": 20,
        "n_save_lin": 10,
        "batch_size": 4,
        "sgd_seeds": 4,
        "n_test": 200,
    }

    def train_size(self, task: CooccurrenceConfig) -> int:
        return task.n

    def memory_bytes(self, config: Config) -> float:
        """A generous estimate of the bytes a run holds at once (checked by the CLI before any work):
        one-hot training and test sets, the forward and backward activations of the full batch, the
        flow's solver stages (about 12 copies of the parameters) and the SGD seeds' parameters and
        velocities."""
        t: CooccurrenceConfig = config.task
        params = 3 * t.m * t.d + t.m1 * t.m + t.m1
        data = (t.n + t.n_test) * t.L * t.d
        activations = 4 * t.n * t.L * (3 * t.m + t.L + t.m1)
        itemsize = 8 if config.precision == "float64" else 4
        return float(itemsize * (data + activations + params * (12 + 3 * config.sgd_seeds)))

    def setup(self, config: Config, keys: RunKeys, model: Any = None, data: Any = None) -> Setup:
        task: CooccurrenceConfig = config.task
        dtype = jnp.float64 if config.precision == "float64" else jnp.float32
        if data is None:
            data = draw_data(task, keys)
        if model is None:
            model = draw_model(task, keys, dtype)
        model = jax.tree.map(lambda x: jnp.asarray(x, dtype), model)
        data = CooccurrenceData(data.tokens, jnp.asarray(data.y, dtype), data.kind)
        problem = make_problem(model, data.tokens, data.y, logistic_loss, model.trainable(task.train_a))
        observer = CooccurrenceObserver.at_init(problem, data.kind)
        return Setup(config, keys, data, model, problem, observer, (PHASE1_EVENT,))

    def held_out(self, setup: Setup, params: PyTree, key: Array) -> Array:
        t = setup.config.task
        return _population_loss(setup.problem, params, key, t.n_test, t.L, t.d)

    def initial_arrays(self, setup: Setup) -> dict[str, Any]:
        m, d = setup.model, setup.data
        return {
            "W_Q": m.W_Q,
            "W_K": m.W_K,
            "W_V": m.W_V,
            "W": m.W,
            "a": m.a,
            "tokens": d.tokens,
            "y": d.y,
            "kind": d.kind,
        }

    def verdicts(self, run: RunRecord) -> list[Verdict]:
        return evaluate_record(run)

    def measures(self) -> Sequence[Measure]:
        return _measures()

    def summary_extras(self, run: RunRecord) -> dict[str, Any]:
        at = run.event_obs(PHASE1_END) or {}
        return {
            "phase1_end_time": run.event_time(PHASE1_END),
            "at_phase1_end": {k: v for k, v in at.items() if np.ndim(v) == 0},
        }

    def figures(self, run: RunData, out_dir: pathlib.Path) -> list[pathlib.Path]:
        from .figures import plot_run

        return plot_run(run, out_dir)


SYSTEM = CooccurrenceSystem()
