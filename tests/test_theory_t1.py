"""Predictions of the theory measured on the exact reduced flow (`flowsim.systems.cooccurrence.theory.t1`)."""

import numpy as np
import pytest

from flowsim.systems.cooccurrence.theory.t1 import t1_scaling, t1_vs_width


def test_t1_scales_as_inverse_width():
    """T1 = C/(sigma1^2 m m1) with sigma1^2 m1 = 1 (theory init) predicts T1 ~ m^-1 (spec section 4).

    On widths 64..16384, 2 seeds, a small theory-regime task (n=12, L=3, d=12, distinct tokens), the
    fitted log-log exponent must be negative and within [-1.3, -0.7]: the prediction -1 with a
    tolerance of 0.3 (log factors and the sigma0^2 m m1 = m1/L term of Lem 4.1 at small m).
    Every point must reach the end of Phase 1 (T1 finite and positive).
    """
    res = t1_vs_width([64, 256, 1024, 4096, 16384], [0, 1], n=12, L=3, d=12, distinct_tokens=True)
    t1 = np.array([r["T1"] for r in res["rows"]])
    assert np.all(np.isfinite(t1)) and np.all(t1 > 0), res["rows"]
    assert res["slope"] < 0
    assert -1.3 <= res["slope"] <= -0.7, res["slope"]
    assert res["predicted"] == -1.0


def test_t1_scales_as_inverse_m1_at_fixed_sigma1():
    """T1 = C/((sigma0^2 + sigma1^2) m m1) with m and sigma1 = 1/16 held fixed predicts T1 ~ m1^-1.

    sigma1 is fixed on purpose: with sigma1 = 1/sqrt(m1) the prediction would be exponent 0. On
    m1 = 16..1024 (sigma1 sqrt(m1) = 0.25..2, initial outputs O(1)), m = 4096, 2 seeds, the small task
    of the width test, the fitted exponent must lie in [-1.3, -0.7] and every T1 be finite.
    """
    res = t1_scaling("m1", [16, 64, 256, 1024], [0, 1], m=4096, sigma1=1 / 16, n=12, L=3, d=12, distinct_tokens=True)
    t1 = np.array([r["T1"] for r in res["rows"]])
    assert np.all(np.isfinite(t1)) and np.all(t1 > 0), res["rows"]
    assert res["predicted"] == -1.0
    assert -1.3 <= res["slope"] <= -0.7, res["slope"]


@pytest.mark.xfail(
    strict=True,
    reason="measured exponent -1.60 +- 0.09 (shallower than -2): T1 * rate grows "
    "with the initial output scale G0 = sigma1 sqrt(m1/L), which rises 8x on this grid "
    "(theory/phase1_time.md)",
)
def test_t1_scales_as_inverse_sigma1_squared():
    """With m, m1 fixed and sigma1^2 >> sigma0^2 = 1/(L m), Lem 4.1's rate predicts T1 ~ sigma1^-2.

    sigma1 = 1/64..1/8 with m1 = 256 (sigma1 sqrt(m1) = 0.25..2) and m = 16384, so sigma1^2/sigma0^2
    >= 12 on the grid (the sigma0 term alone flattens the slope by < 0.05). 2 seeds, the small task;
    the fitted exponent must lie in [-2.3, -1.7] and every T1 be finite.
    """
    res = t1_scaling(
        "sigma1", [1 / 64, 1 / 32, 1 / 16, 1 / 8], [0, 1], m=16384, m1=256, n=12, L=3, d=12, distinct_tokens=True
    )
    t1 = np.array([r["T1"] for r in res["rows"]])
    assert np.all(np.isfinite(t1)) and np.all(t1 > 0), res["rows"]
    assert res["predicted"] == -2.0
    assert -2.3 <= res["slope"] <= -1.7, res["slope"]


def test_t1_scales_as_inverse_sigma1_squared_at_small_initial_outputs():
    """Control for the xfail above: the sigma1 axis where the initial outputs are small,
    G0 = sigma1 sqrt(m1/L) = 0.018..0.14 (m1 = 16, sigma1 = 1/128..1/16), and sigma1^2/sigma0^2 >= 12
    (m = 65536, L = 3). There T1 * rate should not depend on G0, so T1 ~ sigma1^-2: the fitted exponent
    must lie in [-2.3, -1.7] (2 seeds, small task). Grid chosen from the diagnosis, before this run.
    """
    res = t1_scaling(
        "sigma1", [1 / 128, 1 / 64, 1 / 32, 1 / 16], [0, 1], m=65536, m1=16, n=12, L=3, d=12, distinct_tokens=True
    )
    t1 = np.array([r["T1"] for r in res["rows"]])
    assert np.all(np.isfinite(t1)) and np.all(t1 > 0), res["rows"]
    assert max(r["G0_scale"] for r in res["rows"]) < 0.15
    assert -2.3 <= res["slope"] <= -1.7, res["slope"]


@pytest.mark.slow
def test_t1_full_model_follows_the_initial_rate_outside_the_theory_regime(small_config):
    # Kaiming init, tokens with replacement: T1 ~ 1/rate with the rate measured at init (Lem 4.1),
    # and the exact reduced flow from the same init gives the same T1. (Slow: one compile per width.)
    from flowsim.systems.cooccurrence.theory.t1 import t1_full_model

    res = t1_full_model(small_config.replace(m1=256), [16, 64, 256], [0, 1], horizon=5.0)
    assert all(r["result"] == "successful" and np.isfinite(r["T1"]) for r in res["rows"])
    assert res["holds"], (res["slope"], res["ci95"])
    assert res["slope"] < -0.5
    assert res["max_rel_diff_reduced"] < 1e-5
