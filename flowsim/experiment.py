"""The paper's experiment, composed from the library: config -> data -> problem -> flow, GD, SGD.

`setup` builds everything a run needs from a `Config` (or from a saved initial state);
`run_experiment` integrates the gradient flow (with the Phase-1 event), runs GD and SGD from the same
initial point on the same save grid, and measures the generalization loss on fresh samples.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

from ._timing import timed_call
from .config import Config
from .discrete import DiscreteSolution, gradient_descent, sgd
from .dynamics import GradientFlow
from .flow import FlowSolution, integrate
from .grid import save_steps
from .model import CooccurrenceTransformer, init_transformer
from .observables import CooccurrenceObserver
from .problem import Problem, logistic_loss, make_problem
from .results import package_versions, write_json, write_npz
from .verdicts import evaluate
from .tasks.cooccurrence import CooccurrenceData, make_dataset, sample_population


def enable_precision(precision: str) -> jnp.dtype:
    """Switch JAX to 64-bit when asked (flowsim's default) and return the float dtype to use."""
    if precision == "float64":
        jax.config.update("jax_enable_x64", True)
        return jnp.float64
    return jnp.float32


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a run starts from: `config`, training `data`, initial `model`, `problem`, `observer`."""

    config: Config
    data: CooccurrenceData
    model: CooccurrenceTransformer
    problem: Problem
    observer: CooccurrenceObserver


def _trainable(config: Config) -> CooccurrenceTransformer:
    return CooccurrenceTransformer(True, True, True, True, config.train_a)  # type: ignore[arg-type]


def setup(config: Config, model: CooccurrenceTransformer | None = None,
          data: CooccurrenceData | None = None) -> Setup:
    """Draw (or take) the initial model and the training set for `config` and wrap them in a Problem.

    Data use numpy seed `config.seed`, weights `PRNGKey(config.seed)`; pass `model`/`data` to start
    from a saved state instead (e.g. the reference `initial_state.npz`).
    """
    dtype = enable_precision(config.precision)
    if data is None:
        data = make_dataset(config.n, config.L, config.d, config.seed, config.distinct_tokens)
    if model is None:
        model = init_transformer(jax.random.PRNGKey(config.seed), config.d, config.m, config.m1,
                                 init=config.init, scale=config.init_scale, L=config.L, dtype=dtype)
    model = jax.tree.map(lambda x: jnp.asarray(x, dtype), model)
    data = CooccurrenceData(data.tokens, jnp.asarray(data.y, dtype), data.kind)
    problem = make_problem(model, data.tokens, data.y, logistic_loss, _trainable(config))
    return Setup(config, data, model, problem, CooccurrenceObserver.at_init(problem, data.kind))


def min_margin(t: Array, params: PyTree, problem: Problem) -> Array:
    """Event condition for the end of Phase 1: min_i y_i F(X_i) (crosses 0 upwards)."""
    return jnp.min(problem.targets * problem.outputs(params))


@eqx.filter_jit
def _population_loss(problem: Problem, params: PyTree, key: Array, num: int, L: int, d: int) -> Array:
    fresh = sample_population(key, num, L, d)
    out = jax.vmap(problem.model(params))(fresh.tokens)
    return jnp.mean(logistic_loss(out, fresh.y.astype(out.dtype)))


def generalization_loss(problem: Problem, params: PyTree, config: Config, key: Array) -> float:
    """Mean logistic loss on `config.n_test` fresh samples from the data distribution."""
    return float(_population_loss(problem, params, key, config.n_test, config.L, config.d))


@dataclasses.dataclass(frozen=True)
class ExperimentResult:
    """Flow, GD and SGD solutions of one run, with timings (s; `<name>_compile` is the part spent
    lowering and compiling with XLA, see `flowsim._timing`) and generalization losses."""

    setup: Setup
    flow: FlowSolution
    gd: DiscreteSolution
    sgd: DiscreteSolution
    gen_loss: dict[str, float]
    timings: dict[str, float]


def _steps(c: Config) -> np.ndarray:
    """The config's save grid in GD steps (flow times are these times lr)."""
    return save_steps(c.steps, c.n_save_log, c.n_save_lin)


def run_flow(s: Setup, *, progress: bool = False, **overrides) -> FlowSolution:
    """Gradient flow of the setup's problem on the config's save grid, with the Phase-1 event."""
    c = s.config
    dtype = jax.tree.leaves(s.problem.params0)[0].dtype
    ts = jnp.asarray(_steps(c) * c.lr, dtype)
    kw = dict(solver=c.solver, rtol=c.rtol, atol=c.atol, max_steps=c.max_steps, event=min_margin)
    kw.update(overrides)
    return integrate(GradientFlow(), s.problem, ts, s.observer, progress=progress, **kw)


def run_gd(s: Setup, *, progress: bool = False) -> DiscreteSolution:
    """Full-batch GD of the setup's problem with the config's lr and steps, on its save grid."""
    c = s.config
    return gradient_descent(s.problem, c.lr, _steps(c), s.observer,
                            progress=progress)


def run_sgd(s: Setup, *, progress: bool = False) -> DiscreteSolution:
    """Minibatch SGD (config's batch size and seed count; key `PRNGKey(seed + 1)`) on the save grid."""
    c = s.config
    return sgd(s.problem, c.lr, _steps(c), s.observer,
               batch_size=c.batch_size, seeds=c.sgd_seeds, key=jax.random.PRNGKey(c.seed + 1),
               progress=progress)


def run_experiment(config: Config, *, progress: bool = False, setup_: Setup | None = None) -> ExperimentResult:
    """Run the flow, GD and SGD for `config` and return all three (nothing is written to disk).

    The three runs are independent programs dispatched from two threads (XLA releases the GIL):
    the flow (mostly compilation) and GD first, side by side on the two cores, then SGD, whose seed
    axis is sharded over all local devices when there are several (see `flowsim.discrete.sgd`).
    """
    s = setup(config) if setup_ is None else setup_
    c = s.config
    timings: dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):
        out, timings[name], timings[f"{name}_compile"] = timed_call(fn, *args, **kwargs)
        return out

    key = jax.random.PRNGKey(c.seed + 2)
    gen: dict[str, float] = {}

    def flow_job():
        flow = timed("flow", run_flow, s, progress=progress)
        gen["flow"] = generalization_loss(s.problem, flow.params, c, key)
        return flow

    def gd_job():
        gd = timed("gd", run_gd, s, progress=progress)
        gen["gd"] = generalization_loss(s.problem, gd.params, c, key)
        return gd

    def sgd_job():
        sg = timed("sgd", run_sgd, s, progress=progress)
        per_seed = eqx.filter_vmap(_population_loss, in_axes=(None, 0, None, None, None, None))(
            s.problem, sg.params, key, c.n_test, c.L, c.d)
        gen["sgd_mean"] = float(jnp.mean(per_seed))
        return sg

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(job) for job in (flow_job, gd_job, sgd_job)]
        flow, gd, sg = (f.result() for f in futures)
    return ExperimentResult(s, flow, gd, sg, gen, timings)


def _strip(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in obs.items()}


def summarize(result: ExperimentResult) -> dict:
    """summary.json content: verdicts, Phase-1 end, solver stats, divergence, timings, gen. loss."""
    flow, gd, sg = result.flow, result.gd, result.sgd
    t1 = None if np.isnan(flow.event_time) else flow.event_time
    flow_obs = {"t": flow.ts, **flow.obs}
    verdicts = evaluate(flow_obs, {"t": gd.ts, **gd.obs}, {"t": sg.ts, **sg.obs}, t1, flow.event_obs)
    return {
        "phase1_end_time": t1,
        "at_phase1_end": {k: v for k, v in (flow.event_obs or {}).items() if np.ndim(v) == 0},
        "verdicts": [v.to_dict() for v in verdicts],
        "flow": {"result": flow.result, "t_reached": flow.t_reached, "num_steps": flow.num_steps},
        "gd": {"diverged_step": int(gd.diverged_step)},
        "sgd": {"diverged_step": [int(x) for x in np.atleast_1d(sg.diverged_step)]},
        "generalization_loss": result.gen_loss,
        "timings_s": result.timings,
    }


def save_experiment(result: ExperimentResult, out: str | pathlib.Path) -> dict:
    """Write a run folder (layout in `flowsim.results`) and return the summary dict."""
    out = pathlib.Path(out)
    s = result.setup
    m = s.model
    write_json(out / "config.json", {"config": s.config.to_dict(), "seed": s.config.seed,
                                     "versions": package_versions()})
    write_npz(out / "initial_state.npz", {"W_Q": m.W_Q, "W_K": m.W_K, "W_V": m.W_V, "W": m.W, "a": m.a,
                                          "tokens": s.data.tokens, "y": s.data.y, "kind": s.data.kind})
    write_npz(out / "flow.npz", {"t": result.flow.ts, **_strip(result.flow.obs)})
    write_npz(out / "gd.npz", {"t": result.gd.ts, "step": result.gd.steps, **_strip(result.gd.obs)})
    write_npz(out / "sgd.npz", {"t": result.sgd.ts, "step": result.sgd.steps, **_strip(result.sgd.obs)})
    summary = summarize(result)
    write_json(out / "summary.json", summary)
    return summary
