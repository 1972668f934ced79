"""Stochastic dynamics: Euler-Maruyama ensembles over Brownian paths, vmapped."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import final

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

from ._dynamics import AbstractDynamics
from ._integrate import Observer
from ._problem import Problem
from ._solution import result_index, result_name
from ._validate import check_dynamics, check_save_times


@final
@dataclasses.dataclass(frozen=True)
class EnsembleSolution:
    """Output of [`integrate_sde`][flowsim.integrate_sde]: `ts` (S,), `obs` with leading axes
    (paths, S), final `params` with a leading path axis, and `result` (the diffrax result name of
    each path)."""

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
        saveat = diffrax.SaveAt(
            subs=[
                diffrax.SubSaveAt(ts=ts, fn=lambda t, y, args: observer(t, dynamics.params(y), args)),
                diffrax.SubSaveAt(t1=True, fn=lambda t, y, args: dynamics.params(y)),
            ]
        )
        sol = diffrax.diffeqsolve(
            terms, diffrax.Euler(), ts[0], ts[-1], dt, y0, args=problem, saveat=saveat, max_steps=max_steps, throw=False
        )
        ys = sol.ys
        assert ys is not None  # saveat records both sub-saves
        return ys[0], jax.tree.map(lambda x: x[-1], ys[1]), result_index(sol.result)

    return jax.vmap(one)(keys)


def integrate_sde(
    dynamics: AbstractDynamics,
    problem: Problem,
    ts: Array | np.ndarray | Sequence[float],
    observer: Observer,
    *,
    dt: float,
    paths: int = 32,
    key: Array,
) -> EnsembleSolution:
    """Integrate a stochastic dynamics (Itô, Euler-Maruyama with step `dt`) along `paths` Brownian
    paths (`VirtualBrownianTree`s split from `key`, vmapped), recording `observer` at `ts` on each.

    **Arguments:** `dynamics` must define `diffusion` and `noise_shape` (e.g. `SGDModifiedEquation`);
    `key`: the PRNG key of the paths (required: no hidden default stream); the rest as
    [`integrate`][flowsim.integrate].

    **Returns:** an [`EnsembleSolution`][flowsim.EnsembleSolution].
    """
    ts = check_save_times(ts, "ts")
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not np.isfinite(dt) or dt <= 0:
        raise ValueError(f"invalid dt={dt!r}: dt must be a finite number > 0")
    if isinstance(paths, bool) or not isinstance(paths, int) or paths < 1:
        raise ValueError(f"invalid paths={paths!r}: paths must be a positive integer")
    y0 = dynamics.initial_state(problem.params0)
    if dynamics.diffusion(ts[0], y0, problem) is None:
        raise TypeError(f"{type(dynamics).__name__} has no diffusion: use integrate() for an ODE")
    check_dynamics(dynamics, problem, observer, y0, ts[0])
    keys = jax.random.split(key, paths)
    max_steps = int(np.ceil(float(ts[-1] - ts[0]) / dt)) + 16
    obs, params, codes = _sde_paths(dynamics, problem, observer, ts, jnp.asarray(dt, ts.dtype), keys, max_steps)
    return EnsembleSolution(
        np.asarray(ts), jax.tree.map(np.asarray, obs), params, [result_name(c) for c in np.asarray(codes)]
    )
