"""Continuous-time training dynamics: vector fields (and diffusions) over the parameter PyTree.

A flow over the parameters themselves subclasses `AbstractFlow` and implements `vector_field(t,
params, problem)`; `flowsim.integrate` takes any subclass unchanged (diffrax takes the PyTree
directly). A dynamics whose state is more than the parameters (momentum carries a velocity), or a
stochastic one, subclasses `AbstractDynamics` and implements all five methods (equinox's pattern:
abstract methods only, nothing concrete is overridden).

Built in, each with its discrete counterpart in `flowsim._discrete`:

| dynamics | ODE / SDE | discrete counterpart | agreement |
| --- | --- | --- | --- |
| `GradientFlow(weight_decay)` | dθ/dt = -∇L - λθ | `gradient_descent(weight_decay=λ)` | O(lr) |
| `ModifiedFlow(lr)` | dθ/dt = -∇(L + lr/4 ‖∇L‖²) (Barrett & Dherin 2021) | `gradient_descent` | O(lr²) |
| `HeavyBallFlow(lr, momentum)` | lr(1+β)/2 θ'' + (1-β) θ' = -∇L | `gradient_descent(momentum=β)` | O(lr) |
| `SGDModifiedEquation(lr, batch_size)` | dθ = -∇(L + lr/4 ‖∇L‖²) dt + (lr Σ/B)^½ dW | `sgd` | weak, O(lr) |

The SGD modified equation is Li, Tai & E's.
"""

from __future__ import annotations

import abc
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, PyTree

from ._problem import Problem


class AbstractDynamics(eqx.Module):
    """d(state)/dt = vector_field(t, state, problem) [+ diffusion(t, state, problem) dW]."""

    @abc.abstractmethod
    def vector_field(self, t: float | Array, state: PyTree, problem: Problem) -> PyTree:
        """Time derivative of the state; same PyTree structure as the state."""

    @abc.abstractmethod
    def initial_state(self, params0: PyTree) -> PyTree:
        """State at t = 0 from the initial trainable parameters."""

    @abc.abstractmethod
    def params(self, state: PyTree) -> PyTree:
        """The trainable parameters inside a state."""

    @abc.abstractmethod
    def diffusion(self, t: float | Array, state: PyTree, problem: Problem) -> lx.AbstractLinearOperator | None:
        """Noise operator mapping a Brownian increment of shape `noise_shape` to a state-shaped
        PyTree, or None for an ODE."""

    @abc.abstractmethod
    def noise_shape(self, problem: Problem) -> tuple[int, ...]:
        """Shape of the Brownian motion driving `diffusion` (() for an ODE)."""


class AbstractFlow(AbstractDynamics):
    """An ODE whose state is the trainable parameter PyTree itself: implement `vector_field`."""

    def initial_state(self, params0: PyTree) -> PyTree:
        return params0

    def params(self, state: PyTree) -> PyTree:
        return state

    def diffusion(self, t: float | Array, state: PyTree, problem: Problem) -> None:
        return None

    def noise_shape(self, problem: Problem) -> tuple[int, ...]:
        return ()


def _traced(x: float | Array) -> Array:
    """A hyperparameter as a (weakly typed) array: a traced argument, so changing it never recompiles."""
    return jnp.asarray(x)


def _traced_or_none(x: float | Array | None) -> Array | None:
    """None (or a Python 0, which removes the term from the program) stays None; else `_traced`."""
    if x is None or (isinstance(x, (int, float)) and x == 0):
        return None
    return jnp.asarray(x)


def _negative_gradient(problem: Problem, params: PyTree, lr_correction: Array | float = 0.0) -> PyTree:
    """-∇(L + c/4 ‖∇L‖²) = -(g + c/2 H g), with the Hessian-vector product by forward-over-reverse."""
    grad = jax.grad(problem.loss)
    g = grad(params)
    if isinstance(lr_correction, (int, float)) and lr_correction == 0:
        return jax.tree.map(jnp.negative, g)
    _, hg = jax.jvp(grad, (params,), (g,))
    return jax.tree.map(lambda a, b: -(a + 0.5 * lr_correction * b), g, hg)


@final
class GradientFlow(AbstractFlow):
    """Gradient flow dθ/dt = -∇L(θ) - λθ (λ = `weight_decay`, default 0: plain gradient flow)."""

    weight_decay: Array | None = eqx.field(default=None, converter=_traced_or_none)

    def vector_field(self, t: float | Array, params: PyTree, problem: Problem) -> PyTree:
        v = _negative_gradient(problem, params)
        if self.weight_decay is None:
            return v
        return jax.tree.map(lambda a, p: a - self.weight_decay * p, v, params)


@final
class ModifiedFlow(AbstractFlow):
    """Implicit-gradient-regularisation flow of GD with step `lr`: dθ/dt = -∇(L + lr/4 ‖∇L‖²).

    GD with step lr follows it to O(lr²), where it follows the plain gradient flow only to O(lr)
    (Barrett & Dherin, ICLR 2021).
    """

    lr: Array = eqx.field(converter=_traced)

    def vector_field(self, t: float | Array, params: PyTree, problem: Problem) -> PyTree:
        return _negative_gradient(problem, params, self.lr)


@final
class HeavyBallFlow(AbstractDynamics):
    """Second-order ODE of heavy-ball momentum with step `lr` and momentum `momentum` (β):
    lr(1+β)/2 θ'' + (1-β) θ' = -∇L, integrated as the first-order system over (θ, θ').

    It is the modified equation of v <- βv - lr ∇L, θ <- θ + v at t = k lr (central differences
    of the discrete recursion); the state starts at rest, as the discrete velocity does.
    """

    lr: Array = eqx.field(converter=_traced)
    momentum: Array = eqx.field(converter=_traced)

    def initial_state(self, params0: PyTree) -> tuple[PyTree, PyTree]:
        return params0, jax.tree.map(jnp.zeros_like, params0)

    def params(self, state: tuple[PyTree, PyTree]) -> PyTree:
        return state[0]

    def diffusion(self, t: float | Array, state: tuple[PyTree, PyTree], problem: Problem) -> None:
        return None

    def noise_shape(self, problem: Problem) -> tuple[int, ...]:
        return ()

    def vector_field(self, t: float | Array, state: tuple[PyTree, PyTree], problem: Problem):
        theta, vel = state
        mass = 0.5 * self.lr * (1 + self.momentum)
        force = _negative_gradient(problem, theta)
        acc = jax.tree.map(lambda f, v: (f - (1 - self.momentum) * v) / mass, force, vel)
        return vel, acc


@final
class SGDModifiedEquation(AbstractDynamics):
    """Stochastic modified equation of SGD (Li, Tai & E 2017/2019), Itô:

    dθ = -∇(L + lr/4 ‖∇L‖²) dt + (lr Σ_B)^½ dW,  Σ_B = (1/B) Cov_i(∇ℓ_i) · (n - B)/(n - 1),

    where the last factor is the finite-population correction of batches drawn without replacement
    (`flowsim.sgd`'s sampling). The noise factor is σ = (lr c / (B n))^½ (G - ḡ)ᵀ with G
    the n per-sample gradients, applied to an n-dimensional Brownian increment w as
    ∇_θ Σ_i (w_i - w̄) ℓ_i(θ): one extra backward pass, never a P×P or P×n matrix.
    """

    lr: Array = eqx.field(converter=_traced)
    batch_size: int = eqx.field(static=True)
    correction: bool = eqx.field(static=True, default=True)

    def vector_field(self, t: float | Array, params: PyTree, problem: Problem) -> PyTree:
        return _negative_gradient(problem, params, self.lr)

    def initial_state(self, params0: PyTree) -> PyTree:
        return params0

    def params(self, state: PyTree) -> PyTree:
        return state

    def noise_shape(self, problem: Problem) -> tuple[int, ...]:
        return (problem.n,)

    def diffusion(self, t: float | Array, params: PyTree, problem: Problem) -> lx.AbstractLinearOperator:
        n, B = problem.n, self.batch_size
        fpc = (n - B) / (n - 1) if self.correction and n > 1 else 1.0
        scale = jnp.sqrt(self.lr * fpc / (B * n))

        def apply(w: Array) -> PyTree:
            centred = w - jnp.mean(w)
            g = jax.grad(lambda p: jnp.sum(centred * problem.per_sample_loss(p)))(params)
            return jax.tree.map(lambda x: scale * x, g)

        dtype = jax.tree.leaves(params)[0].dtype
        return lx.FunctionLinearOperator(apply, jax.ShapeDtypeStruct((n,), dtype))
