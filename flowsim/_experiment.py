"""Continuous vs discrete from one initial point, for any system: set up, run, summarise, save.

`setup(config)` asks the config's system for data, model, problem, observer and events (every random
stream split from `PRNGKey(config.seed)`); `run_experiment` integrates the gradient flow (locating the
system's events), runs GD and SGD from the same initial point on the same save grid, and evaluates the
system's held-out metric on each; `save_experiment` writes the results folder.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import pathlib
import shutil
import threading
from collections.abc import Callable, Collection
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PyTree

from ._config import Config
from ._discrete import DiscreteSolution, gradient_descent, sgd
from ._dynamics import AbstractDynamics, GradientFlow
from ._events import Event
from ._grid import save_steps
from ._hessian import Sharpness
from ._integrate import Observer, integrate
from ._optax import optax_descent
from ._problem import Problem
from ._registry import get_system
from ._results import package_versions, write_json, write_npz
from ._solution import FlowSolution
from ._system import PIECES, RunKeys, RunRecord, Setup
from ._timing import timed_call
from ._verdicts import Verdict, not_measured


def enable_precision(precision: str) -> Any:
    """Switch JAX to 64-bit when asked (flowsim's default) and return the float dtype to use."""
    if precision == "float64":
        jax.config.update("jax_enable_x64", True)
        return jnp.float64
    return jnp.float32


def draw_in_float64(draw: Callable[[], Any], dtype: Any) -> Any:
    """Call `draw` (drawing random initial parameters or data in float64) with 64-bit types on, then
    cast its floating leaves to `dtype` (integer leaves to the process's default width): a float32
    run starts from the float64 run's draw of the same seed, rounded, whether or not the process
    has 64-bit types enabled (random draws of another width are different numbers)."""
    with jax.enable_x64(True):
        tree = draw()

    def cast(x: Any) -> Any:
        if eqx.is_inexact_array(x):
            return jnp.asarray(x, dtype)
        if eqx.is_array(x):
            return jnp.asarray(x, jax.dtypes.canonicalize_dtype(x.dtype))
        return x

    return jax.tree.map(cast, tree)


def setup(config: Config, model: Any = None, data: Any = None) -> Setup:
    """Draw (or take) the initial model and training set of `config`'s system and wrap them in a
    `Setup`. Every random stream comes from `RunKeys.from_seed(config.seed)`; pass `model`/`data`
    to start from a saved state instead (e.g. a reference `initial_state.npz`)."""
    enable_precision(config.precision)
    return get_system(config.system).setup(config, RunKeys.from_seed(config.seed), model, data)


def step_grid(config: Config) -> np.ndarray:
    """The config's save grid in GD steps (flow times are these times lr)."""
    return save_steps(config.steps, config.n_save_log, config.n_save_lin)


@final
class LossBelow(eqx.Module):
    """Event condition `target - L(params)`: crosses zero upwards when the training loss falls below
    `target` (an array, so runs with other targets share one compiled program)."""

    target: Array

    def __call__(self, t: Array, params: PyTree, problem: Problem) -> Array:
        return self.target - problem.loss(params)


def target_events(s: Setup) -> tuple[Event, ...]:
    """The config's terminal events: the training loss reaching `stop_loss` (none when it is 0)."""
    c = s.config
    if c.stop_loss <= 0:
        return ()
    dtype = jax.tree.leaves(s.problem.params0)[0].dtype
    cond = LossBelow(jnp.asarray(c.stop_loss, dtype))
    return (Event("target_loss", cond, "up", f"training loss < {c.stop_loss:g}", terminal=True),)


def run_observer(s: Setup, lr: float | None = None) -> Observer:
    """The setup's observer, with the top `sharpness` Hessian eigenvalues (and, given the step size
    `lr` of a discrete run, the edge-of-stability ratio) when the config asks for them."""
    k = s.config.sharpness
    return Sharpness(s.observer, k=k, lr=lr) if k else s.observer


def run_flow(
    s: Setup, *, dynamics: AbstractDynamics | None = None, progress: bool = False, **overrides: Any
) -> FlowSolution:
    """Gradient flow (or `dynamics`) of the setup's problem on the config's save grid, locating the
    system's events (and stopping at the config's target loss); `overrides` are keyword arguments of
    `flowsim.integrate`."""
    c = s.config
    dtype = jax.tree.leaves(s.problem.params0)[0].dtype
    ts = jnp.asarray(step_grid(c) * c.lr, dtype)
    events = (*s.events, *target_events(s))
    kw: dict[str, Any] = dict(solver=c.solver, rtol=c.rtol, atol=c.atol, max_steps=c.max_steps, event=events or None)
    kw.update(overrides)
    return integrate(
        GradientFlow() if dynamics is None else dynamics, s.problem, ts, run_observer(s), progress=progress, **kw
    )


def run_gd(s: Setup, *, progress: bool = False) -> DiscreteSolution:
    """Full-batch GD of the setup's problem with the config's lr and steps, on its save grid."""
    c = s.config
    obs = run_observer(s, c.lr)
    return gradient_descent(
        s.problem, c.lr, step_grid(c), obs, events=s.events, stop=target_events(s), progress=progress
    )


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """The config's optax optimizer (`optimizer`, not "sgd") at step size `opt_lr` (or `lr`). The same
    (optimizer, step size) gives the same object, so runs that differ in other fields (seeds, data,
    sizes of the same shape) reuse one compiled program."""
    return _optimizer(config.optimizer, config.opt_lr or config.lr)


@functools.lru_cache(maxsize=64)
def _optimizer(name: str, lr: float) -> optax.GradientTransformation:
    return {
        "momentum": lambda: optax.sgd(lr, momentum=0.9),
        "adam": lambda: optax.adam(lr),
        "adamw": lambda: optax.adamw(lr),
        "rmsprop": lambda: optax.rmsprop(lr),
    }[name]()


def run_sgd(s: Setup, *, progress: bool = False) -> DiscreteSolution:
    """The minibatch comparator (the config's batch size and seed count; minibatch key `s.keys.sgd`):
    plain SGD, or the config's optax `optimizer`, recorded on the same save grid (t = step * lr)."""
    c = s.config
    kw: dict[str, Any] = dict(
        batch_size=c.batch_size,
        seeds=c.sgd_seeds,
        key=s.keys.sgd,
        events=s.events,
        stop=target_events(s),
        progress=progress,
    )
    if c.optimizer != "sgd":
        return optax_descent(s.problem, make_optimizer(c), c.lr, step_grid(c), run_observer(s, c.lr), **kw)
    return sgd(s.problem, c.lr, step_grid(c), run_observer(s, c.lr), **kw)


@final
@dataclasses.dataclass(frozen=True)
class ExperimentResult:
    """The solutions of one run (a piece not run is None), the system's held-out metric of each
    run's final parameters (`held_out`: flow, gd, sgd_mean) and timings (s; `<name>_compile` is the
    part spent lowering and compiling with XLA, see `flowsim._timing`); `missing`: the pieces asked
    for that have not finished (a partial result, see `run_experiment`'s `on_piece`)."""

    setup: Setup
    flow: FlowSolution | None
    gd: DiscreteSolution | None
    sgd: DiscreteSolution | None
    held_out: dict[str, float]
    timings: dict[str, float]
    missing: tuple[str, ...] = ()

    @property
    def record(self) -> RunRecord:
        return RunRecord(self.setup.config, self.flow, self.gd, self.sgd)


def _held_out(system: Any, s: Setup, params: PyTree, key: Array, ensemble: bool) -> Array:
    """The system's held-out metric at `params` (`ensemble`: the mean over the leading seed axis) as
    one compiled program, not one small program per operation of an eager model call."""
    fields = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)}  # a PyTree: arrays traced
    return _held_out_program(system, fields, params, key, ensemble)


@eqx.filter_jit
def _held_out_program(system: Any, fields: dict[str, Any], params: PyTree, key: Array, ensemble: bool) -> Array:
    s = Setup(**fields)
    if ensemble:
        return jnp.mean(jax.vmap(lambda p: system.held_out(s, p, key))(params))
    return system.held_out(s, params, key)


def run_experiment(
    config: Config,
    *,
    progress: bool = False,
    setup_: Setup | None = None,
    pieces: Collection[str] = PIECES,
    on_piece: Callable[[ExperimentResult], None] | None = None,
) -> ExperimentResult:
    """Run the flow, GD and SGD (those in `pieces`) for `config`; nothing is written to disk.

    The runs are independent programs dispatched from two threads (XLA releases the GIL): the flow
    (mostly compilation) and GD first, side by side on the two cores, then SGD, whose seed axis is
    sharded over all local devices when there are several (see `flowsim.sgd`). Each time a piece
    finishes, `on_piece` (if given) receives the result so far: the finished pieces, the others None
    and named in `missing` (`flowsim run` saves it when interrupted).
    """
    unknown = sorted(set(pieces) - set(PIECES))
    if unknown:
        raise ValueError(f"unknown pieces {unknown}; choose from {PIECES}")
    s = setup(config) if setup_ is None else setup_
    system = get_system(s.config.system)
    timings: dict[str, float] = {}
    held: dict[str, float] = {}
    done: dict[str, Any] = {}
    asked = tuple(p for p in PIECES if p in pieces)
    lock = threading.Lock()
    key = s.keys.test

    def job(name: str, fn: Callable[..., Any]) -> Callable[[], Any]:
        def run() -> Any:
            out, seconds, compile_s = timed_call(fn, s, progress=progress)
            value = float(_held_out(system, s, out.params, key, name == "sgd"))
            metric = {"sgd_mean" if name == "sgd" else name: value}
            with lock:
                timings.update({name: seconds, f"{name}_compile": compile_s})
                held.update(metric)
                done[name] = out
                if on_piece is not None:
                    on_piece(_result(s, done, held, timings, asked))
            return out

        return run

    fns = {"flow": run_flow, "gd": run_gd, "sgd": run_sgd}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(job(p, fns[p])) for p in asked]
        for f in futures:
            f.result()
    return _result(s, done, held, timings, asked)


def _result(
    s: Setup, done: dict[str, Any], held: dict[str, float], timings: dict[str, float], asked: tuple[str, ...]
) -> ExperimentResult:
    """The result of the pieces in `done` (copies of the dicts: later pieces do not change it)."""
    missing = tuple(p for p in asked if p not in done)
    return ExperimentResult(s, done.get("flow"), done.get("gd"), done.get("sgd"), dict(held), dict(timings), missing)


def summarize(result: ExperimentResult, *, interrupted: bool = False) -> dict[str, Any]:
    """summary.json content: events, verdicts, solver stats, divergence, held-out metric, timings; for
    an `interrupted` run or a partial `result`, `interrupted` and `missing_pieces`, and every verdict
    that needs a missing piece "not measured"."""
    system = get_system(result.setup.config.system)
    record = result.record
    flow, gd, sg = result.flow, result.gd, result.sgd
    out: dict[str, Any] = {"system": system.name}
    if interrupted or result.missing:
        out.update(interrupted=interrupted, missing_pieces=list(result.missing))
    if flow is not None:
        out["events"] = {
            name: {
                "time": hit.time if hit.fired else None,
                "label": hit.label,
                "obs": {k: v for k, v in (hit.obs or {}).items() if np.ndim(v) == 0},
            }
            for name, hit in flow.events.items()
        }
    out.update(system.summary_extras(record) if flow is not None else {})
    # record.verdicts: a claim over data the runs did not produce is "not measured" (judge_reached)
    verdicts = list(record.verdicts.values()) if flow is not None else []
    out["verdicts"] = [v.to_dict() for v in _missing_not_measured(system, verdicts, result.missing)]
    if flow is not None:
        out["flow"] = _flow_summary(flow)
    if gd is not None:
        out["gd"] = {
            "diverged_step": int(gd.diverged_step),
            "stop_step": int(gd.stop_step),
            "events": {k: {"time": float(t), "step": int(i)} for k, (t, i) in gd.crossings.items()},
        }
    if sg is not None:
        out["sgd"] = {
            "diverged_step": [int(x) for x in np.atleast_1d(sg.diverged_step)],
            "stop_step": [int(x) for x in np.atleast_1d(sg.stop_step)],
            "events": {
                k: {"time": np.asarray(t).tolist(), "step": np.asarray(i).tolist()}
                for k, (t, i) in sg.crossings.items()
            },
        }
    out["held_out"] = result.held_out
    out["timings_s"] = result.timings
    return out


def _missing_not_measured(system: Any, verdicts: list[Verdict], missing: tuple[str, ...]) -> list[Verdict]:
    """`verdicts`, with those that need a piece in `missing` made "not measured", followed by the
    system's other verdicts (`verdict_needs`) that were not evaluated, each "not measured"."""
    if not missing:
        return verdicts
    why = f"the run was interrupted before {', '.join(missing)} finished"
    needs = system.verdict_needs
    out = [not_measured(v, why) if set(needs.get(v.name, PIECES)) & set(missing) else v for v in verdicts]
    seen = {v.name for v in verdicts}
    for name, pieces in needs.items():
        if name not in seen:
            stub = Verdict(name, f"{name} (reads {', '.join(sorted(pieces))})", {}, "not evaluated", "INFO")
            out.append(not_measured(stub, why))
    return out


def _flow_summary(flow: FlowSolution) -> dict[str, Any]:
    """How the flow solve went: result, time reached, stopping event, step history (and h * lambda_max
    at the save times when the observer records `lambda_max`)."""
    out: dict[str, Any] = {
        "result": flow.result,
        "t_reached": flow.t_reached,
        "num_steps": flow.num_steps,
        "stopped_by": flow.stopped_by,
    }
    if flow.step_stats is not None:
        out["steps"] = flow.step_stats.to_dict()
        if "lambda_max" in flow.obs:
            hl = flow.step_stats.h_lambda(flow.ts, flow.obs["lambda_max"])
            hl = hl[np.isfinite(hl)]
            out["steps"]["h_lambda_max"] = {"median": float(np.median(hl)), "max": float(hl.max())} if hl.size else None
    return out


def save_experiment(result: ExperimentResult, out: str | pathlib.Path, *, interrupted: bool = False) -> dict[str, Any]:
    """Write a run folder (layout in `flowsim.load_run`) and return the summary dict; `interrupted`:
    the run was ended by a signal (the summary says so, and which pieces are missing)."""
    out = pathlib.Path(out)
    s = result.setup
    system = get_system(s.config.system)
    write_json(
        out / "config.json", {"config": s.config.to_dict(), "seed": s.config.seed, "versions": package_versions()}
    )
    write_npz(out / "initial_state.npz", system.initial_arrays(s))
    if result.flow is not None:
        write_npz(out / "flow.npz", {"t": result.flow.ts, **result.flow.obs})
    for name, sol in (("gd", result.gd), ("sgd", result.sgd)):
        if sol is not None:
            write_npz(out / f"{name}.npz", {"t": sol.ts, "step": sol.steps, **sol.obs})
    summary = summarize(result, interrupted=interrupted)
    write_json(out / "summary.json", summary)
    return summary


def save_interrupted(result: ExperimentResult | None, out: pathlib.Path, *, overwrite: bool = False) -> str | None:
    """Publish the finished pieces of an interrupted run (`result`, the last partial result given
    to `run_experiment`'s `on_piece`) as the run folder `out`: staged next to it and moved in with one
    rename, its summary saying that the run was interrupted and which pieces are missing (their
    verdicts "not measured"; no figures). Returns the line to print, or None when no piece had
    finished (nothing is published)."""
    if result is None:
        return None
    from ._results import publish_folder, staging_folder

    tmp = staging_folder(out)
    try:
        save_experiment(result, tmp, interrupted=True)
        publish_folder(tmp, out, overwrite=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    done = ", ".join(p for p in PIECES if getattr(result, p) is not None)
    return f"the finished pieces ({done}; missing: {', '.join(result.missing) or 'none'}) are saved in {out}"
