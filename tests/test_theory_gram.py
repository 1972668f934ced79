"""The exact reduced (Gram) system against the full gradient flow, and the Wishart initial draw."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsim
from flowsim.systems.cooccurrence.theory import (
    GramObserver,
    ReducedGramFlow,
    gram_of,
    loss_from_SG,
    reduce_problem,
    wishart_gram,
)

# Two initialisations of one shape, so each flow compiles once for both (the test budget is < 60 s).
CONFIGS = {
    "theory": dict(n=12, L=4, d=8, m=16, m1=16, init="theory", init_scale=2.0, seed=1),
    "kaiming": dict(n=12, L=4, d=8, m=16, m1=16, init="kaiming", seed=2),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request):
    s = flowsim.setup(flowsim.Config(**CONFIGS[request.param]))
    return s, reduce_problem(s.problem)


def test_loss_from_SG_matches_model(pair):
    s, _ = pair
    model = s.problem.model(s.problem.params0)
    direct = loss_from_SG(model.scores(), model.G(), s.data.tokens, s.data.y, model.m)
    np.testing.assert_allclose(float(direct), float(s.problem.loss(s.problem.params0)), rtol=1e-14)


def test_vector_field_is_gram_derivative(pair):
    """dM/dt of the reduced field = d/dt gram_of(params) along the full gradient flow (by jvp)."""
    s, rp = pair
    p0 = s.problem.params0
    v = flowsim.GradientFlow().vector_field(0.0, p0, s.problem)
    _, dM_full = jax.jvp(lambda p: gram_of(s.problem.model(p)), (p0,), (v,))
    dM = ReducedGramFlow().vector_field(0.0, rp.params0, rp).M
    scale = float(jnp.max(jnp.abs(dM_full)))
    assert scale > 0
    assert float(jnp.max(jnp.abs(dM - dM_full))) <= 1e-10 * scale


def test_reduced_flow_matches_full_flow(pair):
    s, rp = pair
    ts = jnp.linspace(0.0, 2.0, 11)
    kw = dict(solver="tsit5", rtol=1e-10, atol=1e-12)
    full = flowsim.integrate(flowsim.GradientFlow(), s.problem, ts, s.observer, **kw).check()
    red = flowsim.integrate(ReducedGramFlow(), rp, ts, GramObserver.at_init(rp, s.data.kind), **kw).check()
    assert set(red.obs) == set(full.obs)
    assert abs(full.obs["loss"][-1] - full.obs["loss"][0]) > 1e-3 * full.obs["loss"][0]  # the flow moved
    worst = {}
    for k, ref in full.obs.items():
        # nan where a quantity is undefined (e.g. R_star_random before T1): must be nan in both
        both = np.isfinite(ref) & np.isfinite(red.obs[k])
        if not np.array_equal(np.isnan(ref), np.isnan(red.obs[k])):
            worst[k] = np.inf
            continue
        if not both.any():
            continue
        scale = np.max(np.abs(ref[both]))
        worst[k] = np.max(np.abs(red.obs[k][both] - ref[both])) / (scale if scale > 0 else 1.0)
    bad = {k: v for k, v in worst.items() if not v <= 1e-6}
    assert not bad, bad
    # the final Gram matrix too, and M stays exactly symmetric
    M_end = red.params.M
    np.testing.assert_array_equal(np.asarray(M_end), np.asarray(M_end).T)
    M_full = gram_of(s.problem.model(full.params))
    assert float(jnp.max(jnp.abs(M_end - M_full))) <= 1e-6 * float(jnp.max(jnp.abs(M_full)))


def test_trainable_a_is_refused():
    s = flowsim.setup(flowsim.Config(**{**CONFIGS["theory"], "train_a": True}))
    with pytest.raises(ValueError, match="a"):
        reduce_problem(s.problem)


def test_wishart_needs_wide_enough_m():
    with pytest.raises(ValueError, match="m=6"):
        wishart_gram(jax.random.PRNGKey(0), 2, 6, 4, 0.1, 0.5)


@pytest.mark.slow  # 2 x 4000 vmapped draws: run with -m slow
def test_wishart_moments_match_direct_draw():
    """Mean and variance of every entry of M(0): Bartlett draw vs the direct draw of the weights
    (init_transformer, theory init) vs the exact Wishart moments (mean m D^2; var m(s_i^2 s_j^2 +
    [i=j] s_i^4))."""
    d, m, m1, L, reps = 2, 9, 5, 3, 4000
    s0, s1 = 1 / np.sqrt(L * m), 1 / np.sqrt(m1)
    keys = jax.random.split(jax.random.PRNGKey(0), reps)
    bart = np.asarray(jax.vmap(lambda k: wishart_gram(k, d, m, m1, s0, s1))(keys))
    direct = np.asarray(
        jax.vmap(lambda k: gram_of(flowsim.init_transformer(k, d, m, m1, init="theory", L=L)))(
            jax.random.split(jax.random.PRNGKey(1), reps)
        )
    )
    sd = np.array([s0] * (3 * d) + [s1 * np.sqrt(m1)])
    var = m * (np.outer(sd**2, sd**2) + np.diag(sd**4))
    mean = m * np.diag(sd**2)
    se_mean = np.sqrt(var / reps)
    for draw in (bart, direct):
        assert np.all(np.abs(draw.mean(0) - mean) <= 5 * se_mean)
        # relative s.e. of a sample variance here <= ~4% (entries are sums of m products): 20% band
        np.testing.assert_allclose(draw.var(0), var, rtol=0.2)
    assert np.all(np.abs(bart.mean(0) - direct.mean(0)) <= 5 * np.sqrt(2) * se_mean)
    np.testing.assert_allclose(bart.var(0), direct.var(0), rtol=0.25)
    np.testing.assert_array_equal(bart, np.swapaxes(bart, 1, 2))
