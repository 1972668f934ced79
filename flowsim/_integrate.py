"""Integrate any `AbstractDynamics` with diffrax, recording observables and locating events.

The state is the trainable parameter PyTree itself (no flattening). Observables are recorded through
`SaveAt(fn=...)`, so long solves keep only the tracked scalars. Events (named conditions with a
direction, `flowsim.Event`) are root-found on the solver's dense output; after each event the solve
continues from the state at the event with that event disarmed, and the pieces are merged on the
requested save grid. One compiled solve serves every piece.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, final

import diffrax
import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, PyTree

from . import _progress
from ._cacheable import host_callback_free
from ._checkpoint import Checkpoint
from ._dynamics import AbstractDynamics
from ._events import Event
from ._flow_pieces import FlowPieces, _observe
from ._problem import Problem
from ._rkc import RKC
from ._solution import EventHit, FlowError, FlowSolution, result_index
from ._tsit5 import UnrolledTsit5
from ._validate import check_dynamics, check_precision, check_save_times, check_tolerances

Observer = Callable[[Array, PyTree, Problem], PyTree]
EventCondition = Callable[[Array, PyTree, Problem], Array]

SOLVERS: dict[str, type[diffrax.AbstractSolver]] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "heun": diffrax.Heun,
    "euler": diffrax.Euler,
    "kvaerno5": diffrax.Kvaerno5,
    "rkc": RKC,
    "tsit5-unrolled": UnrolledTsit5,
}

__all__ = ["SOLVERS", "EventHit", "FlowError", "FlowSolution", "integrate"]


def _make_solver(solver: str | diffrax.AbstractSolver) -> diffrax.AbstractSolver:
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    if solver not in SOLVERS:
        raise ValueError(f"invalid solver={solver!r}: solver must be one of {tuple(SOLVERS)}")
    return SOLVERS[solver]()


def _controller(solver: diffrax.AbstractSolver, rtol: Array, atol: Array, dt: float | None):
    if isinstance(solver, diffrax.Euler | diffrax.Heun) and dt is not None:
        return diffrax.ConstantStepSize()
    return diffrax.PIDController(rtol=rtol, atol=atol)


def _summed(fn: Callable) -> Callable:
    def g(y, args):
        f, aux = fn(y, args)
        return sum(jax.tree.leaves(f)), aux

    return g


@final
class _SummedBisection(optx.AbstractRootFinder):
    """Bisection on the sum of a PyTree of conditions. diffrax hands its root finder one value per
    event condition, zero for all but the event that fired, so the sum is that event's condition."""

    rtol: float
    atol: float
    norm: Callable = optx.max_norm

    def _inner(self) -> optx.Bisection:
        return optx.Bisection(rtol=self.rtol, atol=self.atol)

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        return self._inner().init(_summed(fn), y, args, options, jax.ShapeDtypeStruct((), y.dtype), aux_struct, tags)

    def step(self, fn, y, args, options, state, tags):
        return self._inner().step(_summed(fn), y, args, options, state, tags)

    def terminate(self, fn, y, args, options, state, tags):
        return self._inner().terminate(_summed(fn), y, args, options, state, tags)

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return self._inner().postprocess(_summed(fn), y, aux, args, options, state, tags, result)


def _as_events(event: Event | EventCondition | Sequence[Event] | None) -> tuple[Event, ...]:
    if event is None:
        return ()
    if isinstance(event, Event):
        return (event,)
    if callable(event):
        return (Event("event", event),)
    events = tuple(event)
    if not all(isinstance(e, Event) for e in events):
        raise TypeError("event must be an Event, a condition function, or a sequence of Events")
    names = [e.name for e in events]
    if len(set(names)) != len(names):
        raise ValueError(f"event names must be unique, got {names}")
    return events


@eqx.filter_jit
def _vector_field(dynamics: AbstractDynamics, t: Any, y: PyTree, args: Problem) -> PyTree:
    """`dynamics.vector_field` as one traced function. diffrax traces a solve's step more than once
    (for the structure of its state, then inside its loop) and each trace would trace the model and
    its gradient again; through this jit they are traced and lowered once per abstract signature
    (XLA inlines the call: the compiled solve is the same)."""
    return dynamics.vector_field(t, y, args)


# A state of at least this many leaves is solved as one flat vector. Measured side by side: on
# cooccurrence's 4 leaves (57k parameters) flat evaluations ran 7-17% slower (the gradient is
# concatenated at every evaluation); on sensitivity's 16 leaves the solve compiled ~2 s faster with the
# same run time.
FLAT_MIN_LEAVES = 10


def _flat(y: PyTree) -> tuple[Array | PyTree, Callable[[Any], PyTree], Callable[[PyTree], Any]]:
    """The solve's state as one vector, the map back to its PyTree and the map from a PyTree of its
    structure (the vector field's value) to a vector, when it has at least `FLAT_MIN_LEAVES` leaves,
    all arrays of one inexact dtype; else the PyTree itself and identities. diffrax's stage, error and
    interpolation code runs per leaf: on one leaf it traces and compiles once, not once per leaf of a
    many-layer model. The error norm is the same RMS over all entries."""
    leaves = jax.tree.leaves(y)
    dtypes = {jnp.result_type(x) for x in leaves}
    if len(leaves) < FLAT_MIN_LEAVES or len(dtypes) != 1 or not jnp.issubdtype(dtypes.pop(), jnp.inexact):
        return y, lambda x: x, lambda x: x
    flat, to_tree = jax.flatten_util.ravel_pytree(y)
    return flat, to_tree, lambda x: jax.flatten_util.ravel_pytree(x)[0]


@eqx.filter_jit
def _piece(
    dynamics, problem, observer, events, solver, t0, t1, y0, ts, active, rtol, atol, dt0, max_steps, meter, rec=False
):
    """One diffeqsolve from (t0, y0) to t1, saving `observer` at `ts` and the state at its end.

    Event i is armed only where `active[i]` is true, so the same compiled solve serves every piece.
    Returns (observables, end time, end state, result index, steps, which events fired, step record):
    the step record is None, or with `rec` (static) (end time of each accepted step, inf-padded to
    `max_steps`; accepted count; rejected count).
    """
    y0, tree, flat = _flat(y0)
    params = lambda y: dynamics.params(tree(y))
    subs = [
        diffrax.SubSaveAt(ts=ts, fn=lambda t, y, args: _observe(observer, t, params(y), args)),
        diffrax.SubSaveAt(t1=True),
    ]
    if rec:
        subs.append(diffrax.SubSaveAt(steps=True, fn=lambda t, y, args: t))
    saveat = diffrax.SaveAt(subs=subs)
    ev = None
    if events:
        dtype = ts.dtype

        def make_cond(i, e):
            def cond(t, y, args, **kwargs):
                value = jnp.asarray(_observe(e.condition, t, params(y), args), dtype)
                # A disarmed event sits at a constant away from zero on the side it would leave from.
                # Cast to JAX's default float: diffrax compares it with a Python 0.0 inside a cond
                # (float64 under x64 even when the solve runs in float32).
                return jnp.where(active[i], value, -1.0 if e.direction != "down" else 1.0).astype(
                    jnp.asarray(0.0).dtype
                )

            return cond

        # Bisection on the step's dense interpolant: robust where the condition has kinks (a min
        # over samples switches sample), where Newton can stall.
        tol = 1e-12 if ts.dtype == jnp.float64 else 1e-5
        ev = diffrax.Event(
            [make_cond(i, e) for i, e in enumerate(events)],
            root_finder=_SummedBisection(rtol=tol, atol=tol),
            direction=[e.diffrax_direction for e in events],
        )
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: flat(_vector_field(dynamics, t, tree(y), args))),
        solver,
        t0,
        t1,
        dt0,
        y0,
        args=problem,
        saveat=saveat,
        stepsize_controller=_controller(solver, rtol, atol, dt0),
        max_steps=max_steps,
        throw=False,
        event=ev,
        progress_meter=meter,
    )
    ys, sol_ts = sol.ys, sol.ts
    assert ys is not None and sol_ts is not None  # saveat records both sub-saves
    y_end = tree(jax.tree.map(lambda x: x[-1], ys[1]))
    if events:
        assert sol.event_mask is not None  # diffrax returns one mask per event when given an event
        fired = jnp.stack(sol.event_mask)
    else:
        fired = jnp.zeros((0,), bool)
    record = (sol_ts[2], sol.stats["num_accepted_steps"], sol.stats["num_rejected_steps"]) if rec else None
    return ys[0], sol_ts[1][-1], y_end, result_index(sol.result), sol.stats["num_steps"], fired, record


def integrate(
    dynamics: AbstractDynamics,
    problem: Problem,
    ts: Array | np.ndarray | Sequence[float],
    observer: Observer,
    *,
    event: Event | EventCondition | Sequence[Event] | None = None,
    solver: str | diffrax.AbstractSolver = "tsit5",
    rtol: float = 1e-6,
    atol: float = 1e-9,
    dt0: float | None = None,
    max_steps: int = 200_000,
    progress: bool = False,
    checkpoint_times: Sequence[float] | np.ndarray = (),
    start: Checkpoint | None = None,
) -> FlowSolution:
    """Integrate `dynamics` from `problem.params0` (or a checkpoint) over [ts[0], ts[-1]], recording
    `observer` at `ts`.

    Checks before compiling: save times (floating, finite, strictly increasing, at least 2),
    tolerances (finite, > 0), finite initial parameters, that the vector field returns the state's
    PyTree structure and that the observer returns a PyTree of arrays.

    **Arguments:** `dynamics`: an `AbstractDynamics`; `problem`: the `Problem` (passed as `args`);
    `ts`: save times (a 1-D floating array or list of floats); `observer(t, params, problem)`: PyTree
    of arrays to record (`params` is the trainable part; `problem.model(params)` is the full model);
    `event`: one `flowsim.Event`, several (each located once, in the order they fire), or a bare
    condition (an upward crossing, named "event"); a `terminal` event ends the solve where it fires
    (later save times stay non-finite; `.stopped_by` names it); `solver`: a name in `SOLVERS` or a
    diffrax solver;
    `rtol`, `atol`: PID controller tolerances (`dt0` with "euler"/"heun" gives fixed steps instead);
    `max_steps`: per piece; `checkpoint_times`: save times (each one of `ts`) where the state is
    kept as a [`Checkpoint`][flowsim.Checkpoint] (`.checkpoints`, by time; the solve restarts its
    step-size control there); `start`: a flow checkpoint to resume from, whose time is one of `ts`
    (earlier save times are NaN): on the save grid of the solve that wrote it, the continuation is
    identical (the same compiled piece from the same state).

    **Returns:** a [`FlowSolution`][flowsim.FlowSolution]; failures are reported in `.result`
    (call `.check()` to raise).
    """
    ts = check_save_times(ts, "ts")
    solver = _make_solver(solver)
    if isinstance(solver, diffrax.Euler | diffrax.Heun) and dt0 is None:
        raise ValueError(f"{type(solver).__name__} has no error estimate here: pass dt0 for fixed steps")
    check_tolerances(rtol=rtol, atol=atol, dt0=dt0, max_steps=max_steps)
    check_precision(ts.dtype, rtol)
    rtol_, atol_ = jnp.asarray(rtol, ts.dtype), jnp.asarray(atol, ts.dtype)
    events = _as_events(event)
    y0, active = _start_state(dynamics, problem, events, ts, start)
    check_dynamics(dynamics, problem, observer, y0, ts[0], events)
    bounds = [i for i in _segment_ends(ts, checkpoint_times) if start is None or float(ts[i]) > start.time]
    label = f"flow: {type(dynamics).__name__}, {type(solver).__name__}, t in [{float(ts[0]):g}, {float(ts[-1]):g}]"
    with _progress.progress_bar(100, label, progress, unit="%") as bar:
        return _solve(
            dynamics,
            problem,
            observer,
            events,
            solver,
            ts,
            y0,
            active,
            start,
            bounds,
            bar,
            (rtol_, atol_, dt0, max_steps),
        )


def _solve(dynamics, problem, observer, events, solver, ts, y0, active, start, bounds, bar, controls) -> FlowSolution:
    """Run the pieces of `integrate` (its arguments, checked; `bar` a progress bar id, 0 for none;
    `controls` = (rtol, atol, dt0, max_steps))."""
    rtol_, atol_, dt0, max_steps = controls
    span = ts[-1] - ts[0]

    def meter(t0, t1):
        if not bar:
            return diffrax.NoProgressMeter()
        return _progress.FlowProgress(jnp.asarray(bar), (t0 - ts[0]) / span, (t1 - ts[0]) / span)

    def piece(t0, t1, y, save_ts, active):
        with host_callback_free():  # a cacheable program (see flowsim._cacheable)
            return _piece(
                dynamics,
                problem,
                observer,
                events,
                solver,
                t0,
                t1,
                y,
                save_ts,
                active,
                rtol_,
                atol_,
                dt0,
                max_steps,
                meter(t0, t1),
                True,
            )

    run = FlowPieces(piece, dynamics, problem, observer, events, ts, y0, active)
    if start is not None:
        run.t = jnp.asarray(start.time, ts.dtype)
    for t1 in bounds:
        if not run.segment(ts[t1]) or t1 == len(ts) - 1:
            break
        run.checkpoints[float(ts[t1])] = run.checkpoint()
    return run.solution()


def _segment_ends(ts: Array, checkpoint_times: Sequence[float] | np.ndarray) -> list[int]:
    """Indices into `ts` where the segments end: each checkpoint time (one of `ts`), then the last."""
    host = np.asarray(ts)
    ends = []
    for c in np.atleast_1d(np.asarray(checkpoint_times, float)):
        hit = np.flatnonzero(host == c)
        if hit.size == 0:
            raise ValueError(f"checkpoint time {c} is not one of the save times ts")
        ends.append(int(hit[0]))
    return sorted({i for i in ends if i > 0} | {len(host) - 1})


def _start_state(dynamics, problem, events, ts, start: Checkpoint | None) -> tuple[PyTree, np.ndarray]:
    """The state at ts[0] and the armed events: the dynamics' initial state, or a flow checkpoint's."""
    if start is None:
        return dynamics.initial_state(problem.params0), np.ones(len(events), bool)
    if start.kind != "flow":
        raise ValueError(f"start is a {start.kind!r} checkpoint; a flow resumes only from a 'flow' checkpoint")
    if not np.any(np.asarray(ts) == start.time):
        raise ValueError(f"the checkpoint's time {start.time} must be one of the save times ts")
    armed = np.asarray(start.status.get("armed", np.ones(len(events), bool)), bool)
    if armed.shape != (len(events),):
        raise ValueError(f"the checkpoint was taken with {armed.size} events, this solve declares {len(events)}")
    like = jax.tree.structure(dynamics.initial_state(problem.params0))
    if jax.tree.structure(start.state) != like:
        raise ValueError("the checkpoint's state does not have this dynamics' state structure")
    return start.state, armed.copy()
