"""The dyck-attention system: embedding, metrics against the released code, uniform first layer, verdicts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsim
from flowsim.systems.dyck_attention import (
    DyckAttentionConfig,
    attention_tv,
    balance_violation,
    closing_accuracy,
    init_model,
    make_data,
    pair_depth,
    probe_tokens,
    stack_likeness,
)
from flowsim.systems.dyck_attention.metrics import _first_layer_av

TASK = DyckAttentionConfig(n_train=8, max_len=10, n_test=4, n_long=2, long_min=20, long_max=24, d_model=19)


@pytest.fixture(scope="module")
def model1():
    """One 1-layer depth-given model, shared by the tests below (one compile)."""
    return init_model(jax.random.PRNGKey(0), TASK)


def test_config_refuses_bad_values():
    with pytest.raises(flowsim.ConfigError, match="invalid d_model="):
        DyckAttentionConfig(d_model=10)  # the depth-given one-hot needs 3 + 2kD = 19
    with pytest.raises(flowsim.ConfigError, match="invalid max_len="):
        DyckAttentionConfig(min_len=10, max_len=4)


def test_data_rows_and_probe():
    d = make_data(TASK, jax.random.PRNGKey(0))
    assert d.train.tokens.shape == (8, 11) and d.long.tokens.shape == (2, 25)
    assert bool(jnp.all(d.train.tokens[:, 0] == 1))
    np.testing.assert_array_equal(np.asarray(d.probe), [1, 3, 3, 3, 3, 5, 5, 5, 5, 4, 4, 4, 4, 6, 6, 6, 6])
    # every row ends with the END target, and close targets are marked
    tg = np.asarray(d.train.targets)
    assert all(2 in row for row in tg)
    np.testing.assert_array_equal(np.asarray(d.train.close), (tg >= 5) & (tg <= 6))


@pytest.mark.slow
def test_one_forward_serves_held_out_and_long_rows(model1):
    """The observer's merged rows (held-out padded to the long width) give the held-out logits unchanged."""
    from flowsim.systems.dyck_attention.observables import eval_rows

    d = make_data(TASK, jax.random.PRNGKey(3))
    rows, n = eval_rows(d)
    assert n == 4 and rows.tokens.shape == (6, 25)
    np.testing.assert_array_equal(np.asarray(rows.targets[n:]), np.asarray(d.long.targets))
    L = d.test.tokens.shape[1]
    merged, alone = (jax.vmap(model1)(x) for x in (rows.tokens[:n], d.test.tokens))
    np.testing.assert_allclose(np.asarray(merged[:, :L]), np.asarray(alone), rtol=1e-6, atol=1e-6)
    assert not bool(jnp.any(rows.close[:n, L:])) and bool(jnp.all(rows.targets[:n, L:] == -1))


def test_depth_given_embedding(model1):
    toks = jnp.asarray([1, 3, 4, 6, 5, 0])  # START (a (b b) a) PAD
    np.testing.assert_array_equal(np.asarray(pair_depth(toks, 2)), [0, 1, 2, 2, 1, 0])
    idx = np.argmax(np.asarray(model1.embed(toks)), axis=1)
    # bracket j at pair depth d -> 3 + j D + d - 1 (D = 4): (a@1, (b@2, b)@2, a)@1
    np.testing.assert_array_equal(idx, [1, 3, 3 + 4 + 1, 3 + 3 * 4 + 1, 3 + 2 * 4, 0])


def _released_balance(A, v, D):
    """Literal transcription of `balance_variation` (src/training_regimen.py), loops and all."""

    def loc(t, d, o):
        return t * 2 * D + o * D + d + 1

    out = []
    for tp in range(2):
        for dp in range(1, D):
            q = loc(tp, dp, 1)
            w = A[q]
            num = max(
                np.linalg.norm(w[loc(t, d, 0)] * v[loc(t, d, 0)] + w[loc(t, d, 1)] * v[loc(t, d, 1)])
                for t in range(2)
                for d in range(D)
            )
            base = w[0] * v[0] + w[loc(tp, dp, 0)] * v[loc(tp, dp, 0)] + w[loc(tp, dp, 1)] * v[loc(tp, dp, 1)]
            dens = []
            for r in range(2 << dp):
                den = base.copy()
                for e in range(dp):
                    den = den + w[loc(r % 2, e, 0)] * v[loc(r % 2, e, 0)]
                    r = r // 2
                dens.append(np.linalg.norm(den))
            out.append(num / min(dens))
    return np.mean(out)


def _check_balance(m):
    probe = jnp.asarray(probe_tokens(flowsim.DyckLanguage(2, 4)))
    A, v = (np.asarray(x) for x in _first_layer_av(m, probe))
    np.testing.assert_allclose(float(balance_violation(m, probe, 4)), _released_balance(A, v, 4), rtol=1e-12)


def test_balance_violation_matches_the_released_code(model1):
    _check_balance(model1)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["one_layer", "two_layer"])
def test_balance_violation_matches_the_released_code_more_inits(arch):
    task = TASK if arch == "one_layer" else DyckAttentionConfig(arch=arch, d_model=19)
    for seed in (1, 2):
        _check_balance(init_model(jax.random.PRNGKey(seed), task))


def test_tv_and_stack_likeness():
    P = 17
    probe = probe_tokens(flowsim.DyckLanguage(2, 4))
    uni = jnp.tril(jnp.ones((P, P))) / jnp.arange(1, P + 1, dtype=float)[:, None]
    assert float(attention_tv(uni[None], uni[None])) == 0.0
    eye = jnp.eye(P)[None]
    assert 0 < float(attention_tv(uni[None], eye)) < 1
    # a pattern putting all mass on the matching open at every close is perfectly stack-like
    stack = np.zeros((P, P))
    m = flowsim.matching_open(probe[1:]) + 1
    for q in range(1, P):
        stack[q, m[q - 1] if m[q - 1] > 0 else q] = 1.0
    assert float(stack_likeness(jnp.asarray(stack)[None], probe)) == 1.0
    assert float(stack_likeness(eye, probe)) == 0.0


@pytest.mark.slow
def test_jax_accuracy_agrees_with_the_shared_numpy_rule():
    d = make_data(TASK, jax.random.PRNGKey(1))
    m = init_model(jax.random.PRNGKey(2), TASK)
    logits = jax.vmap(m)(d.train.tokens)
    lang = flowsim.DyckLanguage(2, 4)
    tg = np.where(np.asarray(d.train.targets) < 0, 0, np.asarray(d.train.targets))
    a = float(closing_accuracy(logits, d.train.targets, d.train.close, 2))
    b = flowsim.closing_accuracy(np.asarray(logits), tg, np.asarray(d.train.close), lang, "ratio")
    assert a == pytest.approx(b)
    a = float(closing_accuracy(logits, d.train.targets, d.train.close, 2, argmax=True))
    b = flowsim.closing_accuracy(np.asarray(logits), tg, np.asarray(d.train.close), lang, "argmax")
    assert a == pytest.approx(b)


@pytest.mark.slow
def test_uniform_first_layer_is_uniform_and_untrained():
    task = DyckAttentionConfig(arch="two_layer", uniform_first=True, d_model=8, mlp_hidden=8)
    s = flowsim.setup(
        flowsim.Config("dyck-attention", **{**_small(), "arch": "two_layer", "uniform_first": True, "d_model": 8})
    )
    m = s.model
    A = np.asarray(m.patterns(jnp.asarray(probe_tokens(flowsim.DyckLanguage(2, 4))))[0][0])
    np.testing.assert_allclose(A, np.tril(np.ones_like(A)) / np.arange(1, 18)[:, None], rtol=1e-12)
    assert s.problem.params0.stack.blocks[0].attention.W_Q is None  # not a trained leaf
    assert task.uniform_first


def _small():
    return dict(n_train=8, max_len=10, n_test=4, n_long=2, long_min=20, long_max=24, d_model=19, batch_size=8)


@pytest.mark.slow
def test_adam_fits_a_tiny_set_and_verdicts_report():
    """A few Adam steps on 8 strings raise the training closing accuracy; verdicts are PASS/FAIL/INFO."""
    c = flowsim.Config(
        "dyck-attention",
        **_small(),
        lr=0.01,
        steps=60,
        optimizer="adam",
        opt_lr=0.03,
        sgd_seeds=1,
        n_save_log=4,
        n_save_lin=4,
    )
    s = flowsim.setup(c)
    sol = flowsim.run_sgd(s)
    acc = np.asarray(sol.obs["acc_train"])[0]
    loss = np.asarray(sol.obs["loss"])[0]
    assert loss[-1] < 0.8 * loss[0] and acc[-1] >= acc[0]
    rec = flowsim.RunRecord(c, None, None, sol)
    vs = {v.name: v for v in flowsim.get_system("dyck-attention").verdicts(rec)}
    assert set(vs) == {"fit.minibatch"} and vs["fit.minibatch"].status in ("PASS", "FAIL")
