"""Integrate any `AbstractDynamics` with diffrax, recording observables and locating an event.

The state is the trainable parameter PyTree itself (no flattening). Observables are recorded through
`SaveAt(fn=...)`, so long solves keep only the tracked scalars. An optional event condition (a real
function of the state, e.g. the minimum margin) is root-found; the solve then continues from the
state at the event to the final time, and the two pieces are merged on the requested save grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, PyTree

from .dynamics import AbstractDynamics
from .problem import Problem

Observer = Callable[[Array, PyTree, Problem], PyTree]
EventCondition = Callable[[Array, PyTree, Problem], Array]

SOLVERS: dict[str, type[diffrax.AbstractSolver]] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "heun": diffrax.Heun,
    "euler": diffrax.Euler,
    "kvaerno5": diffrax.Kvaerno5,
}


class FlowError(RuntimeError):
    """A solve stopped before its final time; `.solution` holds the partial trajectory."""

    def __init__(self, message: str, solution: FlowSolution):
        super().__init__(message)
        self.solution = solution


def _result_name(result: Any) -> str:
    for name, item in diffrax.RESULTS._name_to_item.items():
        if bool(result == item):
            return name
    return "unknown"


@dataclasses.dataclass(frozen=True)
class FlowSolution:
    """Output of [`integrate`][].

    **Fields:** `ts` save times; `obs` dict of observables, each with leading axis len(ts)
    (non-finite where the solve never got); `params` final state; `event_time` (nan when no event
    fired); `event_obs` observables at the event (or None); `event_params`; `result` the diffrax
    result name ("successful" on success); `num_steps` accepted + rejected steps of all pieces;
    `t_reached` the time the solve got to.
    """

    ts: np.ndarray
    obs: dict[str, np.ndarray]
    params: PyTree
    event_time: float
    event_obs: dict[str, np.ndarray] | None
    event_params: PyTree | None
    result: str
    num_steps: int
    t_reached: float

    @property
    def ok(self) -> bool:
        return self.result == "successful"

    def check(self) -> FlowSolution:
        """Return self, or raise `FlowError` naming the diffrax result and the time reached."""
        if not self.ok:
            raise FlowError(
                f"flow solve stopped with diffrax result '{self.result}' at t = {self.t_reached:.6g} "
                f"(target t = {self.ts[-1]:.6g}); the trajectory up to there is kept in .solution",
                self,
            )
        return self


def _make_solver(solver: str | diffrax.AbstractSolver) -> diffrax.AbstractSolver:
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {tuple(SOLVERS)}, got {solver!r}")
    return SOLVERS[solver]()


def _controller(solver: diffrax.AbstractSolver, rtol: Array, atol: Array, dt: float | None):
    if isinstance(solver, diffrax.Euler | diffrax.Heun) and dt is not None:
        return diffrax.ConstantStepSize()
    return diffrax.PIDController(rtol=rtol, atol=atol)


def _shapes(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


def check_dynamics(dynamics: AbstractDynamics, problem: Problem, observer: Observer | None, y0: PyTree,
                   t0: Array) -> None:
    """Abstractly evaluate the vector field (and diffusion, observer) once, before anything compiles.

    Raises `TypeError` naming what is wrong: a vector field whose output PyTree differs from the
    state's (structure, shapes or dtypes), a diffusion whose product with the noise does, or an
    observer that does not return a PyTree of arrays.
    """
    name = type(dynamics).__name__
    try:
        out = eqx.filter_eval_shape(dynamics.vector_field, t0, y0, problem)
    except Exception as e:  # surface the user's error with the dynamics' name
        raise TypeError(f"{name}.vector_field failed on the initial state: {e}") from e
    if jax.tree.structure(out) != jax.tree.structure(y0) or _shapes(out) != _shapes(y0):
        raise TypeError(f"{name}.vector_field must return a PyTree with the structure, shapes and dtypes of "
                        f"the state {_shapes(y0)}; got {_shapes(out)}")
    shape = dynamics.noise_shape(problem)
    if dynamics.diffusion(t0, y0, problem) is not None:
        dtype = jax.tree.leaves(y0)[0].dtype
        prod = eqx.filter_eval_shape(lambda y: dynamics.diffusion(t0, y, problem).mv(jnp.zeros(shape, dtype)), y0)
        if jax.tree.structure(prod) != jax.tree.structure(y0) or _shapes(prod) != _shapes(y0):
            raise TypeError(f"{name}.diffusion(...).mv(noise of shape {shape}) must return the state's PyTree")
    if observer is not None:
        obs = eqx.filter_eval_shape(observer, t0, dynamics.params(y0), problem)
        bad = [x for x in jax.tree.leaves(obs) if not isinstance(x, jax.ShapeDtypeStruct)]
        if bad:
            raise TypeError(f"the observer must return a PyTree of arrays; got leaves {bad[:3]}")


@eqx.filter_jit
def _piece(dynamics, problem, observer, event, solver, t0, t1, y0, ts, active, rtol, atol, dt0, max_steps,
           progress):
    """One diffeqsolve from (t0, y0) to t1, saving `observer` at `ts` and the state at its end.

    The event (if any) is armed only where `active` is true, so the same compiled solve serves
    both the piece that locates the event and the piece that continues after it.
    """
    saveat = diffrax.SaveAt(subs=[
        diffrax.SubSaveAt(ts=ts, fn=lambda t, y, args: observer(t, dynamics.params(y), args)),
        diffrax.SubSaveAt(t1=True)])
    ev = None
    if event is not None:
        def cond(t, y, args, **kwargs):
            # Cast to JAX's default float: diffrax compares it with a Python 0.0 inside a cond.
            return jnp.where(active, event(t, dynamics.params(y), args), 1.0).astype(jnp.asarray(0.0).dtype)

        # Bisection on the step's dense interpolant: robust where the condition has kinks (a min
        # over samples switches sample), where Newton can stall.
        tol = 1e-12 if ts.dtype == jnp.float64 else 1e-5
        ev = diffrax.Event(cond, root_finder=optx.Bisection(rtol=tol, atol=tol), direction=True)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(dynamics.vector_field), solver, t0, t1, dt0, y0, args=problem, saveat=saveat,
        stepsize_controller=_controller(solver, rtol, atol, dt0), max_steps=max_steps, throw=False,
        event=ev, progress_meter=diffrax.TqdmProgressMeter(refresh_steps=50) if progress
        else diffrax.NoProgressMeter())
    y_end = jax.tree.map(lambda x: x[-1], sol.ys[1])
    return sol.ys[0], sol.ts[1][-1], y_end, sol.result, sol.stats["num_steps"]


def integrate(
    dynamics: AbstractDynamics,
    problem: Problem,
    ts: Array,
    observer: Observer,
    *,
    event: EventCondition | None = None,
    solver: str | diffrax.AbstractSolver = "tsit5",
    rtol: float = 1e-6,
    atol: float = 1e-9,
    dt0: float | None = None,
    max_steps: int = 200_000,
    progress: bool = False,
) -> FlowSolution:
    """Integrate `dynamics` from `problem.params0` over [ts[0], ts[-1]], recording `observer` at `ts`.

    Checks before compiling that the vector field returns the state's PyTree structure and that the
    observer returns a PyTree of arrays (`TypeError` otherwise).

    **Arguments:** `dynamics`: an `AbstractDynamics`; `problem`: the `Problem` (passed as `args`);
    `ts`: increasing save times; `observer(t, params, problem)`: PyTree of arrays to record;
    `event(t, params, problem)`: real condition whose upward zero crossing is root-found (the solve
    continues past it); `solver`: a name in `SOLVERS` or a diffrax solver; `rtol`, `atol`: PID
    controller tolerances (`dt0` with "euler"/"heun" gives fixed steps instead); `max_steps`: per piece.

    **Returns:** a [`FlowSolution`][]; failures are reported in `.result` (call `.check()` to raise).
    """
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2 or not bool(jnp.all(jnp.diff(ts) > 0)):
        raise ValueError("ts must be a strictly increasing 1-D array of at least 2 times")
    solver = _make_solver(solver)
    if isinstance(solver, diffrax.Euler | diffrax.Heun) and dt0 is None:
        raise ValueError(f"{type(solver).__name__} has no error estimate here: pass dt0 for fixed steps")
    rtol, atol = jnp.asarray(rtol, ts.dtype), jnp.asarray(atol, ts.dtype)
    y0 = dynamics.initial_state(problem.params0)
    check_dynamics(dynamics, problem, observer, y0, ts[0])

    def piece(t0, y0, save_ts, active):
        return _piece(dynamics, problem, observer, event, solver, t0, ts[-1], y0, save_ts,
                      jnp.asarray(active), rtol, atol, dt0, max_steps, progress)

    obs, t_end, y_end, result, num_steps = piece(ts[0], y0, ts, event is not None)
    t_ev, y_ev, event_obs = np.nan, None, None
    if event is not None and diffrax.is_event(result):
        t_ev, y_ev = float(t_end), dynamics.params(y_end)
        # Continue from the event state; save times before the event are clipped to it (so the
        # first save of this piece is the observer at the event) and then taken from the first piece.
        obs2, t_end, y_end, result, steps2 = piece(t_end, y_end, jnp.maximum(ts, t_end), False)
        event_obs = jax.tree.map(lambda x: x[0], obs2)
        first = ts <= t_ev
        obs = jax.tree.map(lambda a, b: jnp.where(first.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), obs, obs2)
        num_steps = num_steps + steps2
    return FlowSolution(
        ts=np.asarray(ts),
        obs=jax.tree.map(np.asarray, obs),
        params=dynamics.params(y_end),
        event_time=t_ev,
        event_obs=None if event_obs is None else jax.tree.map(np.asarray, event_obs),
        event_params=y_ev,
        result=_result_name(result),
        num_steps=int(num_steps),
        t_reached=float(t_end),
    )


@dataclasses.dataclass(frozen=True)
class EnsembleSolution:
    """Output of [`integrate_sde`][]: `ts` (S,), `obs` with leading axes (paths, S), final `params`
    with a leading path axis, and `result` (the diffrax result name of each path)."""

    ts: np.ndarray
    obs: dict[str, np.ndarray]
    params: PyTree
    result: list[str]

    @property
    def ok(self) -> bool:
        return all(r == "successful" for r in self.result)


@eqx.filter_jit
def _sde_paths(dynamics, problem, observer, ts, dt, keys, max_steps):
    y0 = dynamics.initial_state(problem.params0)
    dtype = jax.tree.leaves(y0)[0].dtype
    noise = jax.ShapeDtypeStruct(dynamics.noise_shape(problem), dtype)

    def one(key):
        bm = diffrax.VirtualBrownianTree(ts[0], ts[-1], tol=dt / 2, shape=noise, key=key)
        terms = diffrax.MultiTerm(diffrax.ODETerm(dynamics.vector_field), diffrax.ControlTerm(dynamics.diffusion, bm))
        saveat = diffrax.SaveAt(subs=[
            diffrax.SubSaveAt(ts=ts, fn=lambda t, y, args: observer(t, dynamics.params(y), args)),
            diffrax.SubSaveAt(t1=True, fn=lambda t, y, args: dynamics.params(y))])
        sol = diffrax.diffeqsolve(terms, diffrax.Euler(), ts[0], ts[-1], dt, y0, args=problem, saveat=saveat,
                                  max_steps=max_steps, throw=False)
        return sol.ys[0], jax.tree.map(lambda x: x[-1], sol.ys[1]), sol.result._value

    return jax.vmap(one)(keys)


def integrate_sde(
    dynamics: AbstractDynamics,
    problem: Problem,
    ts: Array,
    observer: Observer,
    *,
    dt: float,
    paths: int = 32,
    key: Array | None = None,
) -> EnsembleSolution:
    """Integrate a stochastic dynamics (Itô, Euler-Maruyama with step `dt`) along `paths` Brownian
    paths (`VirtualBrownianTree`s from `key`, vmapped), recording `observer` at `ts` on each path.

    **Arguments:** `dynamics` must define `diffusion` and `noise_shape` (e.g. `SGDModifiedEquation`);
    the rest as [`integrate`][].
    **Returns:** an [`EnsembleSolution`][].
    """
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2 or not bool(jnp.all(jnp.diff(ts) > 0)):
        raise ValueError("ts must be a strictly increasing 1-D array of at least 2 times")
    if not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    y0 = dynamics.initial_state(problem.params0)
    if dynamics.diffusion(ts[0], y0, problem) is None:
        raise TypeError(f"{type(dynamics).__name__} has no diffusion: use integrate() for an ODE")
    check_dynamics(dynamics, problem, observer, y0, ts[0])
    keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, paths)
    max_steps = int(np.ceil(float(ts[-1] - ts[0]) / dt)) + 16
    obs, params, codes = _sde_paths(dynamics, problem, observer, ts, jnp.asarray(dt, ts.dtype), keys, max_steps)
    names = {int(item._value): name for name, item in diffrax.RESULTS._name_to_item.items()}
    return EnsembleSolution(np.asarray(ts), jax.tree.map(np.asarray, obs), params,
                            [names.get(int(c), "unknown") for c in np.asarray(codes)])
