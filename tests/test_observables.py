"""Tracked quantities of the co-occurrence system (`flowsim.systems.cooccurrence.observables`)
against direct numpy computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowsim.systems.cooccurrence.observables import SCORE_PAIRS, VALUE_PAIRS, balance_fixed_point, random_token_overlap


@pytest.fixture(scope="module")
def perturbed(small_setup):
    """Parameters moved away from init (so attn_disp is non-zero) and their observables."""
    s = small_setup
    key = iter(jax.random.split(jax.random.PRNGKey(7), 8))
    params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(next(key), x.shape), s.problem.params0)
    return params, s.observer(0.0, params, s.problem)


def test_losses_margins_and_gradient_sums(small_setup, perturbed):
    s, (params, obs) = small_setup, perturbed
    model = s.problem.model(params)
    tokens, y, kind = (np.asarray(a) for a in (s.data.tokens, s.data.y, s.data.kind))
    F = np.array([float(model(t)) for t in s.data.tokens])
    margin = y * F
    ell, g = np.log1p(np.exp(-margin)), 1 / (1 + np.exp(margin))
    np.testing.assert_allclose(obs["margin"], margin, rtol=1e-12)
    assert obs["loss"] == pytest.approx(ell.mean(), rel=1e-12)
    assert obs["min_margin"] == pytest.approx(margin.min(), rel=1e-12)
    S = {k: g[kind == k].sum() for k in (1, 2, 3, 4)}
    for k in (1, 2, 3, 4):
        assert obs[f"loss_type{k}"] == pytest.approx(ell[kind == k].mean(), rel=1e-12)
        assert obs[f"S{k}"] == pytest.approx(S[k], rel=1e-12)
        assert obs[f"g_ratio_type{k}"] == pytest.approx(g[kind == k].max() / g[kind == k].min(), rel=1e-12)
    assert obs["S2_over_S3"] == pytest.approx(S[2] / S[3], rel=1e-12)
    assert obs["R"] == pytest.approx((S[2] + S[3] + S[4] - S[1]) / (S[1] - S[2]), rel=1e-10)
    assert tokens.shape == (s.problem.n, s.config.L)


def test_weight_space_quantities(perturbed, small_setup):
    params, obs = perturbed
    m = small_setup.problem.model(params)
    WQ, WK, WV, W, a = (np.asarray(x) for x in (m.W_Q, m.W_K, m.W_V, m.W, m.a))
    u = W.T @ a
    for k in (1, 2, 3):
        assert obs[f"G{k}"] == pytest.approx(u @ WV[:, k - 1], rel=1e-12)
    assert obs["G_rand_max"] == pytest.approx((u @ WV[:, 3:]).max(), rel=1e-12)
    assert obs["N"] == pytest.approx(u @ u, rel=1e-12)
    for a_, b_ in SCORE_PAIRS:  # key a, query b
        assert obs[f"score_{a_}{b_}"] == pytest.approx(WK[:, a_ - 1] @ WQ[:, b_ - 1], rel=1e-12)
    for a_, b_ in VALUE_PAIRS:
        assert obs[f"v_{a_}{b_}"] == pytest.approx(WV[:, a_ - 1] @ WV[:, b_ - 1], rel=1e-12)


def test_attention_quantities(perturbed, small_setup):
    params, obs = perturbed
    s = small_setup
    m = s.problem.model(params)
    tokens, kind = np.asarray(s.data.tokens), np.asarray(s.data.kind)
    p = np.stack([np.asarray(m.attention(t)) for t in s.data.tokens])
    p0 = np.stack([np.asarray(s.model.attention(t)) for t in s.data.tokens])
    L = tokens.shape[1]
    assert obs["attn_dev"] == pytest.approx(np.abs(p - 1 / L).max(), rel=1e-12)
    assert obs["attn_disp"] == pytest.approx(np.abs(p - p0).max(), rel=1e-12)
    w12 = [p[i, list(tokens[i]).index(0), list(tokens[i]).index(1)] for i in np.flatnonzero(kind == 1)]
    assert obs["p_q1_k2"] == pytest.approx(np.mean(w12), rel=1e-12)
    k3 = [p[i, :, list(tokens[i]).index(2)].mean() for i in range(len(tokens))]
    assert obs["p_k3"] == pytest.approx(np.mean(k3), rel=1e-12)
    at_init = s.observer(0.0, s.problem.params0, s.problem)
    assert float(at_init["attn_disp"]) <= 1e-15


def test_balance_fixed_point_is_the_root_of_the_balancing_quadratic():
    rng = np.random.default_rng(0)
    kind = np.repeat([1, 2, 3, 4], [6, 2, 2, 2])
    for _ in range(20):
        margin = jnp.asarray(rng.uniform(0.5, 6.0, 12))
        g = 1 / (1 + np.exp(np.asarray(margin)))
        D = [float((g * (1 - g))[kind == k].sum()) for k in (1, 2, 3, 4)]
        R = float(balance_fixed_point(margin, jnp.asarray(kind)))
        poly = (D[0] + D[1]) * R**2 + (D[2] + D[3] - D[0]) * R - (2 * D[0] + D[1] + D[2])
        assert R > 0 and abs(poly) < 1e-12 * max(D)
        assert (1 < R < 2) == (D[3] < 2 * D[0])


def test_balance_fixed_point_with_random_tokens_is_the_root_of_the_corrected_quadratic():
    rng = np.random.default_rng(1)
    kind = np.repeat([1, 2, 3, 4], [6, 2, 2, 2])
    y = np.where(kind == 1, 1.0, -1.0)
    tokens = rng.integers(3, 9, size=(12, 4))  # random tokens only, shared across samples
    overlap = np.asarray(random_token_overlap(jnp.asarray(tokens), jnp.asarray(y)))
    counts = np.stack([np.bincount(t, minlength=9)[3:] for t in tokens])
    np.testing.assert_allclose(overlap, np.outer(y, y) * (counts @ counts.T))
    margin = rng.uniform(1.0, 4.0, 12)
    g = 1 / (1 + np.exp(margin))
    w = g * (1 - g)
    D = [w[kind == k].sum() for k in (1, 2, 3, 4)]
    E = [(w * (overlap @ g))[kind == k].sum() for k in (1, 2, 3, 4)]
    Q = g[kind == 1].sum() - g[kind == 2].sum()
    R = float(balance_fixed_point(jnp.asarray(margin), jnp.asarray(kind), jnp.asarray(overlap)))
    poly = (
        (D[0] + D[1]) * R**2
        + (D[2] + D[3] - D[0] - (E[0] - E[1]) / Q) * R
        - (2 * D[0] + D[1] + D[2])
        + (E[1] + E[2] + E[3] - E[0]) / Q
    )
    assert R > 0 and abs(poly) < 1e-10 * max(D)
    zero = float(balance_fixed_point(jnp.asarray(margin), jnp.asarray(kind), jnp.zeros((12, 12))))
    assert zero == pytest.approx(float(balance_fixed_point(jnp.asarray(margin), jnp.asarray(kind))), rel=1e-12)
