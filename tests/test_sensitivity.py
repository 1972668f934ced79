"""The sensitivity system (Hahn & Rofin, ACL 2024) against independent references: sensitivities by
flipping bits one at a time (numpy) vs the Walsh-Hadamard values, closed forms for PARITY, FIRST and
MAJORITY, the perturbation sharpness of a quadratic loss (fixed-draw identity and (eps^2/2) tr H),
the LayerNorm blow-up vs a numpy forward pass, the data tables vs numpy, the verdict logic on
synthetic runs and config validation."""

from __future__ import annotations

import functools
import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsim
from flowsim._discrete import DiscreteSolution
from flowsim._solution import EventHit, FlowSolution
from flowsim.systems import sensitivity as sens

rng = np.random.default_rng(0)


# ---------------------------------------------------------------- numpy references


def np_table(n: int) -> np.ndarray:
    return np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.int64)


def np_row(bits: np.ndarray) -> np.ndarray:
    """Row index of each input in `np_table` order (found by search, not by the package's formula)."""
    lookup = {tuple(r): i for i, r in enumerate(np_table(bits.shape[-1]))}
    return np.array([lookup[tuple(r)] for r in bits])


@functools.cache
def np_flip_rows(n: int) -> np.ndarray:
    """(n, 2^n): the row of x with bit i flipped."""
    x = np_table(n)
    out = []
    for i in range(n):
        y = x.copy()
        y[:, i] = 1 - y[:, i]
        out.append(np_row(y))
    return np.stack(out)


def np_sensitivity(f: np.ndarray) -> float:
    """E_x sum_i 1[f(x) != f(x^(i))] by flipping every bit of every input."""
    n = int(np.log2(f.size))
    return float(sum(np.mean(f != f[rows]) for rows in np_flip_rows(n)))


def np_real_sensitivity(g: np.ndarray) -> float:
    n = int(np.log2(g.size))
    return float(sum(np.mean((g - g[rows]) ** 2) for rows in np_flip_rows(n)) / 4)


# ---------------------------------------------------------------- data


@pytest.mark.parametrize("n", [2, 3, 5, 6])
def test_tables_and_targets_match_numpy(n):
    x = np_table(n)
    np.testing.assert_array_equal(np.asarray(sens.bit_table(n)), x)
    key = jax.random.PRNGKey(3)
    ones = x.sum(1)
    expect = {"parity": ones % 2, "majority": (ones > n / 2), "first": x[:, 0], "mean": ones / n}
    for target, want in expect.items():
        got = np.asarray(sens.target_table(target, sens.bit_table(n), key))
        np.testing.assert_allclose(got, want.astype(float), rtol=0, atol=1e-15)
    if n % 2 == 0:  # ties go to 0
        got = np.asarray(sens.target_table("majority", sens.bit_table(n), key))
        assert np.all(got[ones == n // 2] == 0)
    r1 = np.asarray(sens.target_table("random", sens.bit_table(n), key))
    r2 = np.asarray(sens.target_table("random", sens.bit_table(n), jax.random.PRNGKey(4)))
    assert set(np.unique(r1)) <= {0.0, 1.0}
    assert n < 5 or not np.array_equal(r1, r2)


def test_training_subset():
    key = jax.random.PRNGKey(0)
    full = sens.make_data(sens.SensitivityConfig(n=5), key)
    assert full.full and np.array_equal(np.asarray(full.train_idx), np.arange(32))
    sub = sens.make_data(sens.SensitivityConfig(n=5, n_train=12, target="random"), key)
    idx = np.asarray(sub.train_idx)
    assert not sub.full and idx.size == 12 and np.all(np.diff(idx) > 0) and idx.max() < 32
    np.testing.assert_array_equal(np.asarray(sub.x_train), np_table(5)[idx])
    again = sens.make_data(sens.SensitivityConfig(n=5, n_train=12, target="random"), key)
    assert np.array_equal(np.asarray(again.train_idx), idx) and np.array_equal(np.asarray(again.y), np.asarray(sub.y))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_random_targets_do_not_depend_on_the_precision(seed):
    """A float32 process (64-bit types off) draws the float64 run's RANDOM table and training rows
    for the same seed (`jax.random.bernoulli` would draw a different table: its uniform draw has the
    default float width)."""
    config = flowsim.Config("sensitivity", n=8, n_train=100, target="random", seed=seed)
    key = flowsim.RunKeys.from_seed(seed).data
    want = sens.make_data(config.task, key, dtype=jnp.float64)
    with jax.enable_x64(False):
        got = sens.make_data(config.task, key, dtype=jnp.float32)
        assert got.y.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got.y, float), np.asarray(want.y))
    np.testing.assert_array_equal(np.asarray(got.train_idx), np.asarray(want.train_idx))
    y = np.asarray(want.y)
    assert set(np.unique(y)) == {0.0, 1.0} and 0.35 < y.mean() < 0.65  # fair coins


# ---------------------------------------------------------------- sensitivity


def test_walsh_hadamard_vs_dense_transform():
    n = 5
    v = rng.normal(size=2**n)
    i = np.arange(2**n)
    H = np.array([[(-1) ** bin(a & b).count("1") for b in i] for a in i], float)
    np.testing.assert_allclose(np.asarray(sens.walsh_hadamard(jnp.asarray(v))), H @ v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_average_sensitivity_vs_flipping_bits(n):
    for _ in range(5):
        f = rng.random(2**n) < rng.random()
        got = float(sens.average_sensitivity(jnp.asarray(f)))
        assert got == pytest.approx(np_sensitivity(f), abs=1e-12)


@pytest.mark.parametrize("n", [3, 4, 5, 8, 9])
def test_known_sensitivities(n):
    bits = sens.bit_table(n)
    key = jax.random.PRNGKey(0)

    def as_of(target: str) -> float:
        return float(sens.average_sensitivity(sens.target_table(target, bits, key) > 0.5))

    assert as_of("parity") == pytest.approx(n, abs=1e-12)
    assert as_of("first") == pytest.approx(1.0, abs=1e-12)
    majority = as_of("majority")
    if n <= 5:
        assert majority == pytest.approx(np_sensitivity(np.asarray(sens.target_table("majority", bits, key)) > 0.5))
    if n % 2:  # a flip changes the majority iff the other n - 1 bits are tied
        assert majority == pytest.approx(n * math.comb(n - 1, (n - 1) // 2) / 2 ** (n - 1), abs=1e-12)


@pytest.mark.parametrize("n", [2, 5])
def test_real_sensitivity_vs_flipping_bits(n):
    g = rng.normal(size=2**n)
    assert float(sens.real_sensitivity(jnp.asarray(g))) == pytest.approx(np_real_sensitivity(g), rel=1e-12)
    f = rng.random(2**n) < 0.5
    signs = jnp.asarray(2.0 * f - 1.0)
    assert float(sens.real_sensitivity(signs)) == pytest.approx(float(sens.average_sensitivity(jnp.asarray(f))))


def test_completion_sensitivity_exact_vs_random_completions():
    n = 6
    f = rng.random(2**n) < 0.5
    known = rng.random(2**n) < 0.4
    got = float(sens.completion_sensitivity(jnp.asarray(known), jnp.asarray(f)))
    draws = np.array([np_sensitivity(np.where(known, f, rng.random(2**n) < 0.5)) for _ in range(400)])
    assert abs(got - draws.mean()) <= 4 * draws.std() / math.sqrt(draws.size)
    everything = float(sens.completion_sensitivity(jnp.ones(2**n, bool), jnp.asarray(f)))
    assert everything == pytest.approx(np_sensitivity(f))
    assert float(sens.completion_sensitivity(jnp.zeros(2**n, bool), jnp.asarray(f))) == pytest.approx(n / 2)


# ---------------------------------------------------------------- perturbation sharpness and norm


def _quadratic():
    A = rng.normal(size=(9, 9))
    A = jnp.asarray(A @ A.T + np.eye(9))
    b = jnp.asarray(rng.normal(size=9))
    params = {"u": jnp.asarray(rng.normal(size=3)), "w": jnp.asarray(rng.normal(size=(2, 2))), "pos": jnp.ones(2)}
    mask = {"u": True, "w": True, "pos": False}

    def flat(p):
        return jnp.concatenate([p["pos"], p["u"], p["w"].ravel()])  # ravel_pytree order: sorted keys

    def loss(p):
        x = flat(p)
        return 0.5 * x @ A @ x + b @ x

    return A, b, params, mask, flat, loss


def test_perturbation_sharpness_fixed_draw_identity():
    A, b, params, mask, flat, loss = _quadratic()
    key = jax.random.PRNGKey(5)
    D = sens.perturbation_draws(params, mask, key, 0.1, 6)
    assert D.shape == (6, 9) and np.all(np.asarray(D[:, :2]) == 0)  # "pos" first in ravel order: never perturbed
    g = A @ flat(params) + b
    exact = jnp.mean(jax.vmap(lambda d: 0.5 * d @ A @ d + g @ d)(D))
    got = sens.perturbation_sharpness(loss, params, mask, key, 0.1, 6)
    assert float(got) == pytest.approx(float(exact), rel=1e-10)
    anti = sens.perturbation_sharpness(loss, params, mask, key, 0.1, 6, antithetic=True)
    assert float(anti) == pytest.approx(float(jnp.mean(jax.vmap(lambda d: 0.5 * d @ A @ d)(D))), rel=1e-10)


def test_perturbation_sharpness_expectation_is_half_eps_squared_trace():
    A, _, params, mask, _, loss = _quadratic()
    eps, K = 0.05, 20000
    got = float(sens.perturbation_sharpness(loss, params, mask, jax.random.PRNGKey(1), eps, K, antithetic=True))
    sub = np.asarray(A)[2:, 2:]  # the perturbed block
    expect = eps**2 / 2 * np.trace(sub)
    se = eps**2 * math.sqrt(np.trace(sub @ sub) / (2 * K))  # var of D^T A D / 2 is eps^4 tr(A^2) / 2
    assert abs(got - expect) <= 5 * se, (got, expect, se)


@pytest.fixture(scope="module")
def small():
    """A 2-layer, 2-head model on a random table of 4 bits trained on 10 of the 16 inputs."""
    config = flowsim.Config(
        "sensitivity", n=4, d_model=8, mlp_hidden=6, n_train=10, target="random", batch_size=4, sharpness_draws=3
    )
    return flowsim.setup(config)


def _outputs(model, bits):
    return eqx.filter_jit(lambda m, b: jax.vmap(m)(b))(model, bits)


def test_positional_mask_and_norm(small):
    model = small.model
    mask = sens.positional_mask(model)
    leaves = jax.tree_util.tree_leaves_with_path(mask)
    off = [jax.tree_util.keystr(p) for p, m in leaves if not m]
    assert off == [".net.positional.weight"]
    total = sum(float(jnp.sum(x**2)) for x in jax.tree.leaves(model))
    pos = float(jnp.sum(model.net.positional.weight**2))
    assert float(sens.masked_sq_norm(model, mask)) == pytest.approx(total - pos, rel=1e-12)


# ---------------------------------------------------------------- LayerNorm blow-up


def _np_gelu(z):
    return 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))


def _np_ln(x, ln):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ln.eps) * np.asarray(ln.weight) + np.asarray(ln.bias)


def _np_attention(att, x):
    WQ, WK, WV, WO = (np.asarray(a) for a in (att.W_Q, att.W_K, att.W_V, att.W_O))
    heads = []
    for h in range(WQ.shape[0]):
        s = (x @ WQ[h].T) @ (x @ WK[h].T).T / math.sqrt(WQ.shape[1])
        p = np.exp(s - s.max(1, keepdims=True))
        heads.append((p / p.sum(1, keepdims=True)) @ (x @ WV[h].T))
    return np.concatenate(heads, 1) @ WO.T


def np_forward(model, tokens):
    """Output and LayerNorm inputs of the post-LN model, in numpy."""
    net = model.net
    x = np.asarray(net.embedding.weight)[tokens] + np.asarray(net.positional.weight)[: len(tokens)]
    seen = []
    for blk in net.stack.blocks:
        s = x + _np_attention(blk.attention, x)
        seen.append(s)
        x = _np_ln(s, blk.norm1)
        m = blk.mlp
        h = _np_gelu(x @ np.asarray(m.W1).T + np.asarray(m.b1))
        s = x + h @ np.asarray(m.W2).T + np.asarray(m.b2)
        seen.append(s)
        x = _np_ln(s, blk.norm2)
    return float((np.asarray(net.readout.W) @ x[-1] + np.asarray(net.readout.b))[0]), seen


def test_ln_blowup_vs_numpy(small):
    model = small.model
    assert model.ln_in_last_layer() == (False, False, True, True)
    bits = np.asarray(small.data.bits)
    outs, lns = zip(*(np_forward(model, b) for b in bits))
    out, seen = eqx.filter_jit(lambda m, b: jax.vmap(m.ln_inputs)(b))(model, jnp.asarray(bits))
    np.testing.assert_allclose(np.asarray(out), outs, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(_outputs(model, jnp.asarray(bits))), outs, rtol=1e-10)
    per_input = []  # (B, LNs, positions) of 1 / std with Bessel's correction; last block: last position
    for ln in lns:
        row = []
        for k, s in enumerate(ln):
            inv = 1 / s.std(-1, ddof=1)
            row.append(inv[-1:] if k >= len(ln) - 2 else inv)
        per_input.append(row)
    want = {
        "blowup": np.mean([np.prod([r.mean() for r in row]) for row in per_input]),
        "blowup_max": np.mean([np.prod([r.max() for r in row]) for row in per_input]),
        "blowup_sum": np.mean([np.sum([r.mean() for r in row]) for row in per_input]),
    }
    got = jax.jit(sens.ln_blowup, static_argnums=1)(seen, model.ln_in_last_layer())
    for k, v in want.items():
        assert float(got[k]) == pytest.approx(v, rel=1e-10), k


# ---------------------------------------------------------------- observer, config, verdicts


def test_observer_matches_its_definitions(small):
    s = small
    obs = eqx.filter_jit(s.observer)(0.0, s.problem.params0, s.problem)
    assert float(obs["loss"]) == pytest.approx(float(s.problem.loss(s.problem.params0)), rel=1e-12)
    model = s.problem.model(s.problem.params0)
    f = np.asarray(_outputs(model, s.data.bits)) > 0.5
    y = np.asarray(s.data.y) > 0.5
    idx = np.asarray(s.data.train_idx)
    assert float(obs["accuracy"]) == pytest.approx(np.mean(f[idx] == y[idx]))
    assert float(obs["full_accuracy"]) == pytest.approx(np.mean(f == y))
    assert float(obs["as_learned"]) == pytest.approx(np_sensitivity(f))
    assert float(obs["as_target"]) == pytest.approx(np_sensitivity(y))
    known = np.isin(np.arange(16), idx)
    completion = sens.completion_sensitivity(jnp.asarray(known), jnp.asarray(y))
    assert float(obs["as_completion"]) == pytest.approx(float(completion))
    assert float(obs["tradeoff"]) == pytest.approx(float(obs["blowup"] * obs["theta_sq"]))
    escape, fitted = s.events
    assert float(escape.condition.target) == pytest.approx(np.var(np.asarray(s.data.y)[idx]) / 2)
    assert float(fitted.condition.target) == s.config.fit_loss
    # a terminal stop at the fit threshold marks the fit itself: no second event on the same condition
    at_fit = flowsim.setup(s.config.replace(stop_loss=s.config.fit_loss), model=s.model, data=s.data)
    assert [e.name for e in at_fit.events] == ["escape"]


@pytest.mark.parametrize(
    "fields, name",
    [
        ({"n": 13}, "n"),
        ({"n": 3, "n_train": 9}, "n_train"),
        ({"n_train": 1}, "n_train"),
        ({"heads": 3, "d_model": 16}, "d_model"),
        ({"target": "xor"}, "target"),
        ({"sharpness_eps": 0.0}, "sharpness_eps"),
        ({"layers": 3}, "layers"),
        ({"activation": "tanh"}, "activation"),
    ],
)
def test_config_errors_name_the_field(fields, name):
    with pytest.raises(flowsim.ConfigError, match=f"invalid {name}="):
        flowsim.Config("sensitivity", **fields)


def _record(flow_loss, as_learned, sgd_loss, sgd_sharp, flow_sharp=0.5, **task):
    config = flowsim.Config("sensitivity", n=4, steps=10, lr=0.1, batch_size=4, **task)
    S = len(flow_loss)
    ts = np.linspace(0, 1, S)
    base = {"accuracy": 1.0, "full_accuracy": 1.0, "as_target": 1.0, "as_completion": 2.0, "pert_sharpness": flow_sharp}
    obs = {k: np.full(S, v) for k, v in base.items()}
    obs.update(loss=np.asarray(flow_loss, float), as_learned=np.full(S, as_learned))
    fitted = np.nanmin(flow_loss) <= config.fit_loss
    hit = EventHit(0.5 if fitted else float("nan"), None, None, "fitted")
    flow = FlowSolution(ts, obs, None, {"fitted": hit}, "successful", 10, 1.0)
    seeds = len(sgd_loss)
    sobs = {k: np.tile(v, (seeds, 1)) for k, v in obs.items()}
    sobs["loss"] = np.tile(np.asarray(sgd_loss, float)[:, None], (1, S))
    sobs["pert_sharpness"] = np.tile(np.asarray(sgd_sharp, float)[:, None], (1, S))
    steps = np.where(np.asarray(sgd_loss) <= config.fit_loss, 1, -1)
    sgd = DiscreteSolution(
        np.arange(S), ts, sobs, None, np.full(seeds, -1), {"fitted": (ts[steps], steps)}, np.full(seeds, -1)
    )
    return flowsim.RunRecord(config, flow, None, sgd)


def test_verdicts_pass_fail_and_not_judged():
    good = {v.name: v for v in sens.evaluate(_record([0.3, 1e-4], 1.0, [1e-4, 2e-4], [0.1, 0.2]))}
    assert good["fit.flow"].status == "PASS" and good["fit.minibatch"].status == "PASS"
    assert good["sensitivity.matches_target"].status == "PASS"
    assert good["sharpness.flow_vs_minibatch"].status == "PASS"  # median 0.15 < flow's 0.5
    bad = {v.name: v for v in sens.evaluate(_record([0.3, 1e-4], 2.0, [1e-4, 0.2], [0.9, 0.2]))}
    assert bad["sensitivity.matches_target"].status == "FAIL"
    assert bad["fit.minibatch"].status == "FAIL" and bad["fit.minibatch"].figures["seeds_fitted"] == 1
    assert bad["sharpness.flow_vs_minibatch"].status == "FAIL"  # the fitted seed: 0.9 > 0.5
    stuck = {v.name: v for v in sens.evaluate(_record([0.3, 0.25], 1.0, [0.2, 0.2], [0.1, 0.1]))}
    assert stuck["fit.flow"].status == "FAIL"
    for name in ("sensitivity.matches_target", "sharpness.flow_vs_minibatch"):
        v = stuck[name]
        assert v.status == "INFO" and v.figures["judged"] is False and v.criterion.startswith("not judged")
    sub = {v.name: v for v in sens.evaluate(_record([0.3, 1e-4], 1.5, [1e-4], [0.1], n_train=8, target="random"))}
    assert sub["sensitivity.completion.flow"].status == "PASS"  # 1.5 < 2.0
    assert sub["sensitivity.completion.minibatch"].status == "PASS"
    assert "sensitivity.matches_target" not in sub
    assert set(sub) <= set(sens.VERDICT_NEEDS)


def test_fit_at_a_terminal_stop_counts_as_fitted():
    """A run stopped by `stop_loss` at the fit threshold never records the 'fitted' crossing on the
    save grid; the stop step (or stop time) counts."""
    config = flowsim.Config("sensitivity", n=4, steps=10, lr=0.1, batch_size=4, stop_loss=1e-3)
    ts = np.linspace(0, 1, 3)
    loss = np.array([[0.3, np.nan, np.nan]])
    stop_obs = {"loss": np.array([9e-4])}
    sgd = DiscreteSolution(np.arange(3), ts, {"loss": loss}, None, np.full(1, -1), {}, np.array([7]), stop_obs=stop_obs)
    np.testing.assert_array_equal(sens.seed_fit_steps(sgd, 1e-3), [7])
    np.testing.assert_array_equal(sens.seed_fit_steps(sgd, 1e-4), [-1])
    obs = {"loss": np.array([0.3, 0.01, np.nan])}
    stop = EventHit(0.7, {"loss": np.asarray(9e-4)}, None, "target")
    flow = FlowSolution(ts, obs, None, {"fitted": EventHit(float("nan"), None, None), "target_loss": stop}, "", 5, 0.7)
    record = flowsim.RunRecord(config, flow, None, sgd)
    assert sens.flow_fit_time(record, 1e-3) == 0.7 and sens.flow_fit_time(record, 1e-4) is None
    # the event's root sits at the threshold to root-finding accuracy, on either side
    assert sens.is_fitted(1e-3 * (1 + 1e-12), 1e-3) and not sens.is_fitted(1.01e-3, 1e-3)
    assert not sens.is_fitted(None, 1e-3) and not sens.is_fitted(float("nan"), 1e-3)
