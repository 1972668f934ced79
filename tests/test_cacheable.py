"""The flow's compiled solve has no host callback, so JAX's persistent cache can keep it
(`flowsim._cacheable`); equinox's setting is restored afterwards and a user's explicit one is kept.

Toy problem: a linear model on four points with squared loss, an event on the first weight.
"""

from __future__ import annotations

import importlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsim._integrate as integrate_module
from flowsim import Event, GradientFlow, integrate, make_problem, squared_loss
from flowsim._cacheable import host_callback_free

X = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])


class Linear(eqx.Module):
    W: jax.Array

    def __call__(self, x):
        return self.W @ x


def _callbacks(text: str) -> int:
    return text.count("callback")


def _fresh_lowering(fn, args) -> str:
    """The lowered text of `fn(*args)`, traced afresh: the cached traces of the solve and of
    equinox's check (the ones `integrate` made) are dropped first, not every cache of the process."""
    importlib.import_module("equinox._errors").branched_error_if_impl_jit._cached.clear_cache()
    fn._cached.clear_cache()
    return fn.lower(*args).as_text()


@pytest.fixture(scope="module")
def lowered():
    """The lowered text of the flow's solve as `integrate` compiles it, and the same solve traced
    outside flowsim's context (equinox's default checks)."""
    problem = make_problem(
        Linear(jnp.array([0.0, 3.0])), jnp.asarray(X), jnp.asarray(X @ np.array([2.0, -1])), squared_loss
    )
    seen: list = []
    original = integrate_module._piece

    def spy(*args):
        seen.append(args)
        return original(*args)

    integrate_module._piece = spy  # type: ignore[assignment]
    try:
        event = Event("w1_up", lambda t, p, pr: p.W[0] - 1.0, "up")
        sol = integrate(GradientFlow(), problem, jnp.linspace(0.0, 2.0, 5), lambda t, p, pr: {"w": p.W}, event=event)
    finally:
        integrate_module._piece = original  # type: ignore[assignment]
    assert sol.ok and np.isfinite(sol.event_time)
    outside = _fresh_lowering(original, seen[0])
    with host_callback_free():
        inside = _fresh_lowering(original, seen[0])
    return inside, outside


def test_the_flow_solve_compiles_without_host_callbacks(lowered):
    inside, outside = lowered
    assert _callbacks(outside) > 0  # diffrax and optimistix do place equinox checks in the solve
    assert _callbacks(inside) == 0


def test_equinox_setting_is_restored_and_an_explicit_one_kept(lowered, monkeypatch):
    errors = importlib.import_module("equinox._errors")
    assert errors.EQX_ON_ERROR == "raise"
    with host_callback_free(), host_callback_free():
        assert errors.EQX_ON_ERROR == "nan"
    assert errors.EQX_ON_ERROR == "raise"
    monkeypatch.setattr(errors, "EQX_ON_ERROR", "breakpoint")
    with host_callback_free():
        assert errors.EQX_ON_ERROR == "breakpoint"
    assert errors.EQX_ON_ERROR == "breakpoint"
