"""The numeric core as pure functions: `solve_flow` and `solve_discrete` return a `Trajectory`
(an `equinox.Module`), and work under `jax.jit`, `jax.vmap` (e.g. over init scale, lr or seeds) and,
for the flow, `jax.grad` of a final observable.

`flowsim.integrate`, `gradient_descent` and `sgd` are host-side wrappers over the same compiled
programs: they add the checks made before compiling, events, progress bars and numpy conversion.
"""

from __future__ import annotations

from typing import final

import diffrax
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree

from ._descent_loop import _initial_carry
from ._discrete import _run, _update
from ._dynamics import AbstractDynamics
from ._integrate import Observer, _make_solver, _piece
from ._problem import Problem


@final
class Trajectory(eqx.Module):
    """A solve as a PyTree: `ts` save times, `obs` the observer's output with leading axis len(ts)
    (SGD: (seeds, len(ts), ...)), `params` the final trainable parameters, `result` the diffrax
    result index (`flowsim._solution.RESULT_NAMES`; 0 = successful) for a flow, or the first
    diverged step (-1 if none) for a discrete run, and `num_steps` solver steps (flows)."""

    ts: Float[Array, " S"]
    obs: PyTree
    params: PyTree
    result: Int[Array, " ..."]  # " ...": ruff reads a bare "..." as a quoted annotation (UP037)
    num_steps: Int[Array, ""]


def solve_flow(
    dynamics: AbstractDynamics,
    problem: Problem,
    ts: Float[Array, " S"],
    observer: Observer,
    *,
    solver: str | diffrax.AbstractSolver = "tsit5",
    rtol: float | Array = 1e-6,
    atol: float | Array = 1e-9,
    dt0: float | None = None,
    max_steps: int = 200_000,
) -> Trajectory:
    """Integrate `dynamics` from `problem.params0` over [ts[0], ts[-1]], recording `observer` at `ts`.

    Pure and traceable (no host checks, no events): jit it, vmap it over a batch of problems (e.g.
    initial scales) or dynamics hyperparameters, or differentiate a final observable with `jax.grad`
    (diffrax's checkpointed adjoint). Use [`integrate`][flowsim.integrate] for the checked host API.

    **Returns:** a [`Trajectory`][flowsim.Trajectory].
    """
    ts = jnp.asarray(ts)
    y0 = dynamics.initial_state(problem.params0)
    obs, _, y_end, code, steps, _, _ = _piece(
        dynamics,
        problem,
        observer,
        (),
        _make_solver(solver),
        ts[0],
        ts[-1],
        y0,
        ts,
        jnp.zeros((0,), bool),
        jnp.asarray(rtol, ts.dtype),
        jnp.asarray(atol, ts.dtype),
        dt0,
        max_steps,
        diffrax.NoProgressMeter(),
    )
    return Trajectory(ts, obs, dynamics.params(y_end), code, steps)


def solve_discrete(
    problem: Problem,
    observer: Observer,
    lr: float | Array,
    steps: Int[Array, " S"],
    *,
    keys: Array | None = None,
    batch_size: int = 1,
    sampling: str = "shuffle",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> Trajectory:
    """GD (`keys=None`) or SGD (one run per key, vmapped) from `problem.params0`, recorded at the
    integer `steps` (t = k lr).

    Pure and traceable: `lr` may be a tracer (vmap over lr), and so may the problem. `momentum` and
    `weight_decay` are Python numbers (0 removes the term from the program). Use
    [`gradient_descent`][flowsim.gradient_descent] / [`sgd`][flowsim.sgd] for the checked host API.

    **Returns:** a [`Trajectory`][flowsim.Trajectory] whose `result` is the first diverged step (-1
    if none; one per key for SGD).
    """
    steps = jnp.asarray(steps)
    update = _update(lr, momentum, weight_decay)
    carry0 = _initial_carry(update, problem.params0, None if keys is None else keys.shape[0])
    obs, carry, _, _ = _run(problem, observer, update, carry0, steps, keys, batch_size, None, sampling)
    return Trajectory(steps.astype(update.lr.dtype) * update.lr, obs, carry.params, carry.bad, jnp.asarray(steps[-1]))
