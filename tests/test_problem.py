"""Tests of `flowsim.make_problem` / `flowsim.Problem` on the co-occurrence transformer: the
trainable/frozen split, the losses, minibatches, input checks."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowsim import Problem, logistic_loss, make_problem, squared_loss
from flowsim.systems.cooccurrence import CooccurrenceTransformer, make_dataset

D, M, M1, L, N = 8, 4, 6, 4, 12


def _model(seed: int = 0) -> CooccurrenceTransformer:
    rng = np.random.default_rng(seed)
    return CooccurrenceTransformer(
        jnp.asarray(rng.standard_normal((M, D))),
        jnp.asarray(rng.standard_normal((M, D))),
        jnp.asarray(0.5 * rng.standard_normal((M, D))),
        jnp.asarray(0.5 * rng.standard_normal((M1, M))),
        jnp.asarray(rng.choice([-1.0, 1.0], size=M1)),
    )


TRAIN_QKVW = _model().trainable(train_a=False)  # the filter spec of every model here (same structure)


@pytest.fixture(scope="module")
def data():
    return make_dataset(N, L, D, seed=0)


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def problem(model, data):
    return make_problem(model, data.tokens, data.y, logistic_loss, trainable=TRAIN_QKVW)


@jax.jit
def _losses(problem: Problem, params, idx):
    """Everything the loss tests need in one compiled call (full set and minibatch)."""
    return (
        problem.outputs(params),
        problem.per_sample_loss(params),
        problem.loss(params),
        problem.outputs(params, idx),
        problem.per_sample_loss(params, idx),
        problem.loss(params, idx),
        problem.loss_and_grad(params, idx),
        jax.grad(problem.loss)(params),
    )


IDX = np.array([3, 0, 11, 7, 7])  # unordered, with a repeat


@pytest.fixture(scope="module")
def evaluated(problem):
    return jax.tree.map(np.asarray, _losses(problem, problem.params0, jnp.asarray(IDX)))


# ---------------------------------------------------------------------------------------------
# trainable / frozen split
# ---------------------------------------------------------------------------------------------


def _assert_same_model(a: CooccurrenceTransformer, b: CooccurrenceTransformer) -> None:
    for name in ("W_Q", "W_K", "W_V", "W", "a"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)))


@pytest.mark.parametrize(
    "trainable",
    [TRAIN_QKVW, lambda leaf: eqx.is_inexact_array(leaf) and leaf.ndim == 2],
    ids=["pytree-of-bools", "predicate"],
)
def test_freezing_a(model, data, trainable):
    problem = make_problem(model, data.tokens, data.y, logistic_loss, trainable=trainable)
    assert problem.params0.a is None
    for name in ("W_Q", "W_K", "W_V", "W"):
        assert getattr(problem.frozen, name) is None
        np.testing.assert_array_equal(np.asarray(getattr(problem.params0, name)), np.asarray(getattr(model, name)))
    np.testing.assert_array_equal(np.asarray(problem.frozen.a), np.asarray(model.a))
    restored = problem.model(problem.params0)
    assert isinstance(restored, CooccurrenceTransformer)
    _assert_same_model(restored, model)


def test_model_takes_trainable_leaves_from_params(problem, model):
    new = jax.tree.map(lambda x: 2.0 * x, problem.params0)
    full = problem.model(new)
    np.testing.assert_array_equal(np.asarray(full.W_Q), 2.0 * np.asarray(model.W_Q))
    np.testing.assert_array_equal(np.asarray(full.a), np.asarray(model.a))  # frozen, untouched


def test_default_trainable_is_every_inexact_array(model, data):
    problem = make_problem(model, data.tokens, data.y, logistic_loss)
    for name in ("W_Q", "W_K", "W_V", "W", "a"):
        assert getattr(problem.params0, name) is not None
        assert getattr(problem.frozen, name) is None
    assert jax.tree.leaves(problem.frozen) == []
    _assert_same_model(problem.model(problem.params0), model)


def test_default_trainable_skips_non_float_leaves(data):
    class Mixed(eqx.Module):
        w: jax.Array
        table: jax.Array  # integer: never trained

        def __call__(self, tokens):
            return jnp.sum(self.w[self.table[tokens]])

    mixed = Mixed(jnp.arange(D, dtype=jnp.float64), jnp.arange(D))
    problem = make_problem(mixed, data.tokens, data.y, logistic_loss)
    assert problem.params0.table is None
    np.testing.assert_array_equal(np.asarray(problem.frozen.table), np.arange(D))
    assert problem.frozen.w is None
    assert problem.loss(problem.params0).shape == ()


def test_problem_fields(problem, data):
    assert problem.n == N
    assert problem.loss_fn is logistic_loss
    np.testing.assert_array_equal(np.asarray(problem.targets), np.asarray(data.y))
    np.testing.assert_array_equal(np.asarray(problem.inputs), np.asarray(data.tokens))


def test_targets_accept_numpy_and_lists(model, data):
    y = [float(v) for v in np.asarray(data.y)]
    problem = make_problem(model, np.asarray(data.tokens), y, logistic_loss, trainable=TRAIN_QKVW)
    assert problem.targets.shape == (N,)


# ---------------------------------------------------------------------------------------------
# losses and minibatches
# ---------------------------------------------------------------------------------------------


def test_per_sample_loss_shape_and_value(evaluated, data, model):
    F, per, loss = evaluated[:3]
    assert F.shape == (N,) and per.shape == (N,) and loss.shape == ()
    y = np.asarray(data.y)
    F_direct = np.asarray(jax.jit(jax.vmap(lambda mdl, t: mdl(t), in_axes=(None, 0)))(model, data.tokens))
    np.testing.assert_allclose(F, F_direct, rtol=1e-12, atol=1e-13)
    # logistic loss l(yF) = log(1 + exp(-yF))
    np.testing.assert_allclose(per, np.logaddexp(0.0, -y * F), rtol=1e-12, atol=1e-15)
    assert np.all(per > 0)


def test_loss_is_mean_of_per_sample_loss(evaluated):
    _, per, loss = evaluated[:3]
    np.testing.assert_allclose(loss, per.mean(), rtol=1e-14)


def test_minibatch_idx_selects_samples(evaluated):
    F, per, loss, F_b, per_b, loss_b = evaluated[:6]
    assert F_b.shape == (len(IDX),) and per_b.shape == (len(IDX),)
    np.testing.assert_allclose(F_b, F[IDX], rtol=1e-14)
    np.testing.assert_allclose(per_b, per[IDX], rtol=1e-14)
    np.testing.assert_allclose(loss_b, per[IDX].mean(), rtol=1e-14)
    assert not np.isclose(loss_b, loss)


def test_loss_and_grad(evaluated, problem):
    (value, grad), full_grad = evaluated[6], evaluated[7]
    np.testing.assert_allclose(value, evaluated[5], rtol=1e-14)
    assert jax.tree.structure(grad) == jax.tree.structure(jax.tree.map(np.asarray, problem.params0))
    assert grad.a is None
    # the minibatch gradient differs from the full-batch one
    assert not np.allclose(grad.W, full_grad.W)


def test_logistic_loss_stable():
    out = jnp.asarray([-1000.0, -1.0, 0.0, 1.0, 1000.0])
    got = np.asarray(jax.vmap(logistic_loss)(out, jnp.ones(5)))
    np.testing.assert_allclose(got, np.logaddexp(0.0, -np.asarray(out)), rtol=1e-14)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(
        float(logistic_loss(jnp.asarray(2.0), jnp.asarray(-1.0))), np.log1p(np.exp(2.0)), rtol=1e-14
    )


def test_custom_loss_fn(model, data):
    sq = lambda out, tgt: 0.5 * (out - tgt) ** 2
    problem = make_problem(model, data.tokens, data.y, loss_fn=sq, trainable=TRAIN_QKVW)
    F, loss = jax.jit(lambda pr, p: (pr.outputs(p), pr.loss(p)))(problem, problem.params0)
    np.testing.assert_allclose(float(loss), np.mean(0.5 * (np.asarray(F) - np.asarray(data.y)) ** 2), rtol=1e-12)


def test_pytree_inputs():
    class Pair(eqx.Module):
        w: jax.Array

        def __call__(self, x):
            return self.w @ x["a"] + jnp.sum(x["b"])

    inputs = {"a": jnp.ones((5, 3)), "b": jnp.arange(10.0).reshape(5, 2)}
    problem = make_problem(Pair(jnp.asarray([1.0, 2.0, 3.0])), inputs, jnp.ones(5), squared_loss)
    out = np.asarray(problem.outputs(problem.params0, jnp.asarray([4, 1])))
    np.testing.assert_allclose(out, [6.0 + 17.0, 6.0 + 5.0])


# ---------------------------------------------------------------------------------------------
# bad inputs raise in make_problem, before anything is traced or compiled
# ---------------------------------------------------------------------------------------------


class _Untouchable(eqx.Module):
    """A model whose evaluation fails loudly: proves make_problem rejects inputs without running it."""

    w: jax.Array

    def __call__(self, x):
        raise AssertionError("the model must not be evaluated while building the problem")


@pytest.mark.parametrize(
    ("inputs", "targets", "match"),
    [
        (jnp.zeros((6, 4), dtype=jnp.int32), jnp.ones((2, 3)), "leading axis n=2"),
        (jnp.zeros((6, 4), dtype=jnp.int32), jnp.asarray(1.0), "leading sample axis"),
        (jnp.zeros((5, 4), dtype=jnp.int32), jnp.ones(6), "leading axis n=6"),
        (jnp.zeros((4, 6), dtype=jnp.int32), jnp.ones(6), "leading axis n=6"),
        (jnp.zeros((7,), dtype=jnp.int32), jnp.ones(6), "leading axis n=6"),
        ({"a": jnp.zeros((6, 2)), "b": jnp.zeros((3, 2))}, jnp.ones(6), "leading axis n=6"),
    ],
    ids=["targets-2d", "targets-scalar", "inputs-short", "inputs-transposed", "inputs-1d-wrong", "pytree-leaf-wrong"],
)
def test_bad_shapes_raise_value_error(inputs, targets, match):
    with pytest.raises(ValueError, match=match):
        make_problem(_Untouchable(jnp.ones(3)), inputs, targets, logistic_loss)


def test_model_without_float_arrays_raises_type_error():
    class IntOnly(eqx.Module):
        table: jax.Array

        def __call__(self, x):
            raise AssertionError("must not be evaluated")

    with pytest.raises(TypeError, match="no trainable floating-point array"):
        make_problem(IntOnly(jnp.arange(4)), jnp.zeros((6, 4), dtype=jnp.int32), jnp.ones(6), logistic_loss)


def test_filter_selecting_nothing_raises_type_error(model, data):
    with pytest.raises(TypeError, match="no trainable"):
        make_problem(model, data.tokens, data.y, logistic_loss, trainable=lambda leaf: False)


# Arguments of the wrong type are refused with a TypeError naming them: by make_problem's own checks, or,
# under the test suite's jaxtyping import hook (--jaxtyping-packages), by the run-time type checker first.


def test_non_module_without_arrays_raises_type_error():
    with pytest.raises(TypeError, match=r"no trainable|typechecking parameter 'model'"):
        make_problem(lambda x: 0.0, jnp.zeros((6, 4)), jnp.ones(6), logistic_loss)  # type: ignore[arg-type]


def test_loss_fn_is_required_and_must_be_callable(model, data):
    with pytest.raises(TypeError, match="loss_fn"):
        make_problem(model, data.tokens, data.y)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"loss_fn must be a function|typechecking parameter 'loss_fn'"):
        make_problem(model, data.tokens, data.y, "logistic")  # type: ignore[arg-type]


def test_targets_with_trailing_axes(model, data):
    """Targets of shape (n, 1) are accepted; the loss must still give one scalar per sample: the
    logistic loss of a scalar output against a (1,) target does not, and is refused before compiling."""
    column = jnp.asarray(data.y)[:, None]
    sq = make_problem(model, data.tokens, column, squared_loss, trainable=TRAIN_QKVW)
    assert sq.targets.shape == (N, 1) and sq.n == N
    F, loss = jax.jit(lambda pr, p: (pr.outputs(p), pr.loss(p)))(sq, sq.params0)
    np.testing.assert_allclose(float(loss), np.mean(0.5 * (np.asarray(F) - np.asarray(data.y)) ** 2), rtol=1e-12)
    # refused by make_problem's shape check, or (under the jaxtyping hook) by logistic_loss's scalar annotation
    with pytest.raises(TypeError, match=r"(?s)scalar per sample|over the dataset failed: .*parameter 'target'"):
        make_problem(model, data.tokens, column, logistic_loss, trainable=TRAIN_QKVW)
