"""Continuous-time training dynamics: vector fields over the parameter PyTree of a `Problem`.

Subclass `AbstractDynamics` and implement `vector_field(t, params, problem)`; the solver code in
`flowsim.flow` integrates any subclass unchanged (diffrax takes the PyTree directly).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
from jaxtyping import Array, PyTree

from .problem import Problem


class AbstractDynamics(eqx.Module):
    """d(params)/dt = vector_field(t, params, problem)."""

    @abc.abstractmethod
    def vector_field(self, t: Array, params: PyTree, problem: Problem) -> PyTree:
        """Time derivative of the trainable parameters; same PyTree structure as `params`."""


class GradientFlow(AbstractDynamics):
    """Gradient flow on the empirical risk: d(theta)/dt = -grad L(theta)."""

    def vector_field(self, t: Array, params: PyTree, problem: Problem) -> PyTree:
        return jax.tree.map(lambda g: -g, jax.grad(problem.loss)(params))
