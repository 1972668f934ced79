"""The spectra system (Charton 2022) against independent references: the generators' defining
properties (symmetry, ranges, positivity, Wigner eigenvectors kept), the token encoding and targets
vs numpy, every metric vs a numpy loop, the AUROC vs all pairs, the model's invariance to the order
of its tokens, the verdict rules on synthetic failures, Adam on fresh samples, config validation."""

from __future__ import annotations

import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsim
from flowsim.systems import spectra as sp

TASK = flowsim.Config("spectra", **sp.SYSTEM.smoke).task  # shares compiled programs with the contract test
KEY = jax.random.PRNGKey(0)
rng = np.random.default_rng(0)


# ---------------------------------------------------------------- generators, encoding, targets


@pytest.mark.parametrize("dist", sp.DISTS)
def test_generators_are_symmetric_with_their_spectra(dist):
    m = np.asarray(sp.sample_matrices(KEY, 400, 3, dist, 10.0))
    np.testing.assert_allclose(m, np.swapaxes(m, 1, 2), atol=1e-12)
    lam = np.linalg.eigvalsh(m)
    if dist == "wigner":
        assert np.all(np.abs(m) <= 10.0)
    if dist in ("positive", "positive2", "marcenko"):
        assert lam.min() > -1e-9
    if dist in ("uniform", "gaussian", "laplace", "positive", "positive2"):  # Wigner eigenvectors kept
        w = np.asarray(sp.sample_matrices(KEY, 400, 3, "wigner", 10.0))
        np.testing.assert_allclose(m @ w, w @ m, atol=1e-9 * np.abs(m).max() * np.abs(w).max())
    if dist == "uniform":
        assert np.abs(lam).max() <= 10.0 * math.sqrt(3) + 1e-9  # sigma sqrt(3), sigma = A for n = 3
    if dist == "laplace":  # standard deviation sigma = A = 10 (n = 3)
        assert 8.5 < lam.std() < 11.5


def test_features_and_targets_match_numpy():
    m = np.asarray(sp.sample_matrices(KEY, 5, 3, "wigner", 10.0))
    d = sp.encode(jnp.asarray(m), TASK)
    for b in range(5):
        for k, (i, j) in enumerate((a, c) for a in range(3) for c in range(a, 3)):
            row = np.zeros(7)
            row[0], row[1 + i], row[4 + j] = m[b, i, j] / 10.0, 1.0, 1.0
            np.testing.assert_allclose(np.asarray(d.x[b, k]), row)
        lam, q = np.linalg.eigh(m[b])
        np.testing.assert_allclose(np.asarray(d.y[b, :3]), lam / 10.0, rtol=1e-10)
        for c in range(3):
            v = q[:, c] * np.sign(q[np.argmax(np.abs(q[:, c])), c])
            np.testing.assert_allclose(np.asarray(d.y[b, 3 + 3 * c : 6 + 3 * c]), v, atol=1e-10)


# ---------------------------------------------------------------- metrics


def np_metrics(m: np.ndarray, pred: np.ndarray, s: float) -> dict[str, np.ndarray]:
    out: dict[str, list[Any]] = {k: [] for k in ("eig_err", "vec_err", "norm_err", "orth_err", "kappa", "gap")}
    for b in range(m.shape[0]):
        lam = np.linalg.eigvalsh(m[b])
        lh = pred[b, :3] * s
        q = np.stack([pred[b, 3 + 3 * c : 6 + 3 * c] for c in range(3)], axis=1)
        out["eig_err"].append(np.abs(lh - lam).sum() / np.abs(lam).sum())
        out["vec_err"].append(np.abs(q.T @ m[b] @ q - np.diag(lh)).sum() / np.abs(lh).sum())
        norms = [abs(np.linalg.norm(q[:, c]) - 1) for c in range(3)]
        out["norm_err"].append(max(norms))
        cos = [
            abs(q[:, a] @ q[:, c]) / np.linalg.norm(q[:, a]) / np.linalg.norm(q[:, c])
            for a, c in itertools.combinations(range(3), 2)
        ]
        out["orth_err"].append(max(cos))
        out["kappa"].append(np.linalg.cond(q))
        out["gap"].append(min(lam[1] - lam[0], lam[2] - lam[1]) / np.abs(lam).max())
    return {k: np.array(v) for k, v in out.items()}


def test_per_matrix_metrics_match_numpy():
    m = np.asarray(sp.sample_matrices(KEY, 20, 3, "wigner", 10.0))
    y = np.asarray(sp.encode(jnp.asarray(m), TASK).y)
    pred = y + 0.05 * rng.standard_normal(y.shape)
    got = sp.per_matrix(jnp.asarray(m), jnp.asarray(pred), 10.0)
    ref = np_metrics(m, pred, 10.0)
    for k, v in ref.items():
        np.testing.assert_allclose(np.asarray(got[k]), v, rtol=1e-9, err_msg=k)
    exact = sp.per_matrix(jnp.asarray(m), jnp.asarray(y), 10.0)  # the targets are a perfect prediction
    for k in ("eig_err", "vec_err", "norm_err", "orth_err"):
        assert float(jnp.max(exact[k])) < 1e-9, k
    np.testing.assert_allclose(np.asarray(exact["kappa"]), 1.0, atol=1e-9)
    assert float(sp.summary(exact, 0.05)["acc_1"]) == 1.0


def test_auroc_matches_all_pairs_with_ties():
    score = rng.integers(0, 5, 60).astype(float)
    pos = rng.random(60) < 0.4
    pairs = [(a > b) + 0.5 * (a == b) for a in score[pos] for b in score[~pos]]
    assert float(sp.auroc(jnp.asarray(score), jnp.asarray(pos))) == pytest.approx(np.mean(pairs), abs=1e-12)
    assert np.isnan(float(sp.auroc(jnp.asarray(score), jnp.zeros(60, bool))))


def _synthetic_summary(mode: str, n: int = 400) -> dict[str, float]:
    """Exact predictions, 30% of them broken: eigenvectors rotated towards each other (orthogonality
    lost, norms kept) or eigenvalues off by 10%."""
    m = sp.sample_matrices(KEY, n, 3, "wigner", 10.0)
    y = np.array(sp.encode(m, TASK).y)
    bad = np.arange(n) < int(0.3 * n)
    if mode == "orthogonality":
        q1, q2 = y[bad, 3:6], y[bad, 6:9]
        mixed = q1 + 0.3 * q2
        y[bad, 3:6] = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
    else:
        y[bad, :3] *= 1.1
    fin = sp.summary(sp.per_matrix(m, jnp.asarray(y), 10.0), 0.05)
    return {k: float(v) for k, v in fin.items()}


def test_verdict_rules_on_synthetic_failures():
    orth = _synthetic_summary("orthogonality")
    assert 0.7 <= orth["acc"] < 0.75 and orth["viol_orth"] == 1.0 and orth["fail_norm_ok"] == 1.0
    assert sp.roughly_right(orth)[0] is True
    eig = _synthetic_summary("eigenvalues")
    assert eig["fail_eig_ok"] == 0.0 and sp.roughly_right(eig)[0] is False
    assert sp.roughly_right({**orth, "failures": 3.0})[0] is None  # too few failures: not judged
    assert sp.predictable({**orth, "auroc_kappa": 0.9, "auroc_gap": 0.5})[0] is True
    assert sp.predictable({**orth, "auroc_kappa": 0.7, "auroc_gap": 0.6})[0] is False
    assert sp.predictable({**orth, "correct": 2.0})[0] is None
    assert orth["auroc_kappa"] > 0.95  # every failure is broken (kappa > 1), the exact ones have kappa = 1


# ---------------------------------------------------------------- model, training, config


def test_model_is_invariant_to_the_order_of_its_tokens():
    model = sp.init_model(KEY, TASK)
    x = sp.make_data(TASK, KEY, 4).x
    perm = np.array([3, 0, 5, 1, 4, 2])
    forward = jax.jit(jax.vmap(model))
    out = forward(x)
    assert out.shape == (4, 12)
    np.testing.assert_allclose(np.asarray(forward(x[:, perm])), np.asarray(out), atol=1e-12)


@pytest.mark.slow
def test_fresh_adam_learns_and_is_deterministic():
    model = sp.init_model(KEY, TASK)
    test = sp.make_data(TASK, jax.random.PRNGKey(1), 64)
    m1, rec = sp.fresh_adam(model, TASK, jax.random.PRNGKey(2), test, lr=3e-3, steps=200, batch=32, every=50)
    _, rec2 = sp.fresh_adam(model, TASK, jax.random.PRNGKey(2), test, lr=3e-3, steps=200, batch=32, every=50)
    np.testing.assert_array_equal(rec["test_loss"], rec2["test_loss"])
    assert rec["test_loss"][-1] < 0.5 * float(sp.evaluate_model(model, test, TASK)["test_loss"])
    assert list(rec["step"]) == [50, 100, 150, 200]
    with pytest.raises(ValueError, match="multiple"):
        sp.fresh_adam(m1, TASK, KEY, test, lr=1e-3, steps=10, batch=4, every=3)


def test_config_is_validated():
    with pytest.raises(flowsim.ConfigError, match="invalid d_model=6"):
        flowsim.Config("spectra", d_model=6, heads=4)
    with pytest.raises(flowsim.ConfigError, match="invalid dist="):
        flowsim.Config("spectra", dist="cauchy")
    assert flowsim.Config("spectra", task="eigenvalues").task.out_dim == 3
