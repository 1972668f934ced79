"""What a system provides: [`AbstractSystem`][flowsim.AbstractSystem] and the records it reads.

A system is one folder under `flowsim/systems/`: its config fields, data, model, observables, events,
verdicts, sweep measures and figures. The engine runs any system the same way: `setup` builds the
`Problem` and observer from a `Config` and the run's keys; the flow and the discrete comparators run
from the same initial point; the system's verdicts, measures and figures read the result. Adding a
system is one folder plus one line in `flowsim/systems/__init__.py`.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, final

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, PyTree

from ._events import Event
from ._verdicts import Verdict

if TYPE_CHECKING:
    from ._config import Config
    from ._discrete import DiscreteSolution
    from ._integrate import FlowSolution
    from ._problem import Problem
    from ._results import RunData

PIECES = ("flow", "gd", "sgd")
STREAMS = ("data", "init", "sgd", "test", "sde")


@final
class RunKeys(eqx.Module):
    """Every random stream of one run, split from `PRNGKey(seed)` by `jax.random.split`:
    `data` (training set), `init` (initial parameters), `sgd` (minibatches), `test` (held-out
    samples), `sde` (Brownian paths)."""

    data: Array
    init: Array
    sgd: Array
    test: Array
    sde: Array

    @staticmethod
    def from_seed(seed: int) -> RunKeys:
        return RunKeys(*jax.random.split(jax.random.PRNGKey(seed), len(STREAMS)))


@final
@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a run starts from: `config`, `keys`, training `data`, initial `model`, `problem`,
    `observer(t, params, problem)` and the `events` to locate (the system's)."""

    config: Config
    keys: RunKeys
    data: Any
    model: Any
    problem: Problem
    observer: Callable[[Array, PyTree, Any], PyTree]
    events: tuple[Event, ...] = ()


@final
@dataclasses.dataclass(frozen=True)
class RunRecord:
    """The solutions of one run that verdicts and measures read (a piece not run is None)."""

    config: Config
    flow: FlowSolution | None
    gd: DiscreteSolution | None
    sgd: DiscreteSolution | None

    @functools.cached_property
    def verdicts(self) -> dict[str, Verdict]:
        """The run's system's verdicts by name, evaluated once per record (every verdict and
        verdict-figure measure of a sweep point, and `summary.json`, read them from here); a verdict
        that needs data its runs did not produce is "not measured" (`flowsim._verdicts.judge_reached`)."""
        from ._registry import get_system
        from ._verdicts import judge_reached

        system = get_system(self.config.system)
        return {v.name: v for v in judge_reached(system.verdicts(self), system.verdict_needs, self)}

    def obs(self, piece: str) -> dict[str, np.ndarray] | None:
        """`{"t": times, **observables}` of one piece, or None when it did not run."""
        sol = getattr(self, piece)
        return None if sol is None else {"t": np.asarray(sol.ts), **sol.obs}

    def event_time(self, name: str) -> float | None:
        """Time of the flow's event `name`, or None if it did not fire (or no flow ran)."""
        if self.flow is None or name not in self.flow.events:
            return None
        t = self.flow.events[name].time
        return None if not np.isfinite(t) else float(t)

    def event_obs(self, name: str) -> dict[str, np.ndarray] | None:
        """The observables at the flow's event `name`, or None if it did not fire."""
        if self.event_time(name) is None:
            return None
        assert self.flow is not None
        return self.flow.events[name].obs


@final
@dataclasses.dataclass(frozen=True)
class Measure:
    """A named scalar of one sweep point: `fn` reads it off a `RunRecord`, which must hold the
    pieces in `needs` (a subset of "flow", "gd", "sgd"); `doc` says what it is."""

    name: str
    needs: frozenset[str]
    fn: Callable[[RunRecord], Any]
    doc: str


@final
@dataclasses.dataclass(frozen=True)
class Prediction:
    """A theory prediction runnable as `flowsim theory NAME`: `run(axis, values, seeds, config,
    **options)` returns a JSON-able table (with `rows`); `options_of` is the function whose
    keyword-only parameters are the `--set` options; `axes` the allowed `--axis` values (empty:
    none taken); `integer_values(axis)` whether the grid is integers."""

    doc: str
    run: Callable[..., dict[str, Any]]
    options_of: Callable[..., Any]
    axes: tuple[str, ...] = ()
    integer_values: Callable[[str | None], bool] = lambda axis: True


class AbstractSystem(eqx.Module):
    """A system of flowsim: a task, a model and what to measure on its training dynamics.

    Class variables to provide: `name`, `summary` (one line for `flowsim systems`), `config_type`
    (a frozen dataclass of the system's fields declared with `flowsim.field`), `verdict_needs`
    (verdict name -> the pieces it needs), `predictions` (theory predictions; may be empty),
    `smoke` (fields of a seconds-long run: the contract test runs every system with them).
    """

    name: eqx.AbstractClassVar[str]
    summary: eqx.AbstractClassVar[str]
    config_type: eqx.AbstractClassVar[type]
    verdict_needs: eqx.AbstractClassVar[Mapping[str, frozenset[str]]]
    predictions: eqx.AbstractClassVar[Mapping[str, Prediction]]
    smoke: eqx.AbstractClassVar[Mapping[str, Any]]

    @abc.abstractmethod
    def train_size(self, task: Any) -> int:
        """Number of training samples of the task config `task` (bounds the SGD batch size)."""

    @abc.abstractmethod
    def setup(self, config: Config, keys: RunKeys, model: Any = None, data: Any = None) -> Setup:
        """Draw (or take) the training data and initial model and build the `Setup`."""

    @abc.abstractmethod
    def held_out(self, setup: Setup, params: PyTree, key: Array) -> Array:
        """A held-out metric of trained parameters `params` (e.g. the loss on fresh samples); a
        leading axis of `params` (SGD seeds) is handled by the engine with vmap."""

    @abc.abstractmethod
    def initial_arrays(self, setup: Setup) -> dict[str, Any]:
        """The arrays written to `initial_state.npz` (initial parameters and training data)."""

    @abc.abstractmethod
    def verdicts(self, run: RunRecord) -> list[Verdict]:
        """The verdicts of a run; a verdict whose pieces did not run is left out."""

    @abc.abstractmethod
    def measures(self) -> Sequence[Measure]:
        """The system's own sweep measures (the engine adds its generic ones and one per verdict)."""

    @abc.abstractmethod
    def summary_extras(self, run: RunRecord) -> dict[str, Any]:
        """Extra keys for `summary.json` (e.g. the observables at an event)."""

    @abc.abstractmethod
    def figures(self, run: RunData, out_dir: pathlib.Path) -> list[pathlib.Path]:
        """Draw the system's figures of a saved run into `out_dir`; return their paths."""
