"""Continuous-time training dynamics: vector fields (and diffusions) over the parameter PyTree.

Subclass `AbstractDynamics` and implement `vector_field(t, state, problem)`; the solver code in
`flowsim.flow` integrates any subclass unchanged (diffrax takes the PyTree directly). A dynamics
whose state is more than the parameters (momentum carries a velocity) overrides `initial_state`
and `params`; a stochastic one overrides `diffusion` and `noise_shape`.

Built in, each with its discrete counterpart in `flowsim.discrete`:

| dynamics | ODE / SDE | discrete counterpart | agreement |
| --- | --- | --- | --- |
| `GradientFlow(weight_decay)` | dθ/dt = -∇L - λθ | `gradient_descent(weight_decay=λ)` | O(lr) |
| `ModifiedFlow(lr)` | dθ/dt = -∇(L + lr/4 ‖∇L‖²) (Barrett & Dherin 2021) | `gradient_descent` | O(lr²) |
| `HeavyBallFlow(lr, momentum)` | lr(1+β)/2 θ'' + (1-β) θ' = -∇L | `gradient_descent(momentum=β)` | O(lr) |
| `SGDModifiedEquation(lr, batch_size)` | dθ = -∇(L + lr/4 ‖∇L‖²) dt + (lr Σ/B)^½ dW (Li, Tai & E) | `sgd` | weak, O(lr) |
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, PyTree

from ._problem import Problem


class AbstractDynamics(eqx.Module):
    """d(state)/dt = vector_field(t, state, problem) [+ diffusion(t, state, problem) dW]."""

    @abc.abstractmethod
    def vector_field(self, t: Array, state: PyTree, problem: Problem) -> PyTree:
        """Time derivative of the state; same PyTree structure as the state."""

    def initial_state(self, params0: PyTree) -> PyTree:
        """State at t = 0 from the initial trainable parameters (default: the parameters)."""
        return params0

    def params(self, state: PyTree) -> PyTree:
        """The trainable parameters inside a state (default: the state itself)."""
        return state

    def diffusion(self, t: Array, state: PyTree, problem: Problem) -> lx.AbstractLinearOperator | None:
        """Noise operator mapping a Brownian increment of shape `noise_shape` to a state-shaped
        PyTree, or None for an ODE."""
        return None

    def noise_shape(self, problem: Problem) -> tuple[int, ...]:
        """Shape of the Brownian motion driving `diffusion`."""
        return ()


def _negative_gradient(problem: Problem, params: PyTree, lr_correction: Array | float = 0.0) -> PyTree:
    """-∇(L + c/4 ‖∇L‖²) = -(g + c/2 H g), with the Hessian-vector product by forward-over-reverse."""
    grad = jax.grad(problem.loss)
    g = grad(params)
    if isinstance(lr_correction, float) and lr_correction == 0.0:
        return jax.tree.map(jnp.negative, g)
    _, hg = jax.jvp(grad, (params,), (g,))
    return jax.tree.map(lambda a, b: -(a + 0.5 * lr_correction * b), g, hg)


class GradientFlow(AbstractDynamics):
    """Gradient flow dθ/dt = -∇L(θ) - λθ (λ = `weight_decay`, default 0: plain gradient flow)."""

    weight_decay: float | Array = 0.0

    def vector_field(self, t: Array, params: PyTree, problem: Problem) -> PyTree:
        v = _negative_gradient(problem, params)
        if isinstance(self.weight_decay, float) and self.weight_decay == 0.0:
            return v
        return jax.tree.map(lambda a, p: a - self.weight_decay * p, v, params)


class ModifiedFlow(AbstractDynamics):
    """Implicit-gradient-regularisation flow of GD with step `lr`: dθ/dt = -∇(L + lr/4 ‖∇L‖²).

    GD with step lr follows it to O(lr²), where it follows the plain gradient flow only to O(lr)
    (Barrett & Dherin, ICLR 2021).
    """

    lr: float | Array

    def vector_field(self, t: Array, params: PyTree, problem: Problem) -> PyTree:
        return _negative_gradient(problem, params, self.lr)


class HeavyBallFlow(AbstractDynamics):
    """Second-order ODE of heavy-ball momentum with step `lr` and momentum `momentum` (β):
    lr(1+β)/2 θ'' + (1-β) θ' = -∇L, integrated as the first-order system over (θ, θ').

    It is the modified equation of v <- βv - lr ∇L, θ <- θ + v at t = k lr (central differences
    of the discrete recursion); the state starts at rest, as the discrete velocity does.
    """

    lr: float | Array
    momentum: float | Array

    def initial_state(self, params0: PyTree) -> tuple[PyTree, PyTree]:
        return params0, jax.tree.map(jnp.zeros_like, params0)

    def params(self, state: tuple[PyTree, PyTree]) -> PyTree:
        return state[0]

    def vector_field(self, t: Array, state: tuple[PyTree, PyTree], problem: Problem):
        theta, vel = state
        mass = 0.5 * self.lr * (1 + self.momentum)
        force = _negative_gradient(problem, theta)
        acc = jax.tree.map(lambda f, v: (f - (1 - self.momentum) * v) / mass, force, vel)
        return vel, acc


class SGDModifiedEquation(AbstractDynamics):
    """Stochastic modified equation of SGD (Li, Tai & E 2017/2019), Itô:

    dθ = -∇(L + lr/4 ‖∇L‖²) dt + (lr Σ_B)^½ dW,  Σ_B = (1/B) Cov_i(∇ℓ_i) · (n - B)/(n - 1),

    where the last factor is the finite-population correction of batches drawn without replacement
    (`flowsim.discrete.sgd`'s sampling). The noise factor is σ = (lr c / (B n))^½ (G - ḡ)ᵀ with G
    the n per-sample gradients, applied to an n-dimensional Brownian increment w as
    ∇_θ Σ_i (w_i - w̄) ℓ_i(θ): one extra backward pass, never a P×P or P×n matrix.
    """

    lr: float | Array
    batch_size: int = eqx.field(static=True)
    correction: bool = eqx.field(static=True, default=True)

    def vector_field(self, t: Array, params: PyTree, problem: Problem) -> PyTree:
        return _negative_gradient(problem, params, self.lr)

    def noise_shape(self, problem: Problem) -> tuple[int, ...]:
        return (problem.n,)

    def diffusion(self, t: Array, params: PyTree, problem: Problem) -> lx.AbstractLinearOperator:
        n, B = problem.n, self.batch_size
        fpc = (n - B) / (n - 1) if self.correction and n > 1 else 1.0
        scale = jnp.sqrt(self.lr * fpc / (B * n))

        def apply(w: Array) -> PyTree:
            centred = w - jnp.mean(w)
            g = jax.grad(lambda p: jnp.sum(centred * problem.per_sample_loss(p)))(params)
            return jax.tree.map(lambda x: scale * x, g)

        dtype = jax.tree.leaves(params)[0].dtype
        return lx.FunctionLinearOperator(apply, jax.ShapeDtypeStruct((n,), dtype))
