"""Tests of the co-occurrence task (`flowsim.systems.cooccurrence.data`): the training set and the
population sampler."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from flowsim.systems.cooccurrence.config import n_random_slots
from flowsim.systems.cooccurrence.data import (
    MU1,
    MU2,
    MU3,
    N_SPECIAL,
    CooccurrenceData,
    make_dataset,
    sample_population,
)

TYPE_PROBS = np.array([1 / 2, 1 / 6, 1 / 6, 1 / 6])


def check_invariants(data: CooccurrenceData, L: int, d: int) -> None:
    """Per-sample invariants of Def. 2.1 shared by the training set and the population sampler."""
    tokens = np.asarray(data.tokens)
    y = np.asarray(data.y)
    kind = np.asarray(data.kind)
    n = tokens.shape[0]
    assert tokens.shape == (n, L)
    assert y.shape == (n,) and kind.shape == (n,)
    assert np.issubdtype(tokens.dtype, np.integer)
    assert np.issubdtype(kind.dtype, np.integer)
    assert np.issubdtype(y.dtype, np.floating)
    assert data.n == n and data.L == L

    assert set(np.unique(kind)) <= {1, 2, 3, 4}
    # labels: +1 iff type 1 (both targets present), -1 otherwise
    np.testing.assert_array_equal(y, np.where(kind == 1, 1.0, -1.0))
    assert set(np.unique(y)) <= {-1.0, 1.0}

    c1 = (tokens == MU1).sum(axis=1)
    c2 = (tokens == MU2).sum(axis=1)
    c3 = (tokens == MU3).sum(axis=1)
    # mu_3 exactly once in every sequence
    np.testing.assert_array_equal(c3, 1)
    # mu_1 exactly once in types 1, 2 and absent otherwise; mu_2 exactly once in types 1, 3
    np.testing.assert_array_equal(c1, np.isin(kind, [1, 2]).astype(int))
    np.testing.assert_array_equal(c2, np.isin(kind, [1, 3]).astype(int))
    # label is the logical AND of the two targets' presence
    np.testing.assert_array_equal(y == 1.0, (c1 == 1) & (c2 == 1))
    # every other position is a random token in [3, d)
    random = tokens >= N_SPECIAL
    assert np.all(tokens >= 0) and np.all(tokens < d)
    np.testing.assert_array_equal(random.sum(axis=1), L - (c1 + c2 + c3))


def random_tokens(data: CooccurrenceData) -> np.ndarray:
    t = np.asarray(data.tokens)
    return t[t >= N_SPECIAL]


# ---------------------------------------------------------------------------------------------
# make_dataset
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "L", "d"), [(60, 5, 64), (6, 3, 4), (12, 10, 200), (36, 4, 5)])
def test_make_dataset_exact_type_counts(n, L, d):
    data = make_dataset(n, L, d, seed=0)
    kind = np.asarray(data.kind)
    counts = [int((kind == k).sum()) for k in (1, 2, 3, 4)]
    assert counts == [n // 2, n // 6, n // 6, n // 6]
    # ordered by type
    assert np.all(np.diff(kind) >= 0)
    y = np.asarray(data.y)
    assert int((y == 1).sum()) == n // 2 and int((y == -1).sum()) == n // 2


@pytest.mark.parametrize(
    ("n", "L", "d", "distinct"),
    [(60, 5, 64, False), (60, 5, 163, True), (6, 3, 4, False), (6, 3, 7, True), (12, 8, 30, False)],
)
def test_make_dataset_invariants(n, L, d, distinct):
    data = make_dataset(n, L, d, seed=1, distinct_tokens=distinct)
    check_invariants(data, L, d)
    assert random_tokens(data).size == n_random_slots(n, L)


@pytest.mark.parametrize(("n", "L"), [(60, 5), (6, 3), (12, 7), (18, 4)])
def test_make_dataset_distinct_tokens(n, L):
    d = n_random_slots(n, L) + N_SPECIAL  # the minimum vocabulary: every random token used once
    data = make_dataset(n, L, d, seed=3, distinct_tokens=True)
    check_invariants(data, L, d)
    r = random_tokens(data)
    assert r.size == n_random_slots(n, L)
    assert np.unique(r).size == r.size
    # with the minimal vocabulary every random token appears exactly once
    np.testing.assert_array_equal(np.sort(r), np.arange(N_SPECIAL, d))


def test_make_dataset_distinct_needs_vocabulary():
    need = n_random_slots(60, 5) + N_SPECIAL
    with pytest.raises(ValueError, match=str(need)):
        make_dataset(60, 5, need - 1, seed=0, distinct_tokens=True)


@pytest.mark.parametrize("n", [0, -6, 7, 10])
def test_make_dataset_bad_n(n):
    with pytest.raises(ValueError, match="multiple of 6"):
        make_dataset(n, 5, 64, seed=0)


def test_make_dataset_with_replacement_repeats_tokens():
    # The paper's experiment has 160 random slots but only 61 random tokens: repeats must occur.
    r = random_tokens(make_dataset(60, 5, 64, seed=0))
    assert np.unique(r).size < r.size


@pytest.mark.parametrize("distinct", [False, True])
def test_make_dataset_same_seed_identical(distinct):
    d = 163 if distinct else 64
    a = make_dataset(60, 5, d, seed=7, distinct_tokens=distinct)
    b = make_dataset(60, 5, d, seed=7, distinct_tokens=distinct)
    for x, z in zip((a.tokens, a.y, a.kind), (b.tokens, b.y, b.kind)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(z))


@pytest.mark.parametrize("distinct", [False, True])
def test_make_dataset_different_seed_differs(distinct):
    d = 163 if distinct else 64
    a = make_dataset(60, 5, d, seed=7, distinct_tokens=distinct)
    b = make_dataset(60, 5, d, seed=8, distinct_tokens=distinct)
    assert not np.array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    # the type layout is fixed by n alone
    np.testing.assert_array_equal(np.asarray(a.kind), np.asarray(b.kind))


def test_make_dataset_special_positions_vary():
    # Special tokens are placed at random positions (no positional encoding; i3 ~ U[L]).
    data = make_dataset(60, 5, 64, seed=0)
    pos3 = np.argmax(np.asarray(data.tokens) == MU3, axis=1)
    assert np.unique(pos3).size == 5


@st.composite
def dataset_args(draw):
    n = 6 * draw(st.integers(1, 10))
    L = draw(st.integers(3, 10))
    need = n_random_slots(n, L) + N_SPECIAL
    distinct = draw(st.booleans()) and need <= 200
    d = draw(st.integers(need, 200)) if distinct else draw(st.integers(4, 200))
    seed = draw(st.integers(0, 2**31 - 1))
    return n, L, d, distinct, seed


@settings(max_examples=25, deadline=None, derandomize=True)
@given(dataset_args())
def test_make_dataset_property(args):
    n, L, d, distinct, seed = args
    data = make_dataset(n, L, d, seed=seed, distinct_tokens=distinct)
    check_invariants(data, L, d)
    kind = np.asarray(data.kind)
    assert [int((kind == k).sum()) for k in (1, 2, 3, 4)] == [n // 2, n // 6, n // 6, n // 6]
    r = random_tokens(data)
    assert r.size == n_random_slots(n, L)
    if distinct:
        assert np.unique(r).size == r.size
    again = make_dataset(n, L, d, seed=seed, distinct_tokens=distinct)
    np.testing.assert_array_equal(np.asarray(again.tokens), np.asarray(data.tokens))


# ---------------------------------------------------------------------------------------------
# sample_population
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("num", "L", "d"))
def _jit_sample(key, num, L, d):
    return sample_population(key, num, L, d)


@pytest.fixture(scope="module")
def big_population():
    return _jit_sample(jax.random.PRNGKey(0), num=6000, L=5, d=64)


def test_sample_population_shapes(big_population):
    data = big_population
    assert data.tokens.shape == (6000, 5)
    assert data.y.shape == (6000,)
    assert data.kind.shape == (6000,)
    assert data.n == 6000 and data.L == 5


def test_sample_population_invariants(big_population):
    check_invariants(big_population, L=5, d=64)


def _five_sigma(p: float, num: int) -> float:
    return 5.0 * np.sqrt(p * (1 - p) / num)


def test_sample_population_type_frequencies(big_population):
    kind = np.asarray(big_population.kind)
    num = kind.size
    for k, p in zip((1, 2, 3, 4), TYPE_PROBS):
        freq = float((kind == k).mean())
        assert abs(freq - p) <= _five_sigma(p, num), (k, freq, p)


def test_sample_population_positions_and_tokens_uniform(big_population):
    tokens = np.asarray(big_population.tokens)
    num, L = tokens.shape
    # mu_3's position is uniform over [L]
    pos3 = np.argmax(tokens == MU3, axis=1)
    for h in range(L):
        assert abs(float((pos3 == h).mean()) - 1 / L) <= _five_sigma(1 / L, num)
    # random tokens cover the whole range [3, d)
    r = tokens[tokens >= N_SPECIAL]
    assert set(np.unique(r)) == set(range(N_SPECIAL, 64))


# (num, L, d): the paper's shape with many samples, the smallest valid shape, a large one. Every test
# below reuses these so that the jitted sampler compiles once per shape (compiles dominate runtime).
POP_SHAPES = [(6000, 5, 64), (64, 3, 4), (64, 8, 200)]


def test_sample_population_key_dependence(big_population):
    again = _jit_sample(jax.random.PRNGKey(0), num=6000, L=5, d=64)
    other = _jit_sample(jax.random.PRNGKey(1), num=6000, L=5, d=64)
    np.testing.assert_array_equal(np.asarray(again.tokens), np.asarray(big_population.tokens))
    np.testing.assert_array_equal(np.asarray(again.kind), np.asarray(big_population.kind))
    assert not np.array_equal(np.asarray(other.tokens), np.asarray(big_population.tokens))


@pytest.mark.parametrize(("num", "L", "d"), POP_SHAPES)
@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1))
def test_sample_population_property(num, L, d, seed):
    # Runs under jax.jit with num/L/d static and a traced key.
    data = _jit_sample(jax.random.PRNGKey(seed), num=num, L=L, d=d)
    assert data.tokens.shape == (num, L)
    check_invariants(data, L, d)


@pytest.mark.parametrize("L, d", [(2, 10), (5, 3)])
def test_generators_reject_shapes_outside_the_task(L, d):
    with pytest.raises(ValueError, match=r"L must be|d must be"):
        make_dataset(6, L, d, seed=0)
    with pytest.raises(ValueError, match=r"L must be|d must be"):
        sample_population(jax.random.PRNGKey(0), 8, L, d)
