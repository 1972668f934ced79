"""Continuous-time limits of sign descent, Adam and RMSProp, each with its optax counterpart run by
`flowsim.optax_descent(..., lr_time=lr)` (time t = k * lr).

| dynamics | ODE | discrete counterpart | agreement |
| --- | --- | --- | --- |
| `SignGradientFlow()` | dθ/dt = -sign(∇L) | `optax.chain(optax.scale_by_sign(), optax.scale(-lr))` | O(lr) |
| `AdamFlow(lr, b1, b2, eps)` | see below (Barakat & Bianchi 2021) | `optax.adam(lr, b1, b2, eps)` | O(lr) |
| `RMSPropFlow(lr, decay, eps)` | Adam's with m̂ = ∇L | `optax.rmsprop(lr, decay, eps, **RMS)` | O(lr) |

RMS = dict(eps_in_sqrt=False, bias_correction=True): eps outside the square root, bias-corrected v.

The sign flow is the β → 0 limit of Adam/RMSProp; its right-hand side jumps where a gradient
component changes sign, so it is a classical ODE only while no component chatters around zero.

Adam's limit keeps a = (1 - b1)/lr and b = (1 - b2)/lr fixed as lr → 0: over the state (θ, m, v),
dm/dt = a(∇L - m), dv/dt = b(∇L² - v), dθ/dt = -m̂/(√v̂ + eps) with the bias corrections
m̂ = m/(1 - e^{-at}), v̂ = v/(1 - e^{-bt}) (1 - b1^k → 1 - e^{-at} at t = k lr). Both corrections are
0/0 at t = 0 (m and v start at 0): there they take their limits m̂ → ∇L, v̂ → ∇L², which is also
what the discrete m̂, v̂ are after the first step, so the flow starts at t = 0 like the optimizer.
"""

from __future__ import annotations

from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from ._dynamics import AbstractDynamics, AbstractFlow, _traced
from ._problem import Problem


@final
class SignGradientFlow(AbstractFlow):
    """Sign gradient flow dθ/dt = -sign(∇L(θ)) (signGD θ <- θ - lr sign(∇L) is its Euler scheme)."""

    def vector_field(self, t: float | Array, params: PyTree, problem: Problem) -> PyTree:
        return jax.tree.map(lambda g: -jnp.sign(g), jax.grad(problem.loss)(params))


def _debiased(moment: Array, rate: Array, t: float | Array, limit: Array) -> Array:
    """moment / (1 - e^{-rate t}), and its t → 0 limit `limit` at t = 0."""
    c = -jnp.expm1(-rate * t)
    return jnp.where(c > 0, moment / jnp.where(c > 0, c, 1), limit)


def _moment_rate(decay: Array, lr: Array) -> Array:
    return (1 - decay) / lr


def _zeros3(params0: PyTree) -> tuple[PyTree, PyTree, PyTree]:
    zeros = jax.tree.map(jnp.zeros_like, params0)
    return params0, zeros, zeros


class _AbstractAdaptiveFlow(AbstractDynamics):
    """Shared state (θ, m, v) of Adam and RMSProp; an ODE."""

    def initial_state(self, params0: PyTree) -> tuple[PyTree, PyTree, PyTree]:
        return _zeros3(params0)

    def params(self, state: tuple[PyTree, PyTree, PyTree]) -> PyTree:
        return state[0]

    def diffusion(self, t: float | Array, state: tuple[PyTree, PyTree, PyTree], problem: Problem) -> None:
        return None

    def noise_shape(self, problem: Problem) -> tuple[int, ...]:
        return ()


def _adaptive_field(
    t: float | Array, state: tuple[PyTree, PyTree, PyTree], problem: Problem, a: Array | None, b: Array, eps: Array
) -> tuple[PyTree, PyTree, PyTree]:
    """Adam's vector field; with `a` None, m is not tracked (m̂ = ∇L, RMSProp) and its derivative is 0."""
    theta, m, v = state
    g = jax.grad(problem.loss)(theta)

    def step(g: Array, m: Array, v: Array) -> Array:
        m_hat = g if a is None else _debiased(m, a, t, g)
        return -m_hat / (jnp.sqrt(_debiased(v, b, t, g * g)) + eps)

    dm = jax.tree.map(jnp.zeros_like, m) if a is None else jax.tree.map(lambda g, m: a * (g - m), g, m)
    return jax.tree.map(step, g, m, v), dm, jax.tree.map(lambda g, v: b * (g * g - v), g, v)


@final
class AdamFlow(_AbstractAdaptiveFlow):
    """Deterministic ODE limit of Adam(lr, b1, b2, eps) over (θ, m, v) at t = k lr (module docstring)."""

    lr: Array = eqx.field(converter=_traced)
    b1: Array = eqx.field(converter=_traced)
    b2: Array = eqx.field(converter=_traced)
    eps: Array = eqx.field(converter=_traced)

    def vector_field(self, t: float | Array, state: tuple[PyTree, PyTree, PyTree], problem: Problem):
        a, b = _moment_rate(self.b1, self.lr), _moment_rate(self.b2, self.lr)
        return _adaptive_field(t, state, problem, a, b, self.eps)


@final
class RMSPropFlow(_AbstractAdaptiveFlow):
    """ODE limit of bias-corrected RMSProp(lr, decay, eps) with eps outside the square root: Adam's
    flow with m̂ = ∇L (the state keeps an unused m, constant 0, so it has Adam's shape)."""

    lr: Array = eqx.field(converter=_traced)
    decay: Array = eqx.field(converter=_traced)
    eps: Array = eqx.field(converter=_traced)

    def vector_field(self, t: float | Array, state: tuple[PyTree, PyTree, PyTree], problem: Problem):
        return _adaptive_field(t, state, problem, None, _moment_rate(self.decay, self.lr), self.eps)
