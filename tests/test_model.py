"""Tests of the co-occurrence transformer (`flowsim.systems.cooccurrence.model`): the forward pass
against an independent numpy implementation of Eq. 1, autodiff gradients of the logistic loss against
finite differences, and the initialisations."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowsim import logistic_loss, make_problem
from flowsim.systems.cooccurrence import CooccurrenceTransformer, init_transformer, make_dataset

# ---------------------------------------------------------------------------------------------
# Independent numpy reference of Eq. 1 with explicit one-hot X (d x L)
# ---------------------------------------------------------------------------------------------


def one_hot_X(tokens: np.ndarray, d: int) -> np.ndarray:
    L = len(tokens)
    X = np.zeros((d, L))
    X[np.asarray(tokens), np.arange(L)] = 1.0
    return X


def np_softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max())
    return e / e.sum()


def ref_attention(W_Q, W_K, tokens, d):
    """P[l, h]: softmax over key positions h of x_h^T W_K^T W_Q x_l / sqrt(m)."""
    m = W_Q.shape[0]
    X = one_hot_X(tokens, d)
    L = X.shape[1]
    P = np.zeros((L, L))
    for l in range(L):
        s = X.T @ W_K.T @ W_Q @ X[:, l] / np.sqrt(m)  # (L,), entry h = key_h . query_l
        P[l] = np_softmax(s)
    return P


def ref_F(W_Q, W_K, W_V, W, a, tokens, d):
    """F(X) = sum_l sum_j a_j w_j^T W_V X softmax(X^T W_K^T W_Q x_l / sqrt(m))."""
    m = W_Q.shape[0]
    X = one_hot_X(tokens, d)
    total = 0.0
    for l in range(X.shape[1]):
        p_l = np_softmax(X.T @ W_K.T @ W_Q @ X[:, l] / np.sqrt(m))
        for j in range(W.shape[0]):  # explicit sum over MLP neurons (no u = W^T a shortcut)
            total += a[j] * (W[j] @ W_V @ X @ p_l)
    return total


def random_weights(rng, d, m, m1, scale=1.0):
    W_Q = scale * rng.standard_normal((m, d))
    W_K = scale * rng.standard_normal((m, d))
    W_V = rng.standard_normal((m, d))
    W = rng.standard_normal((m1, m))
    a = rng.choice([-1.0, 1.0], size=m1)
    return W_Q, W_K, W_V, W, a


def as_model(ws) -> CooccurrenceTransformer:
    return CooccurrenceTransformer(*(jnp.asarray(w, dtype=jnp.float64) for w in ws))


@jax.jit
def _evaluate(model: CooccurrenceTransformer, tokens):
    """Everything the forward tests look at, in one compiled call per shape (compiles dominate runtime)."""
    return (jax.vmap(model)(tokens), jax.vmap(model.attention)(tokens), model.G(), model.u(), model.scores())


FORWARD_CASES = [
    # (d, m, m1, L, weight scale of W_Q/W_K)
    (8, 4, 6, 4, 1.0),
    (5, 3, 2, 3, 2.0),
    (12, 7, 5, 6, 0.7),
]


def _sequences(rng, d, L):
    seqs = [rng.integers(0, d, size=L) for _ in range(6)]
    seqs.append(rng.permutation(d)[:L])  # all-distinct tokens
    seqs.append(np.full(L, d - 1))  # one token repeated everywhere
    seqs.append(np.array([0, 1, 2] + [3] * (L - 3)))  # mu_1, mu_2, mu_3 + a repeated random token
    return np.stack(seqs)


@pytest.fixture(scope="module", params=FORWARD_CASES, ids=[f"d{c[0]}-m{c[1]}-m1{c[2]}-L{c[3]}" for c in FORWARD_CASES])
def forward_case(request):
    d, m, m1, L, scale = request.param
    rng = np.random.default_rng(d * 100 + L)
    ws = random_weights(rng, d, m, m1, scale)
    seqs = _sequences(rng, d, L)
    F, P, G, u, S = (np.asarray(x) for x in _evaluate(as_model(ws), jnp.asarray(seqs)))
    return dict(d=d, L=L, ws=ws, seqs=seqs, F=F, P=P, G=G, u=u, S=S)


def test_forward_matches_numpy_reference(forward_case):
    c = forward_case
    want = np.array([ref_F(*c["ws"], t, c["d"]) for t in c["seqs"]])
    assert np.max(np.abs(want)) > 0.1  # a non-degenerate comparison
    np.testing.assert_allclose(c["F"], want, rtol=1e-12, atol=1e-13)


def test_attention_matches_reference_and_rows_sum_to_one(forward_case):
    c = forward_case
    L = c["L"]
    for tokens, P in zip(c["seqs"], c["P"]):
        assert P.shape == (L, L)
        assert np.all(P > 0)
        np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-14)
        np.testing.assert_allclose(P, ref_attention(c["ws"][0], c["ws"][1], tokens, c["d"]), rtol=1e-12, atol=1e-15)


def test_attention_orientation(forward_case):
    # Guards the orientation: P[l, h] is the query at l attending to key h (softmax over h, not l).
    c = forward_case
    tokens, P = c["seqs"][6], c["P"][6]  # all-distinct tokens
    swapped = ref_attention(c["ws"][1], c["ws"][0], tokens, c["d"])  # Q and K exchanged
    assert not np.allclose(P, swapped)
    assert not np.allclose(P.sum(axis=0), 1.0)


def test_scores_orientation(forward_case):
    c = forward_case
    W_Q, W_K = c["ws"][0], c["ws"][1]
    I = np.eye(c["d"])
    for ka in range(c["d"]):
        for qb in range(c["d"]):
            # S[a, b] = mu_a^T W_K^T W_Q mu_b (key a, query b)
            np.testing.assert_allclose(c["S"][ka, qb], I[ka] @ W_K.T @ W_Q @ I[qb], rtol=1e-12, atol=1e-14)


def test_G_and_u(forward_case):
    c = forward_case
    _, _, W_V, W, a = c["ws"]
    d = c["d"]
    u = W.T @ a
    np.testing.assert_allclose(c["u"], u, rtol=1e-12, atol=1e-14)
    assert c["G"].shape == (d,)
    np.testing.assert_allclose(c["G"], u @ W_V, rtol=1e-12, atol=1e-13)
    # G(mu) = sum_j a_j w_j^T W_V mu for every one-hot mu
    I = np.eye(d)
    want = np.array([sum(a[j] * W[j] @ W_V @ I[i] for j in range(W.shape[0])) for i in range(d)])
    np.testing.assert_allclose(c["G"], want, rtol=1e-12, atol=1e-13)


def test_F_is_G_weighted_by_attention_column_sums(forward_case):
    # [DERIVED] F(X) = sum_h G(x_h) * sum_l p_{l,h}
    c = forward_case
    for tokens, P, F in zip(c["seqs"], c["P"], c["F"]):
        np.testing.assert_allclose(F, c["G"][tokens] @ P.sum(axis=0), rtol=1e-12, atol=1e-13)


def test_uniform_attention_gives_sum_of_G():
    # With W_Q = 0 all scores vanish: p = 1/L everywhere and F(X) = sum_h G(x_h).
    d, m, m1, L, _ = FORWARD_CASES[0]
    rng = np.random.default_rng(4)
    W_Q, W_K, W_V, W, a = random_weights(rng, d, m, m1)
    seqs = _sequences(rng, d, L)
    F, P, G, _, _ = (np.asarray(x) for x in _evaluate(as_model((0 * W_Q, W_K, W_V, W, a)), jnp.asarray(seqs)))
    np.testing.assert_allclose(P, 1 / L, rtol=1e-14)
    np.testing.assert_allclose(F, G[seqs].sum(axis=1), rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# Gradient of the mean logistic loss vs central finite differences
# ---------------------------------------------------------------------------------------------

LEAVES = ("W_Q", "W_K", "W_V", "W")
FD_STEP = 1e-6
FD_COORDS = 20


@pytest.fixture(scope="module")
def small_problem():
    d, m, m1, L, n = 8, 4, 6, 4, 12
    data = make_dataset(n, L, d, seed=0)
    # independent random weights; W_Q/W_K scaled up so that the attention is clearly non-uniform
    # and the W_Q / W_K gradients are not negligible
    rng = np.random.default_rng(2024)
    ws = random_weights(rng, d, m, m1, scale=1.0)
    ws = (ws[0], ws[1], 0.3 * ws[2], 0.3 * ws[3], ws[4])  # keep |F| moderate (loss not saturated)
    model = as_model(ws)
    # a is fixed in the paper (and in the co-occurrence system unless train_a): train W_Q, W_K, W_V, W only
    return make_problem(model, data.tokens, data.y, logistic_loss, trainable=model.trainable(train_a=False))


@pytest.fixture(scope="module")
def fd_check(small_problem):
    """Autodiff gradient and central differences at FD_COORDS random coordinates of every leaf,
    all finite-difference losses evaluated in one vmapped, compiled call."""
    params = small_problem.params0
    grad = jax.jit(jax.grad(small_problem.loss))(params)
    rng = np.random.default_rng(12345)
    coords = {}
    perturbed = []
    for name in LEAVES:
        value = np.asarray(getattr(params, name))
        flat = rng.choice(value.size, size=FD_COORDS, replace=False)
        coords[name] = np.unravel_index(flat, value.shape)
        for c in zip(*coords[name]):
            for sign in (+1.0, -1.0):
                v = value.copy()
                v[c] += sign * FD_STEP
                perturbed.append(eqx.tree_at(lambda t: getattr(t, name), params, jnp.asarray(v)))
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *perturbed)
    losses = np.asarray(jax.jit(jax.vmap(small_problem.loss))(stacked)).reshape(len(LEAVES), FD_COORDS, 2)
    fd = (losses[..., 0] - losses[..., 1]) / (2 * FD_STEP)
    return grad, coords, {name: fd[i] for i, name in enumerate(LEAVES)}


def test_gradient_leaves(small_problem, fd_check):
    grad = fd_check[0]
    assert small_problem.params0.a is None and grad.a is None
    for name in LEAVES:
        g = np.asarray(getattr(grad, name))
        assert g.shape == getattr(small_problem.params0, name).shape
        assert np.all(np.isfinite(g))
        assert np.max(np.abs(g)) > 1e-4


@pytest.mark.parametrize("leaf", LEAVES)
def test_gradient_matches_central_finite_differences(fd_check, leaf):
    grad, coords, fd = fd_check
    g = np.asarray(getattr(grad, leaf))
    ad = g[coords[leaf]]
    # Relative error, with the denominator floored at 1% of the leaf's largest gradient entry: the
    # float64 round-off of a central difference with h = 1e-6 is ~1e-10 absolute, which would
    # dominate the relative error of near-zero entries.
    floor = 1e-2 * np.max(np.abs(g))
    rel = np.abs(fd[leaf] - ad) / np.maximum(np.abs(ad), floor)
    assert np.max(rel) <= 1e-6, (leaf, rel)


def test_loss_and_gradient_match_numpy_reference(small_problem, fd_check):
    # Cross-check against the numpy reference F (fully independent of flowsim's forward pass).
    grad = fd_check[0]
    params = small_problem.params0
    model = small_problem.model(params)
    ws = [np.asarray(getattr(model, k)) for k in ("W_Q", "W_K", "W_V", "W", "a")]
    tokens = np.asarray(small_problem.inputs)
    y = np.asarray(small_problem.targets)
    d = ws[0].shape[1]

    def ref_loss(ws_):
        F = np.array([ref_F(*ws_, t, d) for t in tokens])
        return np.mean(np.logaddexp(0.0, -y * F))

    np.testing.assert_allclose(float(jax.jit(lambda p: small_problem.loss(p))(params)), ref_loss(ws), rtol=1e-12)
    rng = np.random.default_rng(99)
    for k, name in enumerate(LEAVES):
        g = np.asarray(getattr(grad, name))
        for _ in range(2):
            idx = tuple(int(rng.integers(0, s)) for s in ws[k].shape)
            wp = [w.copy() for w in ws]
            wm = [w.copy() for w in ws]
            wp[k][idx] += FD_STEP
            wm[k][idx] -= FD_STEP
            fd = (ref_loss(wp) - ref_loss(wm)) / (2 * FD_STEP)
            floor = 1e-2 * np.max(np.abs(g))
            assert abs(fd - g[idx]) / max(abs(g[idx]), floor) <= 1e-6, (name, idx, fd, g[idx])


# ---------------------------------------------------------------------------------------------
# init_transformer
# ---------------------------------------------------------------------------------------------

D, M, M1, L0 = 64, 128, 256, 5  # the paper's sizes


@pytest.fixture(scope="module")
def kaiming():
    return init_transformer(jax.random.PRNGKey(0), D, M, M1, init="kaiming", scale=1.0, L=L0)


@pytest.fixture(scope="module")
def theory():
    return init_transformer(jax.random.PRNGKey(0), D, M, M1, init="theory", scale=1.0, L=L0)


def _check_shapes(model, dtype=jnp.float64):
    assert model.W_Q.shape == (M, D) and model.W_K.shape == (M, D) and model.W_V.shape == (M, D)
    assert model.W.shape == (M1, M)
    assert model.a.shape == (M1,)
    for leaf in jax.tree.leaves(model):
        assert leaf.dtype == dtype


def _check_a(a):
    a = np.asarray(a)
    assert set(np.unique(a)) == {-1.0, 1.0}
    # a ~ U{+-1}: the fraction of +1 is near 1/2 (5 sigma)
    assert abs((a == 1).mean() - 0.5) <= 5 * np.sqrt(0.25 / a.size)


def test_kaiming_init_bounds(kaiming):
    _check_shapes(kaiming)
    for name in ("W_Q", "W_K", "W_V"):
        w = np.asarray(getattr(kaiming, name))
        b = 1 / np.sqrt(D)
        assert np.max(np.abs(w)) <= b
        assert np.max(np.abs(w)) > 0.99 * b  # uniform over the whole interval
        np.testing.assert_allclose(w.std(), b / np.sqrt(3), rtol=0.05)
        assert abs(w.mean()) < 5 * b / np.sqrt(3) / np.sqrt(w.size)
    w = np.asarray(kaiming.W)
    b = 1 / np.sqrt(M)
    assert np.max(np.abs(w)) <= b
    assert np.max(np.abs(w)) > 0.99 * b
    np.testing.assert_allclose(w.std(), b / np.sqrt(3), rtol=0.05)
    _check_a(kaiming.a)


def test_q_k_v_are_independent(kaiming):
    assert not np.allclose(np.asarray(kaiming.W_Q), np.asarray(kaiming.W_K))
    assert not np.allclose(np.asarray(kaiming.W_K), np.asarray(kaiming.W_V))


def test_theory_init_std(theory):
    _check_shapes(theory)
    s0 = 1 / np.sqrt(L0 * M)
    s1 = 1 / np.sqrt(M1)
    for name in ("W_Q", "W_K", "W_V"):
        w = np.asarray(getattr(theory, name))
        np.testing.assert_allclose(w.std(), s0, rtol=0.05)
        assert abs(w.mean()) < 5 * s0 / np.sqrt(w.size)
    w = np.asarray(theory.W)
    np.testing.assert_allclose(w.std(), s1, rtol=0.05)
    assert abs(w.mean()) < 5 * s1 / np.sqrt(w.size)
    _check_a(theory.a)


@pytest.mark.parametrize("init", ["kaiming", "theory"])
def test_init_scale_multiplies_weights_not_a(init, kaiming, theory):
    base = {"kaiming": kaiming, "theory": theory}[init]
    scaled = init_transformer(jax.random.PRNGKey(0), D, M, M1, init=init, scale=0.25, L=L0)
    for name in ("W_Q", "W_K", "W_V", "W"):
        np.testing.assert_allclose(
            np.asarray(getattr(scaled, name)), 0.25 * np.asarray(getattr(base, name)), rtol=1e-15, atol=0
        )
    np.testing.assert_array_equal(np.asarray(scaled.a), np.asarray(base.a))


def test_init_deterministic_in_key(kaiming):
    again = init_transformer(jax.random.PRNGKey(0), D, M, M1, init="kaiming", scale=1.0, L=L0)
    other = init_transformer(jax.random.PRNGKey(1), D, M, M1, init="kaiming", scale=1.0, L=L0)
    for x, y in zip(jax.tree.leaves(kaiming), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(kaiming.W_Q), np.asarray(other.W_Q))


def test_init_unknown_raises():
    # init_transformer's own ValueError, or under the jaxtyping import hook the checker's TypeError on the
    # Literal["kaiming", "theory"] annotation: either names `init`
    with pytest.raises((ValueError, TypeError), match="init"):
        init_transformer(jax.random.PRNGKey(0), 8, 4, 6, init="xavier")  # type: ignore[arg-type]


def test_init_float32():
    model = init_transformer(jax.random.PRNGKey(0), D, M, M1, init="kaiming", scale=0.5, L=L0, dtype=jnp.float32)
    _check_shapes(model, jnp.float32)
    assert np.max(np.abs(np.asarray(model.W_Q))) <= 0.5 / np.sqrt(D)
    _check_a(model.a)
