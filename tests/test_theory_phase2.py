"""The Phase-2 approximate system, the loss law and balancing (`flowsim.systems.cooccurrence.theory.phase2`).

The scans run the exact reduced flow in the theory's regime (theory init, distinct tokens) on a
small task (n = 12 or 24, L = 4); every assertion is a measured figure against a bound fixed in
advance, so each test can fail.
"""

from collections import Counter

import jax.numpy as jnp
import numpy as np
import pytest

from flowsim import integrate
from flowsim.systems.cooccurrence.theory import (
    Phase2System,
    loss_law_fit,
    phase2_observer,
    phase2_problem,
    phase2_scan,
)

SMALL_P2 = dict(L=4, n_save=30)


@pytest.fixture(scope="module")
def scan_m():
    return phase2_scan("m", [1024, 16384], [0, 1], n=12, **SMALL_P2)


@pytest.fixture(scope="module")
def scan_n():
    return phase2_scan("n", [12, 24], [0, 1], m=16384, **SMALL_P2)


@pytest.mark.slow  # a theory scan over widths / n (about 25 s): run with -m slow
def test_phase2_system_with_random_tokens_becomes_exact_as_m_grows(scan_m):
    # The only term it still drops is the value term, of relative size m1/(L m): error ~ 1/m.
    assert scan_m["holds"], scan_m["slope"]
    assert -1.3 <= scan_m["slope"] <= -0.7
    wide = [r for r in scan_m["rows"] if r["m"] == 16384]
    assert max(r["err_rand_loss"] for r in wide) < 0.02
    assert max(r["err_rand_G1"] for r in wide) < 0.01


@pytest.mark.slow  # a theory scan over widths / n (about 25 s): run with -m slow
def test_paper_phase2_system_error_falls_like_one_over_n(scan_n):
    # The paper's system also drops the random tokens' own G, of relative size ~ L/n.
    assert scan_n["holds"], scan_n["slope"]
    assert -1.3 <= scan_n["slope"] <= -0.7
    errs = {r["n"]: r["err_loss"] for r in scan_n["rows"]}
    assert errs[24] < errs[12]


@pytest.mark.slow  # a theory scan over widths / n (about 25 s): run with -m slow
def test_loss_law_holds_at_large_width(scan_m):
    # Thm F.8: 1/L(t) - 1/L(T1) = c int N ds with c constant, and L ~ 1/t late.
    for r in scan_m["rows"]:
        if r["m"] == 16384:
            assert abs(r["c_second_half"] / r["c_first_half"] - 1) < 0.1
            assert abs(r["slope"] + 1) < 0.1
            assert r["max_rel_error"] < 0.3
            # c is what the margins predict once the random tokens' own G are counted; the paper's
            # system alone (Phi(S) only) predicts a c several times too small at this n.
            assert abs(r["c_random_T"] / r["c_second_half"] - 1) < 0.1
            assert r["c_paper_T"] < 0.5 * r["c_second_half"]


@pytest.mark.slow  # a theory scan over widths / n (about 25 s): run with -m slow
def test_balancing_figures(scan_n):
    # Lem 4.4 (S2/S3 within [1/2, 2]) and Cor F.2 (g ratios O(1)) hold; the paper's own system
    # settles at its fixed point R* in (1, 2), while the flow's R stays below it, more so at small n.
    for r in scan_n["rows"]:
        assert r["S2_over_S3_worst"] <= 2
        assert r["g_ratio_max"] <= 10
        assert 1 < r["R_star_T"] < 2
        assert abs(r["R_T_paper_system"] - r["R_star_T"]) < 0.05
    gap = {r["n"]: r["R_star_T"] - r["R_T"] for r in scan_n["rows"]}
    assert gap[24] < gap[12]
    # ... and the gap is the random tokens' term: with it, the fixed point is where the flow's R settles.
    for r in scan_n["rows"]:
        assert abs(r["R_minus_R_star_random_T"]) < 0.02, r


def test_loss_law_fit_recovers_a_known_law():
    t1, loss_t1, c = 0.5, 0.2, 0.3
    t = np.linspace(0.0, 50.0, 200)
    N = 10 + 0.1 * t
    X = 10 * (t - t1) + 0.05 * (t**2 - t1**2)
    loss = 1 / (c * X + 1 / loss_t1)
    margin = np.ones((t.size, 12))
    fit = loss_law_fit(
        t,
        {"loss": loss, "N": N, "margin": margin},
        t1,
        {"loss": loss_t1, "N": 10 + 0.1 * t1},
        np.repeat([1, 2, 3, 4], [6, 2, 2, 2]),
    )
    assert fit["c"] == pytest.approx(c, rel=1e-3)
    assert fit["max_rel_error"] < 1e-3
    assert fit["c_first_half"] == pytest.approx(fit["c_second_half"], rel=1e-2)


def test_phase2_system_rates_match_its_definition(small_setup):
    # The vector field at the initial state against the formulas of Def F.1 / Lem F.6, by hand.
    s = small_setup
    p2 = phase2_problem(s.problem, s.problem.params0, s.data.kind)
    model = p2.model(p2.params0)
    z = np.asarray(p2.targets * model.F)
    g = 1 / (1 + np.exp(z))
    kind = np.asarray(s.data.kind)
    S1, S2, S3, S4 = (g[kind == k].sum() for k in (1, 2, 3, 4))
    r = float(model.N) / p2.n
    v = Phase2System().vector_field(0.0, p2.params0, p2)
    np.testing.assert_allclose(np.asarray(v.G), r * np.array([S1 - S2, S1 - S3, S1 - S2 - S3 - S4]), rtol=1e-12)
    dz = np.asarray(p2.targets * v.F)
    S234 = S2 + S3 + S4
    want = {1: 3 * S1 - S234 - S2 - S3, 2: -(2 * S1 - S234 - S2), 3: -(2 * S1 - S234 - S3), 4: -(S1 - S234)}
    np.testing.assert_allclose(dz, r * np.array([want[k] for k in kind]), rtol=1e-10, atol=1e-14)
    m1 = float(s.model.a @ s.model.a)
    assert float(v.N) == pytest.approx(2 * m1 / p2.n * float(g @ z), rel=1e-12)


@pytest.mark.slow  # a Phase-2 solve with random tokens: run with -m slow
def test_random_token_overlap_counts_shared_tokens(small_setup):
    # Tokens with replacement (the small setup) share random tokens across samples.
    s = small_setup
    p2 = phase2_problem(s.problem, s.problem.params0, s.data.kind, random_tokens=True)
    tok, y = np.asarray(s.data.tokens), np.asarray(s.data.y)
    counts = [Counter(int(t) for t in row if t >= 3) for row in tok]
    want = np.array(
        [[y[i] * y[j] * sum(ci[t] * cj[t] for t in ci) for j, cj in enumerate(counts)] for i, ci in enumerate(counts)]
    )
    np.testing.assert_allclose(np.asarray(p2.frozen.overlap), want)
    assert np.count_nonzero(want - np.diag(np.diag(want))) > 0
    sol = integrate(Phase2System(), p2, jnp.asarray([0.0, 0.5]), phase2_observer)
    assert sol.ok and np.all(np.isfinite(sol.obs["loss"]))


@pytest.mark.slow  # two full flows (trained vs frozen attention): run with -m slow
def test_frozen_attention_barely_changes_the_loss(small_config):
    # The Phase-2 system's assumption A1 (attention frozen) on the flow itself: attention does learn
    # (its displacement is non-zero and it lowers the loss), but by well under 2% of the loss.
    from flowsim.systems.cooccurrence.theory import attention_ablation

    r = attention_ablation(small_config)
    assert r["attn_disp_T"] > 1e-5
    assert r["loss_T_ratio"] > 1
    assert r["max_rel_gap_loss"] < 0.02
