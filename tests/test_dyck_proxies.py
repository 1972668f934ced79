"""The dyck-proxies system: splits after Murty et al., the proxied forward pass, the proxies and the
faithfulness metric (the end-to-end smoke run is the contract test's)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsim
from flowsim._dyck import DyckLanguage, closing_accuracy, depths, lm_batch, sample_dyck, structure
from flowsim.systems.dyck_proxies import (
    FAMILIES,
    SYSTEM,
    closing_accuracies,
    deep_mask,
    kmeans,
    lm_loss,
    numpy_rng,
    study,
    summarise,
)
from flowsim.systems.dyck_proxies.proxies import fit_activations, pca_proxy, svd_proxy

SMOKE = dict(SYSTEM.smoke)


@pytest.fixture(scope="module")
def smoke_setup():
    return flowsim.setup(flowsim.Config("dyck-proxies", **SMOKE))


def _strings(split) -> list[np.ndarray]:
    toks = np.asarray(split.tokens)
    return [row[1 : np.flatnonzero(row)[-1] + 1] for row in toks]


def test_config_refuses_bad_lengths():
    with pytest.raises(flowsim.ConfigError, match="invalid min_len=20"):
        flowsim.Config("dyck-proxies", min_len=20, max_len=10)
    with pytest.raises(flowsim.ConfigError, match="invalid min_len=3"):
        flowsim.Config("dyck-proxies", min_len=3)


def test_splits_follow_murty(smoke_setup):
    task = smoke_setup.config.task
    data = smoke_setup.data
    train = _strings(data.train)
    seen = {c for s in train for c in structure(s)}
    known = {s.tobytes() for s in train}
    iid, unseen = _strings(data.split("iid")), _strings(data.split("unseen"))
    assert len(iid) == len(unseen) == task.n_test
    assert all(set(structure(s)) <= seen and s.tobytes() not in known for s in iid)
    assert all(not set(structure(s)) <= seen for s in unseen)
    deep = _strings(data.split("deep"))
    assert all(depths(s).max() > task.max_depth for s in deep)
    mask = np.asarray(data.split("deep").mask)
    for i, s in enumerate(deep):  # scored exactly at the closes made deeper than D
        d = depths(s)
        pre = np.concatenate([[0], d[:-1]])
        want = (d < pre) & (pre > task.max_depth)
        np.testing.assert_array_equal(mask[i, : len(s)], want)
        assert not mask[i, len(s) :].any()
    assert all(task.max_len < len(s) <= task.long_max for s in _strings(data.split("long")))


def test_deep_mask_on_a_hand_string():
    lang = DyckLanguage(1, 3)
    s = np.array([3, 3, 3, 4, 4, 4])  # ((( ))) : depths 1 2 3 2 1 0
    _, _, mask = lm_batch([s], lang, 8)
    np.testing.assert_array_equal(deep_mask([s], mask, 2)[0], [0, 0, 0, 1, 0, 0, 0, 0])


def test_numpy_rng_is_a_function_of_the_key():
    k = jax.random.PRNGKey(3)
    a, b = numpy_rng(k).random(4), numpy_rng(k).random(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, numpy_rng(jax.random.PRNGKey(4)).random(4))


def test_lm_loss_ignores_padding():
    logits = np.random.default_rng(0).normal(size=(4, 7))
    t = np.array([3, 5, 0, 0], np.int32)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -(logp[0, 3] + logp[1, 5]) / 2
    np.testing.assert_allclose(jax.jit(lm_loss)(jnp.asarray(logits), jnp.asarray(t)), want, rtol=1e-12)


def test_closing_accuracies_match_the_shared_rules():
    lang = DyckLanguage(3, 4)
    rng = np.random.default_rng(0)
    strings = sample_dyck(rng, lang, 6, 2, 10)
    tokens, targets, mask = lm_batch(strings, lang, 11)
    logits = rng.normal(size=(*tokens.shape, lang.vocab_size)) * 3
    argmax, ratio = closing_accuracies(jnp.asarray(logits), jnp.asarray(targets, jnp.int32))
    assert float(argmax) == pytest.approx(closing_accuracy(logits, targets, mask, lang, rule="argmax"))
    assert float(ratio) == pytest.approx(closing_accuracy(logits, targets, mask, lang, rule="ratio"))


def test_identity_and_full_rank_proxies_reproduce_the_model(smoke_setup):
    model = smoke_setup.model
    tokens = smoke_setup.data.split("long").tokens[:2]
    run = eqx.filter_jit(lambda m, t, p: jax.vmap(lambda x: m.with_proxy(x, p))(t))
    ref = eqx.filter_jit(lambda m, t: jax.vmap(m)(t))(model, tokens)
    base = model.identity_proxy(3)
    np.testing.assert_allclose(run(model, tokens, base), ref, rtol=1e-10, atol=1e-10)
    _, q, k = fit_activations(model, smoke_setup.data.train, jax.random.PRNGKey(0))
    e = q.shape[1]
    for make in (lambda r: pca_proxy(base, q, k, r), lambda r: svd_proxy(base, model, r)):
        np.testing.assert_allclose(run(model, tokens, make(e)), ref, rtol=1e-8, atol=1e-8)
        assert not np.allclose(run(model, tokens, make(1)), ref, atol=1e-6)


def test_study_scores_every_proxy_on_every_split(smoke_setup):
    res = study(smoke_setup.model, smoke_setup.data, smoke_setup.config.task.max_depth, jax.random.PRNGKey(1))
    assert set(res["families"]) == set(FAMILIES)
    for f in ("pca", "svd"):  # full rank = the model: agreement 1 everywhere
        for split, agree in res["families"][f]["agreement"].items():
            assert agree[-1] == 1.0, (f, split)
            assert res["families"][f]["accuracy"][split][-1] == pytest.approx(res["model_accuracy"][split])
    summ = summarise(res, 0.99)
    assert summ["svd"]["size"] is not None and summ["svd"]["size"] <= res["families"]["svd"]["sizes"][-1]


def test_summarise_picks_the_smallest_size_reaching_the_target():
    fam = {
        "sizes": [1, 2, 4],
        "agreement": {
            "iid": [0.9, 0.995, 1.0],
            "unseen": [0.8, 0.97, 1.0],
            "deep": [0.5, 0.9, 1.0],
            "long": [0.9, 1.0, 1.0],
        },
        "accuracy": {"iid": [0.9, 1.0, 1.0], "unseen": [0.8, 0.95, 0.9], "deep": [0.1, 0.3, 0.2], "long": [1, 1, 1]},
    }
    res = {"model_accuracy": {"iid": 1.0, "unseen": 0.9, "deep": 0.2, "long": 1.0}, "families": {"pca": fam}}
    s = summarise(res, 0.99)["pca"]
    assert s["size"] == 2
    assert s["gap"] == pytest.approx({"unseen": 0.025, "deep": 0.095, "long": -0.005})
    assert s["accuracy_delta"] == pytest.approx({"unseen": 0.05, "deep": 0.1, "long": 0.0})
    assert summarise(res, 0.9999)["pca"]["size"] == 4
    assert summarise(res, 1.5)["pca"]["size"] is None


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([c + 0.1 * rng.normal(size=(50, 2)) for c in centres])
    C, valid = kmeans(x, 3, 5, jax.random.PRNGKey(2))
    assert valid.tolist() == [True, True, True, False, False]
    found = C[:3][np.argsort(C[:3, 0] + 100 * C[:3, 1])]
    np.testing.assert_allclose(found, centres[[0, 1, 2]], atol=0.1)


def test_model_has_no_positional_embedding_and_is_causal(smoke_setup):
    model = smoke_setup.model
    assert isinstance(model.net.positional, flowsim.nn.NoPositional)
    t = smoke_setup.data.split("long").tokens[0]
    t2 = t.at[-1].set(3)  # changing a late token leaves earlier logits unchanged
    f = eqx.filter_jit(model)
    np.testing.assert_allclose(f(t)[:-1], f(t2)[:-1], rtol=1e-12)
    assert eqx.is_array(model.net.stack.blocks[1].attention.W_Q)
