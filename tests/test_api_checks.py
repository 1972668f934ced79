"""Library API checks: each bad argument of `gradient_descent`, `sgd`, `optax_descent` and `integrate`
is one `ValueError` in flowsim's words, raised before anything compiles (the compiled loops are
replaced by a function that fails the test if it is reached)."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flowsim._discrete
import flowsim._integrate
from flowsim import GradientFlow, gradient_descent, integrate, make_problem, sgd, squared_loss
from flowsim._optax import optax_descent

from .test_early_stop import X, Y, _Linear, _observe

KEY = jax.random.PRNGKey(0)
STEPS = np.array([0, 5, 10])
TS = np.array([0.0, 0.5, 1.0])
INF, NAN = float("inf"), float("nan")


def _problem(w0: np.ndarray | None = None):
    w = jnp.zeros(3) if w0 is None else jnp.asarray(w0)
    return make_problem(_Linear(w), jnp.asarray(X), jnp.asarray(Y), squared_loss)


@pytest.fixture(autouse=True)
def _nothing_compiles(monkeypatch):
    def reached(*args, **kwargs):
        raise AssertionError("a bad argument reached the compiled loop")

    monkeypatch.setattr(flowsim._discrete, "_run", reached)
    monkeypatch.setattr(flowsim._integrate, "_piece", reached)


def _gd(**kw):
    args: dict[str, Any] = dict(lr=0.1, steps=STEPS)
    args.update(kw)
    problem = args.pop("problem", _problem())
    return gradient_descent(problem, args.pop("lr"), args.pop("steps"), _observe, **args)


def _sgd(**kw):
    args: dict[str, Any] = dict(lr=0.1, steps=STEPS, batch_size=2, key=KEY)
    args.update(kw)
    problem = args.pop("problem", _problem())
    return sgd(problem, args.pop("lr"), args.pop("steps"), _observe, **args)


def _optax(**kw):
    args: dict[str, Any] = dict(lr_time=0.1, steps=STEPS)
    args.update(kw)
    problem = args.pop("problem", _problem())
    return optax_descent(problem, optax.adam(0.1), args.pop("lr_time"), args.pop("steps"), _observe, **args)


def _flow(**kw):
    problem = kw.pop("problem", _problem())
    return integrate(GradientFlow(), problem, kw.pop("ts", TS), _observe, **kw)


NONFINITE = _problem(np.array([NAN, 0.0, 0.0]))
INFINITE = _problem(np.array([0.0, INF, 0.0]))

CASES = [
    # (runner, bad keyword arguments, what the message names)
    *[(f, {"lr": v}, "lr") for f in (_gd, _sgd) for v in (-0.1, 0.0, NAN, INF, -INF)],
    *[(_optax, {"lr_time": v}, "lr_time") for v in (-0.1, 0.0, NAN, INF)],
    *[(f, {"momentum": v}, "momentum") for f in (_gd, _sgd) for v in (1.0, 1.5, -0.1, NAN, INF)],
    *[(f, {"weight_decay": v}, "weight_decay") for f in (_gd, _sgd) for v in (-1e-3, NAN, INF)],
    *[(f, {"steps": s}, "integer step") for f in (_gd, _sgd, _optax) for s in (np.array([0, 2.5, 5]), [0.0, 0.5])],
    *[(f, {"steps": np.array([0.0, NAN])}, "integer step") for f in (_gd, _sgd)],
    *[(f, {"steps": np.array([0, 1e30])}, "integer step") for f in (_gd, _optax)],
    *[(f, {"steps": np.array([False, True])}, "integer step") for f in (_gd, _sgd)],
    *[(f, {"seeds": v}, "seeds") for f in (_sgd,) for v in (0, -2)],
    (_optax, {"seeds": 0, "key": KEY}, "seeds"),
    *[(f, {"problem": p}, "initial") for f in (_gd, _sgd, _optax, _flow) for p in (NONFINITE, INFINITE)],
    *[(_flow, {name: v}, name) for name in ("rtol", "atol") for v in (-1e-6, 0.0, NAN, INF)],
    (_flow, {"max_steps": 0}, "max_steps"),
    (_flow, {"max_steps": -5}, "max_steps"),
    (_flow, {"solver": "euler", "dt0": -0.1}, "dt0"),
    (_flow, {"dt0": -0.1}, "dt0"),
    (_flow, {"dt0": NAN}, "dt0"),
    (_flow, {"ts": np.array([0.0, NAN])}, "finite"),
    (_flow, {"ts": np.array([1.0, 0.5])}, "increasing"),
]


@pytest.mark.parametrize("run, kwargs, names", CASES, ids=[f"{c[0].__name__}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_bad_argument_is_one_clear_value_error_before_compiling(run, kwargs, names):
    with pytest.raises(ValueError, match=names) as err:
        run(**kwargs)
    text = str(err.value)
    assert "\n" not in text and len(text) < 300, text


def test_good_arguments_reach_the_compiled_loop():
    """The fixture's stand-in is reached by valid calls: the checks refuse only what is bad."""
    for run, kw in (
        (_gd, {"momentum": 0.9, "steps": [0, 5.0, 10]}),
        (_sgd, {"seeds": 1, "weight_decay": 0.0}),
        (_optax, {"lr_time": 0.2, "key": KEY, "seeds": 2}),
        (_flow, {"rtol": 1e-8}),
    ):
        with pytest.raises(AssertionError, match="compiled loop"):
            run(**kw)


def test_a_passed_dynamics_check_is_not_traced_again_for_the_same_signature():
    """`check_dynamics` traces the observer once per abstract signature; a new shape is checked again,
    and a failing observer fails at every call (failures are not remembered)."""
    from flowsim._validate import check_dynamics

    traced = []

    def observer(t, p, pr):
        traced.append(1)
        return {"w": p.w}

    p = _problem()
    y0, t0 = p.params0, jnp.asarray(0.0)
    check_dynamics(GradientFlow(), p, observer, y0, t0)
    check_dynamics(GradientFlow(), p, observer, jax.tree.map(lambda x: x + 1.0, y0), t0)  # same signature
    assert len(traced) == 1
    wide = make_problem(_Linear(jnp.zeros(4)), jnp.ones((5, 4)), jnp.ones(5), squared_loss)
    check_dynamics(GradientFlow(), wide, observer, wide.params0, t0)
    assert len(traced) == 2
    with pytest.raises(ValueError, match="non-finite"):  # the values are still checked at every call
        check_dynamics(GradientFlow(), p, observer, jax.tree.map(lambda x: x * jnp.nan, y0), t0)

    def bad(t, p, pr):
        return {"x": "text"}

    for _ in range(2):
        with pytest.raises(TypeError, match="PyTree of arrays"):
            check_dynamics(GradientFlow(), p, bad, y0, t0)
